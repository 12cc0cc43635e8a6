/*
 * psc-kmsctl — the operator's tool. This stage has the key ceremony:
 *
 *   psc-kmsctl init [-c CONFIG] [--subject "/O=Org/CN=kms1"] [--node-id HEX]
 *                   [--csr FILE] [--rsa BITS] [--force]
 *
 * On the token named in CONFIG it creates the master KEK, the KMS identity key
 * pair and the audit key pair, writes a CSR for the KMS certificate (its
 * subjectAltName binds the KMS Node-ID), and generates the CURVE key pair for
 * the peer socket if the files named in CONFIG do not exist. Re-running is safe:
 * existing keys are kept (and said so) unless --force.
 * Against the running daemon, over its admin socket (admin_socket in CONFIG,
 * an ipc:// path whose file permissions are the access control):
 *
 *   psc-kmsctl status [-c CONFIG] [--json]
 *   psc-kmsctl psc list [-c CONFIG] [--json]
 *   psc-kmsctl psc show PSC-ID [-c CONFIG] [--json]
 *   psc-kmsctl peer list [-c CONFIG] [--json]
 *   psc-kmsctl peer ban NODE-ID [-c CONFIG] [--json]
 *   psc-kmsctl policy reload [-c CONFIG] [--json]
 *   psc-kmsctl audit checkpoint [-c CONFIG] [--json]
 *   psc-kmsctl psc destroy PSC-ID | peer show NODE-ID | peer unban NODE-ID
 *   psc-kmsctl backup FILE [-c CONFIG] [--json]
 *   psc-kmsctl rotate master-kek [--chunk N] [--pause-ms MS] [--wait] [-c CONFIG] [--json]
 *
 * Offline (the daemon stopped / not needed):
 *
 *   psc-kmsctl restore FILE [-c CONFIG] [--json]      (kms_backup.h)
 *   psc-kmsctl audit pubkey [-c CONFIG] [-o FILE]     the audit public key, PEM
 *
 * The daemon answers JSON (kms_admin.h); --json prints it unchanged, otherwise
 * it is shown as indented "key: value" lines.
 * Exit status: 0 ok, 1 failure, 2 usage or configuration error.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <zmq.h>

#include "hsm_ceremony.h"
#include "hsm_ctx.h"
#include "kms_backup.h"
#include "kms_config.h"
#include "proto_cert.h"

static const char usage[] =
	"usage: psc-kmsctl init [-c CONFIG] [--subject SUBJECT] [--node-id HEX] [--csr FILE]\n"
	"                       [--rsa BITS] [--force]\n"
	"\n"
	"init   the key ceremony on the token named in CONFIG (default\n"
	"       /etc/psc-kms/kms.yaml): master KEK, KMS identity key pair (ECDSA P-256,\n"
	"       or RSA with --rsa), audit key pair; writes a CSR for the KMS certificate\n"
	"       (default: next to identity.certificate, with .csr) whose subjectAltName\n"
	"       is reload://NODE-ID@OVERLAY/ (a random Node-ID unless --node-id), and\n"
	"       CURVE keys for the peer socket when missing. Existing keys are kept\n"
	"       unless --force, which destroys and recreates them (every stored epoch\n"
	"       blob becomes unusable: only on a fresh installation). Also writes the\n"
	"       audit public key (PEM) as audit-pub.pem next to the CSR, for\n"
	"       psc-audit verify --pubkey.\n"
	"\n"
	"Offline (psc-kmsd stopped for restore; not needed for audit pubkey):\n"
	"  psc-kmsctl restore FILE       [-c CONFIG] [--json]  put a backup in place: checks\n"
	"       that every blob unwraps on this token (same master KEK), that the audit\n"
	"       log reaches the backup's position, records an epoch floor per PSC from\n"
	"       the audit log (psc-kmsd rekeys every PSC above it at its next start),\n"
	"       audits kms.restore and keeps the replaced database as\n"
	"       STATE_DB.replaced-TIME\n"
	"  psc-kmsctl audit pubkey       [-c CONFIG] [-o FILE]  the audit public key (PEM)\n"
	"\n"
	"Against the running psc-kmsd, over its admin socket (admin_socket in CONFIG):\n"
	"  psc-kmsctl status             [-c CONFIG] [--json]  uptime, HSM, audit, counts, policy\n"
	"  psc-kmsctl psc list           [-c CONFIG] [--json]  live PSCs\n"
	"  psc-kmsctl psc show PSC-ID    [-c CONFIG] [--json]  one PSC and its members\n"
	"  psc-kmsctl peer list          [-c CONFIG] [--json]  known peers\n"
	"  psc-kmsctl peer ban NODE-ID   [-c CONFIG] [--json]  ban a peer, evict it everywhere\n"
	"  psc-kmsctl policy reload      [-c CONFIG] [--json]  reload policy_file\n"
	"  psc-kmsctl audit checkpoint   [-c CONFIG] [--json]  write a signed checkpoint now\n"
	"  psc-kmsctl psc destroy PSC-ID [-c CONFIG] [--json]  destroy a PSC (members told)\n"
	"  psc-kmsctl peer show NODE-ID  [-c CONFIG] [--json]  one peer and its PSCs\n"
	"  psc-kmsctl peer unban NODE-ID [-c CONFIG] [--json]  lift a ban (it must Initialize\n"
	"                                                      and join again)\n"
	"  psc-kmsctl backup FILE        [-c CONFIG] [--json]  online snapshot of the state\n"
	"       (written by psc-kmsd as its service user; FILE must not exist)\n"
	"  psc-kmsctl rotate master-kek  [--chunk N] [--pause-ms MS] [--wait] [-c CONFIG]\n"
	"       [--json]  new master KEK in the token; every stored blob re-wrapped\n"
	"       under it, N per step (default 64) with MS between steps (default 0);\n"
	"       resumes by itself after a restart; --wait shows progress until done.\n"
	"       Progress: psc-kmsctl status (kek_rotation)\n"
	"--json prints the daemon's JSON answer unchanged.\n"
	"\n"
	"Exit status: 0 ok, 1 failure, 2 usage or configuration error.\n";

static int write_new(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	if (fd < 0) {
		fprintf(stderr, "psc-kmsctl: %s: %s\n", path, strerror(errno));
		return -1;
	}
	size_t len = strlen(text);
	int ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
	close(fd);
	if (!ok)
		fprintf(stderr, "psc-kmsctl: writing %s failed: %s\n", path, strerror(errno));
	return ok ? 0 : -1;
}

static int curve_keys(const kms_config *cfg)
{
	if (!cfg->curve.enabled)
		return 0;
	if (access(cfg->curve.secret_key_file, F_OK) == 0) {
		printf("CURVE keys: %s exists, kept\n", cfg->curve.secret_key_file);
		return 0;
	}
	char pub[41], sec[41], line[64];
	if (zmq_curve_keypair(pub, sec) != 0) {
		fprintf(stderr, "psc-kmsctl: libzmq has no CURVE support\n");
		return -1;
	}
	snprintf(line, sizeof(line), "%s\n", sec);
	int rc = write_new(cfg->curve.secret_key_file, line, 0600);
	OPENSSL_cleanse(sec, sizeof(sec));
	OPENSSL_cleanse(line, sizeof(line));
	snprintf(line, sizeof(line), "%s\n", pub);
	if (rc == 0)
		rc = write_new(cfg->curve.public_key_file, line, 0644);
	if (rc == 0)
		printf("CURVE keys: wrote %s (secret) and %s (give it to peers)\n",
		       cfg->curve.secret_key_file, cfg->curve.public_key_file);
	return rc;
}

/* audit-pub.pem in the CSR's directory. */
static void audit_pub_path(const char *csr_path, char *out, size_t cap)
{
	const char *slash = strrchr(csr_path, '/');
	if (slash)
		snprintf(out, cap, "%.*s/audit-pub.pem", (int)(slash - csr_path), csr_path);
	else
		snprintf(out, cap, "audit-pub.pem");
}

