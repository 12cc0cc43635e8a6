#include "proto_reload.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "proto_buf.h"
#include "proto_merkle.h"

static psc_rc rd_error(proto_rd *r, psc_err *err, const char *what)
{
	return psc_err_set(err, r->err, "%s: field '%s' at byte %zu: %s", what,
			   r->err_field ? r->err_field : "?", r->err_off, psc_strerror(r->err));
}

/* Destination lists (RFC 6940 §6.3.2.2): validates every entry; reports the
 * first entry if it is a Node-ID. */
static void decode_route_list(proto_rd *r, const uint8_t *p, size_t len, int *has_node,
			      uint8_t node[PSC_NODE_ID_LEN], const char *field)
{
	proto_rd l;
	proto_rd_init(&l, p, len);
	int first = 1;
	while (!l.err && proto_rd_left(&l) > 0) {
		uint8_t b0 = proto_rd_u8(&l, field);
		if (b0 & 0x80) { /* compressed 2-byte opaque id */
			(void)proto_rd_u8(&l, field);
			first = 0;
			continue;
		}
		size_t n = 0;
		const uint8_t *v = proto_rd_vec(&l, 1, 0, 255, &n, field);
		if (l.err)
			break;
		if (b0 == PROTO_DEST_NODE) {
			if (n != PSC_NODE_ID_LEN) {
				proto_rd_fail(&l, PSC_E_BAD_DESTINATION, field);
				break;
			}
			if (first && node) {
				memcpy(node, v, PSC_NODE_ID_LEN);
				*has_node = 1;
			}
		} else if (b0 != 2 && b0 != 3) { /* resource(2), opaque_id_type(3) */
			proto_rd_fail(&l, PSC_E_BAD_DESTINATION, field);
			break;
		}
		first = 0;
	}
	if (l.err && !r->err) {
		r->err = l.err == PSC_E_TRUNCATED ? PSC_E_BAD_DESTINATION : l.err;
		r->err_field = field;
		r->err_off = (size_t)(p - r->p) + l.err_off;
	}
}

static int known_extension(uint16_t type)
{
	(void)type;
	return 0; /* PSC defines no extensions yet; unknown non-critical ones are ignored */
}

