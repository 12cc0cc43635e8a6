/*
 * aud_ckpt — checkpoint signing, verification and line format (see aud_ckpt.h).
 * Never: touch the private key other than through EVP_DigestSign*.
 */
#include "aud_ckpt.h"

#include <openssl/err.h>
#include <stdio.h>
#include <string.h>

psc_rc aud_ckpt_signed_bytes(const aud_ckpt *c, char *out, size_t cap, size_t *len)
{
	char root[65];
	aud_hex(c->root, 32, root);
	int n = snprintf(out, cap, "psc-audit-checkpoint-v1\nkms %s\nsize %llu\nroot %s\ntime %s\n",
			 c->kms, (unsigned long long)c->size, root, c->time);
	if (n < 0 || (size_t)n >= cap)
		return PSC_E_AUDIT_TOO_LARGE;
	*len = (size_t)n;
	return PSC_OK;
}

psc_rc aud_ckpt_sign(aud_ckpt *c, EVP_PKEY *key, psc_err *err)
{
	char msg[AUD_CKPT_SIGNED_MAX];
	size_t mlen = 0, slen = 0;
	if (!key)
		return psc_err_set(err, PSC_E_AUDIT_SIGN, "audit checkpoint: no signing key");
	if (aud_ckpt_signed_bytes(c, msg, sizeof(msg), &mlen) != PSC_OK)
		return psc_err_set(err, PSC_E_AUDIT_SIGN, "audit checkpoint: fields too long");
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
		 EVP_DigestSign(ctx, NULL, &slen, (const unsigned char *)msg, mlen) == 1 &&
		 slen <= AUD_SIG_MAX &&
		 EVP_DigestSign(ctx, c->sig, &slen, (const unsigned char *)msg, mlen) == 1;
	EVP_MD_CTX_free(ctx);
	if (!ok) {
		char reason[256];
		ERR_error_string_n(ERR_get_error(), reason, sizeof(reason));
		ERR_clear_error();
		c->sig_len = 0;
		return psc_err_set(err, PSC_E_AUDIT_SIGN,
				   "audit checkpoint at size %llu: signing failed (%s); check the "
				   "audit key and the HSM session",
				   (unsigned long long)c->size, reason);
	}
	c->sig_len = slen;
	return PSC_OK;
}

psc_rc aud_ckpt_verify(const aud_ckpt *c, EVP_PKEY *pub)
{
	char msg[AUD_CKPT_SIGNED_MAX];
	size_t mlen = 0;
	if (!pub || aud_ckpt_signed_bytes(c, msg, sizeof(msg), &mlen) != PSC_OK)
		return PSC_E_BAD_SIGNATURE;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pub) == 1 &&
		 EVP_DigestVerify(ctx, c->sig, c->sig_len, (const unsigned char *)msg, mlen) == 1;
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	return ok ? PSC_OK : PSC_E_BAD_SIGNATURE;
}

psc_rc aud_ckpt_format(const aud_ckpt *c, char *out, size_t cap, size_t *len)
{
	char root[65];
	/* Base64 so an auditor decodes it with `openssl base64 -d -A`. */
	unsigned char b64[((AUD_SIG_MAX + 2) / 3) * 4 + 1];
	if (c->sig_len > AUD_SIG_MAX)
		return PSC_E_AUDIT_TOO_LARGE;
	int bn = EVP_EncodeBlock(b64, c->sig, (int)c->sig_len);
	if (bn < 0)
		return PSC_E_CRYPTO;
	aud_hex(c->root, 32, root);
	int n = snprintf(out, cap, "{\"size\":%llu,\"root\":\"%s\",\"time\":\"%s\",\"kms\":\"%s\",\"sig\":\"%s\"}",
			 (unsigned long long)c->size, root, c->time, c->kms, b64);
	if (n < 0 || (size_t)n >= cap)
		return PSC_E_AUDIT_TOO_LARGE;
	*len = (size_t)n;
	return PSC_OK;
}