/* The audit key's public half as PEM (SubjectPublicKeyInfo), to stream (path
 * NULL) or a new file. 0 ok. */
static int write_audit_pub(hsm_ctx *hsm, const char *path)
{
	EVP_PKEY *key = NULL;
	psc_err err;
	psc_err_clear(&err);
	if (hsm_audit_key(hsm, &key, &err) != PSC_OK) {
		fprintf(stderr, "psc-kmsctl: %s\n", psc_err_text(&err));
		return -1;
	}
	BIO *b = BIO_new(BIO_s_mem());
	char *pem = NULL;
	long n = 0;
	if (b && PEM_write_bio_PUBKEY(b, key) == 1)
		n = BIO_get_mem_data(b, &pem);
	int rc = -1;
	if (n <= 0) {
		fprintf(stderr, "psc-kmsctl: cannot encode the audit public key\n");
	} else {
		char *text = strndup(pem, (size_t)n);
		if (!text)
			fprintf(stderr, "psc-kmsctl: out of memory\n");
		else if (!path)
			rc = fputs(text, stdout) >= 0 ? 0 : -1;
		else if ((rc = write_new(path, text, 0644)) == 0)
			printf("audit public key written to %s (for psc-audit verify --pubkey)\n",
			       path);
		free(text);
	}
	BIO_free(b);
	EVP_PKEY_free(key);
	return rc;
}