psc_rc proto_message_decode(const uint8_t *buf, size_t len, proto_message *m, psc_err *err)
{
	memset(m, 0, sizeof(*m));
	if (!buf)
		return psc_err_set(err, PSC_E_INVALID_ARG, "decode: no buffer");
	if (len > PROTO_MAX_MESSAGE)
		return psc_err_set(err, PSC_E_TOO_LARGE,
				   "RELOAD message of %zu bytes exceeds the %u-byte cap", len,
				   PROTO_MAX_MESSAGE);
	proto_rd r;
	proto_rd_init(&r, buf, len);

	uint32_t token = proto_rd_u32(&r, "relo_token");
	if (!r.err && token != PSC_RELO_TOKEN)
		return psc_err_set(err, PSC_E_BAD_TOKEN,
				   "relo_token is 0x%08x, not 0x%08x: not a RELOAD message", token,
				   PSC_RELO_TOKEN);
	m->overlay = proto_rd_u32(&r, "overlay");
	m->config_seq = proto_rd_u16(&r, "configuration_sequence");
	m->version = proto_rd_u8(&r, "version");
	m->ttl = proto_rd_u8(&r, "ttl");
	m->fragment = proto_rd_u32(&r, "fragment");
	m->length = proto_rd_u32(&r, "length");
	m->transaction_id = proto_rd_u64(&r, "transaction_id");
	m->max_response_length = proto_rd_u32(&r, "max_response_length");
	uint16_t via_len = proto_rd_u16(&r, "via_list_length");
	uint16_t dest_len = proto_rd_u16(&r, "destination_list_length");
	uint16_t opt_len = proto_rd_u16(&r, "options_length");
	if (r.err)
		return rd_error(&r, err, "ForwardingHeader");
	if (m->version != PSC_RELOAD_VERSION)
		return psc_err_set(err, PSC_E_BAD_VERSION, "RELOAD version 0x%02x, expected 0x%02x",
				   m->version, PSC_RELOAD_VERSION);
	if (m->fragment != PSC_RELOAD_FRAG_UNFRAGMENTED)
		return psc_err_set(err, PSC_E_FRAGMENTED,
				   "fragment field 0x%08x: PSC messages must be unfragmented "
				   "(0x%08x)", m->fragment, PSC_RELOAD_FRAG_UNFRAGMENTED);
	if (m->length != len)
		return psc_err_set(err, PSC_E_BAD_LENGTH,
				   "length field says %u bytes but the message has %zu", m->length,
				   len);
	if (via_len > PROTO_MAX_ROUTE_LIST || dest_len > PROTO_MAX_ROUTE_LIST ||
	    opt_len > PROTO_MAX_OPTIONS)
		return psc_err_set(err, PSC_E_TOO_LARGE,
				   "ForwardingHeader lists too long (via %u, destination %u, options "
				   "%u bytes; cap %u)", via_len, dest_len, opt_len,
				   PROTO_MAX_ROUTE_LIST);
	if (opt_len != 0) /* PSC peers talk to the KMS directly: nothing to forward */
		return psc_err_set(err, PSC_E_FORWARDING_OPTION,
				   "options_length is %u: PSC messages carry no forwarding options",
				   opt_len);
	m->via = proto_rd_borrow(&r, via_len, "via_list");
	m->via_len = via_len;
	m->dest = proto_rd_borrow(&r, dest_len, "destination_list");
	m->dest_len = dest_len;
	m->options = proto_rd_borrow(&r, opt_len, "options");
	m->options_len = opt_len;
	if (r.err)
		return rd_error(&r, err, "ForwardingHeader");
	decode_route_list(&r, m->via, m->via_len, NULL, NULL, "via_list");
	decode_route_list(&r, m->dest, m->dest_len, &m->has_dest_node, m->dest_node,
			  "destination_list");
	if (r.err)
		return rd_error(&r, err, "ForwardingHeader");

	/* MessageContents */
	size_t contents_start = r.off;
	m->code = proto_rd_u16(&r, "message_code");
	m->body = proto_rd_vec(&r, 4, 0, PROTO_MAX_MESSAGE, &m->body_len, "message_body");
	proto_rd exts;
	proto_rd_subvec(&r, &exts, 4, 0, PROTO_MAX_EXTENSIONS * (7 + PROTO_MAX_EXTENSION),
			"extensions");
	while (!exts.err && proto_rd_left(&exts) > 0) {
		if (m->n_ext == PROTO_MAX_EXTENSIONS) {
			proto_rd_fail(&exts, PSC_E_TOO_LARGE, "extensions");
			break;
		}
		proto_ext *e = &m->ext[m->n_ext];
		e->type = proto_rd_u16(&exts, "extension.type");
		e->critical = proto_rd_u8(&exts, "extension.critical");
		e->data = proto_rd_vec(&exts, 4, 0, PROTO_MAX_EXTENSION, &e->len,
				       "extension.contents");
		if (!exts.err && e->critical > 1)
			proto_rd_fail(&exts, PSC_E_BAD_VALUE, "extension.critical");
		if (!exts.err)
			m->n_ext++;
	}
	proto_rd_sub_done(&r, &exts);
	if (r.err)
		return rd_error(&r, err, "MessageContents");
	m->contents = buf + contents_start;
	m->contents_len = r.off - contents_start;
	for (size_t i = 0; i < m->n_ext; i++)
		if (m->ext[i].critical && !known_extension(m->ext[i].type))
			return psc_err_set(err, PSC_E_UNKNOWN_EXT,
					   "unknown critical extension type 0x%04x",
					   m->ext[i].type);

	/* SecurityBlock */
	proto_rd certs;
	proto_rd_subvec(&r, &certs, 2, 0, 0xffff, "certificates");
	while (!certs.err && proto_rd_left(&certs) > 0) {
		if (m->n_certs == PROTO_MAX_CERTS) {
			proto_rd_fail(&certs, PSC_E_TOO_LARGE, "certificates");
			break;
		}
		uint8_t type = proto_rd_u8(&certs, "certificate.type");
		if (!certs.err && type != 0) /* x509(0) */
			proto_rd_fail(&certs, PSC_E_BAD_VALUE, "certificate.type");
		m->cert[m->n_certs] = proto_rd_vec(&certs, 2, 1, PROTO_MAX_CERT,
						   &m->cert_len[m->n_certs], "certificate");
		if (!certs.err)
			m->n_certs++;
	}
	proto_rd_sub_done(&r, &certs);
	m->sig_hash = proto_rd_u8(&r, "signature.algorithm.hash");
	m->sig_alg = proto_rd_u8(&r, "signature.algorithm.signature");
	size_t id_start = r.off;
	m->identity_type = proto_rd_u8(&r, "signer_identity.type");
	proto_rd id;
	proto_rd_subvec(&r, &id, 2, 0, 0xffff, "signer_identity");
	if (!r.err && m->identity_type != PROTO_ID_CERT_HASH)
		proto_rd_fail(&r, PSC_E_UNSUPPORTED_ALG, "signer_identity.type");
	m->identity_hash_alg = proto_rd_u8(&id, "signer_identity.hash_alg");
	m->identity_hash = proto_rd_vec(&id, 1, 1, 64, &m->identity_hash_len,
					"signer_identity.certificate_hash");
	proto_rd_expect_end(&id, "signer_identity");
	proto_rd_sub_done(&r, &id);
	m->identity = buf + id_start;
	m->identity_len = r.off - id_start;
	m->sig_value = proto_rd_vec(&r, 2, 1, PROTO_MAX_SIGNATURE, &m->sig_len,
				    "signature_value");
	if (proto_rd_finish(&r, "message") != PSC_OK)
		return rd_error(&r, err, "SecurityBlock");
	if (m->sig_hash != PROTO_HASH_SHA256 || m->identity_hash_alg != PROTO_HASH_SHA256 ||
	    m->identity_hash_len != PSC_HASH_LEN)
		return psc_err_set(err, PSC_E_UNSUPPORTED_ALG,
				   "signature hash %u / identity hash %u (%zu bytes): only "
				   "sha256(4) is supported", m->sig_hash, m->identity_hash_alg,
				   m->identity_hash_len);
	if (m->sig_alg != PROTO_SIG_ECDSA && m->sig_alg != PROTO_SIG_RSA &&
	    m->sig_alg != PROTO_SIG_BATCH_ECDSA && m->sig_alg != PROTO_SIG_BATCH_RSA)
		return psc_err_set(err, PSC_E_UNSUPPORTED_ALG,
				   "signature algorithm %u is not supported", m->sig_alg);
	psc_err_clear(err);
	return PSC_OK;
}

