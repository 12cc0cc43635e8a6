#include "proto_buf.h"

#include <stdlib.h>
#include <string.h>

void proto_rd_init(proto_rd *r, const uint8_t *p, size_t len)
{
	memset(r, 0, sizeof(*r));
	r->p = p;
	r->len = p ? len : 0;
}

void proto_rd_fail(proto_rd *r, psc_rc rc, const char *field)
{
	if (r->err != PSC_OK)
		return;
	r->err = rc;
	r->err_field = field;
	r->err_off = r->off;
}

size_t proto_rd_left(const proto_rd *r)
{
	return r->err ? 0 : r->len - r->off;
}

const uint8_t *proto_rd_borrow(proto_rd *r, size_t n, const char *field)
{
	if (r->err)
		return NULL;
	if (n > r->len - r->off) {
		proto_rd_fail(r, PSC_E_TRUNCATED, field);
		return NULL;
	}
	const uint8_t *p = r->p + r->off;
	r->off += n;
	return p;
}

static uint64_t rd_uint(proto_rd *r, size_t n, const char *field)
{
	const uint8_t *p = proto_rd_borrow(r, n, field);
	uint64_t v = 0;
	if (!p)
		return 0;
	for (size_t i = 0; i < n; i++)
		v = (v << 8) | p[i];
	return v;
}

uint8_t proto_rd_u8(proto_rd *r, const char *field)
{
	return (uint8_t)rd_uint(r, 1, field);
}

uint16_t proto_rd_u16(proto_rd *r, const char *field)
{
	return (uint16_t)rd_uint(r, 2, field);
}

uint32_t proto_rd_u32(proto_rd *r, const char *field)
{
	return (uint32_t)rd_uint(r, 4, field);
}

uint64_t proto_rd_u64(proto_rd *r, const char *field)
{
	return rd_uint(r, 8, field);
}

void proto_rd_bytes(proto_rd *r, void *out, size_t n, const char *field)
{
	const uint8_t *p = proto_rd_borrow(r, n, field);
	if (p)
		memcpy(out, p, n);
	else if (n)
		memset(out, 0, n);
}

size_t proto_prefix_max(unsigned prefix)
{
	switch (prefix) {
	case 1: return 0xffu;
	case 2: return 0xffffu;
	case 3: return 0xffffffu;
	case 4: return 0xffffffffu;
	default: return 0;
	}
}

const uint8_t *proto_rd_vec(proto_rd *r, unsigned prefix, size_t min, size_t max,
			    size_t *out_len, const char *field)
{
	*out_len = 0;
	if (prefix < 1 || prefix > 4) {
		proto_rd_fail(r, PSC_E_INVALID_ARG, field);
		return NULL;
	}
	size_t start = r->off;
	uint64_t n = rd_uint(r, prefix, field);
	if (r->err)
		return NULL;
	if (n > max) {
		r->off = start;
		proto_rd_fail(r, PSC_E_TOO_LARGE, field);
		return NULL;
	}
	if (n < min) {
		r->off = start;
		proto_rd_fail(r, PSC_E_BAD_VALUE, field);
		return NULL;
	}
	const uint8_t *p = proto_rd_borrow(r, (size_t)n, field);
	if (p)
		*out_len = (size_t)n;
	return p;
}

void proto_rd_subvec(proto_rd *r, proto_rd *sub, unsigned prefix, size_t min, size_t max,
		     const char *field)
{
	size_t n = 0;
	const uint8_t *p = proto_rd_vec(r, prefix, min, max, &n, field);
	proto_rd_init(sub, p, n);
	if (r->err)
		proto_rd_fail(sub, r->err, field);
}

void proto_rd_sub_done(proto_rd *r, const proto_rd *sub)
{
	if (r->err || !sub->err)
		return;
	r->err = sub->err;
	r->err_field = sub->err_field;
	/* Report the absolute offset: the sub-reader's data ends where r now is. */
	r->err_off = (r->off - sub->len) + sub->err_off;
}

void proto_rd_expect_end(proto_rd *r, const char *what)
{
	if (!r->err && r->off != r->len)
		proto_rd_fail(r, PSC_E_TRAILING, what);
}

psc_rc proto_rd_finish(proto_rd *r, const char *what)
{
	proto_rd_expect_end(r, what);
	return r->err;
}

