/*
 * psc_peer — a peer's identity, its view of the KMS, and the state it holds.
 * Transport and dispatch: psc_transport.c; KMS requests: psc_kmsreq.c; our
 * requests: psc_flows.c.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <zmq.h>

#include "proto_cert.h"
#include "proto_keywrap.h"
#include "psc_p11key.h"
#include "psc_peer_int.h"

static char *dup_str(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* Reads one PEM certificate and returns it with its DER encoding. */
static psc_rc load_cert(const char *path, const char *what, X509 **cert, uint8_t **der,
			size_t *der_len, psc_err *err)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return psc_err_set(err, PSC_E_PEER_IDENTITY, "cannot open %s %s: %m", what, path);
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	ERR_clear_error();
	if (!x)
		return psc_err_set(err, PSC_E_PEER_IDENTITY,
				   "%s %s holds no PEM certificate (expected -----BEGIN "
				   "CERTIFICATE-----)",
				   what, path);
	int n = i2d_X509(x, NULL);
	uint8_t *buf = n > 0 ? malloc((size_t)n) : NULL;
	uint8_t *q = buf;
	if (!buf || i2d_X509(x, &q) != n) {
		free(buf);
		X509_free(x);
		return psc_err_set(err, PSC_E_NOMEM, "encoding %s %s failed", what, path);
	}
	*cert = x;
	*der = buf;
	*der_len = (size_t)n;
	return PSC_OK;
}

static int key_signs_for(EVP_PKEY *key, X509 *cert)
{
	static const unsigned char probe[] = "psc-peer key check";
	unsigned char sig[1024];
	size_t len = sizeof(sig);
	EVP_MD_CTX *s = EVP_MD_CTX_new(), *v = EVP_MD_CTX_new();
	int ok = s && v && EVP_DigestSignInit(s, NULL, EVP_sha256(), NULL, key) == 1 &&
		 EVP_DigestSign(s, sig, &len, probe, sizeof(probe)) == 1 &&
		 EVP_DigestVerifyInit(v, NULL, EVP_sha256(), NULL, X509_get0_pubkey(cert)) == 1 &&
		 EVP_DigestVerify(v, sig, len, probe, sizeof(probe)) == 1;
	EVP_MD_CTX_free(s);
	EVP_MD_CTX_free(v);
	return ok;
}

static psc_rc load_identity(psc_peer *p, const psc_peer_config *cfg, psc_err *err)
{
	X509 *cert = NULL;
	psc_err e2;
	psc_rc rc =
	    load_cert(cfg->cert_file, "peer certificate", &cert, &p->cert_der, &p->cert_len, err);
	if (rc != PSC_OK)
		return rc;
	rc = proto_cert_node_id(cert, cfg->overlay, p->node_id, &e2);
	if (rc != PSC_OK) {
		X509_free(cert);
		return psc_err_set(err, PSC_E_PEER_IDENTITY, "peer certificate %s: %s",
				   cfg->cert_file, psc_err_text(&e2));
	}
	char key_name[300];
	if (cfg->key_pkcs11) {
		snprintf(key_name, sizeof(key_name), "'%s' on token '%s'",
			 cfg->key_pkcs11->key_label ? cfg->key_pkcs11->key_label : "?",
			 cfg->key_pkcs11->token ? cfg->key_pkcs11->token : "?");
		rc = psc_p11key_open(&p->p11, cfg->key_pkcs11, &p->key, err);
		if (rc != PSC_OK) {
			X509_free(cert);
			return rc;
		}
	} else {
		snprintf(key_name, sizeof(key_name), "%s", cfg->key_file);
		FILE *f = fopen(cfg->key_file, "r");
		if (!f) {
			X509_free(cert);
			return psc_err_set(err, PSC_E_PEER_IDENTITY,
					   "cannot open private key %s: %m", cfg->key_file);
		}
		p->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
	}
	ERR_clear_error();
	if (!p->key) {
		X509_free(cert);
		return psc_err_set(err, PSC_E_PEER_IDENTITY,
				   "private key %s cannot be read (PEM, unencrypted, EC P-256 "
				   "or RSA expected)",
				   cfg->key_file);
	}
	/* A token key may carry no public part for OpenSSL to compare: prove
	 * possession instead, by a signature the certificate's key verifies. */
	int ok = p->p11 ? key_signs_for(p->key, cert) : X509_check_private_key(cert, p->key) == 1;
	X509_free(cert);
	ERR_clear_error();
	if (!ok)
		return psc_err_set(err, PSC_E_PEER_IDENTITY,
				   "private key %s does not belong to certificate %s",
				   key_name, cfg->cert_file);
	if (EVP_PKEY_is_a(p->key, "RSA")) {
		int bits = EVP_PKEY_get_bits(p->key);
		if (bits < PROTO_KEYWRAP_RSA_MIN_BITS || bits > PROTO_KEYWRAP_RSA_MAX_BITS)
			return psc_err_set(err, PSC_E_PEER_IDENTITY,
					   "RSA key %s has %d bits; %d..%d are supported",
					   key_name, bits, PROTO_KEYWRAP_RSA_MIN_BITS,
					   PROTO_KEYWRAP_RSA_MAX_BITS);
		p->key_is_rsa = 1;
	} else {
		char group[64] = {0};
		size_t gl = 0;
		if (!EVP_PKEY_is_a(p->key, "EC") ||
		    EVP_PKEY_get_utf8_string_param(p->key, OSSL_PKEY_PARAM_GROUP_NAME, group,
						   sizeof(group), &gl) != 1 ||
		    strcmp(group, "prime256v1") != 0) {
			ERR_clear_error();
			return psc_err_set(err, PSC_E_PEER_IDENTITY,
					   "private key %s is neither EC P-256 nor RSA",
					   key_name);
		}
	}
	return PSC_OK;
}

