/*
 * psc_vs_tls — one benchmark, three ways for a group of N members to talk
 * securely on loopback: PSC (a real psc-kmsd + the peer SDK), a TLS 1.3 mesh and
 * a DTLS 1.2 mesh (OpenSSL, one mutually authenticated full handshake per
 * pair). This header holds what the PSC driver (psc_vs_tls.c), the mesh driver
 * (psc_vs_tls_mesh.c) and the certificate issuer (psc_vs_tls_pki.c) share.
 * Never: a figure that was not measured in this run (sampled figures are
 * scaled from measured ones and marked as such).
 */
#ifndef PSC_VS_TLS_H
#define PSC_VS_TLS_H

#include <stddef.h>
#include <stdint.h>

#define PVT_MSG_BYTES 256 /* application payload of every message */
#define PVT_MAX_N 256	  /* largest group */
#define PVT_SAMPLE 64	  /* largest group whose data plane runs in full */

/* One member identity on disk (EC P-256, reload:// Node-ID, same CA). */
typedef struct pvt_ident {
	char key[4200], crt[4200];
	uint8_t node_id[16];
} pvt_ident;

/* The figures of one way at one N. Costs are sums over every process. */
typedef struct pvt_fig {
	int ok;		   /* the run completed (every member could send) */
	double setup_cpu;  /* s, every process */
	double setup_wall; /* s, until every member can send */
	double first_msg;  /* s from the start until the first message is delivered */
	double setup_bytes;
	uint64_t delivered, expected; /* application messages (M per sender per receiver) */
	double msg_cpu;		      /* s for the message phase, every process */
	double msg_bytes;
	double leave_cpu, leave_wall, leave_bytes;
	double join_cpu, join_wall, join_bytes;
	/* PSC only: setup split into key management and the group channel */
	double keys_cpu, keys_kms_cpu, keys_wall, chan_cpu, chan_wall;
	/* ... and key management split: member objects (certificate, key, ZeroMQ
	 * context, CURVE connection set up), Initialize of all, Establish + every
	 * Refresh applied */
	double new_cpu, init_cpu, est_cpu, est_wall, est_kms_cpu;
	/* PSC via relay: psc-relay's own CPU in the channel setup and message
	 * phases (included in chan_cpu / setup_cpu and msg_cpu) */
	double relay_setup_cpu, relay_msg_cpu;
	uint64_t probes; /* PSC: readiness probes sent in the channel phase (not scaled) */
	/* mesh only: the handshakes alone (member contexts already loaded) */
	double hs_cpu, hs_wall;
	/* sampling of the data plane: links run / links of the full group */
	size_t links_run, links_full;
	double scale; /* links_full / links_run (1 = not sampled) */
} pvt_fig;

typedef enum pvt_kind { PVT_TLS = 0, PVT_DTLS = 1 } pvt_kind;

/*
 * Runs the mesh for N members (ids[0..n-1], ids[n] is the joiner) with M
 * messages per sender and receiver. Sampled when n > PVT_SAMPLE: the links run
 * among the first PVT_SAMPLE members, link costs are scaled. 0 on success,
 * -1 with a message on stderr.
 */
int pvt_mesh_run(pvt_kind kind, const pvt_ident *ids, size_t n, int m, const char *ca_file,
		 pvt_fig *out);

/* Issues n member identities in dir from the CA (key + certificate PEM files),
 * Node-IDs "70767400" + serial (serial = first + i). 0 on success. */
int pvt_issue(const char *ca_dir, const char *dir, const char *overlay, const char *prefix,
	      unsigned first, size_t n, pvt_ident *out);

#endif
