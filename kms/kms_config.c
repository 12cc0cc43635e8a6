/*
 * kms_config — kms.yaml loader and secret files (see kms_config.h).
 *
 * kms's own small YAML reader rather than policy/pol_yaml: the module rules
 * (STYLE.md rule 1) let kms/ depend on policy/, but the config must not change
 * when the policy engine's limits or messages do, and the subset needed here
 * (maps of scalars, two levels) is small. It follows pol_yaml's choices: the
 * libyaml event API (only events show anchors, aliases and tags), 1-based
 * positions, one error message.
 *
 * The schema is one table (KEYS): name, type, range, default, where it goes.
 * Adding a key is one line there plus its row in docs/operator.md.
 */
#include "kms_config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#define CFG_DEPTH_MAX 4	   /* root map, section map, (a value) */
#define CFG_NODES_MAX 4096 /* YAML nodes in one file */
#define CFG_ITEMS_MAX 256  /* keys in one mapping */
#define UNIX_PATH_MAX 108  /* sizeof(sun_path) on Linux, with the NUL */

/* ---- YAML tree ----------------------------------------------------------- */

typedef enum { N_SCALAR, N_MAP, N_SEQ } nkind;

typedef struct node node;
struct node {
	nkind kind;
	unsigned line, col; /* 1-based */
	bool plain;	    /* unquoted scalar: numbers and booleans must be plain */
	char *s;	    /* scalar text */
	size_t slen;
	size_t n; /* map: keys (and values); seq: items */
	size_t cap;
	node **keys;  /* map keys (scalars) */
	node **items; /* map values or seq items */
};

static void node_free(node *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->n; i++) {
		if (n->keys)
			node_free(n->keys[i]);
		node_free(n->items[i]);
	}
	free(n->keys);
	free(n->items);
	free(n->s);
	free(n);
}

struct parser {
	const char *file;
	psc_err *err;
	node *root;
	node *stack[CFG_DEPTH_MAX];
	int depth;
	node *pending_key; /* a map key waiting for its value */
	size_t nodes;
};

static const char *kind_name(nkind k)
{
	return k == N_SCALAR ? "scalar" : k == N_MAP ? "mapping" : "sequence";
}

static psc_rc at_err(psc_err *err, const char *file, unsigned line, unsigned col, const char *fmt,
		     ...) __attribute__((format(printf, 5, 6)));
static psc_rc at_err(psc_err *err, const char *file, unsigned line, unsigned col, const char *fmt,
		     ...)
{
	char msg[PSC_ERR_DETAIL_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return psc_err_set(err, PSC_E_KMS_CONFIG, "%s:%u:%u: %s", file, line, col, msg);
}

static psc_rc mark_err(struct parser *p, yaml_mark_t m, const char *what)
{
	return at_err(p->err, p->file, (unsigned)m.line + 1, (unsigned)m.column + 1, "%s", what);
}

static psc_rc nomem(struct parser *p)
{
	return psc_err_set(p->err, PSC_E_NOMEM, "%s: out of memory", p->file);
}

/* Attaches n to the open collection (or makes it the root). Takes n. */
static psc_rc attach(struct parser *p, node *n)
{
	if (++p->nodes > CFG_NODES_MAX) {
		psc_rc rc = at_err(p->err, p->file, n->line, n->col, "more than %d YAML nodes",
				   CFG_NODES_MAX);
		node_free(n);
		return rc;
	}
	if (p->depth == 0) {
		p->root = n;
		return PSC_OK;
	}
	node *c = p->stack[p->depth - 1];
	if (c->kind == N_MAP && !p->pending_key) {
		if (n->kind != N_SCALAR) {
			psc_rc rc =
			    at_err(p->err, p->file, n->line, n->col,
				   "a key must be a plain name, found a %s", kind_name(n->kind));
			node_free(n);
			return rc;
		}
		for (size_t i = 0; i < c->n; i++)
			if (strcmp(c->keys[i]->s, n->s) == 0) {
				psc_rc rc = at_err(p->err, p->file, n->line, n->col,
						   "duplicate key '%s' (first at line %u, column "
						   "%u)",
						   n->s, c->keys[i]->line, c->keys[i]->col);
				node_free(n);
				return rc;
			}
		p->pending_key = n;
		return PSC_OK;
	}
	if (c->n >= CFG_ITEMS_MAX) {
		psc_rc rc =
		    at_err(p->err, p->file, n->line, n->col, "more than %d entries in one %s",
			   CFG_ITEMS_MAX, kind_name(c->kind));
		node_free(n);
		node_free(p->pending_key);
		p->pending_key = NULL;
		return rc;
	}
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 8;
		node **items = realloc(c->items, cap * sizeof(*items));
		if (items)
			c->items = items;
		node **keys = c->kind == N_MAP ? realloc(c->keys, cap * sizeof(*keys)) : NULL;
		if (keys)
			c->keys = keys;
		if (!items || (c->kind == N_MAP && !keys)) {
			node_free(n);
			node_free(p->pending_key);
			p->pending_key = NULL;
			return nomem(p);
		}
		c->cap = cap;
	}
	if (c->kind == N_MAP) {
		c->keys[c->n] = p->pending_key;
		p->pending_key = NULL;
	}
	c->items[c->n++] = n;
	return PSC_OK;
}

