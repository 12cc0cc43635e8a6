/*
 * hsm_ceremony — the one-time token setup behind `psc-kmsctl init` (docs/hsm.md).
 *
 * Owns: creating the master KEK (AES-256 token key, sensitive, never extractable,
 * wrap/unwrap only, random 16-byte CKA_ID = KEK id), the KMS identity key pair
 * (ECDSA P-256, or RSA) with a PEM CSR signed by it, and the audit key pair
 * (ECDSA P-256).
 * Never: overwrite existing psc-kms keys unless opts->overwrite is set, or create
 * a key whose private half could leave the token.
 */
#ifndef HSM_CEREMONY_H
#define HSM_CEREMONY_H

#include <stdbool.h>
#include <stdint.h>

#include "hsm_ctx.h"

typedef struct hsm_ceremony_opts {
	const char *subject; /* CSR subject, OpenSSL one-line form "/O=PSC/CN=kms1" */
	const char *uri_san; /* e.g. "reload://<hex node-id>@overlay/" */
	unsigned rsa_bits;   /* 0 = ECDSA P-256 identity; else RSA (2048..4096) */
	bool overwrite;	     /* delete existing psc-kms keys first */
} hsm_ceremony_opts;

/*
 * Creates the three keys on ctx's token (opened with allow_no_kek) and returns the
 * new KEK id and the CSR (PEM, NUL-terminated; free() it). Afterwards the ctx uses
 * the new KEK. Errors: PSC_E_HSM_KEY_EXISTS (keys present, overwrite not set),
 * PSC_E_INVALID_ARG (bad subject/SAN), PSC_E_HSM_P11, PSC_E_CRYPTO.
 */
psc_rc hsm_ceremony(hsm_ctx *ctx, const hsm_ceremony_opts *opts, uint8_t kek_id_out[HSM_KEK_ID_LEN],
		    char **csr_pem_out, psc_err *err) PSC_WUR;

#endif