/* Opens the token named in cfg (psc-kms keys required). NULL on failure
 * (message printed). */
static hsm_ctx *open_token(const kms_config *cfg)
{
	uint8_t pin[HSM_PIN_MAX + 1];
	size_t pin_len = 0;
	psc_err err;
	psc_err_clear(&err);
	if (kms_secret_read(cfg->hsm.pin_file, pin, HSM_PIN_MAX, &pin_len, &err) != PSC_OK) {
		fprintf(stderr, "psc-kmsctl: %s\n", psc_err_text(&err));
		return NULL;
	}
	pin[pin_len] = '\0';
	hsm_config hc = {.module_path = cfg->hsm.module, .token_label = cfg->hsm.token_label,
			 .pin = (const char *)pin, .sessions = 1};
	hsm_ctx *hsm = NULL;
	psc_rc prc = hsm_ctx_new(&hsm, &hc, &err);
	OPENSSL_cleanse(pin, sizeof(pin));
	if (prc != PSC_OK) {
		fprintf(stderr, "psc-kmsctl: %s\n", psc_err_text(&err));
		return NULL;
	}
	return hsm;
}

/* psc-kmsctl audit pubkey [-c CONFIG] [-o FILE] */
static int cmd_audit_pubkey(int argc, char **argv)
{
	const char *config = "/etc/psc-kms/kms.yaml", *out = NULL;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			config = argv[++i];
		else if (strcmp(argv[i], "-o") == 0 && i + 1 < argc)
			out = argv[++i];
		else {
			fprintf(stderr, "psc-kmsctl audit pubkey: unknown argument '%s'\n%s", argv[i],
				usage);
			return 2;
		}
	}
	kms_config *cfg = NULL;
	psc_err err;
	psc_err_clear(&err);
	if (kms_config_load(&cfg, config, &err) != PSC_OK) {
		fprintf(stderr, "psc-kmsctl: %s\n", psc_err_text(&err));
		return 2;
	}
	hsm_ctx *hsm = open_token(cfg);
	int rc = hsm && write_audit_pub(hsm, out) == 0 ? 0 : 1;
	hsm_ctx_free(&hsm);
	kms_config_free(&cfg);
	return rc;
}

/* psc-kmsctl restore FILE [-c CONFIG] [--json] (kms_backup.h) */
static int cmd_restore(int argc, char **argv)
{
	const char *config = "/etc/psc-kms/kms.yaml", *file = NULL;
	bool json = false;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			config = argv[++i];
		else if (strcmp(argv[i], "--json") == 0)
			json = true;
		else if (argv[i][0] != '-' && !file)
			file = argv[i];
		else {
			fprintf(stderr, "psc-kmsctl restore: unknown argument '%s'\n%s", argv[i],
				usage);
			return 2;
		}
	}
	if (!file) {
		fprintf(stderr, "psc-kmsctl restore: which backup file?\n%s", usage);
		return 2;
	}
	kms_config *cfg = NULL;
	psc_err err;
	psc_err_clear(&err);
	if (kms_config_load(&cfg, config, &err) != PSC_OK) {
		fprintf(stderr, "psc-kmsctl: %s\n", psc_err_text(&err));
		return 2;
	}
	int rc = 1;
	EVP_PKEY *akey = NULL;
	hsm_ctx *hsm = open_token(cfg);
	if (!hsm)
		goto out;
	if (hsm_audit_key(hsm, &akey, &err) != PSC_OK) {
		fprintf(stderr, "psc-kmsctl: %s\n", psc_err_text(&err));
		goto out;
	}
	kms_restore_opts o = {.backup = file, .cfg = cfg, .hsm = hsm, .audit_key = akey,
			      .progress = json ? NULL : stdout};
	kms_restore_result r;
	if (kms_restore(&o, &r, &err) != PSC_OK) {
		if (json)
			printf("{\"ok\":false,\"error\":\"restore failed (see stderr)\"}\n");
		fprintf(stderr, "psc-kmsctl: restore refused, nothing changed: %s\n",
			psc_err_text(&err));
		goto out;
	}
	if (json)
		printf("{\"ok\":true,\"backup_seq\":%llu,\"audit_seq\":%llu,\"pscs\":%llu,"
		       "\"blobs\":%llu,\"epoch_floors\":%llu,\"rekeys_due\":%llu}\n",
		       (unsigned long long)r.backup_seq, (unsigned long long)r.audit_seq,
		       (unsigned long long)r.pscs_live, (unsigned long long)r.blobs,
		       (unsigned long long)r.floors, (unsigned long long)r.rekeys_due);
	else
		printf("restored %s into %s (kms.restore is audit record %llu)\n"
		       "%llu epoch floors recorded; psc-kmsd rekeys %llu PSCs above every epoch "
		       "ever issued when it starts\n%s%s%s",
		       file, cfg->state_db, (unsigned long long)r.audit_seq,
		       (unsigned long long)r.floors, (unsigned long long)r.rekeys_due,
		       r.replaced[0] ? "the previous database is kept as " : "",
		       r.replaced, r.replaced[0] ? "\n" : "");
	rc = 0;