/* Copies the text between `"key":"` and the next '"' into out (cap incl. NUL). */
static const char *take_str(const char *p, const char *end, const char *lit, char *out,
			    size_t cap)
{
	size_t ln = strlen(lit);
	if (!p || (size_t)(end - p) < ln || memcmp(p, lit, ln) != 0)
		return NULL;
	p += ln;
	const char *q = memchr(p, '"', (size_t)(end - p));
	if (!q || (size_t)(q - p) >= cap)
		return NULL;
	memcpy(out, p, (size_t)(q - p));
	out[q - p] = '\0';
	return q + 1;
}

psc_rc aud_ckpt_parse(const char *line, size_t len, aud_ckpt *out, psc_err *err)
{
	char num[24], root[65], b64[((AUD_SIG_MAX + 2) / 3) * 4 + 1];
	const char *end = line + len, *p = line;
	memset(out, 0, sizeof(*out));
	if (len > AUD_CKPT_LINE_MAX)
		goto bad;
	/* size is a bare number: borrow take_str's shape with ',' as the terminator. */
	static const char lit_size[] = "{\"size\":";
	if (len < sizeof(lit_size) - 1 || memcmp(p, lit_size, sizeof(lit_size) - 1) != 0)
		goto bad;
	p += sizeof(lit_size) - 1;
	const char *q = memchr(p, ',', (size_t)(end - p));
	if (!q || q == p || (size_t)(q - p) >= sizeof(num))
		goto bad;
	memcpy(num, p, (size_t)(q - p));
	num[q - p] = '\0';
	p = q;
	uint64_t v = 0;
	for (const char *d = num; *d; d++) {
		if (*d < '0' || *d > '9' || v > (UINT64_MAX - (uint64_t)(*d - '0')) / 10)
			goto bad;
		v = v * 10 + (uint64_t)(*d - '0');
	}
	out->size = v;
	p = take_str(p, end, ",\"root\":\"", root, sizeof(root));
	p = take_str(p, end, ",\"time\":\"", out->time, sizeof(out->time));
	p = take_str(p, end, ",\"kms\":\"", out->kms, sizeof(out->kms));
	p = take_str(p, end, ",\"sig\":\"", b64, sizeof(b64));
	if (!p || end - p != 1 || *p != '}' || strlen(root) != 64 || !aud_time_valid(out->time))
		goto bad;
	for (int i = 0; i < 32; i++) {
		unsigned hv;
		if (sscanf(root + 2 * i, "%2x", &hv) != 1)
			goto bad;
		out->root[i] = (uint8_t)hv;
	}
	size_t bl = strlen(b64);
	if (bl == 0 || bl % 4 != 0)
		goto bad;
	unsigned char raw[sizeof(b64)];
	int rn = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)bl);
	if (rn < 0)
		goto bad;
	/* EVP_DecodeBlock counts '=' padding as zero bytes; strip them. */
	size_t sl = (size_t)rn;
	if (b64[bl - 1] == '=')
		sl--;
	if (b64[bl - 2] == '=')
		sl--;
	if (sl > AUD_SIG_MAX)
		goto bad;
	memcpy(out->sig, raw, sl);
	out->sig_len = sl;
	/* Canonical form: formatting what we read must give the same bytes. */
	char again[AUD_CKPT_LINE_MAX + 1];
	size_t alen = 0;
	if (aud_ckpt_format(out, again, sizeof(again), &alen) != PSC_OK || alen != len ||
	    memcmp(again, line, len) != 0)
		goto bad;
	return PSC_OK;
bad:
	return psc_err_set(err, PSC_E_AUDIT_MALFORMED,
			   "audit checkpoint: line does not follow "
			   "{\"size\":N,\"root\":\"<hex>\",\"time\":\"...\",\"kms\":\"...\",\"sig\":\"<base64>\"}");
}
