/*
 * psc_vs_tls_pki — member certificates for psc_vs_tls, issued in-process by
 * the temp test CA with the shape tests/fixtures/mkca.sh's v3_peer profile
 * gives (EC P-256, reload://<node-id>@<overlay>/ URI, client+server auth): the
 * fixture has 8 peers and 512 `openssl ca` runs would take minutes.
 * Never: reuses a Node-ID (serials are distinct per call) or keeps a key in
 * memory longer than writing it.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "psc_vs_tls.h"

static int add_ext(X509 *ca, X509 *x, int nid, const char *value)
{
	X509V3_CTX c;
	X509V3_set_ctx(&c, ca, x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &c, nid, value);
	int ok = e && X509_add_ext(x, e, -1) == 1;
	X509_EXTENSION_free(e);
	return ok ? 0 : -1;
}

static int write_pem(const char *path, EVP_PKEY *k, X509 *x)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	int ok = k ? PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) : PEM_write_X509(f, x);
	return (fclose(f) == 0 && ok) ? 0 : -1;
}

static int issue_one(X509 *ca, EVP_PKEY *ca_key, const char *dir, const char *overlay,
		     const char *name, unsigned serial, pvt_ident *id)
{
	char nid[33], san[200];
	snprintf(nid, sizeof(nid), "70767400%024x", serial); /* "pvt\0" + serial */
	for (size_t i = 0; i < 16; i++) {
		unsigned b;
		if (sscanf(nid + 2 * i, "%2x", &b) != 1)
			return -1;
		id->node_id[i] = (uint8_t)b;
	}
	snprintf(san, sizeof(san), "URI:reload://%s@%s/,email:%s@%s", nid, overlay, name, overlay);
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_NAME *n = X509_NAME_new();
	int rc = -1;
	if (!k || !x || !n)
		goto out;
	X509_set_version(x, X509_VERSION_3);
	ASN1_INTEGER_set_uint64(X509_get_serialNumber(x), 0x200000u + serial);
	X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)"PSC Test", -1, -1,
				   0);
	X509_NAME_add_entry_by_txt(n, "OU", MBSTRING_ASC, (const unsigned char *)"peers", -1, -1,
				   0);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)name, -1, -1, 0);
	X509_set_subject_name(x, n);
	X509_set_issuer_name(x, X509_get_subject_name(ca));
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 30L * 86400);
	X509_set_pubkey(x, k);
	if (add_ext(ca, x, NID_basic_constraints, "critical,CA:FALSE") ||
	    add_ext(ca, x, NID_key_usage,
		    "critical,digitalSignature,keyAgreement,keyEncipherment") ||
	    add_ext(ca, x, NID_ext_key_usage, "clientAuth,serverAuth") ||
	    add_ext(ca, x, NID_subject_alt_name, san) ||
	    add_ext(ca, x, NID_subject_key_identifier, "hash") ||
	    add_ext(ca, x, NID_authority_key_identifier, "keyid:always") ||
	    !X509_sign(x, ca_key, EVP_sha256()))
		goto out;
	snprintf(id->key, sizeof(id->key), "%s/%s.key.pem", dir, name);
	snprintf(id->crt, sizeof(id->crt), "%s/%s.crt.pem", dir, name);
	if (write_pem(id->key, k, NULL) || write_pem(id->crt, NULL, x))
		goto out;
	rc = 0;
out:
	X509_NAME_free(n);
	X509_free(x);
	EVP_PKEY_free(k);
	return rc;
}

int pvt_issue(const char *ca_dir, const char *dir, const char *overlay, const char *prefix,
	      unsigned first, size_t n, pvt_ident *out)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/ca/ca.crt.pem", ca_dir);
	FILE *f = fopen(path, "r");
	X509 *ca = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	snprintf(path, sizeof(path), "%s/ca/ca.key.pem", ca_dir);
	f = fopen(path, "r");
	EVP_PKEY *ca_key = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	int rc = (ca && ca_key) ? 0 : -1;
	if (rc)
		fprintf(stderr, "psc_vs_tls: cannot read the CA key and certificate in %s/ca\n",
			ca_dir);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		char name[64];
		snprintf(name, sizeof(name), "%s%zu", prefix, i);
		rc = issue_one(ca, ca_key, dir, overlay, name, first + (unsigned)i, &out[i]);
		if (rc)
			fprintf(stderr, "psc_vs_tls: issuing certificate %s in %s failed\n", name,
				dir);
	}
	X509_free(ca);
	EVP_PKEY_free(ca_key);
	return rc;
}