out:
	EVP_PKEY_free(akey);
	hsm_ctx_free(&hsm);
	kms_config_free(&cfg);
	return rc;
}

static int cmd_init(int argc, char **argv)
{
	const char *config = "/etc/psc-kms/kms.yaml", *subject = "/O=PSC/CN=psc-kms",
		   *node_hex = NULL, *csr_path = NULL;
	unsigned rsa = 0;
	bool force = false;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			config = argv[++i];
		else if (strcmp(argv[i], "--subject") == 0 && i + 1 < argc)
			subject = argv[++i];
		else if (strcmp(argv[i], "--node-id") == 0 && i + 1 < argc)
			node_hex = argv[++i];
		else if (strcmp(argv[i], "--csr") == 0 && i + 1 < argc)
			csr_path = argv[++i];
		else if (strcmp(argv[i], "--rsa") == 0 && i + 1 < argc)
			rsa = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--force") == 0)
			force = true;
		else {
			fprintf(stderr, "psc-kmsctl init: unknown argument '%s'\n%s", argv[i], usage);
			return 2;
		}
	}
	kms_config *cfg = NULL;
	psc_err err;
	psc_err_clear(&err);
	if (kms_config_load(&cfg, config, &err) != PSC_OK) {
		fprintf(stderr, "psc-kmsctl: %s\n", psc_err_text(&err));
		return 2;
	}
	uint8_t node[PSC_NODE_ID_LEN];
	if (node_hex ? proto_id_from_hex(node_hex, node) != PSC_OK
		     : RAND_bytes(node, sizeof(node)) != 1) {
		fprintf(stderr, "psc-kmsctl: --node-id must be 32 hex digits\n");
		kms_config_free(&cfg);
		return 2;
	}
	char hex[33], uri[512], csr_buf[4200];
	proto_id_hex(node, hex);
	snprintf(uri, sizeof(uri), "reload://%s@%s/", hex, cfg->overlay);
	if (!csr_path) {
		snprintf(csr_buf, sizeof(csr_buf), "%s.csr", cfg->identity.certificate);
		csr_path = csr_buf;
	}
	uint8_t pin[HSM_PIN_MAX + 1];
	size_t pin_len = 0;
	int rc = 1;
	hsm_ctx *hsm = NULL;
	if (kms_secret_read(cfg->hsm.pin_file, pin, HSM_PIN_MAX, &pin_len, &err) != PSC_OK) {
		fprintf(stderr, "psc-kmsctl: %s\n", psc_err_text(&err));
		goto out;
	}
	pin[pin_len] = '\0';
	hsm_config hc = {.module_path = cfg->hsm.module, .token_label = cfg->hsm.token_label,
			 .pin = (const char *)pin, .sessions = 1, .allow_no_kek = true};
	psc_rc prc = hsm_ctx_new(&hsm, &hc, &err);
	OPENSSL_cleanse(pin, sizeof(pin));
	if (prc != PSC_OK) {
		fprintf(stderr, "psc-kmsctl: %s\n", psc_err_text(&err));
		goto out;
	}
	hsm_ceremony_opts o = {.subject = subject, .uri_san = uri, .rsa_bits = rsa,
			       .overwrite = force};
	uint8_t kek[HSM_KEK_ID_LEN];
	char *csr = NULL;
	prc = hsm_ceremony(hsm, &o, kek, &csr, &err);
	char pub_path[4200];
	audit_pub_path(csr_path, pub_path, sizeof(pub_path));
	if (prc == PSC_E_HSM_KEY_EXISTS) {
		printf("token '%s' already holds the psc-kms keys: nothing changed (use --force "
		       "only on a fresh installation)\n", cfg->hsm.token_label);
		rc = curve_keys(cfg) ? 1 : 0;
		if (rc == 0 && access(pub_path, F_OK) != 0)
			rc = write_audit_pub(hsm, pub_path) ? 1 : 0;
		goto out;
	}
	if (prc != PSC_OK) {
		fprintf(stderr, "psc-kmsctl: ceremony failed: %s\n", psc_err_text(&err));
		goto out;
	}
	if (write_new(csr_path, csr, 0644) != 0) {
		free(csr);
		goto out;
	}
	free(csr);
	printf("token '%s': created master KEK, identity key pair (%s), audit key pair\n",
	       cfg->hsm.token_label, rsa ? "RSA" : "ECDSA P-256");
	printf("KMS Node-ID %s\nCSR written to %s\n", hex, csr_path);
	if (write_audit_pub(hsm, pub_path) != 0 || curve_keys(cfg) != 0)
		goto out;
	printf("next: have the overlay CA sign %s and install the certificate as %s, then "
	       "start psc-kmsd\n", csr_path, cfg->identity.certificate);
	rc = 0;
