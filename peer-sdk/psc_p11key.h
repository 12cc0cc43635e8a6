/*
 * psc_p11key — the peer's private key on a PKCS#11 token, through libp11
 * (psc_peer_config.key_pkcs11; docs/sdk.md "A key on a token").
 *
 * Owns: the libp11 context, its slot list and the login that the EVP_PKEY it
 * hands out points into. Signatures (requests) and ECDH / RSA-OAEP (unwrapping
 * epoch secrets) run in the token; the key never leaves it.
 * Never: keep the PIN beyond the login (read, used, wiped).
 */
#ifndef PSC_P11KEY_H
#define PSC_P11KEY_H

#include <openssl/evp.h>

#include "psc/peer.h"

typedef struct psc_p11key psc_p11key;

/* Opens the module, finds the token by label, logs in with the PIN from
 * cfg->pin_file and returns the private key labelled cfg->key_label as an
 * EVP_PKEY (free it before psc_p11key_free). PSC_E_PEER_IDENTITY with a
 * sentence naming the module / token / key otherwise. */
psc_rc psc_p11key_open(psc_p11key **out, const psc_peer_pkcs11 *cfg, EVP_PKEY **key_out,
		       psc_err *err) PSC_WUR;
void psc_p11key_free(psc_p11key **k);

#endif