/* ---- building ---------------------------------------------------------- */

static int key_sig_alg(EVP_PKEY *key)
{
	switch (EVP_PKEY_get_base_id(key)) {
	case EVP_PKEY_EC: return PROTO_SIG_ECDSA;
	case EVP_PKEY_RSA: return PROTO_SIG_RSA;
	default: return -1;
	}
}

/* Writes ForwardingHeader (length patched later) and MessageContents; returns
 * the offset where MessageContents start. */
static size_t write_header_and_contents(proto_wr *w, const proto_envelope *env,
					const uint8_t *body, size_t body_len)
{
	proto_wr_u32(w, PSC_RELO_TOKEN);
	proto_wr_u32(w, env->overlay);
	proto_wr_u16(w, 0); /* configuration_sequence: PSC does not use overlay configs */
	proto_wr_u8(w, PSC_RELOAD_VERSION);
	proto_wr_u8(w, PSC_RELOAD_TTL_DEFAULT);
	proto_wr_u32(w, PSC_RELOAD_FRAG_UNFRAGMENTED);
	proto_wr_u32(w, 0); /* length, patched */
	proto_wr_u64(w, env->transaction_id);
	proto_wr_u32(w, env->max_response_length);
	proto_wr_u16(w, 0); /* via_list_length */
	proto_wr_u16(w, env->dest_node ? 2 + PSC_NODE_ID_LEN : 0);
	proto_wr_u16(w, 0); /* options_length */
	if (env->dest_node) {
		proto_wr_u8(w, PROTO_DEST_NODE);
		proto_wr_vec(w, 1, PSC_NODE_ID_LEN, PSC_NODE_ID_LEN, env->dest_node,
			     PSC_NODE_ID_LEN, "destination");
	}
	size_t contents = w->len;
	proto_wr_u16(w, env->code);
	proto_wr_vec(w, 4, 0, PROTO_MAX_MESSAGE, body, body_len, "message_body");
	size_t m = proto_wr_vec_open(w, 4);
	for (size_t i = 0; i < env->n_ext; i++) {
		proto_wr_u16(w, env->ext[i].type);
		proto_wr_u8(w, env->ext[i].critical ? 1 : 0);
		proto_wr_vec(w, 4, 0, PROTO_MAX_EXTENSION, env->ext[i].data, env->ext[i].len,
			     "extension");
	}
	proto_wr_vec_close(w, m, 4, 0, PROTO_MAX_MESSAGE, "extensions");
	return contents;
}