out:
	hsm_ctx_free(&hsm);
	kms_config_free(&cfg);
	return rc;
}


/* ---- admin socket client -------------------------------------------------- */

/* Human-readable rendering of the daemon's JSON: "key: value" lines, nested
 * objects indented, array elements as "-" items. */
typedef struct jr {
	const char *p;
	bool bad;
} jr;

static void jr_ws(jr *r)
{
	while (*r->p == ' ' || *r->p == '\n' || *r->p == '\t' || *r->p == '\r')
		r->p++;
}

/* Reads a string (at its opening quote) into out, unescaped. */
static void jr_string(jr *r, char *out, size_t cap)
{
	size_t n = 0;
	if (*r->p != '"') {
		r->bad = true;
		return;
	}
	r->p++;
	while (*r->p && *r->p != '"') {
		char c = *r->p++;
		if (c == '\\') {
			char e = *r->p ? *r->p++ : '\0';
			if (e == 'u') {
				unsigned v = 0;
				for (int i = 0; i < 4 && *r->p; i++, r->p++)
					v = v * 16 + (unsigned)(*r->p >= 'a' ? *r->p - 'a' + 10
							: *r->p >= 'A' ? *r->p - 'A' + 10 : *r->p - '0');
				c = v >= 0x20 && v < 0x7f ? (char)v : '?';
			} else {
				c = e == 'n' ? '\n' : e == 't' ? '\t' : e;
			}
		}
		if (n + 1 < cap)
			out[n++] = c;
	}
	if (*r->p == '"')
		r->p++;
	else
		r->bad = true;
	out[n] = '\0';
}

static void jr_value(jr *r, int indent, bool after_key);

static void jr_object(jr *r, int indent, bool top)
{
	r->p++; /* { */
	jr_ws(r);
	if (*r->p == '}') {
		r->p++;
		printf("%*s(none)\n", indent, "");
		return;
	}
	while (!r->bad) {
		jr_ws(r);
		char key[256];
		jr_string(r, key, sizeof(key));
		jr_ws(r);
		if (*r->p != ':') {
			r->bad = true;
			return;
		}
		r->p++;
		jr_ws(r);
		if (top && strcmp(key, "ok") == 0) {
			char skip[8];
			(void)sscanf(r->p, "%7[a-z]", skip);
			r->p += strlen(skip);
		} else {
			printf("%*s%s:", indent, "", key);
			jr_value(r, indent + 2, true);
		}
		jr_ws(r);
		if (*r->p == ',') {
			r->p++;
			continue;
		}
		if (*r->p == '}')
			r->p++;
		else
			r->bad = true;
		return;
	}
}

static void jr_array(jr *r, int indent)
{
	r->p++; /* [ */
	jr_ws(r);
	if (*r->p == ']') {
		r->p++;
		printf("%*s(none)\n", indent, "");
		return;
	}
	while (!r->bad) {
		jr_ws(r);
		printf("%*s-", indent, "");
		jr_value(r, indent + 2, true);
		jr_ws(r);
		if (*r->p == ',') {
			r->p++;
			continue;
		}
		if (*r->p == ']')
			r->p++;
		else
			r->bad = true;
		return;
	}
}