static node *new_node(nkind k, yaml_mark_t m)
{
	node *n = calloc(1, sizeof(*n));
	if (n) {
		n->kind = k;
		n->line = (unsigned)m.line + 1;
		n->col = (unsigned)m.column + 1;
	}
	return n;
}

static psc_rc no_props(struct parser *p, yaml_mark_t m, const void *anchor, const void *tag)
{
	if (anchor)
		return mark_err(p, m,
				"anchors (&name) are not allowed in kms.yaml; write the value "
				"out");
	if (tag)
		return mark_err(p, m, "tags (!name) are not allowed in kms.yaml");
	return PSC_OK;
}

static psc_rc on_event(struct parser *p, const yaml_event_t *ev, int *docs)
{
	yaml_mark_t m = ev->start_mark;
	node *n;
	psc_rc rc;
	switch (ev->type) {
	case YAML_STREAM_START_EVENT:
	case YAML_STREAM_END_EVENT:
	case YAML_DOCUMENT_END_EVENT:
		return PSC_OK;
	case YAML_DOCUMENT_START_EVENT:
		if (++*docs > 1)
			return mark_err(p, m, "a second YAML document; kms.yaml holds exactly one");
		return PSC_OK;
	case YAML_ALIAS_EVENT:
		return mark_err(p, m, "aliases (*name) are not allowed in kms.yaml");
	case YAML_SCALAR_EVENT:
		rc = no_props(p, m, ev->data.scalar.anchor, ev->data.scalar.tag);
		if (rc != PSC_OK)
			return rc;
		if (ev->data.scalar.length >= KMS_CONFIG_PATH_MAX)
			return mark_err(p, m, "value longer than 4095 bytes");
		if (memchr(ev->data.scalar.value, '\0', ev->data.scalar.length))
			return mark_err(p, m, "value contains a NUL byte");
		if (!(n = new_node(N_SCALAR, m)) ||
		    !(n->s =
			  strndup((const char *)ev->data.scalar.value, ev->data.scalar.length))) {
			free(n);
			return nomem(p);
		}
		n->slen = ev->data.scalar.length;
		n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
		return attach(p, n);
	case YAML_SEQUENCE_START_EVENT:
	case YAML_MAPPING_START_EVENT: {
		bool map = ev->type == YAML_MAPPING_START_EVENT;
		rc = map ? no_props(p, m, ev->data.mapping_start.anchor, ev->data.mapping_start.tag)
			 : no_props(p, m, ev->data.sequence_start.anchor,
				    ev->data.sequence_start.tag);
		if (rc != PSC_OK)
			return rc;
		if (p->depth >= CFG_DEPTH_MAX)
			return mark_err(p, m, "nested too deeply for kms.yaml");
		if (!(n = new_node(map ? N_MAP : N_SEQ, m)))
			return nomem(p);
		rc = attach(p, n);
		if (rc != PSC_OK)
			return rc;
		p->stack[p->depth++] = n;
		return PSC_OK;
	}
	case YAML_SEQUENCE_END_EVENT:
	case YAML_MAPPING_END_EVENT:
		p->depth--;
		return PSC_OK;
	default:
		return mark_err(p, m, "unexpected YAML event");
	}
}

