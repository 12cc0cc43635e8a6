/*
 * pol_yaml — YAML text to a bounded node tree (see pol_yaml.h).
 *
 * Uses libyaml's event API rather than its document API because only events
 * show anchors, aliases and explicit tags, which policy files must not use
 * (an alias makes one rule appear in two places; a tag changes a type).
 */
#include "pol_yaml.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "pol_policy.h"

/* ---- arena ---------------------------------------------------------------- */

#define ARENA_CHUNK 16384

struct arena_chunk {
	struct arena_chunk *next;
	size_t used, cap;
	max_align_t data[];
};

struct pol_arena {
	struct arena_chunk *head;
};

psc_rc pol_arena_new(pol_arena **out)
{
	pol_arena *a = calloc(1, sizeof(*a));
	if (!a)
		return PSC_E_NOMEM;
	*out = a;
	return PSC_OK;
}

void pol_arena_free(pol_arena **ap)
{
	if (!ap || !*ap)
		return;
	struct arena_chunk *c = (*ap)->head;
	while (c) {
		struct arena_chunk *n = c->next;
		free(c);
		c = n;
	}
	free(*ap);
	*ap = NULL;
}

void *pol_arena_alloc(pol_arena *a, size_t n)
{
	const size_t align = sizeof(max_align_t);
	if (n > SIZE_MAX / 2)
		return NULL;
	n = (n + align - 1) / align * align;
	if (n == 0)
		n = align;
	struct arena_chunk *c = a->head;
	if (!c || c->cap - c->used < n) {
		size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
		c = malloc(sizeof(*c) + cap);
		if (!c)
			return NULL;
		c->used = 0;
		c->cap = cap;
		c->next = a->head;
		a->head = c;
	}
	void *p = (char *)c->data + c->used;
	c->used += n;
	memset(p, 0, n);
	return p;
}

char *pol_arena_strndup(pol_arena *a, const char *s, size_t n)
{
	char *p = pol_arena_alloc(a, n + 1);
	if (p) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	return p;
}

/* ---- errors --------------------------------------------------------------- */

psc_rc pol_yerr(psc_err *err, psc_rc rc, const char *file, const pol_ynode *at, const char *fmt,
		...)
{
	if (!err)
		return rc;
	char msg[PSC_ERR_DETAIL_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (at)
		return psc_err_set(err, rc, "%s:%u:%u: %s", file, at->line, at->col, msg);
	return psc_err_set(err, rc, "%s: %s", file, msg);
}

psc_rc pol_read_file(const char *path, char **buf, size_t *len, psc_err *err)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return psc_err_set(err, PSC_E_POLICY_IO, "%s: cannot open: %s", path,
				   strerror(errno));
	char *b = malloc(POL_FILE_MAX + 1);
	if (!b) {
		fclose(f);
		return psc_err_set(err, PSC_E_NOMEM, "%s: out of memory", path);
	}
	size_t n = fread(b, 1, POL_FILE_MAX + 1, f);
	int bad = ferror(f);
	fclose(f);
	if (bad) {
		free(b);
		return psc_err_set(err, PSC_E_POLICY_IO, "%s: read error", path);
	}
	if (n > POL_FILE_MAX) {
		free(b);
		return psc_err_set(err, PSC_E_POLICY_LIMIT,
				   "%s: file is larger than %d bytes (POL_FILE_MAX); split it "
				   "or use named sets",
				   path, POL_FILE_MAX);
	}
	*buf = b;
	*len = n;
	return PSC_OK;
}

/* ---- parser --------------------------------------------------------------- */

struct frame {
	pol_ynode *node;
	pol_ynode **kids; /* malloc'd while the collection is open */
	size_t n, cap;
};

struct builder {
	pol_arena *a;
	const char *file;
	struct frame st[POL_DEPTH_MAX + 1];
	int depth; /* frames in use */
	size_t nodes;
	pol_ynode *root;
	psc_err *err;
};