static void write_certs(proto_wr *w, const proto_signer *s)
{
	size_t m = proto_wr_vec_open(w, 2);
	if (s->omit_certificates) {
		proto_wr_vec_close(w, m, 2, 0, 0xffff, "certificates");
		return;
	}
	proto_wr_u8(w, 0);
	proto_wr_vec(w, 2, 1, PROTO_MAX_CERT, s->cert_der, s->cert_len, "certificate");
	for (size_t i = 0; i < s->n_chain && i + 1 < PROTO_MAX_CERTS; i++) {
		proto_wr_u8(w, 0);
		proto_wr_vec(w, 2, 1, PROTO_MAX_CERT, s->chain[i], s->chain_len[i],
			     "certificate");
	}
	proto_wr_vec_close(w, m, 2, 0, 0xffff, "certificates");
}

static void write_identity(proto_wr *w, const proto_signer *s)
{
	uint8_t h[PSC_HASH_LEN];
	SHA256(s->cert_der, s->cert_len, h);
	proto_wr_u8(w, PROTO_ID_CERT_HASH);
	size_t m = proto_wr_vec_open(w, 2);
	proto_wr_u8(w, PROTO_HASH_SHA256);
	proto_wr_vec(w, 1, 1, 255, h, sizeof(h), "certificate_hash");
	proto_wr_vec_close(w, m, 2, 0, 0xffff, "signer_identity");
}

/* Signature input: overlay ‖ transaction_id ‖ MessageContents ‖ SignerIdentity. */
static psc_rc sign_input(EVP_PKEY *key, uint32_t overlay, uint64_t txid, const uint8_t *contents,
			 size_t contents_len, const uint8_t *identity, size_t identity_len,
			 uint8_t *sig, size_t *sig_len)
{
	uint8_t pre[12];
	for (int i = 0; i < 4; i++)
		pre[i] = (uint8_t)(overlay >> (24 - 8 * i));
	for (int i = 0; i < 8; i++)
		pre[4 + i] = (uint8_t)(txid >> (56 - 8 * i));
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	psc_rc rc = PSC_E_CRYPTO;
	if (ctx && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
	    EVP_DigestSignUpdate(ctx, pre, sizeof(pre)) == 1 &&
	    EVP_DigestSignUpdate(ctx, contents, contents_len) == 1 &&
	    EVP_DigestSignUpdate(ctx, identity, identity_len) == 1 &&
	    EVP_DigestSignFinal(ctx, sig, sig_len) == 1)
		rc = PSC_OK;
	EVP_MD_CTX_free(ctx);
	return rc;
}

/* Offsets of the signed parts inside a message being built. */
struct signed_parts {
	size_t contents, contents_end, identity, identity_end;
};

static psc_rc wr_error(proto_wr *w, psc_err *err)
{
	psc_rc rc = psc_err_set(err, w->err, "build: field '%s': %s",
				w->err_field ? w->err_field : "?", psc_strerror(w->err));
	proto_wr_free(w);
	return rc;
}

/* Writes everything up to (not including) signature_value. */
static psc_rc begin_message(proto_wr *w, const proto_envelope *env, const uint8_t *body,
			    size_t body_len, const proto_signer *signer, uint8_t sig_alg,
			    struct signed_parts *sp, psc_err *err)
{
	proto_wr_init(w, PROTO_MAX_MESSAGE);
	sp->contents = write_header_and_contents(w, env, body, body_len);
	sp->contents_end = w->len;
	write_certs(w, signer);
	proto_wr_u8(w, PROTO_HASH_SHA256);
	proto_wr_u8(w, sig_alg);
	sp->identity = w->len;
	write_identity(w, signer);
	sp->identity_end = w->len;
	return w->err ? wr_error(w, err) : PSC_OK;
}

static psc_rc finish_message(proto_wr *w, const uint8_t *sig, size_t sig_len, uint8_t **out,
			     size_t *out_len, psc_err *err)
{
	proto_wr_vec(w, 2, 1, PROTO_MAX_SIGNATURE, sig, sig_len, "signature_value");
	proto_wr_put_u32_at(w, 16, (uint32_t)w->len); /* ForwardingHeader.length */
	if (w->err)
		return wr_error(w, err);
	return proto_wr_take(w, out, out_len);
}