static psc_rc parse_yaml(const char *buf, size_t len, const char *file, node **out, psc_err *err)
{
	*out = NULL;
	struct parser p = {.file = file, .err = err};
	yaml_parser_t yp;
	if (!yaml_parser_initialize(&yp))
		return nomem(&p);
	yaml_parser_set_input_string(&yp, (const unsigned char *)buf, len);
	psc_rc rc = PSC_OK;
	int docs = 0;
	for (;;) {
		yaml_event_t ev;
		if (!yaml_parser_parse(&yp, &ev)) {
			if (yp.error == YAML_MEMORY_ERROR)
				rc = nomem(&p);
			else
				rc = at_err(err, file, (unsigned)yp.problem_mark.line + 1,
					    (unsigned)yp.problem_mark.column + 1,
					    "YAML syntax error: %s%s%s",
					    yp.problem ? yp.problem : "unknown problem",
					    yp.context ? " " : "", yp.context ? yp.context : "");
			break;
		}
		bool end = ev.type == YAML_STREAM_END_EVENT;
		rc = on_event(&p, &ev, &docs);
		yaml_event_delete(&ev);
		if (rc != PSC_OK || end)
			break;
	}
	yaml_parser_delete(&yp);
	node_free(p.pending_key);
	if (rc != PSC_OK) {
		node_free(p.root);
		return rc;
	}
	if (!p.root)
		return at_err(err, file, 1, 1, "the file is empty");
	*out = p.root;
	return PSC_OK;
}

/* ---- schema -------------------------------------------------------------- */

typedef enum {
	K_SECTION, /* a mapping of further keys */
	K_STR,	   /* text, 1..cap-1 bytes */
	K_PATH,	   /* file or directory; relative to the config's directory */
	K_ID,	   /* [A-Za-z0-9._-], 1..64 */
	K_LISTEN,  /* tcp://host:port or ipc://path */
	K_IPC,	   /* ipc://path (resolved like K_PATH) */
	K_BOOL,
	K_U32,
	K_U64,
} ktype;

struct key {
	const char *name; /* dotted */
	ktype type;
	size_t off;	 /* into kms_config */
	size_t cap;	 /* strings: buffer size */
	uint64_t lo, hi; /* numbers */
	uint64_t def;	 /* numbers and booleans */
	bool required;
};

#define F(field) offsetof(kms_config, field), sizeof(((kms_config *)0)->field)
#define SEC(name)                                                                                  \
	{                                                                                          \
		name, K_SECTION, 0, 0, 0, 0, 0, false                                              \
	}
#define STR(name, t, field, req)                                                                   \
	{                                                                                          \
		name, t, F(field), 0, 0, 0, req                                                    \
	}
#define NUM(name, t, field, lo, hi, def)                                                           \
	{                                                                                          \
		name, t, F(field), lo, hi, def, false                                              \
	}
#define MIB (1024u * 1024u)

