/*
 * hsm_epoch — epoch secrets inside the HSM and their storable blobs.
 *
 * Owns: generating an epoch secret (32 bytes, CKM_GENERIC_SECRET_KEY_GEN, a
 * sensitive, extractable session object), wrapping it under the master KEK with
 * CKM_AES_KEY_WRAP_PAD into a blob tagged with the KEK id, unwrapping such a blob
 * back into a session object, and destroying it.
 * Never: read an epoch secret's value out of the token (it is CKA_SENSITIVE; the
 * only ways out are the KEK wrap here and the member wraps in hsm_wrap).
 *
 * Blob layout, version 1 (HSM_EPOCH_BLOB_LEN = 57 bytes; docs/hsm.md):
 *   offset 0   version   0x01
 *   offset 1   kek_id    16 bytes, CKA_ID of the master KEK it was wrapped under
 *   offset 17  kwp       40 bytes, RFC 5649 AES-256 key wrap with padding of the
 *                        32-byte secret (C_WrapKey, CKM_AES_KEY_WRAP_PAD)
 *
 * An hsm_key names a session object; it is valid until hsm_key_destroy, or until
 * the session that made it is reopened after an HSM fault (then every use is
 * PSC_E_HSM_STALE_KEY: load the blob again).
 */
#ifndef HSM_EPOCH_H
#define HSM_EPOCH_H

#include <stddef.h>
#include <stdint.h>

#include "hsm_ctx.h"
#include "psc_rc.h"

#define HSM_EPOCH_BLOB_VERSION 0x01
#define HSM_EPOCH_BLOB_LEN (1 + 16 + 40)

typedef struct hsm_key {
	unsigned long handle; /* CK_OBJECT_HANDLE */
	unsigned gen;	      /* session generation that made it */
	unsigned session;     /* index of that session */
} hsm_key;

/* New epoch secret in the HSM, and its blob (blob_out: HSM_EPOCH_BLOB_LEN bytes). */
psc_rc hsm_epoch_generate(hsm_session *s, hsm_key *key_out, uint8_t blob_out[HSM_EPOCH_BLOB_LEN],
			  psc_err *err) PSC_WUR;

/*
 * Unwraps a blob into a session object. Errors: PSC_E_HSM_BAD_BLOB (length,
 * version), PSC_E_HSM_WRONG_KEK (no KEK with that id on this token),
 * PSC_E_HSM_UNWRAP (integrity check failed: tampered or another token's blob).
 */
psc_rc hsm_epoch_load(hsm_session *s, const uint8_t *blob, size_t blob_len, hsm_key *key_out,
		      psc_err *err) PSC_WUR;

/* Destroys a session object (epoch secret). A stale or already destroyed key is
 * not an error: session objects die with their session anyway. */
psc_rc hsm_key_destroy(hsm_session *s, hsm_key *key, psc_err *err) PSC_WUR;

#endif