static psc_rc load_kms(psc_peer *p, const psc_peer_config *cfg, psc_err *err)
{
	X509 *cert = NULL;
	psc_err e2;
	psc_rc rc = load_cert(cfg->kms_cert_file, "KMS certificate", &cert, &p->kms_cert_der,
			      &p->kms_cert_len, err);
	if (rc != PSC_OK)
		return rc;
	rc = proto_cert_node_id(cert, cfg->overlay, p->kms_node_id, &e2);
	if (rc == PSC_OK) {
		p->kms_pub = X509_get_pubkey(cert);
		if (!p->kms_pub)
			rc = psc_err_set(err, PSC_E_PEER_IDENTITY,
					 "KMS certificate %s: public key unreadable",
					 cfg->kms_cert_file);
	} else {
		rc = psc_err_set(err, PSC_E_PEER_IDENTITY, "KMS certificate %s: %s",
				 cfg->kms_cert_file, psc_err_text(&e2));
	}
	X509_free(cert);
	ERR_clear_error();
	return rc;
}

static int z85_key_ok(const char *s)
{
	uint8_t bin[32];
	if (strlen(s) != PSC_PEER_CURVE_Z85_LEN)
		return 0;
	return zmq_z85_decode(bin, s) != NULL;
}

/* The KMS CURVE public key: a Z85 string, or a file whose first line is one. */
static psc_rc load_curve(psc_peer *p, const char *spec, psc_err *err)
{
	if (z85_key_ok(spec)) {
		memcpy(p->kms_curve_pub, spec, PSC_PEER_CURVE_Z85_LEN + 1);
		p->curve = 1;
		return PSC_OK;
	}
	FILE *f = fopen(spec, "r");
	if (!f)
		return psc_err_set(err, PSC_E_PEER_CURVE,
				   "KMS CURVE key '%s' is neither 40 Z85 characters nor a "
				   "readable file",
				   spec);
	char line[256] = {0};
	char *got = fgets(line, sizeof(line), f);
	fclose(f);
	size_t n = got ? strlen(line) : 0;
	while (n && isspace((unsigned char)line[n - 1]))
		line[--n] = '\0';
	if (!z85_key_ok(line))
		return psc_err_set(err, PSC_E_PEER_CURVE,
				   "KMS CURVE key file %s: the first line must be the 40-character "
				   "Z85 public key",
				   spec);
	memcpy(p->kms_curve_pub, line, PSC_PEER_CURVE_Z85_LEN + 1);
	p->curve = 1;
	return PSC_OK;
}