static psc_rc check_signer(const proto_signer *signer, psc_err *err)
{
	if (!signer || !signer->key || !signer->cert_der)
		return psc_err_set(err, PSC_E_INVALID_ARG, "build: missing key or certificate");
	if (key_sig_alg(signer->key) < 0)
		return psc_err_set(err, PSC_E_UNSUPPORTED_ALG,
				   "signing key type %s is not supported (use EC P-256 or RSA)",
				   EVP_PKEY_get0_type_name(signer->key));
	if ((size_t)EVP_PKEY_get_size(signer->key) > PROTO_MAX_SIGNATURE / 2)
		return psc_err_set(err, PSC_E_UNSUPPORTED_ALG, "signing key too large");
	return PSC_OK;
}

psc_rc proto_message_build(const proto_envelope *env, const uint8_t *body, size_t body_len,
			   const proto_signer *signer, uint8_t **out, size_t *out_len,
			   psc_err *err)
{
	*out = NULL;
	*out_len = 0;
	if (!env || (!body && body_len))
		return psc_err_set(err, PSC_E_INVALID_ARG, "build: missing envelope or body");
	psc_rc rc = check_signer(signer, err);
	if (rc != PSC_OK)
		return rc;
	proto_wr w;
	struct signed_parts sp;
	rc = begin_message(&w, env, body, body_len, signer, (uint8_t)key_sig_alg(signer->key),
			   &sp, err);
	if (rc != PSC_OK)
		return rc;
	uint8_t sig[PROTO_MAX_SIGNATURE];
	size_t sig_len = sizeof(sig);
	rc = sign_input(signer->key, env->overlay, env->transaction_id, w.buf + sp.contents,
			sp.contents_end - sp.contents, w.buf + sp.identity,
			sp.identity_end - sp.identity, sig, &sig_len);
	if (rc != PSC_OK) {
		proto_wr_free(&w);
		return psc_err_set(err, rc, "signing the message failed (key unusable?)");
	}
	return finish_message(&w, sig, sig_len, out, out_len, err);
}

/* Leaf hash of one message: SHA-256(0x00 || signature input), streamed. */
static psc_rc batch_leaf(uint32_t overlay, uint64_t txid, const uint8_t *contents,
			 size_t contents_len, const uint8_t *identity, size_t identity_len,
			 uint8_t out[PSC_HASH_LEN])
{
	uint8_t pre[13] = {0x00};
	for (int i = 0; i < 4; i++)
		pre[1 + i] = (uint8_t)(overlay >> (24 - 8 * i));
	for (int i = 0; i < 8; i++)
		pre[5 + i] = (uint8_t)(txid >> (56 - 8 * i));
	unsigned int n = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
		 EVP_DigestUpdate(ctx, pre, sizeof(pre)) == 1 &&
		 EVP_DigestUpdate(ctx, contents, contents_len) == 1 &&
		 EVP_DigestUpdate(ctx, identity, identity_len) == 1 &&
		 EVP_DigestFinal_ex(ctx, out, &n) == 1;
	EVP_MD_CTX_free(ctx);
	return ok ? PSC_OK : PSC_E_CRYPTO;
}

/* The bytes the batch signer signs: label || uint32 tree_size || root. */
static void batch_signed_bytes(uint32_t n, const uint8_t root[PSC_HASH_LEN],
			       uint8_t out[sizeof(PROTO_BATCH_LABEL) - 1 + 4 + PSC_HASH_LEN])
{
	const size_t l = sizeof(PROTO_BATCH_LABEL) - 1;
	memcpy(out, PROTO_BATCH_LABEL, l);
	for (int i = 0; i < 4; i++)
		out[l + (size_t)i] = (uint8_t)(n >> (24 - 8 * i));
	memcpy(out + l + 4, root, PSC_HASH_LEN);
}

