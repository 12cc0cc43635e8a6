/*
 * psc_vs_tls_pki — member certificates for psc_vs_tls, issued in-process by
 * the temp test CA with the shape tests/fixtures/mkca.sh's v3_peer profile
 * gives (EC P-256, reload://<node-id>@<overlay>/ URI, client+server auth): the
 * fixture has 8 peers and 512 `openssl ca` runs would take minutes.
 * Never: reuses a Node-ID (serials are distinct per call) or keeps a key in
 * memory longer than writing it.
 */
#include <stdio.h>
#include <string.h>

#include "bench_pki.h"
#include "psc_vs_tls.h"

#define PVT_TAG 0x70767400u /* "pvt\0": Node-IDs of this benchmark */

int pvt_issue(const char *ca_dir, const char *dir, const char *overlay, const char *prefix,
	      unsigned first, size_t n, pvt_ident *out)
{
	X509 *ca = NULL;
	EVP_PKEY *ca_key = NULL;
	int rc = bench_ca_load(ca_dir, &ca, &ca_key);
	if (rc)
		fprintf(stderr, "psc_vs_tls: cannot read the CA key and certificate in %s/ca\n",
			ca_dir);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		char name[64];
		snprintf(name, sizeof(name), "%s%zu", prefix, i);
		snprintf(out[i].key, sizeof(out[i].key), "%s/%s.key.pem", dir, name);
		snprintf(out[i].crt, sizeof(out[i].crt), "%s/%s.crt.pem", dir, name);
		rc = bench_issue_peer(ca, ca_key, overlay, name, PVT_TAG, first + (unsigned)i,
				      out[i].key, out[i].crt, out[i].node_id, NULL);
		if (rc)
			fprintf(stderr, "psc_vs_tls: issuing certificate %s in %s failed\n", name,
				dir);
	}
	X509_free(ca);
	EVP_PKEY_free(ca_key);
	return rc;
}
