/*
 * psc_peer_cli — what the files of the psc-peer tool share (not part of the
 * SDK): the options, the command table, the member certificates and the
 * interactive shell.
 *
 * psc_peer_main.c   options, one-shot commands, the command table
 * psc_peer_shell.c  `psc-peer shell`: one session, commands from stdin, events
 *                   printed as they arrive, queries and invitations answered at
 *                   the prompt
 * psc_peer_certs.c  --member-cert: certificates of other members, so messages
 *                   of PSCs with sender signatures can be verified
 */
#ifndef PSC_PEER_CLI_H
#define PSC_PEER_CLI_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "psc/peer.h"

/* Exit codes (documented in --help). */
enum {
	EX_OK = 0,	/* done; for invite/report the outcome is printed */
	EX_REFUSED = 1, /* the KMS refused (ErrorResponse) */
	EX_USAGE = 2,	/* bad command line */
	EX_CONFIG = 3,	/* certificate, key, KMS certificate or CURVE key unusable */
	EX_UNREACH = 4, /* KMS did not answer in time / transport failure */
	EX_FAIL = 5,	/* anything else (malformed answer, key does not unwrap, ...) */
};

#define MAX_LIST 64
#define MAX_CERT_PATHS 64

typedef struct cert_set cert_set;

/* A question from the KMS waiting for the user's answer in the shell. */
typedef enum ask_kind { ASK_NONE = 0, ASK_QUERY, ASK_INVITE } ask_kind;

typedef struct opts {
	const char *kms, *kms_cert, *kms_curve, *cert, *key, *overlay, *endpoint;
	int timeout_ms, decision_timeout_ms;
	int wait_s;
	int accept_queries, accept_invites, quiet;
	const char *join;      /* init --join */
	const char *establish; /* init --establish NAME */
	psc_peer_label labels[MAX_LIST];
	size_t n_labels;
	uint8_t members[MAX_LIST][PSC_PEER_ID_LEN];
	size_t n_members;
	uint32_t refresh_s, max_members;
	int sender_sigs;
	const char *member_cert_paths[MAX_CERT_PATHS]; /* --member-cert */
	size_t n_member_cert_paths;
	const char *member_ca; /* --member-ca */
	psc_peer_pkcs11 key_pkcs11; /* --key-pkcs11 (fields point into key_pkcs11_spec) */
	char key_pkcs11_spec[4096];

	/* run time */
	psc_peer *peer;	     /* the session's peer (for accessors in callbacks) */
	cert_set *certs;     /* loaded member certificates, or NULL */
	psc_peer_chan *chan; /* the shell's long-lived group channel, or NULL */
	int shell;	     /* 1: decisions are asked at the prompt */
	unsigned n_asked;    /* questions numbered in the shell */
	struct shell_ask {   /* the shell's open questions (psc_peer_decide later) */
		unsigned num;	     /* as printed: "query N" */
		int kind;	     /* ask_kind */
		uint64_t decision;   /* psc_peer_query/invitation.decision_id */
		int64_t until_ms;    /* monotonic: answer before the KMS gives up */
	} asks[PSC_PEER_OPEN_DECISIONS];
	int quit;	     /* the shell saw `quit` or the end of its input */
	struct shell_in *in; /* the shell's line reader */
} opts;

typedef struct command {
	const char *name;
	const char *args; /* for usage */
	int min_args, max_args;
	unsigned id_args; /* bit i: argument i must be a 32-hex-digit ID (checked first) */
	int (*run)(psc_peer *p, opts *o, char **argv, int argc);
	const char *help;
	int in_shell; /* also a shell command (the shell passes the rest of the line
			 as the last argument when it has max_args arguments) */
} command;

extern const command psc_cli_commands[];
extern const size_t psc_cli_n_commands;

/* Set by SIGINT/SIGTERM. */
extern volatile sig_atomic_t psc_cli_stop;

/* psc_peer_main.c */
int psc_cli_exit_for(psc_rc rc);
int psc_cli_fail(const psc_err *err);
const char *psc_cli_hex(const uint8_t id[PSC_PEER_ID_LEN], char buf[33]);
void psc_cli_print_pscs(const psc_peer *p);
void psc_cli_on_message(void *user, const psc_peer_msg_info *info, const uint8_t *data, size_t len);
/* The group channel's settings: received messages printed, member
 * certificates from --member-cert. */
psc_peer_chan_config psc_cli_chan_config(opts *o, psc_peer_msg_config *mc);

/* psc_peer_shell.c: runs the shell on an initialised peer until `quit`, the
 * end of stdin or a signal; returns an exit code. */
int psc_cli_shell(psc_peer *p, opts *o);
/* Puts a query or invitation to the user (in the shell) as question number
 * o->n_asked, answered later at the prompt (`allow N` / `deny N`, `accept N` /
 * `decline N`) while the session keeps serving the KMS; returns
 * PSC_PEER_DECIDE_LATER (0 = deny at once when too many are open). */
int psc_cli_ask(opts *o, ask_kind kind, uint64_t decision_id, uint32_t timeout_ms);

/* psc_peer_certs.c: loads every path (a PEM file with one or more
 * certificates, or a directory of them); with ca_file, each must chain to it.
 * Prints a clear error naming the file and returns -1 on failure. */
int psc_cli_certs_load(cert_set **out, const char *const *paths, size_t n, const char *overlay,
		       const char *ca_file);
size_t psc_cli_certs_count(const cert_set *s);
void psc_cli_certs_free(cert_set **s);
/* psc_peer_sender_cert_fn over a cert_set (user = the cert_set). */
psc_rc psc_cli_certs_lookup(void *user, const uint8_t psc_id[PSC_PEER_ID_LEN],
			    const uint8_t node_id[PSC_PEER_ID_LEN], uint8_t *der, size_t cap,
			    size_t *len);

#endif