static psc_rc b_fail_mark(struct builder *b, psc_rc rc, yaml_mark_t m, const char *what)
{
	return psc_err_set(b->err, rc, "%s:%zu:%zu: %s", b->file, m.line + 1, m.column + 1, what);
}

static pol_ynode *b_node(struct builder *b, pol_ynode_kind k, yaml_mark_t m)
{
	pol_ynode *n = pol_arena_alloc(b->a, sizeof(*n));
	if (!n)
		return NULL;
	n->kind = k;
	n->line = (unsigned)m.line + 1;
	n->col = (unsigned)m.column + 1;
	return n;
}

/* Adds n to the open collection (or makes it the root). */
static psc_rc b_add(struct builder *b, pol_ynode *n)
{
	if (++b->nodes > POL_NODES_MAX)
		return pol_yerr(b->err, PSC_E_POLICY_LIMIT, b->file, n,
				"more than %d YAML nodes (POL_NODES_MAX)", POL_NODES_MAX);
	if (b->depth == 0) {
		b->root = n;
		return PSC_OK;
	}
	struct frame *f = &b->st[b->depth - 1];
	bool is_key = f->node->kind == POL_Y_MAP && f->n % 2 == 0;
	if (is_key) {
		if (n->kind != POL_Y_SCALAR)
			return pol_yerr(b->err, PSC_E_POLICY_SCHEMA, b->file, n,
					"mapping keys must be plain strings, found a %s",
					pol_ykind_name(n->kind));
		for (size_t i = 0; i < f->n; i += 2)
			if (strcmp(f->kids[i]->s, n->s) == 0)
				return pol_yerr(b->err, PSC_E_POLICY_DUPLICATE, b->file, n,
						"duplicate key '%s' (first at line %u, column %u)",
						n->s, f->kids[i]->line, f->kids[i]->col);
	}
	size_t limit = f->node->kind == POL_Y_MAP ? 2 * (size_t)POL_ITEMS_MAX : POL_ITEMS_MAX;
	if (f->n >= limit)
		return pol_yerr(b->err, PSC_E_POLICY_LIMIT, b->file, n,
				"more than %d entries in one %s (POL_ITEMS_MAX)", POL_ITEMS_MAX,
				pol_ykind_name(f->node->kind));
	if (f->n == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 8;
		pol_ynode **k = realloc(f->kids, cap * sizeof(*k));
		if (!k)
			return psc_err_set(b->err, PSC_E_NOMEM, "%s: out of memory", b->file);
		f->kids = k;
		f->cap = cap;
	}
	f->kids[f->n++] = n;
	return PSC_OK;
}

static psc_rc b_close(struct builder *b)
{
	struct frame *f = &b->st[b->depth - 1];
	pol_ynode *n = f->node;
	if (n->kind == POL_Y_MAP) {
		n->n = f->n / 2;
		n->keys = pol_arena_alloc(b->a, (n->n ? n->n : 1) * sizeof(*n->keys));
		n->items = pol_arena_alloc(b->a, (n->n ? n->n : 1) * sizeof(*n->items));
		if (!n->keys || !n->items)
			return psc_err_set(b->err, PSC_E_NOMEM, "%s: out of memory", b->file);
		for (size_t i = 0; i < n->n; i++) {
			n->keys[i] = f->kids[2 * i];
			n->items[i] = f->kids[2 * i + 1];
		}
	} else {
		n->n = f->n;
		n->items = pol_arena_alloc(b->a, (n->n ? n->n : 1) * sizeof(*n->items));
		if (!n->items)
			return psc_err_set(b->err, PSC_E_NOMEM, "%s: out of memory", b->file);
		if (n->n)
			memcpy(n->items, f->kids, n->n * sizeof(*n->items));
	}
	free(f->kids);
	f->kids = NULL;
	f->n = f->cap = 0;
	b->depth--;
	return PSC_OK;
}