psc_rc psc_peer_new(psc_peer **out, const psc_peer_config *cfg, psc_err *err)
{
	if (!out)
		return psc_err_set(err, PSC_E_INVALID_ARG, "psc_peer_new: out is NULL");
	*out = NULL;
	if (!cfg || !cfg->cert_file || !cfg->key_file == !cfg->key_pkcs11 ||
	    !cfg->kms_endpoint || !cfg->kms_cert_file || !cfg->overlay || !cfg->overlay[0])
		return psc_err_set(err, PSC_E_PEER_CONFIG,
				   "peer configuration needs cert_file, key_file or key_pkcs11 "
				   "(one of them), kms_endpoint, kms_cert_file and overlay");
	if (cfg->data_endpoint && strlen(cfg->data_endpoint) > PSC_MAX_ENDPOINT)
		return psc_err_set(err, PSC_E_PEER_CONFIG,
				   "data endpoint is %zu bytes; at most %d are allowed",
				   strlen(cfg->data_endpoint), PSC_MAX_ENDPOINT);
	if (cfg->request_timeout_ms < 0 || cfg->decision_timeout_ms < 0 || cfg->freshness_ms < 0)
		return psc_err_set(err, PSC_E_PEER_CONFIG,
				   "request_timeout_ms, decision_timeout_ms and freshness_ms must "
				   "not be negative");

	psc_peer *p = calloc(1, sizeof(*p));
	if (!p)
		return psc_err_set(err, PSC_E_NOMEM, "out of memory");
	p->kms_endpoint = dup_str(cfg->kms_endpoint);
	p->overlay = dup_str(cfg->overlay);
	p->data_endpoint = dup_str(cfg->data_endpoint ? cfg->data_endpoint : "");
	p->request_timeout_ms =
	    cfg->request_timeout_ms ? cfg->request_timeout_ms : PSC_PEER_DEFAULT_REQUEST_TIMEOUT_MS;
	p->decision_timeout_ms = cfg->decision_timeout_ms ? cfg->decision_timeout_ms
							  : PSC_PEER_DEFAULT_DECISION_TIMEOUT_MS;
	p->freshness_ms =
	    (uint64_t)(cfg->freshness_ms ? cfg->freshness_ms : PSC_PEER_DEFAULT_FRESHNESS_MS);
	p->auto_reconnect = cfg->auto_reconnect;
	if (cfg->callbacks)
		p->cb = *cfg->callbacks;
	p->user = cfg->user;
	p->overlay_hash = proto_overlay_hash(cfg->overlay);

	psc_rc rc = PSC_OK;
	if (!p->kms_endpoint || !p->overlay || !p->data_endpoint)
		rc = psc_err_set(err, PSC_E_NOMEM, "out of memory");
	if (rc == PSC_OK)
		rc = load_identity(p, cfg, err);
	if (rc == PSC_OK)
		rc = load_kms(p, cfg, err);
	if (rc == PSC_OK && cfg->kms_curve_key)
		rc = load_curve(p, cfg->kms_curve_key, err);
	if (rc == PSC_OK &&
	    (psc_store_new(&p->store) != PSC_OK || psc_replay_new(&p->replay) != PSC_OK))
		rc = psc_err_set(err, PSC_E_NOMEM, "out of memory");
	if (rc == PSC_OK) {
		p->zctx = zmq_ctx_new();
		if (!p->zctx)
			rc = psc_err_set(err, PSC_E_PEER_TRANSPORT, "zmq_ctx_new: %s",
					 zmq_strerror(zmq_errno()));
	}
	if (rc == PSC_OK)
		rc = psc_sdk_connect(p, err);
	if (rc != PSC_OK) {
		psc_peer_free(&p);
		return rc;
	}
	*out = p;
	return PSC_OK;
}

void psc_peer_free(psc_peer **pp)
{
	if (!pp || !*pp)
		return;
	psc_peer *p = *pp;
	psc_sdk_disconnect(p);
	if (p->zctx)
		zmq_ctx_term(p->zctx);
	psc_store_free(&p->store); /* wipes every epoch secret */
	psc_replay_free(&p->replay);
	EVP_PKEY_free(p->key); /* OpenSSL clears private key material on free */
	psc_p11key_free(&p->p11); /* after the key that points into it */
	EVP_PKEY_free(p->kms_pub);
	free(p->cert_der);
	free(p->kms_cert_der);
	free(p->kms_endpoint);
	free(p->overlay);
	free(p->data_endpoint);
	OPENSSL_cleanse(p, sizeof(*p));
	free(p);
	*pp = NULL;
}

void psc_sdk_report(psc_peer *p, const psc_err *err)
{
	if (p->cb.on_error)
		p->cb.on_error(p->user, err);
}

psc_rc psc_sdk_apply_material(psc_peer *p, const proto_material *m, psc_peer_reason reason,
			      int *applied, psc_err *err)
{
	char hex[33];
	*applied = 0;
	proto_id_hex(m->psc_id, hex);
	if (m->epoch == 0)
		return psc_err_set(err, PSC_E_PEER_BAD_ANSWER, "PSC %s: material for epoch 0", hex);
	psc_store_expire(p->store, psc_sdk_mono_ms());
	if (psc_store_is_stale(p->store, m->psc_id, m->epoch))
		return PSC_OK;
	uint8_t secret[PSC_EPOCH_SECRET_LEN];
	psc_err e2;
	psc_rc rc = proto_keywrap_unwrap(p->key, m->wrap_alg, m->psc_id, m->epoch, p->node_id,
					 m->ephemeral.p, m->ephemeral.len, m->wrapped.p,
					 m->wrapped.len, secret, &e2);
	if (rc != PSC_OK)
		return psc_err_set(err, rc,
				   "PSC %s epoch %llu: epoch secret does not unwrap "
				   "(%s); not acknowledged",
				   hex, (unsigned long long)m->epoch, psc_err_text(&e2));
	rc = psc_store_apply(p->store, m, secret, psc_sdk_mono_ms());
	OPENSSL_cleanse(secret, sizeof(secret));
	if (rc != PSC_OK)
		return psc_err_set(err, rc, "PSC %s epoch %llu: cannot store it (%s)", hex,
				   (unsigned long long)m->epoch, psc_strerror(rc));
	*applied = 1;
	if (p->cb.on_epoch)
		p->cb.on_epoch(p->user, m->psc_id, m->epoch, reason);
	return PSC_OK;
}