psc_rc proto_message_build_batch(const proto_envelope *envs, const uint8_t *const *bodies,
				 const size_t *body_lens, size_t n, const proto_signer *signer,
				 uint8_t **outs, size_t *out_lens, psc_err *err)
{
	if (!envs || !bodies || !body_lens || !outs || !out_lens || n == 0 ||
	    n > PROTO_MAX_BATCH)
		return psc_err_set(err, PSC_E_INVALID_ARG, "batch of %zu messages (1..%u)", n,
				   PROTO_MAX_BATCH);
	psc_rc rc = check_signer(signer, err);
	if (rc != PSC_OK)
		return rc;
	for (size_t i = 0; i < n; i++) {
		outs[i] = NULL;
		out_lens[i] = 0;
	}
	uint8_t alg = key_sig_alg(signer->key) == PROTO_SIG_ECDSA ? PROTO_SIG_BATCH_ECDSA
								  : PROTO_SIG_BATCH_RSA;
	proto_wr *w = calloc(n, sizeof(*w));
	uint8_t(*leaves)[PSC_HASH_LEN] = calloc(n, sizeof(*leaves));
	proto_merkle_tree *tree = NULL;
	size_t built = 0;
	if (!w || !leaves) {
		rc = psc_err_set(err, PSC_E_NOMEM, "batch of %zu messages: out of memory", n);
		goto out;
	}
	for (; built < n; built++) {
		struct signed_parts sp;
		rc = begin_message(&w[built], &envs[built], bodies[built], body_lens[built],
				   signer, alg, &sp, err);
		if (rc != PSC_OK)
			goto out;
		rc = batch_leaf(envs[built].overlay, envs[built].transaction_id,
				w[built].buf + sp.contents, sp.contents_end - sp.contents,
				w[built].buf + sp.identity, sp.identity_end - sp.identity,
				leaves[built]);
		if (rc != PSC_OK) {
			proto_wr_free(&w[built]);
			goto out;
		}
	}
	uint8_t root[PSC_HASH_LEN];
	rc = proto_merkle_tree_new(&tree, (const uint8_t(*)[PSC_HASH_LEN])leaves, n);
	if (rc != PSC_OK)
		goto out;
	proto_merkle_tree_root(tree, root);
	uint8_t tbs[sizeof(PROTO_BATCH_LABEL) - 1 + 4 + PSC_HASH_LEN];
	batch_signed_bytes((uint32_t)n, root, tbs);
	uint8_t root_sig[PROTO_MAX_SIGNATURE / 2];
	size_t root_sig_len = sizeof(root_sig);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, signer->key) == 1 &&
		 EVP_DigestSign(ctx, root_sig, &root_sig_len, tbs, sizeof(tbs)) == 1;
	EVP_MD_CTX_free(ctx);
	if (!ok) {
		rc = psc_err_set(err, PSC_E_CRYPTO, "signing the batch root failed (key unusable?)");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		uint8_t path[PROTO_MAX_BATCH_PATH][PSC_HASH_LEN];
		size_t path_len = 0;
		rc = proto_merkle_tree_path(tree, i, path, PROTO_MAX_BATCH_PATH, &path_len);
		if (rc != PSC_OK)
			goto out;
		proto_wr sv;
		proto_wr_init(&sv, PROTO_MAX_SIGNATURE);
		proto_wr_u32(&sv, (uint32_t)n);
		proto_wr_u32(&sv, (uint32_t)i);
		proto_wr_bytes(&sv, root, PSC_HASH_LEN);
		proto_wr_vec(&sv, 2, 0, PROTO_MAX_BATCH_PATH * PSC_HASH_LEN, path,
			     path_len * PSC_HASH_LEN, "batch.path");
		proto_wr_vec(&sv, 2, 1, PROTO_MAX_SIGNATURE / 2, root_sig, root_sig_len,
			     "batch.root_signature");
		if (sv.err) {
			rc = wr_error(&sv, err);
			goto out;
		}
		rc = finish_message(&w[i], sv.buf, sv.len, &outs[i], &out_lens[i], err);
		proto_wr_free(&sv);
		if (rc != PSC_OK)
			goto out;
	}
	rc = PSC_OK;
out:
	if (rc != PSC_OK) {
		for (size_t i = 0; i < n; i++) {
			free(outs[i]);
			outs[i] = NULL;
			out_lens[i] = 0;
		}
	}
	for (size_t i = 0; w && i < built; i++)
		proto_wr_free(&w[i]);
	free(w);
	free(leaves);
	proto_merkle_tree_free(&tree);
	return rc;
}

/* ---- verifying --------------------------------------------------------- */

psc_rc proto_message_signer_cert(const proto_message *m, const uint8_t **der, size_t *len)
{
	for (size_t i = 0; i < m->n_certs; i++) {
		uint8_t h[PSC_HASH_LEN];
		SHA256(m->cert[i], m->cert_len[i], h);
		if (m->identity_hash_len == PSC_HASH_LEN &&
		    CRYPTO_memcmp(h, m->identity_hash, PSC_HASH_LEN) == 0) {
			*der = m->cert[i];
			*len = m->cert_len[i];
			return PSC_OK;
		}
	}
	*der = NULL;
	*len = 0;
	return PSC_E_NO_CERT;
}