static psc_rc b_open(struct builder *b, pol_ynode *n, yaml_mark_t m)
{
	if (b->depth >= POL_DEPTH_MAX)
		return b_fail_mark(b, PSC_E_POLICY_LIMIT, m,
				   "nesting deeper than 16 levels (POL_DEPTH_MAX)");
	psc_rc rc = b_add(b, n);
	if (rc != PSC_OK)
		return rc;
	struct frame *f = &b->st[b->depth++];
	memset(f, 0, sizeof(*f));
	f->node = n;
	return PSC_OK;
}

static psc_rc b_no_props(struct builder *b, yaml_mark_t m, const yaml_char_t *anchor,
			 const yaml_char_t *tag)
{
	if (anchor)
		return b_fail_mark(b, PSC_E_POLICY_FEATURE, m,
				   "anchors (&name) are not allowed in policy files; write the "
				   "value out or use a named set");
	if (tag)
		return b_fail_mark(b, PSC_E_POLICY_FEATURE, m,
				   "tags (!name) are not allowed in policy files");
	return PSC_OK;
}

static psc_rc b_event(struct builder *b, const yaml_event_t *ev, int *docs)
{
	yaml_mark_t m = ev->start_mark;
	pol_ynode *n;
	switch (ev->type) {
	case YAML_STREAM_START_EVENT:
	case YAML_STREAM_END_EVENT:
	case YAML_DOCUMENT_END_EVENT:
		return PSC_OK;
	case YAML_DOCUMENT_START_EVENT:
		if (++*docs > 1)
			return b_fail_mark(b, PSC_E_POLICY_FEATURE, m,
					   "a second YAML document; a file holds exactly one");
		if (ev->data.document_start.tag_directives.start !=
		    ev->data.document_start.tag_directives.end)
			return b_fail_mark(b, PSC_E_POLICY_FEATURE, m,
					   "%TAG directives are not allowed in policy files");
		return PSC_OK;
	case YAML_ALIAS_EVENT:
		return b_fail_mark(b, PSC_E_POLICY_FEATURE, m,
				   "aliases (*name) are not allowed in policy files");
	case YAML_SCALAR_EVENT: {
		psc_rc rc = b_no_props(b, m, ev->data.scalar.anchor, ev->data.scalar.tag);
		if (rc != PSC_OK)
			return rc;
		if (ev->data.scalar.length > POL_SCALAR_MAX)
			return b_fail_mark(b, PSC_E_POLICY_LIMIT, m,
					   "scalar longer than 1024 bytes (POL_SCALAR_MAX)");
		const char *v = (const char *)ev->data.scalar.value;
		size_t len = ev->data.scalar.length;
		if (memchr(v, '\0', len))
			return b_fail_mark(b, PSC_E_POLICY_SCHEMA, m, "scalar contains a NUL byte");
		if (!(n = b_node(b, POL_Y_SCALAR, m)) || !(n->s = pol_arena_strndup(b->a, v, len)))
			return psc_err_set(b->err, PSC_E_NOMEM, "%s: out of memory", b->file);
		n->slen = len;
		n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
		return b_add(b, n);
	}
	case YAML_SEQUENCE_START_EVENT: {
		psc_rc rc =
		    b_no_props(b, m, ev->data.sequence_start.anchor, ev->data.sequence_start.tag);
		if (rc != PSC_OK)
			return rc;
		if (!(n = b_node(b, POL_Y_SEQ, m)))
			return psc_err_set(b->err, PSC_E_NOMEM, "%s: out of memory", b->file);
		return b_open(b, n, m);
	}
	case YAML_MAPPING_START_EVENT: {
		psc_rc rc =
		    b_no_props(b, m, ev->data.mapping_start.anchor, ev->data.mapping_start.tag);
		if (rc != PSC_OK)
			return rc;
		if (!(n = b_node(b, POL_Y_MAP, m)))
			return psc_err_set(b->err, PSC_E_NOMEM, "%s: out of memory", b->file);
		return b_open(b, n, m);
	}
	case YAML_SEQUENCE_END_EVENT:
	case YAML_MAPPING_END_EVENT:
		return b_close(b);
	default:
		return b_fail_mark(b, PSC_E_POLICY_SYNTAX, m, "unexpected YAML event");
	}
}

