/*
 * hsm_ckr — names for PKCS#11 return values, for error messages a person reads.
 * Owns: the CKR_* -> "CKR_NAME" table. Never: decide what an error means (hsm_ctx does).
 */
#ifndef HSM_CKR_H
#define HSM_CKR_H

/* "CKR_PIN_INCORRECT" for 0xa0; "CKR_0x..." style text is never returned: unknown
 * values give "CKR_(unknown)" and the caller prints the number beside it. */
const char *hsm_ckr_name(unsigned long rv);

#endif