static void jr_value(jr *r, int indent, bool after_key)
{
	(void)after_key;
	jr_ws(r);
	if (*r->p == '{') {
		putchar('\n');
		jr_object(r, indent, false);
	} else if (*r->p == '[') {
		putchar('\n');
		jr_array(r, indent);
	} else if (*r->p == '"') {
		char v[1024];
		jr_string(r, v, sizeof(v));
		printf(" %s\n", v);
	} else {
		const char *s = r->p;
		while (*r->p && *r->p != ',' && *r->p != '}' && *r->p != ']' && *r->p != ' ')
			r->p++;
		if (r->p == s)
			r->bad = true;
		printf(" %.*s\n", (int)(r->p - s), s);
	}
}

/* The "error" member of a failure reply. */
static void reply_error_text(const char *json, char *out, size_t cap)
{
	const char *e = strstr(json, "\"error\":");
	snprintf(out, cap, "%s", json);
	if (e) {
		jr r = {.p = e + 8};
		jr_string(&r, out, cap);
	}
}

/* Sends one request line to the daemon; *reply gets its JSON answer. 0 ok,
 * 1 the daemon cannot be reached (message printed). */
static int admin_call(const kms_config *cfg, const char *line, int timeout_ms, char **reply)
{
	const char *ep = cfg->admin_socket;
	const char *path = strncmp(ep, "ipc://", 6) == 0 ? ep + 6 : ep;
	struct stat st;
	if (stat(path, &st) != 0) {
		fprintf(stderr, "psc-kmsctl: cannot reach psc-kmsd at %s: is it running? (%s)\n", ep,
			strerror(errno));
		return 1;
	}
	if (access(path, R_OK | W_OK) != 0) {
		fprintf(stderr, "psc-kmsctl: cannot reach psc-kmsd at %s: %s (run as the service "
			"user or a member of its group)\n", ep, strerror(errno));
		return 1;
	}
	void *ctx = zmq_ctx_new();
	void *s = ctx ? zmq_socket(ctx, ZMQ_REQ) : NULL;
	int rc = 1;
	zmq_msg_t msg;
	zmq_msg_init(&msg);
	if (!s) {
		fprintf(stderr, "psc-kmsctl: ZeroMQ: %s\n", zmq_strerror(zmq_errno()));
		goto out;
	}
	int linger = 0;
	(void)zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
	if (zmq_connect(s, ep) != 0 || zmq_send(s, line, strlen(line), 0) < 0) {
		fprintf(stderr, "psc-kmsctl: cannot reach psc-kmsd at %s: is it running? (%s)\n", ep,
			zmq_strerror(zmq_errno()));
		goto out;
	}
	zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
	if (zmq_poll(&it, 1, timeout_ms) <= 0 || zmq_msg_recv(&msg, s, 0) < 0) {
		fprintf(stderr, "psc-kmsctl: cannot reach psc-kmsd at %s: is it running? (no answer "
			"within %d s)\n", ep, timeout_ms / 1000);
		goto out;
	}
	size_t n = zmq_msg_size(&msg);
	*reply = malloc(n + 1);
	if (!*reply) {
		fprintf(stderr, "psc-kmsctl: out of memory\n");
		goto out;
	}
	memcpy(*reply, zmq_msg_data(&msg), n);
	(*reply)[n] = '\0';
	rc = 0;
out:
	zmq_msg_close(&msg);
	if (s)
		zmq_close(s);
	if (ctx)
		zmq_ctx_term(ctx);
	return rc;
}

/* The daemon reads requests of at most 512 bytes; a backup path is at most 255. */
#define ADMIN_LINE_MAX 300

/* Commands sent to the daemon: words, and how many arguments follow them. */
static const struct {
	const char *words;
	int args;
} admin_cmds[] = {
    {"status", 0},	   {"psc list", 0},	      {"psc show", 1},
    {"psc destroy", 1},	   {"peer list", 0},	      {"peer show", 1},
    {"peer ban", 1},	   {"peer unban", 1},	      {"policy reload", 0},
    {"audit checkpoint", 0}, {"backup", 1},	      {"rotate master-kek", 0},
};