int proto_message_signed_by(const proto_message *m, const uint8_t *cert_der, size_t cert_len)
{
	uint8_t h[PSC_HASH_LEN];
	SHA256(cert_der, cert_len, h);
	return m->identity_hash_len == PSC_HASH_LEN &&
	       CRYPTO_memcmp(h, m->identity_hash, PSC_HASH_LEN) == 0;
}

static psc_rc verify_raw(EVP_PKEY *pub, const uint8_t *const *parts, const size_t *lens,
			 size_t n_parts, const uint8_t *sig, size_t sig_len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	psc_rc rc = PSC_E_CRYPTO;
	if (ctx && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pub) == 1) {
		int ok = 1;
		for (size_t i = 0; i < n_parts && ok; i++)
			ok = EVP_DigestVerifyUpdate(ctx, parts[i], lens[i]) == 1;
		rc = ok && EVP_DigestVerifyFinal(ctx, sig, sig_len) == 1 ? PSC_OK
									 : PSC_E_BAD_SIGNATURE;
	}
	EVP_MD_CTX_free(ctx);
	return rc;
}

static void signature_prefix(const proto_message *m, uint8_t pre[12])
{
	for (int i = 0; i < 4; i++)
		pre[i] = (uint8_t)(m->overlay >> (24 - 8 * i));
	for (int i = 0; i < 8; i++)
		pre[4 + i] = (uint8_t)(m->transaction_id >> (56 - 8 * i));
}

psc_rc proto_message_verify(const proto_message *m, EVP_PKEY *pub, psc_err *err)
{
	if (!m || !pub)
		return psc_err_set(err, PSC_E_INVALID_ARG, "verify: missing message or key");
	int want = key_sig_alg(pub);
	int base = m->sig_alg == PROTO_SIG_BATCH_ECDSA ? PROTO_SIG_ECDSA
		   : m->sig_alg == PROTO_SIG_BATCH_RSA ? PROTO_SIG_RSA
						       : m->sig_alg;
	if (want != base)
		return psc_err_set(err, PSC_E_BAD_SIGNATURE,
				   "signature algorithm %u does not match the signer's %s key",
				   m->sig_alg, EVP_PKEY_get0_type_name(pub));
	uint8_t pre[12];
	signature_prefix(m, pre);
	if (m->sig_alg == PROTO_SIG_ECDSA || m->sig_alg == PROTO_SIG_RSA) {
		const uint8_t *parts[] = {pre, m->contents, m->identity};
		const size_t lens[] = {sizeof(pre), m->contents_len, m->identity_len};
		psc_rc rc = verify_raw(pub, parts, lens, 3, m->sig_value, m->sig_len);
		if (rc != PSC_OK)
			return psc_err_set(err, PSC_E_BAD_SIGNATURE,
					   "signature over message code 0x%04x (transaction "
					   "%016llx) does not verify", m->code,
					   (unsigned long long)m->transaction_id);
		return PSC_OK;
	}
	/* Batch: BatchSignature { tree_size, leaf_index, root, path, root_signature }. */
	proto_rd r;
	proto_rd_init(&r, m->sig_value, m->sig_len);
	uint32_t n = proto_rd_u32(&r, "batch.tree_size");
	uint32_t index = proto_rd_u32(&r, "batch.leaf_index");
	const uint8_t *root = proto_rd_borrow(&r, PSC_HASH_LEN, "batch.root");
	size_t path_bytes = 0, root_sig_len = 0;
	const uint8_t *path = proto_rd_vec(&r, 2, 0, PROTO_MAX_BATCH_PATH * PSC_HASH_LEN,
					   &path_bytes, "batch.path");
	const uint8_t *root_sig = proto_rd_vec(&r, 2, 1, PROTO_MAX_SIGNATURE / 2,
					       &root_sig_len, "batch.root_signature");
	if (proto_rd_finish(&r, "batch signature") != PSC_OK)
		return rd_error(&r, err, "batch signature");
	if (n == 0 || n > PROTO_MAX_BATCH || index >= n || path_bytes % PSC_HASH_LEN)
		return psc_err_set(err, PSC_E_BAD_SIGNATURE,
				   "batch signature: leaf %u of %u with a %zu-byte path is not "
				   "a valid position", index, n, path_bytes);
	uint8_t leaf[PSC_HASH_LEN];
	if (batch_leaf(m->overlay, m->transaction_id, m->contents, m->contents_len, m->identity,
		       m->identity_len, leaf) != PSC_OK)
		return psc_err_set(err, PSC_E_CRYPTO, "hashing the message failed");
	if (proto_merkle_verify_path(leaf, index, n, (const uint8_t(*)[PSC_HASH_LEN])path,
				     path_bytes / PSC_HASH_LEN, root) != PSC_OK)
		return psc_err_set(err, PSC_E_BAD_SIGNATURE,
				   "message code 0x%04x (transaction %016llx) is not in the "
				   "signed batch (inclusion path does not lead to the root)",
				   m->code, (unsigned long long)m->transaction_id);
	uint8_t tbs[sizeof(PROTO_BATCH_LABEL) - 1 + 4 + PSC_HASH_LEN];
	batch_signed_bytes(n, root, tbs);
	const uint8_t *parts[] = {tbs};
	const size_t lens[] = {sizeof(tbs)};
	if (verify_raw(pub, parts, lens, 1, root_sig, root_sig_len) != PSC_OK)
		return psc_err_set(err, PSC_E_BAD_SIGNATURE,
				   "batch root signature over %u messages does not verify", n);
	return PSC_OK;
}

