#include "kms_auth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "proto_cert.h"

struct kms_trust {
	X509_STORE *store;
	X509_CRL *crl;
	int64_t crl_next_update;
};

static int64_t asn1_time_to_unix(const ASN1_TIME *t)
{
	struct tm tm;
	if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return (int64_t)timegm(&tm);
}

psc_rc kms_trust_new(kms_trust **out, const char *ca_file, const char *crl_file, psc_err *err)
{
	*out = NULL;
	kms_trust *t = calloc(1, sizeof(*t));
	if (!t)
		return psc_err_set(err, PSC_E_NOMEM, "out of memory");
	t->store = X509_STORE_new();
	FILE *f = ca_file ? fopen(ca_file, "r") : NULL;
	if (!f) {
		kms_trust_free(&t);
		return psc_err_set(err, PSC_E_KMSD_TRUST_FILE, "CA bundle %s: %s",
				   ca_file ? ca_file : "(none)", strerror(errno));
	}
	int n = 0;
	X509 *x;
	while ((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
		X509_STORE_add_cert(t->store, x);
		X509_free(x);
		n++;
	}
	fclose(f);
	ERR_clear_error(); /* the loop ends on "no start line" */
	if (n == 0) {
		kms_trust_free(&t);
		return psc_err_set(err, PSC_E_KMSD_TRUST_FILE,
				   "CA bundle %s holds no PEM certificate", ca_file);
	}
	if (crl_file) {
		f = fopen(crl_file, "r");
		if (!f) {
			kms_trust_free(&t);
			return psc_err_set(err, PSC_E_KMSD_CRL, "CRL %s: %s", crl_file,
					   strerror(errno));
		}
		t->crl = PEM_read_X509_CRL(f, NULL, NULL, NULL);
		fclose(f);
		if (!t->crl) {
			kms_trust_free(&t);
			return psc_err_set(err, PSC_E_KMSD_CRL, "CRL %s is not a PEM X.509 CRL",
					   crl_file);
		}
		/* The CRL must be signed by a CA we trust: find its issuer in the store. */
		int signed_ok = 0;
		STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(t->store);
		for (int i = 0; i < sk_X509_OBJECT_num(objs) && !signed_ok; i++) {
			X509 *ca = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
			if (ca && X509_NAME_cmp(X509_get_subject_name(ca),
						X509_CRL_get_issuer(t->crl)) == 0 &&
			    X509_CRL_verify(t->crl, X509_get0_pubkey(ca)) == 1)
				signed_ok = 1;
		}
		ERR_clear_error();
		if (!signed_ok) {
			kms_trust_free(&t);
			return psc_err_set(err, PSC_E_KMSD_CRL,
					   "CRL %s is not signed by a CA in %s: refusing it",
					   crl_file, ca_file);
		}
		t->crl_next_update = asn1_time_to_unix(X509_CRL_get0_nextUpdate(t->crl));
		X509_STORE_add_crl(t->store, t->crl);
	}
	*out = t;
	return PSC_OK;
}

void kms_trust_free(kms_trust **t)
{
	if (!t || !*t)
		return;
	X509_STORE_free((*t)->store);
	X509_CRL_free((*t)->crl);
	free(*t);
	*t = NULL;
}

int64_t kms_trust_crl_next_update(const kms_trust *t)
{
	return t->crl ? t->crl_next_update : 0;
}

int kms_trust_is_revoked(const kms_trust *t, X509 *cert)
{
	X509_REVOKED *rev = NULL;
	return t->crl && X509_CRL_get0_by_cert(t->crl, &rev, cert) == 1;
}

psc_rc kms_trust_verify(const kms_trust *t, X509 *cert, STACK_OF(X509) *untrusted,
			uint64_t now_ms, const char *overlay, uint8_t node_id[PSC_NODE_ID_LEN],
			psc_err *err)
{
	char subject[256] = "?";
	X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
	time_t now = (time_t)(now_ms / 1000);
	if (t->crl && t->crl_next_update && (int64_t)now > t->crl_next_update)
		return psc_err_set(err, PSC_E_KMSD_CRL,
				   "the CRL's nextUpdate has passed: install a fresh CRL (peers are "
				   "refused until then)");
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	if (!ctx || X509_STORE_CTX_init(ctx, t->store, cert, untrusted) != 1) {
		X509_STORE_CTX_free(ctx);
		return psc_err_set(err, PSC_E_CRYPTO, "certificate verification setup failed");
	}
	X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
	X509_VERIFY_PARAM_set_time(param, now);
	if (t->crl)
		X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_CRL_CHECK);
	int ok = X509_verify_cert(ctx);
	int verr = X509_STORE_CTX_get_error(ctx);
	X509_STORE_CTX_free(ctx);
	ERR_clear_error();
	if (ok != 1) {
		psc_rc rc;
		switch (verr) {
		case X509_V_ERR_CERT_HAS_EXPIRED: rc = PSC_E_KMSD_CERT_EXPIRED; break;
		case X509_V_ERR_CERT_NOT_YET_VALID: rc = PSC_E_KMSD_CERT_NOT_YET; break;
		case X509_V_ERR_CERT_REVOKED: rc = PSC_E_KMSD_CERT_REVOKED; break;
		case X509_V_ERR_CRL_HAS_EXPIRED:
		case X509_V_ERR_CRL_NOT_YET_VALID:
		case X509_V_ERR_UNABLE_TO_GET_CRL:
		case X509_V_ERR_CRL_SIGNATURE_FAILURE: rc = PSC_E_KMSD_CRL; break;
		default: rc = PSC_E_KMSD_CERT_UNTRUSTED; break;
		}
		return psc_err_set(err, rc, "certificate '%s': %s", subject,
				   X509_verify_cert_error_string(verr));
	}
	return proto_cert_node_id(cert, overlay, node_id, err);
}

