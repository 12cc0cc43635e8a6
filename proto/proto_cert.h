/*
 * proto_cert — binding between Node-IDs and X.509 certificates.
 *
 * Owns: parsing DER certificates from the wire and extracting the Node-ID from
 * the subjectAltName URI reload://<32 hex digits>@<overlay>/ (RFC 6940 §10.3).
 * Never: decide trust. Chain, validity and CRL checks belong to the KMS
 * (it knows the CA bundle); this module only answers "which Node-ID does this
 * certificate name".
 */
#ifndef PROTO_CERT_H
#define PROTO_CERT_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "psc_codes.h"
#include "psc_rc.h"

/* Parses one DER certificate (no trailing bytes). *out is owned by the caller. */
psc_rc proto_cert_parse(const uint8_t *der, size_t len, X509 **out, psc_err *err) PSC_WUR;

/*
 * The Node-ID bound by the certificate's reload:// URI. If overlay is non-NULL
 * the URI's overlay must match it. PSC_E_NO_NODE_ID when there is no reload://
 * URI, PSC_E_BAD_NODE_ID_URI when one is malformed, PSC_E_OVERLAY when it names
 * another overlay. A certificate with two different reload:// Node-IDs is
 * rejected as malformed (ambiguous binding).
 */
psc_rc proto_cert_node_id(X509 *cert, const char *overlay, uint8_t out[PSC_NODE_ID_LEN],
			  psc_err *err) PSC_WUR;

/* Parses "reload://<hex>@<overlay>/" into a Node-ID and checks the overlay. */
psc_rc proto_parse_node_uri(const char *uri, size_t len, const char *overlay,
			    uint8_t out[PSC_NODE_ID_LEN]) PSC_WUR;

/* Lower-case hex of a Node-ID or PSC ID into out (33 bytes). */
void proto_id_hex(const uint8_t id[16], char out[33]);
/* Parses 32 hex digits; PSC_E_BAD_VALUE otherwise. */
psc_rc proto_id_from_hex(const char *hex, uint8_t out[16]) PSC_WUR;

/* SHA-256 of the certificate's DER encoding. */
psc_rc proto_cert_fingerprint(X509 *cert, uint8_t out[PSC_HASH_LEN]) PSC_WUR;

#endif