/* Appends to an admin request line; false if it would not fit. */
static bool line_add(char *line, size_t cap, const char *sep, const char *word)
{
	size_t used = strlen(line);
	if (used + strlen(sep) + strlen(word) + 1 > cap)
		return false;
	memcpy(line + used, sep, strlen(sep));
	memcpy(line + used + strlen(sep), word, strlen(word) + 1);
	return true;
}

/* A "key":number member of a flat JSON reply (0 if absent). */
static unsigned long long reply_num(const char *json, const char *key)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	const char *p = strstr(json, pat);
	return p ? strtoull(p + strlen(pat), NULL, 10) : 0;
}

/* rotate master-kek --wait: status until the rotation is over, a line per change. */
static int wait_rotation(const kms_config *cfg)
{
	unsigned long long last_left = (unsigned long long)-1;
	for (;;) {
		char *reply = NULL;
		if (admin_call(cfg, "status", 10000, &reply) != 0)
			return 1;
		const char *kr = strstr(reply, "\"kek_rotation\":{");
		bool active = kr && strncmp(kr + 16, "\"active\":true", 13) == 0;
		if (!active) {
			const char *to = kr ? strstr(kr, "\"last_done_to\":\"") : NULL;
			printf("KEK rotation done%s%.*s\n", to ? ": current KEK " : "", to ? 32 : 0,
			       to ? to + 16 : "");
			free(reply);
			return 0;
		}
		unsigned long long left = reply_num(kr, "remaining"), done = reply_num(kr, "rewrapped");
		if (left != last_left)
			printf("KEK rotation: %llu re-wrapped, %llu to go\n", done, left);
		fflush(stdout);
		last_left = left;
		const char *le = strstr(kr, "\"last_error\":\"");
		if (le)
			fprintf(stderr, "psc-kmsctl: the last step failed (it is retried): %.200s\n",
				le + 14);
		free(reply);
		usleep(500 * 1000);
	}
}

/* Commands for the running daemon, with -c CONFIG, --json and (rotate) --chunk,
 * --pause-ms, --wait anywhere after the command. */