psc_rc pol_yaml_parse(pol_arena *a, const char *buf, size_t len, const char *file, pol_ydoc *out,
		      psc_err *err)
{
	if (!file)
		file = "<buffer>";
	file = pol_arena_strndup(a, file, strlen(file));
	if (!file)
		return psc_err_set(err, PSC_E_NOMEM, "out of memory");
	if (len > POL_FILE_MAX)
		return psc_err_set(err, PSC_E_POLICY_LIMIT,
				   "%s: file is larger than %d bytes (POL_FILE_MAX)", file,
				   POL_FILE_MAX);
	struct builder b = {.a = a, .file = file, .err = err};
	yaml_parser_t p;
	if (!yaml_parser_initialize(&p))
		return psc_err_set(err, PSC_E_NOMEM, "%s: out of memory", file);
	yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
	psc_rc rc = PSC_OK;
	int docs = 0;
	for (;;) {
		yaml_event_t ev;
		if (!yaml_parser_parse(&p, &ev)) {
			if (p.error == YAML_MEMORY_ERROR) {
				rc = psc_err_set(err, PSC_E_NOMEM, "%s: out of memory", file);
			} else {
				/* The problem mark is where libyaml noticed; 0-based. */
				rc = psc_err_set(err, PSC_E_POLICY_SYNTAX,
						 "%s:%zu:%zu: YAML syntax error: %s%s%s", file,
						 p.problem_mark.line + 1, p.problem_mark.column + 1,
						 p.problem ? p.problem : "unknown problem",
						 p.context ? " " : "", p.context ? p.context : "");
			}
			break;
		}
		int end = ev.type == YAML_STREAM_END_EVENT;
		rc = b_event(&b, &ev, &docs);
		yaml_event_delete(&ev);
		if (rc != PSC_OK || end)
			break;
	}
	yaml_parser_delete(&p);
	for (int i = 0; i < b.depth; i++)
		free(b.st[i].kids);
	if (rc != PSC_OK)
		return rc;
	if (!b.root)
		return psc_err_set(err, PSC_E_POLICY_SCHEMA, "%s:1:1: the file is empty", file);
	out->file = file;
	out->root = b.root;
	return PSC_OK;
}

/* ---- schema helpers ------------------------------------------------------- */

const char *pol_ykind_name(pol_ynode_kind k)
{
	switch (k) {
	case POL_Y_SCALAR:
		return "scalar";
	case POL_Y_MAP:
		return "mapping";
	case POL_Y_SEQ:
		return "sequence";
	}
	return "?";
}

psc_rc pol_yexpect(const pol_ydoc *d, const pol_ynode *n, pol_ynode_kind k, const char *what,
		   psc_err *err)
{
	if (n->kind == k)
		return PSC_OK;
	return pol_yerr(err, PSC_E_POLICY_SCHEMA, d->file, n, "%s must be a %s, found a %s", what,
			pol_ykind_name(k), pol_ykind_name(n->kind));
}

const pol_ynode *pol_yget(const pol_ynode *map, const char *key)
{
	if (!map || map->kind != POL_Y_MAP)
		return NULL;
	for (size_t i = 0; i < map->n; i++)
		if (strcmp(map->keys[i]->s, key) == 0)
			return map->items[i];
	return NULL;
}

psc_rc pol_yonly(const pol_ydoc *d, const pol_ynode *map, const char *what,
		 const char *const *allowed, psc_err *err)
{
	for (size_t i = 0; i < map->n; i++) {
		bool ok = false;
		for (size_t j = 0; allowed[j]; j++)
			if (strcmp(map->keys[i]->s, allowed[j]) == 0)
				ok = true;
		if (!ok) {
			char list[256] = "";
			size_t off = 0;
			for (size_t j = 0; allowed[j] && off < sizeof(list); j++)
				off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s",
							j ? ", " : "", allowed[j]);
			return pol_yerr(err, PSC_E_POLICY_SCHEMA, d->file, map->keys[i],
					"unknown key '%s' in %s (allowed: %s)", map->keys[i]->s,
					what, list);
		}
	}
	return PSC_OK;
}

