#include "proto_cert.h"

#include <string.h>

#include <openssl/sha.h>
#include <openssl/x509v3.h>

#define NODE_URI_SCHEME "reload://"

psc_rc proto_cert_parse(const uint8_t *der, size_t len, X509 **out, psc_err *err)
{
	*out = NULL;
	if (!der || len == 0 || len > 65535)
		return psc_err_set(err, PSC_E_BAD_CERT, "certificate of %zu bytes", len);
	const unsigned char *p = der;
	X509 *x = d2i_X509(NULL, &p, (long)len);
	if (!x)
		return psc_err_set(err, PSC_E_BAD_CERT, "certificate is not valid DER X.509");
	if ((size_t)(p - der) != len) {
		X509_free(x);
		return psc_err_set(err, PSC_E_BAD_CERT,
				   "certificate has %zu trailing bytes after its DER encoding",
				   len - (size_t)(p - der));
	}
	*out = x;
	return PSC_OK;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

psc_rc proto_id_from_hex(const char *hex, uint8_t out[16])
{
	if (!hex || strlen(hex) != 32)
		return PSC_E_BAD_VALUE;
	for (int i = 0; i < 16; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return PSC_E_BAD_VALUE;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return PSC_OK;
}

void proto_id_hex(const uint8_t id[16], char out[33])
{
	static const char digits[] = "0123456789abcdef";
	for (int i = 0; i < 16; i++) {
		out[2 * i] = digits[id[i] >> 4];
		out[2 * i + 1] = digits[id[i] & 15];
	}
	out[32] = '\0';
}

psc_rc proto_parse_node_uri(const char *uri, size_t len, const char *overlay,
			    uint8_t out[PSC_NODE_ID_LEN])
{
	const size_t scheme = sizeof(NODE_URI_SCHEME) - 1;
	if (len < scheme || strncmp(uri, NODE_URI_SCHEME, scheme) != 0)
		return PSC_E_NO_NODE_ID;
	/* reload://<32 hex>@<overlay>/ */
	if (len < scheme + 32 + 1 + 1 + 1 || uri[scheme + 32] != '@' || uri[len - 1] != '/')
		return PSC_E_BAD_NODE_ID_URI;
	char hex[33];
	memcpy(hex, uri + scheme, 32);
	hex[32] = '\0';
	if (proto_id_from_hex(hex, out) != PSC_OK)
		return PSC_E_BAD_NODE_ID_URI;
	const char *ov = uri + scheme + 33;
	size_t ov_len = len - scheme - 33 - 1;
	if (ov_len == 0 || memchr(ov, '/', ov_len) || memchr(ov, '\0', ov_len))
		return PSC_E_BAD_NODE_ID_URI;
	if (overlay && (strlen(overlay) != ov_len || memcmp(ov, overlay, ov_len) != 0))
		return PSC_E_OVERLAY;
	return PSC_OK;
}

psc_rc proto_cert_node_id(X509 *cert, const char *overlay, uint8_t out[PSC_NODE_ID_LEN],
			  psc_err *err)
{
	memset(out, 0, PSC_NODE_ID_LEN);
	GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	psc_rc result = PSC_E_NO_NODE_ID;
	int found = 0;
	for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
		if (gn->type != GEN_URI)
			continue;
		const char *uri = (const char *)ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
		size_t len = (size_t)ASN1_STRING_length(gn->d.uniformResourceIdentifier);
		uint8_t id[PSC_NODE_ID_LEN];
		psc_rc rc = proto_parse_node_uri(uri, len, overlay, id);
		if (rc == PSC_E_NO_NODE_ID)
			continue;
		if (rc != PSC_OK) {
			result = rc;
			found = -1;
			break;
		}
		if (found && memcmp(id, out, PSC_NODE_ID_LEN) != 0) {
			result = PSC_E_BAD_NODE_ID_URI;
			found = -1;
			break;
		}
		memcpy(out, id, PSC_NODE_ID_LEN);
		found = 1;
		result = PSC_OK;
	}
	GENERAL_NAMES_free(names);
	if (result == PSC_OK)
		return PSC_OK;
	memset(out, 0, PSC_NODE_ID_LEN);
	char subject[256] = "?";
	X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
	switch (result) {
	case PSC_E_NO_NODE_ID:
		return psc_err_set(err, result, "certificate '%s' has no subjectAltName URI "
				   "reload://<node-id>@<overlay>/: reissue it with one", subject);
	case PSC_E_OVERLAY:
		return psc_err_set(err, result, "certificate '%s' binds a Node-ID in another "
				   "overlay than '%s'", subject, overlay ? overlay : "");
	default:
		return psc_err_set(err, result, "certificate '%s' has a malformed or ambiguous "
				   "reload:// URI (want reload://<32 hex digits>@<overlay>/)",
				   subject);
	}
}

psc_rc proto_cert_fingerprint(X509 *cert, uint8_t out[PSC_HASH_LEN])
{
	unsigned int n = 0;
	if (X509_digest(cert, EVP_sha256(), out, &n) != 1 || n != PSC_HASH_LEN)
		return PSC_E_CRYPTO;
	return PSC_OK;
}
