#include "bench_pki.h"

#include <stdio.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

int bench_ca_load(const char *ca_dir, X509 **ca, EVP_PKEY **ca_key)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/ca/ca.crt.pem", ca_dir);
	FILE *f = fopen(path, "r");
	*ca = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	snprintf(path, sizeof(path), "%s/ca/ca.key.pem", ca_dir);
	f = fopen(path, "r");
	*ca_key = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	if (*ca && *ca_key)
		return 0;
	X509_free(*ca);
	EVP_PKEY_free(*ca_key);
	*ca = NULL;
	*ca_key = NULL;
	return -1;
}

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

int bench_issue_peer(X509 *ca, EVP_PKEY *ca_key, const char *overlay, const char *name,
		     uint32_t tag, unsigned serial, const char *key_path, const char *crt_path,
		     uint8_t node_id[16], EVP_PKEY **key_out)
{
	char nid[33], san[320];
	snprintf(nid, sizeof(nid), "%08x%024x", tag, serial);
	for (size_t i = 0; node_id && i < 16; i++) {
		unsigned b = 0;
		if (sscanf(nid + 2 * i, "%2x", &b) != 1)
			return -1;
		node_id[i] = (uint8_t)b;
	}
	snprintf(san, sizeof(san), "URI:reload://%s@%s/,email:%s@%s", nid, overlay, name, overlay);
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_NAME *n = X509_NAME_new();
	int rc = -1;
	if (!k || !x || !n)
		goto out;
	X509_set_version(x, X509_VERSION_3);
	ASN1_INTEGER_set_uint64(X509_get_serialNumber(x), ((uint64_t)tag << 32) | serial);
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
	if (write_pem(key_path, k, NULL) || write_pem(crt_path, NULL, x))
		goto out;
	rc = 0;
	if (key_out) {
		*key_out = k;
		k = NULL;
	}
out:
	X509_NAME_free(n);
	X509_free(x);
	EVP_PKEY_free(k);
	return rc;
}
