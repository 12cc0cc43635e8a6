/*
 * psc_peer_certs — member certificates for psc-peer (--member-cert).
 *
 * The KMS does not distribute members' certificates, so a member of a PSC
 * with sender signatures cannot verify (and therefore drops) the others'
 * messages unless the application supplies their certificates. This module
 * loads them from PEM files or directories given by the operator, indexes
 * them by the Node-ID their reload:// URI binds in the overlay, and serves
 * them to the SDK's sender_cert lookup.
 * Trust: the certificates are taken as the operator's statement, like
 * --kms-cert; with --member-ca each must also chain to that CA bundle and be
 * within its validity period at load. Revocation is not checked here.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "proto_cert.h"
#include "psc_peer_cli.h"

typedef struct member_cert {
	uint8_t node_id[PSC_PEER_ID_LEN];
	uint8_t *der;
	size_t len;
} member_cert;

struct cert_set {
	member_cert *v;
	size_t n, cap;
	X509_STORE *ca; /* --member-ca, or NULL */
	const char *overlay;
};

static int add_cert(cert_set *s, X509 *x, const char *path, int strict)
{
	uint8_t id[PSC_PEER_ID_LEN];
	psc_err err = {0};
	if (proto_cert_node_id(x, s->overlay, id, &err) != PSC_OK) {
		if (!strict)
			return 0; /* a CA or another overlay's certificate in a directory */
		fprintf(stderr,
			"psc-peer: --member-cert %s: a certificate names no Node-ID in overlay "
			"'%s': %s\n",
			path, s->overlay, psc_err_text(&err));
		return -1;
	}
	if (s->ca) {
		X509_STORE_CTX *vc = X509_STORE_CTX_new();
		int ok =
		    vc && X509_STORE_CTX_init(vc, s->ca, x, NULL) == 1 && X509_verify_cert(vc) == 1;
		int why = vc ? X509_STORE_CTX_get_error(vc) : X509_V_ERR_OUT_OF_MEM;
		X509_STORE_CTX_free(vc);
		if (!ok) {
			/* A named file must be right; in a directory, one bad
			 * certificate does not hide the good ones. */
			char h[33];
			fprintf(stderr,
				"psc-peer: %s--member-cert %s: certificate of %s does not "
				"verify against --member-ca: %s%s\n",
				strict ? "" : "warning: ", path, psc_cli_hex(id, h),
				X509_verify_cert_error_string(why), strict ? "" : " (skipped)");
			return strict ? -1 : 0;
		}
	}
	for (size_t i = 0; i < s->n; i++)
		if (memcmp(s->v[i].node_id, id, PSC_PEER_ID_LEN) == 0)
			return 0; /* first one wins; the SDK checks the binding again */
	int dl = i2d_X509(x, NULL);
	if (dl <= 0 || (size_t)dl > PSC_PEER_MSG_CERT_MAX) {
		fprintf(stderr,
			"psc-peer: --member-cert %s: certificate too large (%d bytes, at most "
			"%d)\n",
			path, dl, PSC_PEER_MSG_CERT_MAX);
		return -1;
	}
	if (s->n == s->cap) {
		size_t nc = s->cap ? s->cap * 2 : 16;
		member_cert *nv = realloc(s->v, nc * sizeof(*nv));
		if (!nv)
			return -1;
		s->v = nv;
		s->cap = nc;
	}
	member_cert *m = &s->v[s->n];
	m->der = malloc((size_t)dl);
	uint8_t *w = m->der;
	if (!m->der || i2d_X509(x, &w) != dl) {
		free(m->der);
		return -1;
	}
	memcpy(m->node_id, id, PSC_PEER_ID_LEN);
	m->len = (size_t)dl;
	s->n++;
	return 0;
}

/* Every certificate of a PEM file. strict: the file was named, so it must hold
 * at least one certificate, and each must name a Node-ID. */
static int load_file(cert_set *s, const char *path, int strict)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "psc-peer: --member-cert %s: cannot open: %s\n", path,
			strerror(errno));
		return -1;
	}
	int count = 0, rc = 0;
	X509 *x;
	while ((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
		count++;
		rc = add_cert(s, x, path, strict);
		X509_free(x);
		if (rc)
			break;
	}
	fclose(f);
	if (rc == 0 && count == 0 && strict) {
		fprintf(stderr, "psc-peer: --member-cert %s: no PEM certificate in this file\n",
			path);
		return -1;
	}
	return rc;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int load_path(cert_set *s, const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		fprintf(stderr, "psc-peer: --member-cert %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode))
		return load_file(s, path, 1);
	DIR *d = opendir(path);
	if (!d) {
		fprintf(stderr, "psc-peer: --member-cert %s: cannot read the directory: %s\n", path,
			strerror(errno));
		return -1;
	}
	/* Only certificate-looking names: key files sit beside certificates. */
	struct dirent *e;
	int rc = 0;
	while (rc == 0 && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || ends_with(e->d_name, ".key.pem") ||
		    !(ends_with(e->d_name, ".pem") || ends_with(e->d_name, ".crt")))
			continue;
		char p[4096];
		if (snprintf(p, sizeof(p), "%s/%s", path, e->d_name) >= (int)sizeof(p))
			continue;
		if (stat(p, &st) == 0 && S_ISREG(st.st_mode))
			rc = load_file(s, p, 0);
	}
	closedir(d);
	return rc;
}

int psc_cli_certs_load(cert_set **out, const char *const *paths, size_t n, const char *overlay,
		       const char *ca_file)
{
	*out = NULL;
	cert_set *s = calloc(1, sizeof(*s));
	if (!s)
		return -1;
	s->overlay = overlay;
	if (ca_file) {
		s->ca = X509_STORE_new();
		if (!s->ca || X509_STORE_load_file(s->ca, ca_file) != 1) {
			fprintf(stderr,
				"psc-peer: --member-ca %s: cannot load a PEM CA bundle from "
				"it\n",
				ca_file);
			psc_cli_certs_free(&s);
			return -1;
		}
	}
	for (size_t i = 0; i < n; i++)
		if (load_path(s, paths[i]) != 0) {
			psc_cli_certs_free(&s);
			return -1;
		}
	*out = s;
	return 0;
}

size_t psc_cli_certs_count(const cert_set *s)
{
	return s ? s->n : 0;
}

void psc_cli_certs_free(cert_set **sp)
{
	if (!sp || !*sp)
		return;
	cert_set *s = *sp;
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i].der);
	free(s->v);
	X509_STORE_free(s->ca);
	free(s);
	*sp = NULL;
}

psc_rc psc_cli_certs_lookup(void *user, const uint8_t psc_id[PSC_PEER_ID_LEN],
			    const uint8_t node_id[PSC_PEER_ID_LEN], uint8_t *der, size_t cap,
			    size_t *len)
{
	(void)psc_id;
	const cert_set *s = user;
	for (size_t i = 0; s && i < s->n; i++)
		if (memcmp(s->v[i].node_id, node_id, PSC_PEER_ID_LEN) == 0) {
			if (s->v[i].len > cap)
				return PSC_E_PEER_NOT_FOUND;
			memcpy(der, s->v[i].der, s->v[i].len);
			*len = s->v[i].len;
			return PSC_OK;
		}
	return PSC_E_PEER_NOT_FOUND;
}