static int cmd_admin(int argc, char **argv)
{
	const char *config = "/etc/psc-kms/kms.yaml", *chunk = NULL, *pause = NULL;
	bool json = false, wait = false;
	char line[ADMIN_LINE_MAX] = "";
	const char *words[4] = {0};
	size_t n = 0;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			config = argv[++i];
		} else if (strcmp(argv[i], "--json") == 0) {
			json = true;
		} else if (strcmp(argv[i], "--wait") == 0) {
			wait = true;
		} else if (strcmp(argv[i], "--chunk") == 0 && i + 1 < argc) {
			chunk = argv[++i];
		} else if (strcmp(argv[i], "--pause-ms") == 0 && i + 1 < argc) {
			pause = argv[++i];
		} else if (argv[i][0] == '-' || strpbrk(argv[i], " \t\r\n") || n == 4 ||
			   strlen(argv[i]) > 1000) {
			fprintf(stderr, "psc-kmsctl: unknown or unusable argument '%s'\n%s", argv[i],
				usage);
			return 2;
		} else {
			words[n++] = argv[i];
		}
	}
	int found = -1;
	for (size_t c = 0; c < sizeof(admin_cmds) / sizeof(admin_cmds[0]) && found < 0; c++) {
		char joined[64] = "";
		size_t w = 0;
		for (; w < n && strlen(joined) < strlen(admin_cmds[c].words); w++)
			snprintf(joined + strlen(joined), sizeof(joined) - strlen(joined), "%s%s",
				 w ? " " : "", words[w]);
		if (strcmp(joined, admin_cmds[c].words) == 0 && n == w + (size_t)admin_cmds[c].args)
			found = (int)c;
	}
	bool rotate = found >= 0 && strcmp(admin_cmds[found].words, "rotate master-kek") == 0;
	if (found < 0 || ((chunk || pause || wait) && !rotate)) {
		fprintf(stderr, "psc-kmsctl: unknown command '");
		for (size_t w = 0; w < n; w++)
			fprintf(stderr, "%s%s", w ? " " : "", words[w]);
		fprintf(stderr, "'%s\n%s", found >= 0 ? " with those options" : "", usage);
		return 2;
	}
	/* PSC ids and Node-IDs are checked here too, so a typo is a usage error
	 * even when the daemon is not running. */
	if (admin_cmds[found].args == 1 && strcmp(admin_cmds[found].words, "backup") != 0) {
		uint8_t id[PSC_NODE_ID_LEN];
		if (proto_id_from_hex(words[n - 1], id) != PSC_OK) {
			fprintf(stderr, "psc-kmsctl: %s needs %s of 32 hex digits, not '%s'\n",
				admin_cmds[found].words,
				strncmp(admin_cmds[found].words, "psc", 3) == 0 ? "a PSC id"
										 : "a Node-ID",
				words[n - 1]);
			return 2;
		}
	}
	for (size_t w = 0; w < n; w++) {
		const char *word = words[w];
		char abs[ADMIN_LINE_MAX];
		/* The daemon writes the backup: it needs an absolute path. */
		if (strcmp(admin_cmds[found].words, "backup") == 0 && w == n - 1 && word[0] != '/') {
			char cwd[512];
			if (!getcwd(cwd, sizeof(cwd))) {
				fprintf(stderr, "psc-kmsctl: cannot resolve '%s': %s\n", word,
					strerror(errno));
				return 2;
			}
			if (strlen(cwd) + strlen(word) + 2 > sizeof(abs)) {
				fprintf(stderr, "psc-kmsctl: backup path too long\n");
				return 2;
			}
			abs[0] = '\0';
			(void)!line_add(abs, sizeof(abs), "", cwd);
			(void)!line_add(abs, sizeof(abs), "/", word);
			word = abs;
		}
		if (!line_add(line, ADMIN_LINE_MAX, w ? " " : "", word)) {
			fprintf(stderr, "psc-kmsctl: '%s' is too long (a request is at most %d "
				"bytes)\n", word, ADMIN_LINE_MAX - 1);
			return 2;
		}
	}
	if (rotate) {
		if (chunk && strcmp(chunk, "0") == 0) {
			fprintf(stderr, "psc-kmsctl: --chunk must be at least 1\n");
			return 2;
		}
		if (!line_add(line, ADMIN_LINE_MAX, " ", chunk ? chunk : "0") ||
		    (pause && !line_add(line, ADMIN_LINE_MAX, " ", pause))) {
			fprintf(stderr, "psc-kmsctl: --chunk / --pause-ms value too long\n");
			return 2;
		}
	}
	kms_config *cfg = NULL;
	psc_err err;
	psc_err_clear(&err);
	if (kms_config_load(&cfg, config, &err) != PSC_OK) {
		fprintf(stderr, "psc-kmsctl: %s\n", psc_err_text(&err));
		return 2;
	}
	char *reply = NULL;
	int timeout = 10000;
	if (strncmp(line, "peer ban", 8) == 0 || strncmp(line, "psc destroy", 11) == 0)
		timeout = 60000;
	else if (strncmp(line, "backup", 6) == 0)
		timeout = 600000;
	int rc = admin_call(cfg, line, timeout, &reply);
	if (rc != 0) {
		kms_config_free(&cfg);
		return 1;
	}
	bool success = strncmp(reply, "{\"ok\":true", 10) == 0;
	if (json) {
		printf("%s\n", reply);
	} else if (!success) {
		char msg[1024];
		reply_error_text(reply, msg, sizeof(msg));
		fprintf(stderr, "psc-kmsctl: %s\n", msg);
	} else {
		jr r = {.p = reply};
		jr_ws(&r);
		if (*r.p == '{')
			jr_object(&r, 0, true);
		if (r.bad)
			fprintf(stderr, "psc-kmsctl: the daemon's answer is not well-formed JSON\n");
	}
	free(reply);
	if (success && rotate && wait)
		success = wait_rotation(cfg) == 0;
	kms_config_free(&cfg);
	return success ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		fputs(usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "init") == 0)
		return cmd_init(argc - 2, argv + 2);
	if (strcmp(argv[1], "restore") == 0)
		return cmd_restore(argc - 2, argv + 2);
	if (strcmp(argv[1], "audit") == 0 && argc > 2 && strcmp(argv[2], "pubkey") == 0)
		return cmd_audit_pubkey(argc - 3, argv + 3);
	if (strcmp(argv[1], "status") == 0 || strcmp(argv[1], "psc") == 0 ||
	    strcmp(argv[1], "peer") == 0 || strcmp(argv[1], "policy") == 0 ||
	    strcmp(argv[1], "audit") == 0 || strcmp(argv[1], "backup") == 0 ||
	    strcmp(argv[1], "rotate") == 0)
		return cmd_admin(argc - 1, argv + 1);
	fprintf(stderr, "psc-kmsctl: unknown command '%s'\n%s", argv[1], usage);
	return 2;
}