static const struct key KEYS[] = {
    STR("kms_id", K_ID, kms_id, true),
    STR("overlay", K_STR, overlay, true),
    STR("listen", K_LISTEN, listen, true),
    STR("admin_socket", K_IPC, admin_socket, false),
    SEC("curve"),
    NUM("curve.enabled", K_BOOL, curve.enabled, 0, 1, 1),
    STR("curve.secret_key_file", K_PATH, curve.secret_key_file, false),
    STR("curve.public_key_file", K_PATH, curve.public_key_file, false),
    SEC("hsm"),
    STR("hsm.module", K_PATH, hsm.module, true),
    STR("hsm.token_label", K_STR, hsm.token_label, true),
    STR("hsm.pin_file", K_PATH, hsm.pin_file, true),
    NUM("hsm.workers", K_U32, hsm.workers, 1, 64, 2),
    SEC("identity"),
    STR("identity.certificate", K_PATH, identity.certificate, true),
    SEC("trust"),
    STR("trust.ca_file", K_PATH, trust.ca_file, true),
    STR("trust.crl_file", K_PATH, trust.crl_file, false),
    NUM("trust.crl_reload_s", K_U32, trust.crl_reload_s, 0, 86400, 300),
    STR("policy_file", K_PATH, policy_file, true),
    SEC("audit"),
    STR("audit.dir", K_PATH, audit.dir, true),
    NUM("audit.checkpoint_every", K_U64, audit.checkpoint_every, 1, 10000000, 1000),
    NUM("audit.checkpoint_interval_s", K_U32, audit.checkpoint_interval_s, 1, 86400, 300),
    NUM("audit.segment_bytes", K_U64, audit.segment_bytes, 65536, 1ull << 40, 64ull * MIB),
    STR("state_db", K_PATH, state_db, true),
    SEC("timers"),
    NUM("timers.refresh_default_s", K_U32, timers.refresh_default_s, 10, 31536000, 3600),
    NUM("timers.freshness_window_s", K_U32, timers.freshness_window_s, 1, 3600, 300),
    NUM("timers.query_timeout_ms", K_U32, timers.query_timeout_ms, 100, 600000, 30000),
    NUM("timers.invite_timeout_ms", K_U32, timers.invite_timeout_ms, 100, 600000, 60000),
    NUM("timers.liveness_timeout_ms", K_U32, timers.liveness_timeout_ms, 100, 600000, 10000),
    NUM("timers.old_epoch_grace_ms", K_U32, timers.old_epoch_grace_ms, 0, 3600000, 30000),
    SEC("limits"),
    NUM("limits.max_message_bytes", K_U32, limits.max_message_bytes, 4096, 64 * MIB, MIB),
    NUM("limits.per_connection_msgs_per_s", K_U32, limits.per_connection_msgs_per_s, 1, 100000, 50),
    NUM("limits.per_connection_burst", K_U32, limits.per_connection_burst, 1, 1000000, 100),
    NUM("limits.sndhwm", K_U32, limits.sndhwm, 1, 1000000, 1000),
    NUM("limits.rcvhwm", K_U32, limits.rcvhwm, 1, 1000000, 1000),
    NUM("limits.max_pending_per_peer", K_U32, limits.max_pending_per_peer, 1, 100000, 64),
};
#define N_KEYS (sizeof(KEYS) / sizeof(KEYS[0]))

#define DEFAULT_ADMIN_SOCKET "ipc:///run/psc-kms/admin.sock"

struct kms_config_pos {
	const char *key; /* KEYS[i].name */
	unsigned line, col;
};

struct loader {
	kms_config *c;
	const char *file;
	psc_err *err;
};

static const struct key *find_key(const char *name)
{
	for (size_t i = 0; i < N_KEYS; i++)
		if (strcmp(KEYS[i].name, name) == 0)
			return &KEYS[i];
	return NULL;
}

static const struct kms_config_pos *find_pos(const kms_config *c, const char *key)
{
	for (size_t i = 0; i < c->n_pos; i++)
		if (strcmp(c->pos[i].key, key) == 0)
			return &c->pos[i];
	return NULL;
}

