/*
 * bench_pki — peer identities issued in-process by a benchmark's temp test CA,
 * in the shape tests/fixtures/mkca.sh's v3_peer profile gives them (EC P-256,
 * reload://<node-id>@<overlay>/ URI, client + server auth). Benchmarks need
 * hundreds; `openssl ca` runs would take minutes (its index file grows).
 */
#ifndef BENCH_PKI_H
#define BENCH_PKI_H

#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/* The CA certificate and key of a mkca.sh directory (CA_DIR/ca/ca.{crt,key}.pem).
 * 0 on success; the caller frees both. */
int bench_ca_load(const char *ca_dir, X509 **ca, EVP_PKEY **ca_key);

/*
 * One identity: a new P-256 key and a certificate for `name` whose Node-ID is
 * the 4 bytes of `tag` followed by `serial` (12 bytes, big endian), so two
 * benchmarks with different tags never collide. Writes key_path and crt_path
 * (PEM), the Node-ID to node_id (nullable), and returns the key in *key_out
 * when not NULL (the caller frees it). 0 on success.
 */
int bench_issue_peer(X509 *ca, EVP_PKEY *ca_key, const char *overlay, const char *name,
		     uint32_t tag, unsigned serial, const char *key_path, const char *crt_path,
		     uint8_t node_id[16], EVP_PKEY **key_out);

#endif