static bool is_null_scalar(const pol_ynode *n)
{
	if (!n->plain)
		return false;
	return n->slen == 0 || strcmp(n->s, "~") == 0 || strcmp(n->s, "null") == 0 ||
	       strcmp(n->s, "Null") == 0 || strcmp(n->s, "NULL") == 0;
}

psc_rc pol_yint(const pol_ydoc *d, const pol_ynode *n, const char *what, int64_t lo, int64_t hi,
		int64_t *out, psc_err *err)
{
	psc_rc rc = pol_yexpect(d, n, POL_Y_SCALAR, what, err);
	if (rc != PSC_OK)
		return rc;
	const char *s = n->s;
	bool neg = *s == '-';
	if (neg)
		s++;
	bool ok = n->plain && *s && strlen(s) <= 18;
	for (const char *c = s; ok && *c; c++)
		ok = *c >= '0' && *c <= '9';
	if (!ok)
		return pol_yerr(err, PSC_E_POLICY_SCHEMA, d->file, n,
				"%s must be an integer, found '%s'", what, n->s);
	int64_t v = 0;
	for (const char *c = s; *c; c++)
		v = v * 10 + (*c - '0');
	if (neg)
		v = -v;
	if (v < lo || v > hi)
		return pol_yerr(err, PSC_E_POLICY_SCHEMA, d->file, n,
				"%s must be between %lld and %lld, found %lld", what, (long long)lo,
				(long long)hi, (long long)v);
	*out = v;
	return PSC_OK;
}

psc_rc pol_ybool(const pol_ydoc *d, const pol_ynode *n, const char *what, bool *out, psc_err *err)
{
	psc_rc rc = pol_yexpect(d, n, POL_Y_SCALAR, what, err);
	if (rc != PSC_OK)
		return rc;
	if (n->plain && strcmp(n->s, "true") == 0) {
		*out = true;
		return PSC_OK;
	}
	if (n->plain && strcmp(n->s, "false") == 0) {
		*out = false;
		return PSC_OK;
	}
	return pol_yerr(err, PSC_E_POLICY_SCHEMA, d->file, n,
			"%s must be true or false, found '%s'", what, n->s);
}

psc_rc pol_ystr(const pol_ydoc *d, const pol_ynode *n, const char *what, const char **out,
		psc_err *err)
{
	psc_rc rc = pol_yexpect(d, n, POL_Y_SCALAR, what, err);
	if (rc != PSC_OK)
		return rc;
	if (is_null_scalar(n))
		return pol_yerr(err, PSC_E_POLICY_SCHEMA, d->file, n,
				"%s must be a string, found nothing (null)", what);
	*out = n->s;
	return PSC_OK;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool pol_parse_hex(const char *s, uint8_t *out, size_t n)
{
	size_t got = 0;
	while (*s) {
		if (got == n)
			return false;
		int hi = hexval(s[0]);
		int lo = hi >= 0 ? hexval(s[1]) : -1;
		if (hi < 0 || lo < 0)
			return false;
		out[got++] = (uint8_t)(hi << 4 | lo);
		s += 2;
		if (*s == ':' && s[1])
			s++;
	}
	return got == n;
}

psc_rc pol_yhex(const pol_ydoc *d, const pol_ynode *node, const char *what, uint8_t *out, size_t n,
		psc_err *err)
{
	const char *s;
	psc_rc rc = pol_ystr(d, node, what, &s, err);
	if (rc != PSC_OK)
		return rc;
	if (!pol_parse_hex(s, out, n))
		return pol_yerr(err, PSC_E_POLICY_SCHEMA, d->file, node,
				"%s must be %zu hex digits (colons allowed between bytes), found "
				"'%s'",
				what, 2 * n, s);
	return PSC_OK;
}