static psc_rc nerr(struct loader *l, const node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static psc_rc nerr(struct loader *l, const node *n, const char *fmt, ...)
{
	char msg[PSC_ERR_DETAIL_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return at_err(l->err, l->file, n->line, n->col, "%s", msg);
}

/* YAML's null spellings: an empty value is "missing", not "". */
static bool is_null(const node *n)
{
	return n->plain && (n->slen == 0 || strcmp(n->s, "~") == 0 || strcmp(n->s, "null") == 0 ||
			    strcmp(n->s, "Null") == 0 || strcmp(n->s, "NULL") == 0);
}

static psc_rc want_scalar(struct loader *l, const struct key *k, const node *v)
{
	if (v->kind != N_SCALAR)
		return nerr(l, v, "'%s' must be a single value, found a %s", k->name,
			    kind_name(v->kind));
	if (is_null(v))
		return nerr(l, v, "'%s' has no value", k->name);
	return PSC_OK;
}

static psc_rc set_number(struct loader *l, const struct key *k, const node *v)
{
	psc_rc rc = want_scalar(l, k, v);
	if (rc != PSC_OK)
		return rc;
	uint64_t x = 0;
	bool ok = v->plain && v->slen > 0 && v->slen <= 20;
	for (size_t i = 0; ok && i < v->slen; i++) {
		unsigned d = (unsigned)(v->s[i] - '0');
		if (d > 9 || x > (UINT64_MAX - d) / 10)
			ok = false;
		else
			x = x * 10 + d;
	}
	if (!ok || x < k->lo || x > k->hi)
		return nerr(l, v, "'%s' must be a whole number from %llu to %llu, found '%s'",
			    k->name, (unsigned long long)k->lo, (unsigned long long)k->hi, v->s);
	char *dst = (char *)l->c + k->off;
	if (k->type == K_U32) {
		uint32_t y = (uint32_t)x;
		memcpy(dst, &y, sizeof(y));
	} else {
		memcpy(dst, &x, sizeof(x));
	}
	return PSC_OK;
}

static psc_rc set_bool(struct loader *l, const struct key *k, const node *v)
{
	psc_rc rc = want_scalar(l, k, v);
	if (rc != PSC_OK)
		return rc;
	bool b;
	if (v->plain && strcmp(v->s, "true") == 0)
		b = true;
	else if (v->plain && strcmp(v->s, "false") == 0)
		b = false;
	else
		return nerr(l, v, "'%s' must be true or false, found '%s'", k->name, v->s);
	memcpy((char *)l->c + k->off, &b, sizeof(b));
	return PSC_OK;
}

/* Joins base_dir and a relative path into dst[cap]. */
static bool resolve(const char *base, const char *path, char *dst, size_t cap)
{
	int n = path[0] == '/' ? snprintf(dst, cap, "%s", path)
			       : snprintf(dst, cap, "%s/%s", base, path);
	return n > 0 && (size_t)n < cap;
}

static psc_rc set_string(struct loader *l, const struct key *k, const node *v)
{
	psc_rc rc = want_scalar(l, k, v);
	if (rc != PSC_OK)
		return rc;
	char *dst = (char *)l->c + k->off;
	const char *s = v->s;
	switch (k->type) {
	case K_ID:
		if (v->slen > 64 || strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
					      "0123456789._-") != v->slen)
			return nerr(l, v,
				    "'%s' must be 1 to 64 characters from A-Z a-z 0-9 . _ -, "
				    "found '%s'",
				    k->name, s);
		break;
	case K_LISTEN:
		if (strncmp(s, "tcp://", 6) != 0 && strncmp(s, "ipc://", 6) != 0)
			return nerr(l, v,
				    "'%s' must be a ZeroMQ endpoint tcp://host:port or "
				    "ipc://path, found '%s'",
				    k->name, s);
		if (strncmp(s, "tcp://", 6) == 0) {
			const char *colon = strrchr(s + 6, ':');
			char *end = NULL;
			unsigned long port = colon ? strtoul(colon + 1, &end, 10) : 0;
			if (!colon || colon == s + 6 || !end || *end || colon[1] == '\0' ||
			    port == 0 || port > 65535)
				return nerr(l, v,
					    "'%s' needs a host and a port 1..65535, as in "
					    "tcp://127.0.0.1:7400; found '%s'",
					    k->name, s);
			break;
		}
		/* An ipc:// listen endpoint resolves like admin_socket. */
		__attribute__((fallthrough));
	case K_IPC: {
		if (strncmp(s, "ipc://", 6) != 0 || s[6] == '\0')
			return nerr(l, v, "'%s' must be ipc://path, found '%s'", k->name, s);
		char path[KMS_CONFIG_PATH_MAX];
		if (!resolve(l->c->base_dir, s + 6, path, sizeof(path)) ||
		    strlen(path) >= UNIX_PATH_MAX)
			return nerr(l, v,
				    "'%s': the socket path is longer than %d bytes once resolved, "
				    "which Unix sockets cannot hold; use a shorter absolute path",
				    k->name, UNIX_PATH_MAX - 1);
		if ((size_t)snprintf(dst, k->cap, "ipc://%s", path) >= k->cap)
			return nerr(l, v, "'%s' is too long", k->name);
		return PSC_OK;
	}
	case K_PATH:
		if (!resolve(l->c->base_dir, s, dst, k->cap))
			return nerr(l, v, "'%s': path longer than %zu bytes once resolved", k->name,
				    k->cap - 1);
		return PSC_OK;
	default:
		break;
	}
	if (strcmp(k->name, "hsm.token_label") == 0 && v->slen > 32)
		return nerr(l, v, "'%s' is longer than a PKCS#11 token label (32 bytes)", k->name);
	if (v->slen >= k->cap)
		return nerr(l, v, "'%s' is longer than %zu bytes", k->name, k->cap - 1);
	memcpy(dst, s, v->slen + 1);
	return PSC_OK;
}

static psc_rc note_pos(struct loader *l, const struct key *k, const node *v)
{
	kms_config *c = l->c;
	struct kms_config_pos *p = realloc(c->pos, (c->n_pos + 1) * sizeof(*p));
	if (!p)
		return psc_err_set(l->err, PSC_E_NOMEM, "%s: out of memory", l->file);
	c->pos = p;
	c->pos[c->n_pos++] = (struct kms_config_pos){k->name, v->line, v->col};
	return PSC_OK;
}

static psc_rc walk_map(struct loader *l, const node *map, const char *prefix)
{
	for (size_t i = 0; i < map->n; i++) {
		const node *kn = map->keys[i], *v = map->items[i];
		char name[128];
		if ((size_t)snprintf(name, sizeof(name), "%s%s%s", prefix, *prefix ? "." : "",
				     kn->s) >= sizeof(name))
			return nerr(l, kn, "unknown key '%.64s...'", kn->s);
		const struct key *k = find_key(name);
		if (!k) {
			if (strstr(kn->s, "pin") || strstr(kn->s, "secret") ||
			    strstr(kn->s, "password"))
				return nerr(l, kn,
					    "unknown key '%s': secrets are never written in "
					    "kms.yaml; name a file (hsm.pin_file, "
					    "curve.secret_key_file)",
					    name);
			return nerr(l, kn, "unknown key '%s'%s%s%s", name,
				    *prefix ? " in section '" : "", prefix, *prefix ? "'" : "");
		}
		psc_rc rc = note_pos(l, k, kn);
		if (rc != PSC_OK)
			return rc;
		if (k->type == K_SECTION) {
			if (v->kind != N_MAP)
				return nerr(l, v, "'%s' must be a mapping of keys, found %s", name,
					    v->kind == N_SCALAR && is_null(v) ? "no value"
					    : v->kind == N_SCALAR	      ? "a scalar"
									      : "a sequence");
			rc = walk_map(l, v, name);
		} else if (k->type == K_BOOL) {
			rc = set_bool(l, k, v);
		} else if (k->type == K_U32 || k->type == K_U64) {
			rc = set_number(l, k, v);
		} else {
			rc = set_string(l, k, v);
		}
		if (rc != PSC_OK)
			return rc;
	}
	return PSC_OK;
}

static void set_defaults(kms_config *c)
{
	for (size_t i = 0; i < N_KEYS; i++) {
		const struct key *k = &KEYS[i];
		char *dst = (char *)c + k->off;
		if (k->type == K_BOOL) {
			bool b = k->def != 0;
			memcpy(dst, &b, sizeof(b));
		} else if (k->type == K_U32) {
			uint32_t v = (uint32_t)k->def;
			memcpy(dst, &v, sizeof(v));
		} else if (k->type == K_U64) {
			memcpy(dst, &k->def, sizeof(k->def));
		}
	}
	snprintf(c->admin_socket, sizeof(c->admin_socket), "%s", DEFAULT_ADMIN_SOCKET);
}

/* Missing required keys are reported at the section that should hold them
 * (or at the top of the file when the section is missing too). */
static psc_rc check_required(struct loader *l, const node *root)
{
	kms_config *c = l->c;
	for (size_t i = 0; i < N_KEYS; i++) {
		const struct key *k = &KEYS[i];
		bool req = k->required;
		if (c->curve.enabled && (strcmp(k->name, "curve.secret_key_file") == 0 ||
					 strcmp(k->name, "curve.public_key_file") == 0))
			req = true;
		if (!req || find_pos(c, k->name))
			continue;
		char section[64] = "";
		const char *dot = strchr(k->name, '.');
		if (dot)
			snprintf(section, sizeof(section), "%.*s", (int)(dot - k->name), k->name);
		const struct kms_config_pos *sp = dot ? find_pos(c, section) : NULL;
		unsigned line = sp ? sp->line : root->line, col = sp ? sp->col : root->col;
		const char *why = strncmp(k->name, "curve.", 6) == 0
				      ? " (CURVE is enabled; set curve.enabled: false only "
					"for a test on loopback)"
				      : "";
		return at_err(l->err, l->file, line, col, "missing required key '%s'%s", k->name,
			      why);
	}
	return PSC_OK;
}

void kms_config_free(kms_config **p)
{
	if (!p || !*p)
		return;
	free((*p)->pos);
	free(*p);
	*p = NULL;
}

psc_rc kms_config_parse(kms_config **out, const char *buf, size_t len, const char *name,
			const char *base_dir, psc_err *err)
{
	if (!out || (!buf && len))
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_config_parse: NULL argument");
	*out = NULL;
	if (!name)
		name = "<buffer>";
	if (!base_dir)
		base_dir = ".";
	if (len > KMS_CONFIG_FILE_MAX)
		return psc_err_set(err, PSC_E_KMS_CONFIG, "%s: larger than %d bytes", name,
				   KMS_CONFIG_FILE_MAX);
	kms_config *c = calloc(1, sizeof(*c));
	if (!c)
		return psc_err_set(err, PSC_E_NOMEM, "%s: out of memory", name);
	snprintf(c->file, sizeof(c->file), "%s", name);
	if ((size_t)snprintf(c->base_dir, sizeof(c->base_dir), "%s", base_dir) >=
	    sizeof(c->base_dir)) {
		free(c);
		return psc_err_set(err, PSC_E_KMS_CONFIG, "%s: directory path too long", name);
	}
	set_defaults(c);
	node *root = NULL;
	psc_rc rc = parse_yaml(buf ? buf : "", len, c->file, &root, err);
	struct loader l = {.c = c, .file = c->file, .err = err};
	if (rc == PSC_OK && root->kind != N_MAP)
		rc = nerr(&l, root,
			  "the file must be a mapping of keys (kms_id: ..., listen: ...), "
			  "found a %s",
			  kind_name(root->kind));
	if (rc == PSC_OK)
		rc = walk_map(&l, root, "");
	if (rc == PSC_OK)
		rc = check_required(&l, root);
	node_free(root);
	if (rc != PSC_OK) {
		kms_config_free(&c);
		return rc;
	}
	*out = c;
	return PSC_OK;
}

psc_rc kms_config_load(kms_config **out, const char *path, psc_err *err)
{
	if (!out || !path)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_config_load: NULL argument");
	*out = NULL;
	FILE *f = fopen(path, "rb");
	if (!f)
		return psc_err_set(err, PSC_E_KMS_CONFIG_IO, "%s: cannot open: %s", path,
				   strerror(errno));
	char *buf = malloc(KMS_CONFIG_FILE_MAX + 1);
	if (!buf) {
		fclose(f);
		return psc_err_set(err, PSC_E_NOMEM, "%s: out of memory", path);
	}
	size_t n = fread(buf, 1, KMS_CONFIG_FILE_MAX + 1, f);
	int bad = ferror(f);
	fclose(f);
	if (bad || n > KMS_CONFIG_FILE_MAX) {
		free(buf);
		return bad ? psc_err_set(err, PSC_E_KMS_CONFIG_IO, "%s: read error", path)
			   : psc_err_set(err, PSC_E_KMS_CONFIG, "%s: larger than %d bytes", path,
					 KMS_CONFIG_FILE_MAX);
	}
	/* Relative paths in the file resolve against its (absolute) directory, so
	 * the daemon's working directory never matters. */
	char dir[KMS_CONFIG_PATH_MAX];
	const char *slash = strrchr(path, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == path)
		snprintf(dir, sizeof(dir), "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	char *abs = realpath(dir, NULL);
	if (!abs) {
		free(buf);
		return psc_err_set(err, PSC_E_KMS_CONFIG_IO, "%s: cannot resolve directory %s: %s",
				   path, dir, strerror(errno));
	}
	/* "/" + "/x" would read "//x": resolve() adds the slash itself. */
	psc_rc rc = kms_config_parse(out, buf, n, path, strcmp(abs, "/") == 0 ? "" : abs, err);
	free(abs);
	free(buf);
	return rc;
}

const char *kms_config_where(const kms_config *c, const char *key, char *buf, size_t cap)
{
	if (!buf || cap == 0)
		return "";
	if (!c) {
		snprintf(buf, cap, "(no configuration)");
		return buf;
	}
	const struct kms_config_pos *p = key ? find_pos(c, key) : NULL;
	if (p)
		snprintf(buf, cap, "%s:%u:%u", c->file, p->line, p->col);
	else
		snprintf(buf, cap, "%s", c->file);
	return buf;
}

/* ---- secrets ------------------------------------------------------------- */

psc_rc kms_secret_read(const char *path, uint8_t *buf, size_t cap, size_t *len, psc_err *err)
{
	if (!path || !buf || !len || cap == 0)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_secret_read: NULL argument");
	*len = 0;
	OPENSSL_cleanse(buf, cap);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return psc_err_set(err, PSC_E_KMS_SECRET, "secret file %s: cannot open: %s", path,
				   strerror(errno));
	struct stat st;
	psc_rc rc = PSC_OK;
	if (fstat(fd, &st) != 0) {
		rc = psc_err_set(err, PSC_E_KMS_SECRET, "secret file %s: cannot stat: %s", path,
				 strerror(errno));
	} else if (!S_ISREG(st.st_mode)) {
		rc = psc_err_set(err, PSC_E_KMS_SECRET, "secret file %s: not a regular file", path);
	} else if (st.st_mode & 077) {
		rc = psc_err_set(err, PSC_E_KMS_SECRET_PERMS,
				 "secret file %s: mode %04o lets group or others access it; run "
				 "chmod 600 %s (and check who may have read it)",
				 path, (unsigned)(st.st_mode & 07777), path);
	} else if (st.st_uid != geteuid() && st.st_uid != 0) {
		rc = psc_err_set(err, PSC_E_KMS_SECRET_PERMS,
				 "secret file %s: owned by uid %u, neither this service's user "
				 "(%u) nor root; chown it",
				 path, (unsigned)st.st_uid, (unsigned)geteuid());
	}
	size_t n = 0;
	while (rc == PSC_OK) {
		if (n == cap) {
			/* One more byte tells "exactly cap" from "too large". */
			uint8_t extra;
			ssize_t r = read(fd, &extra, 1);
			OPENSSL_cleanse(&extra, sizeof(extra));
			if (r > 0)
				rc =
				    psc_err_set(err, PSC_E_KMS_SECRET,
						"secret file %s: larger than %zu bytes", path, cap);
			break;
		}
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			rc = psc_err_set(err, PSC_E_KMS_SECRET, "secret file %s: read error: %s",
					 path, strerror(errno));
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	if (rc == PSC_OK) {
		if (n > 0 && buf[n - 1] == '\n') {
			buf[--n] = 0;
			if (n > 0 && buf[n - 1] == '\r')
				buf[--n] = 0;
		}
		if (n == 0)
			rc = psc_err_set(err, PSC_E_KMS_SECRET, "secret file %s: empty", path);
	}
	if (rc != PSC_OK) {
		OPENSSL_cleanse(buf, cap);
		return rc;
	}
	*len = n;
	return PSC_OK;
}