/* ---- errors ------------------------------------------------------------ */

psc_rc proto_error_encode(const proto_error *e, uint8_t **out, size_t *out_len)
{
	proto_wr w;
	proto_wr_init(&w, 2 + 2 + 2 + 2 + PROTO_MAX_ERROR_TEXT);
	proto_wr_u16(&w, e->error_code);
	size_t m = proto_wr_vec_open(&w, 2);
	proto_wr_u16(&w, e->psc_reason);
	proto_wr_vec(&w, 2, 0, PROTO_MAX_ERROR_TEXT, e->text, e->text_len, "error_text");
	proto_wr_vec_close(&w, m, 2, 0, PROTO_MAX_ERROR_INFO, "error_info");
	return proto_wr_take(&w, out, out_len);
}

psc_rc proto_error_decode(const uint8_t *body, size_t len, proto_error *e, psc_err *err)
{
	memset(e, 0, sizeof(*e));
	proto_rd r, info;
	proto_rd_init(&r, body, len);
	e->error_code = proto_rd_u16(&r, "error_code");
	proto_rd_subvec(&r, &info, 2, 0, PROTO_MAX_ERROR_INFO, "error_info");
	if (!info.err && info.len > 0) {
		e->psc_reason = proto_rd_u16(&info, "psc_reason");
		e->text = proto_rd_vec(&info, 2, 0, PROTO_MAX_ERROR_TEXT, &e->text_len,
				       "error_text");
		proto_rd_expect_end(&info, "error_info");
	}
	proto_rd_sub_done(&r, &info);
	if (proto_rd_finish(&r, "ErrorResponse") != PSC_OK)
		return rd_error(&r, err, "ErrorResponse");
	if (e->error_code < PSC_RERR_FORBIDDEN || e->error_code > PSC_RERR_INVALID_MESSAGE)
		return psc_err_set(err, PSC_E_BAD_ERROR_CODE,
				   "ErrorResponse code %u is not a RELOAD error code", e->error_code);
	return PSC_OK;
}

uint32_t proto_overlay_hash(const char *overlay_name)
{
	uint8_t h[SHA_DIGEST_LENGTH];
	SHA1((const uint8_t *)overlay_name, strlen(overlay_name), h);
	return (uint32_t)h[16] << 24 | (uint32_t)h[17] << 16 | (uint32_t)h[18] << 8 | h[19];
}

const char *proto_reload_error_name(uint16_t code)
{
	static const char *const names[] = {
		[2] = "Forbidden", [3] = "Not_Found", [4] = "Request_Timeout",
		[5] = "Generation_Counter_Too_Low", [6] = "Incompatible_with_Overlay",
		[7] = "Unsupported_Forwarding_Option", [8] = "Data_Too_Large",
		[9] = "Data_Too_Old", [10] = "TTL_Exceeded", [11] = "Message_Too_Large",
		[12] = "Unknown_Kind", [13] = "Unknown_Extension", [14] = "Response_Too_Large",
		[15] = "Config_Too_Old", [16] = "Config_Too_New", [17] = "In_Progress",
		[18] = "Exp_A", [19] = "Exp_B", [20] = "Invalid_Message",
	};
	if (code < sizeof(names) / sizeof(names[0]) && names[code])
		return names[code];
	return "Unknown";
}
