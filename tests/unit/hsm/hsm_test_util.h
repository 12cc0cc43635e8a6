/*
 * hsm_test_util — fixtures shared by the hsm/ tests: a throwaway SoftHSM token
 * with the psc-kms ceremony done, test-CA keys as EVP_PKEYs, and a raw PKCS#11
 * view of the same module for checks the hsm API deliberately does not offer
 * (reading attributes, importing known secrets).
 */
#ifndef HSM_TEST_UTIL_H
#define HSM_TEST_UTIL_H

#include <stdint.h>

#include <openssl/evp.h>
#include <p11-kit/pkcs11.h>

#include "hsm_ceremony.h"
#include "hsm_ctx.h"
#include "hsm_epoch.h"
#include "hsm_wrap.h"
#include "psc_test.h"

typedef struct th_env {
	pt_token *tok;
	hsm_ctx *ctx;
	hsm_session *s;
	uint8_t kek_id[HSM_KEK_ID_LEN];
	char *csr;
} th_env;

/* New token labelled `label`, ctx on `module` (NULL = SoftHSM), ceremony done. */
int th_open(th_env *e, const char *label, const char *module, unsigned sessions);
void th_close(th_env *e);

/* Test-CA keys: public key of NAME.crt.pem, private key NAME.key.pem. */
EVP_PKEY *th_cert_pub(const char *name);
EVP_PKEY *th_priv(const char *name);

/* The module's function list through our own dlopen (shares the login). */
CK_FUNCTION_LIST *th_p11(const char *module);
/* A fresh session on the token labelled `label`; CK_INVALID_HANDLE on error. */
CK_SESSION_HANDLE th_p11_session(CK_FUNCTION_LIST *f, const char *label);

/* Imports `secret` as an extractable, sensitive generic secret session object
 * and returns it as an hsm_key usable by s (test-only, for known answers). */
int th_import_secret(th_env *e, const uint8_t secret[32], hsm_key *out);

/* 1 if haystack contains needle (case-sensitive). */
int th_has(const char *haystack, const char *needle);

#endif