psc_rc kms_fresh(uint64_t ts_ms, uint64_t now_ms, uint64_t window_ms, uint64_t started_ms,
		 psc_err *err)
{
	if (ts_ms < started_ms)
		return psc_err_set(err, PSC_E_KMSD_STALE,
				   "request timestamped %llu ms before this KMS started: retry "
				   "with a new transaction id",
				   (unsigned long long)(started_ms - ts_ms));
	uint64_t skew = ts_ms > now_ms ? ts_ms - now_ms : now_ms - ts_ms;
	if (skew > window_ms)
		return psc_err_set(err, PSC_E_KMSD_STALE,
				   "request timestamp is %llu ms %s the KMS clock (window %llu ms): "
				   "check the peer's clock",
				   (unsigned long long)skew, ts_ms > now_ms ? "ahead of" : "behind",
				   (unsigned long long)window_ms);
	return PSC_OK;
}

/* ---- replay cache ------------------------------------------------------ */

struct replay_slot {
	uint8_t used; /* ever used: lookups probe past expired slots, stop at unused */
	uint8_t signer[PSC_HASH_LEN];
	uint64_t txid;
	uint64_t expires;
};

struct kms_replay {
	struct replay_slot *slot;
	size_t cap;  /* power of two */
	size_t used; /* slots ever used since the last rebuild */
	uint64_t ttl;
};

psc_rc kms_replay_new(kms_replay **out, size_t capacity, uint64_t ttl_ms)
{
	*out = NULL;
	size_t cap = 64;
	while (cap < capacity * 2 && cap < ((size_t)1 << 30))
		cap *= 2;
	kms_replay *r = calloc(1, sizeof(*r));
	if (!r)
		return PSC_E_NOMEM;
	r->slot = calloc(cap, sizeof(*r->slot));
	if (!r->slot) {
		free(r);
		return PSC_E_NOMEM;
	}
	r->cap = cap;
	r->ttl = ttl_ms;
	*out = r;
	return PSC_OK;
}

void kms_replay_free(kms_replay **r)
{
	if (!r || !*r)
		return;
	free((*r)->slot);
	free(*r);
	*r = NULL;
}

static size_t replay_hash(const uint8_t signer[PSC_HASH_LEN], uint64_t txid, size_t cap)
{
	uint64_t h = txid * 0x9e3779b97f4a7c15ull;
	for (int i = 0; i < 8; i++)
		h ^= (uint64_t)signer[i] << (8 * i);
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 32;
	return (size_t)h & (cap - 1);
}

/* Keeps only live entries: the table's probe chains are rebuilt without the
 * expired slots that lookups would otherwise have to walk past. */
static void replay_rebuild(kms_replay *r, uint64_t now_ms)
{
	struct replay_slot *old = r->slot;
	struct replay_slot *fresh = calloc(r->cap, sizeof(*fresh));
	if (!fresh)
		return; /* keep the old table: still correct, just slower */
	r->slot = fresh;
	r->used = 0;
	for (size_t i = 0; i < r->cap; i++) {
		if (!old[i].used || old[i].expires <= now_ms)
			continue;
		size_t j = replay_hash(old[i].signer, old[i].txid, r->cap);
		while (fresh[j].used)
			j = (j + 1) & (r->cap - 1);
		fresh[j] = old[i];
		r->used++;
	}
	free(old);
}

psc_rc kms_replay_check(kms_replay *r, const uint8_t signer[PSC_HASH_LEN], uint64_t txid,
			uint64_t now_ms)
{
	if (r->used * 4 >= r->cap * 3)
		replay_rebuild(r, now_ms);
	size_t i = replay_hash(signer, txid, r->cap), free_slot = (size_t)-1;
	for (size_t probes = 0; probes < r->cap; probes++, i = (i + 1) & (r->cap - 1)) {
		struct replay_slot *s = &r->slot[i];
		if (!s->used) {
			if (free_slot == (size_t)-1)
				free_slot = i;
			break;
		}
		if (s->expires <= now_ms) {
			if (free_slot == (size_t)-1)
				free_slot = i;
			continue;
		}
		if (s->txid == txid && memcmp(s->signer, signer, PSC_HASH_LEN) == 0)
			return PSC_E_KMSD_REPLAY;
	}
	if (free_slot == (size_t)-1)
		return PSC_E_KMSD_REPLAY_FULL;
	struct replay_slot *s = &r->slot[free_slot];
	if (!s->used)
		r->used++;
	s->used = 1;
	memcpy(s->signer, signer, PSC_HASH_LEN);
	s->txid = txid;
	s->expires = now_ms + r->ttl;
	return PSC_OK;
}

size_t kms_replay_live(const kms_replay *r, uint64_t now_ms)
{
	size_t n = 0;
	for (size_t i = 0; i < r->cap; i++)
		n += r->slot[i].used && r->slot[i].expires > now_ms;
	return n;
}