void psc_sdk_forget(psc_peer *p, const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t last_epoch,
		    psc_peer_reason reason, int notify)
{
	int was = psc_store_remove(p->store, psc_id, last_epoch);
	if (was && notify && p->cb.on_gone)
		p->cb.on_gone(p->user, psc_id, last_epoch, reason);
}

psc_rc psc_sdk_epoch_secret(psc_peer *p, const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t epoch,
			    uint64_t *epoch_out, uint8_t out[PSC_EPOCH_SECRET_LEN])
{
	if (!p)
		return PSC_E_INVALID_ARG;
	return psc_store_secret(p->store, psc_id, epoch, psc_sdk_mono_ms(), epoch_out, out);
}

/* --- accessors ----------------------------------------------------------- */

void psc_peer_node_id(const psc_peer *p, uint8_t out[PSC_PEER_ID_LEN])
{
	if (p && out)
		memcpy(out, p->node_id, PSC_NODE_ID_LEN);
}

int psc_peer_is_initialized(const psc_peer *p)
{
	return p ? p->initialized : 0;
}

size_t psc_peer_psc_count(const psc_peer *p)
{
	return p ? psc_store_count(p->store) : 0;
}

static void fill_info(const psc_peer *p, const psc_entry *e, psc_peer_psc_info *out)
{
	memset(out, 0, sizeof(*out));
	memcpy(out->psc_id, e->id, PSC_PSC_ID_LEN);
	memcpy(out->name, e->name, sizeof(out->name));
	memcpy(out->owner, e->owner, PSC_NODE_ID_LEN);
	out->epoch = e->cur.epoch;
	/* An expired previous epoch is reported as gone even before the next
	 * psc_peer_process() wipes it. */
	if (e->prev.held && e->prev_expiry > psc_sdk_mono_ms())
		out->previous_epoch = e->prev.epoch;
	out->suite = e->suite;
	out->sender_signatures = (e->flags & PSC_FLAG_SENDER_SIGNATURES) != 0;
	out->grace_ms = e->grace_ms;
	out->n_members = e->n_members;
	out->is_owner = memcmp(e->owner, p->node_id, PSC_NODE_ID_LEN) == 0;
}

psc_rc psc_peer_psc_at(const psc_peer *p, size_t i, psc_peer_psc_info *out)
{
	if (!p || !out)
		return PSC_E_INVALID_ARG;
	const psc_entry *e = psc_store_at(p->store, i);
	if (!e)
		return PSC_E_PEER_UNKNOWN_PSC;
	fill_info(p, e, out);
	return PSC_OK;
}

psc_rc psc_peer_psc_get(const psc_peer *p, const uint8_t psc_id[PSC_PEER_ID_LEN],
			psc_peer_psc_info *out)
{
	if (!p || !psc_id || !out)
		return PSC_E_INVALID_ARG;
	const psc_entry *e = psc_store_find(p->store, psc_id);
	if (!e)
		return PSC_E_PEER_UNKNOWN_PSC;
	fill_info(p, e, out);
	return PSC_OK;
}

psc_rc psc_peer_psc_member(const psc_peer *p, const uint8_t psc_id[PSC_PEER_ID_LEN], size_t i,
			   psc_peer_member *out)
{
	if (!p || !psc_id || !out)
		return PSC_E_INVALID_ARG;
	const psc_entry *e = psc_store_find(p->store, psc_id);
	if (!e)
		return PSC_E_PEER_UNKNOWN_PSC;
	if (i >= e->n_members)
		return PSC_E_INVALID_ARG;
	*out = e->members[i];
	return PSC_OK;
}

void psc_peer_last_kms_error(const psc_peer *p, psc_peer_kms_error *out)
{
	if (!out)
		return;
	if (!p) {
		memset(out, 0, sizeof(*out));
		out->code_name = out->reason_name = "";
		return;
	}
	*out = p->last_error;
	if (!out->code_name)
		out->code_name = "";
	if (!out->reason_name)
		out->reason_name = "";
}
