/*
 * libFuzzer harness for the wire decoder: RELOAD framing, SecurityBlock, the
 * body of whatever code the message claims, every list iterator, signature
 * verification (including batch paths) and ErrorResponse decoding. Also
 * re-encodes a decoded body and checks it reproduces the input bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "proto_msg.h"
#include "proto_reload.h"
#include "proto_samples.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static sample_signer signer;
static int loaded;

static void walk_material(const proto_material *m)
{
	proto_iter it;
	proto_member mem;
	proto_iter_init(&it, m->members.raw, m->members.raw_len);
	size_t n = 0;
	while (proto_next_member(&it, &mem))
		n++;
	if (n != m->members.n)
		abort();
}

static void walk(const psc_body *b)
{
	proto_iter it;
	switch (b->code) {
	case PSC_MSG_INITIALIZE_ANS: {
		proto_material m;
		proto_iter_init(&it, b->u.initialize_ans.memberships.raw,
				b->u.initialize_ans.memberships.raw_len);
		while (proto_next_material(&it, &m))
			walk_material(&m);
		break;
	}
	case PSC_MSG_JOIN_ANS:
		walk_material(&b->u.join_ans.material);
		break;
	case PSC_MSG_CATCHUP_ANS: {
		proto_catchup_entry e;
		proto_iter_init(&it, b->u.catchup_ans.entries.raw, b->u.catchup_ans.entries.raw_len);
		while (proto_next_catchup(&it, &e))
			if (e.status == PSC_CATCHUP_NEWER)
				walk_material(&e.material);
		break;
	}
	case PSC_MSG_INITIALIZE_REQ: {
		proto_label l;
		uint8_t id[16];
		const proto_establish_params *p = &b->u.initialize_req.establish;
		proto_iter_init(&it, p->labels.raw, p->labels.raw_len);
		while (proto_next_label(&it, &l))
			;
		proto_iter_init(&it, p->members.raw, p->members.raw_len);
		while (proto_next_node_id(&it, id))
			;
		break;
	}
	default:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!loaded) {
		if (sample_signer_load(&signer) != 0)
			abort();
		loaded = 1;
	}
	proto_message m;
	psc_err e;
	if (proto_message_decode(data, size, &m, &e) != PSC_OK)
		return 0;
	const uint8_t *der;
	size_t der_len;
	/* Outcomes vary with the input; the harness only requires no crash. */
	volatile psc_rc sink = proto_message_signer_cert(&m, &der, &der_len);
	sink = proto_message_verify(&m, signer.key, &e);
	if (m.code == PSC_MSG_ERROR) {
		proto_error pe;
		sink = proto_error_decode(m.body, m.body_len, &pe, &e);
		(void)sink;
		return 0;
	}
	(void)sink;
	psc_body b;
	if (proto_body_decode(m.code, m.body, m.body_len, &b, &e) != PSC_OK)
		return 0;
	walk(&b);
	uint8_t *again = NULL;
	size_t again_len = 0;
	if (proto_body_encode(&b, &again, &again_len, &e) != PSC_OK)
		abort(); /* whatever decodes must re-encode */
	if (again_len != m.body_len || memcmp(again, m.body, again_len) != 0)
		abort(); /* and byte for byte */
	free(again);
	return 0;
}
