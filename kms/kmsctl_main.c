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
 * Exit status: 0 ok, 1 failure, 2 usage or configuration error.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <zmq.h>

#include "hsm_ceremony.h"
#include "hsm_ctx.h"
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
	"       blob becomes unusable: only on a fresh installation).\n"
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
	if (prc == PSC_E_HSM_KEY_EXISTS) {
		printf("token '%s' already holds the psc-kms keys: nothing changed (use --force "
		       "only on a fresh installation)\n", cfg->hsm.token_label);
		rc = curve_keys(cfg) ? 1 : 0;
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
	if (curve_keys(cfg) != 0)
		goto out;
	printf("next: have the overlay CA sign %s and install the certificate as %s, then "
	       "start psc-kmsd\n", csr_path, cfg->identity.certificate);
	rc = 0;
out:
	hsm_ctx_free(&hsm);
	kms_config_free(&cfg);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		fputs(usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "init") == 0)
		return cmd_init(argc - 2, argv + 2);
	fprintf(stderr, "psc-kmsctl: unknown command '%s'\n%s", argv[1], usage);
	return 2;
}
