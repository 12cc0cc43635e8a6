/*
 * aud_ckpt — signed Merkle checkpoints of the audit log.
 *
 * Owns: the checkpoint line format (checkpoints.jsonl, and the file an auditor
 * keeps outside the appliance), the exact bytes that are signed, signing through
 * any OpenSSL EVP_PKEY (a file key in tests, the HSM audit key through libp11 in
 * the KMS: only EVP_DigestSign* is used, so the private key never has to be
 * readable), and verification with a public key.
 * Never: read private key bytes, or sign anything but the documented text.
 *
 * Signed bytes (docs/audit.md), ASCII, each line ending in '\n':
 *   psc-audit-checkpoint-v1
 *   kms <kms id>
 *   size <decimal number of records>
 *   root <64 lowercase hex: RFC 9162 MTH over the first `size` lines>
 *   time <YYYY-MM-DDTHH:MM:SS.mmmZ>
 * Signature: EVP_DigestSign with SHA-256 (ECDSA: DER ECDSA-Sig-Value), so
 *   openssl dgst -sha256 -verify pub.pem -signature sig.der signed.bin
 * checks it.
 */
#ifndef AUD_CKPT_H
#define AUD_CKPT_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

#include "aud_rec.h"
#include "psc_rc.h"

#define AUD_SIG_MAX 1024                /* DER signature bytes (RSA-4096 is 512) */
#define AUD_CKPT_LINE_MAX 2048
#define AUD_CKPT_SIGNED_MAX 256

typedef struct aud_ckpt {
	char kms[AUD_KMS_ID_MAX + 1];
	uint64_t size;
	uint8_t root[32];
	char time[AUD_TIME_LEN + 1];
	uint8_t sig[AUD_SIG_MAX];
	size_t sig_len;
} aud_ckpt;

/* The signed text above; *len excludes any NUL. */
psc_rc aud_ckpt_signed_bytes(const aud_ckpt *c, char *out, size_t cap, size_t *len) PSC_WUR;

/* Fills c->sig with a SHA-256 signature by key (borrowed). PSC_E_AUDIT_SIGN with the
 * OpenSSL reason in err on failure. */
psc_rc aud_ckpt_sign(aud_ckpt *c, EVP_PKEY *key, psc_err *err) PSC_WUR;

/* PSC_OK, or PSC_E_BAD_SIGNATURE if the signature does not verify under pub. */
psc_rc aud_ckpt_verify(const aud_ckpt *c, EVP_PKEY *pub) PSC_WUR;

/*
 * Line form (no '\n'):
 * {"size":N,"root":"hex","time":"...","kms":"id","sig":"base64 of DER"}
 * Parsing is strict: the same canonical re-format rule as records.
 */
psc_rc aud_ckpt_format(const aud_ckpt *c, char *out, size_t cap, size_t *len) PSC_WUR;
psc_rc aud_ckpt_parse(const char *line, size_t len, aud_ckpt *out, psc_err *err) PSC_WUR;

#endif