void proto_wr_init(proto_wr *w, size_t max)
{
	memset(w, 0, sizeof(*w));
	w->max = max;
}

void proto_wr_free(proto_wr *w)
{
	free(w->buf);
	memset(w, 0, sizeof(*w));
}

void proto_wr_fail(proto_wr *w, psc_rc rc, const char *field)
{
	if (w->err != PSC_OK)
		return;
	w->err = rc;
	w->err_field = field;
}

static uint8_t *wr_reserve(proto_wr *w, size_t n)
{
	if (w->err)
		return NULL;
	if (n > w->max - w->len) {
		proto_wr_fail(w, PSC_E_TOO_LARGE, "message");
		return NULL;
	}
	if (w->len + n > w->cap) {
		size_t cap = w->cap ? w->cap : 256;
		while (cap < w->len + n)
			cap = cap > w->max / 2 ? w->max : cap * 2;
		uint8_t *b = realloc(w->buf, cap);
		if (!b) {
			proto_wr_fail(w, PSC_E_NOMEM, "message");
			return NULL;
		}
		w->buf = b;
		w->cap = cap;
	}
	uint8_t *p = w->buf + w->len;
	w->len += n;
	return p;
}

static void wr_uint(proto_wr *w, uint64_t v, size_t n)
{
	uint8_t *p = wr_reserve(w, n);
	if (!p)
		return;
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

void proto_wr_u8(proto_wr *w, uint8_t v)
{
	wr_uint(w, v, 1);
}

void proto_wr_u16(proto_wr *w, uint16_t v)
{
	wr_uint(w, v, 2);
}

void proto_wr_u32(proto_wr *w, uint32_t v)
{
	wr_uint(w, v, 4);
}

void proto_wr_u64(proto_wr *w, uint64_t v)
{
	wr_uint(w, v, 8);
}

void proto_wr_bytes(proto_wr *w, const void *p, size_t n)
{
	uint8_t *d = wr_reserve(w, n);
	if (d && n)
		memcpy(d, p, n);
}

void proto_wr_vec(proto_wr *w, unsigned prefix, size_t min, size_t max, const void *p,
		  size_t n, const char *field)
{
	if (w->err)
		return;
	if (n > max || n > proto_prefix_max(prefix)) {
		proto_wr_fail(w, PSC_E_TOO_LARGE, field);
		return;
	}
	if (n < min) {
		proto_wr_fail(w, PSC_E_BAD_VALUE, field);
		return;
	}
	wr_uint(w, n, prefix);
	proto_wr_bytes(w, p, n);
}

size_t proto_wr_vec_open(proto_wr *w, unsigned prefix)
{
	size_t mark = w->len;
	wr_uint(w, 0, prefix);
	return mark;
}

void proto_wr_vec_close(proto_wr *w, size_t mark, unsigned prefix, size_t min, size_t max,
			const char *field)
{
	if (w->err)
		return;
	size_t n = w->len - mark - prefix;
	if (n > max || n > proto_prefix_max(prefix)) {
		proto_wr_fail(w, PSC_E_TOO_LARGE, field);
		return;
	}
	if (n < min) {
		proto_wr_fail(w, PSC_E_BAD_VALUE, field);
		return;
	}
	for (unsigned i = 0; i < prefix; i++)
		w->buf[mark + i] = (uint8_t)(n >> (8 * (prefix - 1 - i)));
}

void proto_wr_put_u32_at(proto_wr *w, size_t off, uint32_t v)
{
	if (w->err || off + 4 > w->len)
		return;
	for (int i = 0; i < 4; i++)
		w->buf[off + (size_t)i] = (uint8_t)(v >> (8 * (3 - i)));
}

psc_rc proto_wr_take(proto_wr *w, uint8_t **out, size_t *out_len)
{
	*out = NULL;
	*out_len = 0;
	if (w->err) {
		psc_rc rc = w->err;
		proto_wr_free(w);
		return rc;
	}
	if (!w->buf) {
		/* Empty but valid: hand out a 1-byte allocation so free() is uniform. */
		w->buf = malloc(1);
		if (!w->buf)
			return PSC_E_NOMEM;
	}
	*out = w->buf;
	*out_len = w->len;
	w->buf = NULL;
	w->len = w->cap = 0;
	return PSC_OK;
}
