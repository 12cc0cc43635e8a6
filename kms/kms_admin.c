#include "kms_admin.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <zmq.h>

#include "kms_int.h"
#include "kms_kekrot.h"
#include "proto_cert.h"

#define REQ_MAX 512

/* A growing JSON text. On allocation failure `failed` is set and the reply
 * becomes an error. */
typedef struct jbuf {
	char *s;
	size_t len, cap;
	bool failed;
} jbuf;

struct kms_admin {
	kmsd *k;
	void *sock;
	char path[KMS_CONFIG_STR_MAX];
	bool waiting; /* a request was received: a reply is owed */
	jbuf reply;
	/* what kms_admin_after_batch must still do */
	enum {
		AFTER_NONE,
		AFTER_BAN,
		AFTER_CHECKPOINT,
		AFTER_UNBAN,
		AFTER_DESTROY,
		AFTER_BACKUP,
		AFTER_SEND_NEXT, /* reply once the next batch made its audit record durable */
	} after;
	uint8_t ban_node[PSC_NODE_ID_LEN];
	size_t ban_evicted;
	uint8_t destroy_psc[PSC_PSC_ID_LEN];
	uint64_t destroy_epoch;
	char backup_path[KMS_CONFIG_STR_MAX];
	kms_store_bk *bk;	 /* a backup being copied, a step per loop turn */
	unsigned backup_steps;
	uint64_t send_after_seq; /* AFTER_SEND_NEXT: the record that must be durable */
	kms_kekrot *rot;
	bool restore_pending;	  /* PSCs may still be below a restore's epoch floor */
	uint64_t restore_next_ms; /* next kmsd_rekey_restored() call */
};

static void jb_putn(jbuf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 1024;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->s, cap);
		if (!p) {
			b->failed = true;
			return;
		}
		b->s = p;
		b->cap = cap;
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void jb_put(jbuf *b, const char *s)
{
	jb_putn(b, s, strlen(s));
}

static void jb_fmt(jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jb_fmt(jbuf *b, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		jb_putn(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* A JSON string; control characters and non-ASCII bytes are escaped as \u00XX
 * (subjects and names are untrusted bytes, the reply stays valid JSON). */
static void jb_str(jbuf *b, const char *s)
{
	jb_put(b, "\"");
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\') {
			char e[3] = {'\\', (char)*p, 0};
			jb_put(b, e);
		} else if (*p < 0x20 || *p >= 0x7f) {
			jb_fmt(b, "\\u%04x", *p);
		} else {
			jb_putn(b, (const char *)p, 1);
		}
	}
	jb_put(b, "\"");
}

static void jb_key(jbuf *b, const char *key)
{
	if (b->len && b->s[b->len - 1] != '{' && b->s[b->len - 1] != '[')
		jb_put(b, ",");
	jb_str(b, key);
	jb_put(b, ":");
}

static void jb_kstr(jbuf *b, const char *key, const char *v)
{
	jb_key(b, key);
	jb_str(b, v);
}

static void jb_ku64(jbuf *b, const char *key, uint64_t v)
{
	jb_key(b, key);
	jb_fmt(b, "%llu", (unsigned long long)v);
}

static void jb_kbool(jbuf *b, const char *key, bool v)
{
	jb_key(b, key);
	jb_put(b, v ? "true" : "false");
}

static void jb_khex(jbuf *b, const char *key, const uint8_t id[16])
{
	char hex[33];
	proto_id_hex(id, hex);
	jb_kstr(b, key, hex);
}

/* Starts an array element (an object). */
static void jb_elem(jbuf *b)
{
	if (b->len && b->s[b->len - 1] != '[')
		jb_put(b, ",");
	jb_put(b, "{");
}

static void reply_error(kms_admin *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply_error(kms_admin *a, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	a->reply.len = 0;
	a->reply.failed = false;
	jb_put(&a->reply, "{\"ok\":false");
	jb_kstr(&a->reply, "error", msg);
	jb_put(&a->reply, "}");
	a->after = AFTER_NONE;
}

static void reply_ok_begin(kms_admin *a)
{
	a->reply.len = 0;
	a->reply.failed = false;
	jb_put(&a->reply, "{\"ok\":true");
}

/* ---- commands ------------------------------------------------------------ */

static size_t connected_peers(kmsd *k)
{
	size_t n = 0;
	for (size_t i = 0; i < k->n_bind; i++)
		n += k->bind[i].used;
	return n;
}

static void cmd_status(kms_admin *a)
{
	kmsd *k = a->k;
	kms_store_counts c;
	psc_err e;
	if (kms_store_counts_get(k->store, &c, &e) != PSC_OK) {
		reply_error(a, "state store: %s", psc_err_text(&e));
		return;
	}
	uint64_t now = kmsd_clock_ms();
	jbuf *b = &a->reply;
	reply_ok_begin(a);
	jb_kstr(b, "kms_id", k->cfg->kms_id);
	char nid[33];
	proto_id_hex(k->node_id, nid);
	jb_kstr(b, "node_id", nid);
	jb_ku64(b, "uptime_s", now > k->started_ms ? (now - k->started_ms) / 1000 : 0);
	jb_key(b, "hsm");
	jb_put(b, "{");
	jb_kbool(b, "healthy", hsm_healthy(k->hsm));
	jb_kstr(b, "token", k->cfg->hsm.token_label);
	jb_kstr(b, "kek_id", k->kek_id);
	jb_ku64(b, "workers", kms_pool_workers(k->pool));
	jb_ku64(b, "fanouts_busy", kms_pool_busy(k->pool));
	jb_put(b, "}");
	jb_key(b, "audit");
	jb_put(b, "{");
	jb_kbool(b, "healthy", !aud_log_failed(k->audit));
	jb_ku64(b, "last_seq", aud_log_last_seq(k->audit));
	jb_ku64(b, "state_seq", kms_store_last_audit_seq(k->store));
	jb_put(b, "}");
	jb_key(b, "policy");
	jb_put(b, "{");
	jb_kstr(b, "revision", pol_policy_revision(k->pol));
	jb_put(b, "}");
	jb_key(b, "counts");
	jb_put(b, "{");
	jb_ku64(b, "peers", c.peers);
	jb_ku64(b, "peers_banned", c.peers_banned);
	jb_ku64(b, "pscs_live", c.pscs_live);
	jb_ku64(b, "pscs_destroyed", c.pscs_destroyed);
	jb_ku64(b, "memberships", c.memberships);
	jb_ku64(b, "epoch_blobs", c.epoch_blobs);
	jb_put(b, "}");
	jb_ku64(b, "connected_peers", connected_peers(k));
	kms_kekrot_status rs;
	kms_kekrot_status_get(a->rot, &rs);
	jb_key(b, "kek_rotation");
	jb_put(b, "{");
	jb_kbool(b, "active", rs.active);
	if (rs.active) {
		jb_kstr(b, "from", rs.from);
		jb_kstr(b, "to", rs.to);
		jb_ku64(b, "rewrapped", rs.rewrapped);
		jb_ku64(b, "remaining", rs.remaining);
		jb_ku64(b, "chunk", rs.chunk);
		jb_ku64(b, "pause_ms", rs.pause_ms);
		if (rs.last_error[0])
			jb_kstr(b, "last_error", rs.last_error);
	} else if (rs.done_to[0]) {
		jb_kstr(b, "last_done_to", rs.done_to);
		jb_ku64(b, "last_done_ms", rs.done_ms);
	}
	jb_put(b, "}");
	jb_kbool(b, "restore_rekeys_pending", a->restore_pending);
	jb_put(b, "}");
}

static void psc_fields(jbuf *b, const kms_psc *p)
{
	jb_khex(b, "psc_id", p->psc_id);
	jb_kstr(b, "name", p->name);
	jb_khex(b, "owner", p->owner);
	jb_ku64(b, "epoch", p->epoch);
	jb_ku64(b, "members", p->n_members);
	jb_ku64(b, "max_members", p->max_members);
	jb_ku64(b, "refresh_s", p->refresh_s);
	jb_ku64(b, "created_ms", p->created_ms);
	jb_ku64(b, "last_rekey_ms", p->last_rekey_ms);
}

static int list_psc(void *arg, const kms_psc *p)
{
	jbuf *b = arg;
	jb_elem(b);
	psc_fields(b, p);
	jb_put(b, "}");
	return 0;
}

static void cmd_psc_list(kms_admin *a)
{
	psc_err e;
	reply_ok_begin(a);
	jb_key(&a->reply, "pscs");
	jb_put(&a->reply, "[");
	if (kms_store_psc_foreach(a->k->store, false, list_psc, &a->reply, &e) != PSC_OK) {
		reply_error(a, "state store: %s", psc_err_text(&e));
		return;
	}
	jb_put(&a->reply, "]}");
}

static int list_member(void *arg, const kms_member *m)
{
	jbuf *b = arg;
	jb_elem(b);
	jb_khex(b, "node_id", m->node_id);
	jb_ku64(b, "added_ms", m->added_ms);
	jb_ku64(b, "acked_epoch", m->acked_epoch);
	jb_put(b, "}");
	return 0;
}

static void cmd_psc_show(kms_admin *a, const char *hex)
{
	uint8_t id[PSC_PSC_ID_LEN];
	psc_err e;
	if (!hex || proto_id_from_hex(hex, id) != PSC_OK) {
		reply_error(a, "psc show needs a PSC id of 32 hex digits");
		return;
	}
	kms_psc *p = malloc(sizeof(*p));
	if (!p) {
		reply_error(a, "out of memory");
		return;
	}
	if (kms_store_psc_get(a->k->store, id, p, &e) != PSC_OK) {
		reply_error(a, "PSC %s: %s", hex, psc_err_text(&e));
		free(p);
		return;
	}
	jbuf *b = &a->reply;
	reply_ok_begin(a);
	jb_key(b, "psc");
	jb_put(b, "{");
	psc_fields(b, p);
	jb_ku64(b, "highest_epoch", p->highest_epoch);
	jb_kbool(b, "destroyed", p->destroyed);
	jb_key(b, "labels");
	jb_put(b, "{");
	for (size_t i = 0; i < p->n_labels; i++)
		jb_kstr(b, p->labels[i].key, p->labels[i].value);
	jb_put(b, "}");
	jb_key(b, "member_list");
	jb_put(b, "[");
	psc_rc rc = kms_store_members(a->k->store, id, list_member, b, &e);
	free(p);
	if (rc != PSC_OK) {
		reply_error(a, "state store: %s", psc_err_text(&e));
		return;
	}
	jb_put(b, "]}}");
}

typedef struct peer_list_arg {
	kmsd *k;
	jbuf *b;
} peer_list_arg;

static int list_peer(void *arg, const kms_peer *p)
{
	peer_list_arg *pl = arg;
	jbuf *b = pl->b;
	jb_elem(b);
	jb_khex(b, "node_id", p->node_id);
	jb_kstr(b, "subject", p->subject);
	jb_kbool(b, "banned", p->banned);
	jb_kbool(b, "connected", kmsd_binding_by_node(pl->k, p->node_id) != NULL);
	jb_ku64(b, "first_seen_ms", p->first_seen_ms);
	jb_ku64(b, "updated_ms", p->updated_ms);
	jb_ku64(b, "banned_ms", p->banned_ms);
	jb_put(b, "}");
	return 0;
}

static void cmd_peer_list(kms_admin *a)
{
	psc_err e;
	peer_list_arg pl = {.k = a->k, .b = &a->reply};
	reply_ok_begin(a);
	jb_key(&a->reply, "peers");
	jb_put(&a->reply, "[");
	if (kms_store_peer_foreach(a->k->store, list_peer, &pl, &e) != PSC_OK) {
		reply_error(a, "state store: %s", psc_err_text(&e));
		return;
	}
	jb_put(&a->reply, "]}");
}

static int count_psc(void *arg, const kms_member *m)
{
	(void)m;
	(*(size_t *)arg)++;
	return 0;
}

/* PEER_BAN + peer.ban + evictions, all in the open batch; the reply waits for
 * batch_end (kms_admin_after_batch checks the ban became durable). */
static void cmd_peer_ban(kms_admin *a, const char *hex)
{
	kmsd *k = a->k;
	uint8_t node[PSC_NODE_ID_LEN];
	psc_err e;
	if (!hex || proto_id_from_hex(hex, node) != PSC_OK) {
		reply_error(a, "peer ban needs a Node-ID of 32 hex digits");
		return;
	}
	if (aud_log_failed(k->audit)) {
		reply_error(a, "the audit log is failed closed: nothing can be changed until it "
			       "recovers (see the psc-kmsd log)");
		return;
	}
	size_t n = 0;
	if (kms_store_pscs_of_node(k->store, node, count_psc, &n, &e) != PSC_OK) {
		reply_error(a, "state store: %s", psc_err_text(&e));
		return;
	}
	kms_cmd cmd = {.type = KMS_CMD_PEER_BAN};
	memcpy(cmd.peer_ban.node_id, node, PSC_NODE_ID_LEN);
	cmd.peer_ban.banned = true;
	cmd.peer_ban.now_ms = k->now_ms;
	if (kmsd_apply(k, &cmd, &e) != PSC_OK) {
		reply_error(a, "%s", psc_err_text(&e));
		return;
	}
	char nid[33];
	proto_id_hex(node, nid);
	aud_kv kv[2] = {{.key = "node_id", .str = nid}, {.key = "by", .str = "psc-kmsctl"}};
	aud_event ev = {.type = AUD_EV_PEER_BAN, .result = "ok", .detail = kv, .n_detail = 2};
	if (kmsd_audit(k, &ev, &e) != PSC_OK) {
		/* batch_end will not commit a batch whose records cannot be written */
		reply_error(a, "audit: %s", psc_err_text(&e));
		a->after = AFTER_BAN; /* still check what became durable */
		memcpy(a->ban_node, node, PSC_NODE_ID_LEN);
		return;
	}
	kmsd_evict_everywhere(k, node, "banned by the operator");
	a->after = AFTER_BAN;
	memcpy(a->ban_node, node, PSC_NODE_ID_LEN);
	a->ban_evicted = n;
}

static void finish_ban(kms_admin *a)
{
	kms_peer *p = malloc(sizeof(*p));
	psc_err e;
	bool ok = p && kms_store_peer_get(a->k->store, a->ban_node, p, &e) == PSC_OK && p->banned;
	free(p);
	char nid[33];
	proto_id_hex(a->ban_node, nid);
	if (!ok) {
		reply_error(a, "the ban of %s was not committed (audit log or state store "
			       "failure: see the psc-kmsd log)", nid);
		return;
	}
	reply_ok_begin(a);
	jb_kstr(&a->reply, "banned", nid);
	jb_ku64(&a->reply, "evicted_from", a->ban_evicted);
	jb_put(&a->reply, "}");
}

/* Like SIGHUP, but the operator learns the outcome. */
static void cmd_policy_reload(kms_admin *a)
{
	kmsd *k = a->k;
	psc_err e;
	pol_load_opts po = {0};
	char old_rev[80];
	snprintf(old_rev, sizeof(old_rev), "%s", pol_policy_revision(k->pol));
	psc_rc rc = pol_policy_reload(&k->pol, k->cfg->policy_file, &po, &e);
	char why[400];
	snprintf(why, sizeof(why), "%s", rc == PSC_OK ? "ok" : psc_err_text(&e));
	aud_decision d = {.outcome = rc == PSC_OK ? "reloaded" : "rejected",
			  .policy_rev = pol_policy_revision(k->pol)};
	aud_kv kv[2] = {{.key = "previous_revision", .str = old_rev},
			{.key = "by", .str = "psc-kmsctl"}};
	aud_event ev = {.type = AUD_EV_POLICY_RELOAD, .decision = &d, .result = why,
			.detail = kv, .n_detail = 2};
	psc_err ae;
	(void)!kmsd_audit(k, &ev, &ae);
	if (rc != PSC_OK) {
		fprintf(stderr, "psc-kmsd: policy reload (psc-kmsctl) rejected, previous policy "
				"stays active: %s\n", why);
		reply_error(a, "policy reload rejected, the previous policy stays active: %s", why);
		return;
	}
	fprintf(stderr, "psc-kmsd: policy reloaded (psc-kmsctl): revision %.12s\n",
		pol_policy_revision(k->pol));
	reply_ok_begin(a);
	jb_kstr(&a->reply, "revision", pol_policy_revision(k->pol));
	jb_kstr(&a->reply, "previous_revision", old_rev);
	jb_put(&a->reply, "}");
}

static void finish_checkpoint(kms_admin *a)
{
	psc_err e;
	if (aud_log_checkpoint(a->k->audit, &e) != PSC_OK) {
		reply_error(a, "audit checkpoint: %s", psc_err_text(&e));
		return;
	}
	reply_ok_begin(a);
	jb_ku64(&a->reply, "last_seq", aud_log_last_seq(a->k->audit));
	jb_put(&a->reply, "}");
}

static int list_membership(void *arg, const kms_member *m)
{
	jbuf *b = arg;
	jb_elem(b);
	jb_khex(b, "psc_id", m->psc_id);
	jb_ku64(b, "acked_epoch", m->acked_epoch);
	jb_ku64(b, "psc_epoch", m->psc_epoch);
	jb_ku64(b, "added_ms", m->added_ms);
	jb_put(b, "}");
	return 0;
}

static void cmd_peer_show(kms_admin *a, const char *hex)
{
	uint8_t node[PSC_NODE_ID_LEN];
	psc_err e;
	if (!hex || proto_id_from_hex(hex, node) != PSC_OK) {
		reply_error(a, "peer show needs a Node-ID of 32 hex digits");
		return;
	}
	kms_peer *p = malloc(sizeof(*p));
	if (!p) {
		reply_error(a, "out of memory");
		return;
	}
	if (kms_store_peer_get(a->k->store, node, p, &e) != PSC_OK) {
		reply_error(a, "peer %s: %s", hex, psc_err_text(&e));
		free(p);
		return;
	}
	jbuf *b = &a->reply;
	reply_ok_begin(a);
	jb_key(b, "peer");
	jb_put(b, "{");
	jb_khex(b, "node_id", p->node_id);
	jb_kstr(b, "subject", p->subject);
	char fp[2 * PSC_HASH_LEN + 1];
	for (size_t i = 0; i < PSC_HASH_LEN; i++)
		snprintf(fp + 2 * i, 3, "%02x", p->cert_sha256[i]);
	jb_kstr(b, "cert_sha256", fp);
	jb_kstr(b, "endpoint", p->endpoint);
	jb_ku64(b, "wrap_alg", p->wrap_alg);
	jb_kbool(b, "banned", p->banned);
	jb_kbool(b, "connected", kmsd_binding_by_node(a->k, p->node_id) != NULL);
	jb_kbool(b, "curve_key_bound", p->transport_key_len != 0);
	jb_ku64(b, "first_seen_ms", p->first_seen_ms);
	jb_ku64(b, "updated_ms", p->updated_ms);
	jb_ku64(b, "banned_ms", p->banned_ms);
	free(p);
	jb_key(b, "memberships");
	jb_put(b, "[");
	if (kms_store_pscs_of_node(a->k->store, node, list_membership, b, &e) != PSC_OK) {
		reply_error(a, "state store: %s", psc_err_text(&e));
		return;
	}
	jb_put(b, "]}}");
}

static bool refuse_if_failed_closed(kms_admin *a)
{
	if (!aud_log_failed(a->k->audit))
		return false;
	reply_error(a, "the audit log is failed closed: nothing can be changed until it "
		       "recovers (see the psc-kmsd log)");
	return true;
}

/* PEER_BAN(banned = false) + peer.ban (action unban). The peer must Initialize
 * again and be admitted by policy; its old memberships are not given back. */
static void cmd_peer_unban(kms_admin *a, const char *hex)
{
	kmsd *k = a->k;
	uint8_t node[PSC_NODE_ID_LEN];
	psc_err e;
	if (!hex || proto_id_from_hex(hex, node) != PSC_OK) {
		reply_error(a, "peer unban needs a Node-ID of 32 hex digits");
		return;
	}
	if (refuse_if_failed_closed(a))
		return;
	kms_peer *p = malloc(sizeof(*p));
	psc_rc rc = p ? kms_store_peer_get(k->store, node, p, &e) : PSC_E_NOMEM;
	bool banned = rc == PSC_OK && p->banned;
	free(p);
	if (rc != PSC_OK) {
		reply_error(a, "peer %s: %s", hex, rc == PSC_E_NOMEM ? "out of memory"
								   : psc_err_text(&e));
		return;
	}
	if (!banned) {
		reply_error(a, "peer %s is not banned", hex);
		return;
	}
	kms_cmd cmd = {.type = KMS_CMD_PEER_BAN};
	memcpy(cmd.peer_ban.node_id, node, PSC_NODE_ID_LEN);
	cmd.peer_ban.banned = false;
	cmd.peer_ban.now_ms = k->now_ms;
	if (kmsd_apply(k, &cmd, &e) != PSC_OK) {
		reply_error(a, "%s", psc_err_text(&e));
		return;
	}
	aud_kv kv[3] = {{.key = "node_id", .str = hex},
			{.key = "action", .str = "unban"},
			{.key = "by", .str = "psc-kmsctl"}};
	aud_event ev = {.type = AUD_EV_PEER_BAN, .result = "ok", .detail = kv, .n_detail = 3};
	if (kmsd_audit(k, &ev, &e) != PSC_OK)
		reply_error(a, "audit: %s", psc_err_text(&e));
	a->after = AFTER_UNBAN;
	memcpy(a->ban_node, node, PSC_NODE_ID_LEN);
}

static void finish_unban(kms_admin *a)
{
	kms_peer *p = malloc(sizeof(*p));
	psc_err e;
	bool ok = p && kms_store_peer_get(a->k->store, a->ban_node, p, &e) == PSC_OK && !p->banned;
	free(p);
	char nid[33];
	proto_id_hex(a->ban_node, nid);
	if (!ok) {
		reply_error(a, "the unban of %s was not committed (audit log or state store "
			       "failure: see the psc-kmsd log)", nid);
		return;
	}
	reply_ok_begin(a);
	jb_kstr(&a->reply, "unbanned", nid);
	jb_put(&a->reply, "}");
}

/* Destroy-Refresh to the members, PSC_DESTROY, psc.destroy; the reply waits
 * for the batch like a ban. */
static void cmd_psc_destroy(kms_admin *a, const char *hex)
{
	kmsd *k = a->k;
	uint8_t id[PSC_PSC_ID_LEN];
	psc_err e;
	if (!hex || proto_id_from_hex(hex, id) != PSC_OK) {
		reply_error(a, "psc destroy needs a PSC id of 32 hex digits");
		return;
	}
	if (refuse_if_failed_closed(a))
		return;
	kms_psc *p = malloc(sizeof(*p));
	if (!p) {
		reply_error(a, "out of memory");
		return;
	}
	if (kmsd_destroy_by_operator(k, id, p, &e) != PSC_OK) {
		reply_error(a, "PSC %s: %s", hex, psc_err_text(&e));
		free(p);
		return;
	}
	aud_kv kv[2] = {{.key = "name", .str = p->name}, {.key = "by", .str = "psc-kmsctl"}};
	aud_event ev = {.type = AUD_EV_PSC_DESTROY, .psc_id = id, .has_epoch = true,
			.epoch = p->epoch, .result = "ok", .detail = kv, .n_detail = 2};
	a->destroy_epoch = p->epoch;
	psc_rc arc = kmsd_audit(k, &ev, &e); /* ev borrows p->name */
	free(p);
	if (arc != PSC_OK)
		reply_error(a, "audit: %s", psc_err_text(&e));
	a->after = AFTER_DESTROY;
	memcpy(a->destroy_psc, id, PSC_PSC_ID_LEN);
}

static void finish_destroy(kms_admin *a)
{
	kms_psc *p = malloc(sizeof(*p));
	psc_err e;
	bool ok = p && kms_store_psc_get(a->k->store, a->destroy_psc, p, &e) == PSC_OK &&
		  p->destroyed;
	free(p);
	char hex[33];
	proto_id_hex(a->destroy_psc, hex);
	if (!ok) {
		reply_error(a, "destroying PSC %s was not committed (audit log or state store "
			       "failure: see the psc-kmsd log)", hex);
		return;
	}
	reply_ok_begin(a);
	jb_kstr(&a->reply, "destroyed", hex);
	jb_ku64(&a->reply, "last_epoch", a->destroy_epoch);
	jb_put(&a->reply, "}");
}

static void cmd_backup(kms_admin *a, const char *path)
{
	if (!path || path[0] != '/') {
		reply_error(a, "backup needs an absolute file path (written by psc-kmsd, as its "
			       "service user)");
		return;
	}
	if (strlen(path) >= sizeof(a->backup_path)) {
		reply_error(a, "backup path is longer than %zu bytes", sizeof(a->backup_path) - 1);
		return;
	}
	if (refuse_if_failed_closed(a))
		return;
	snprintf(a->backup_path, sizeof(a->backup_path), "%s", path);
	a->after = AFTER_BACKUP; /* outside the batch: a backup never holds half of one */
}

/* Pages copied per loop turn (4 KiB each): a large database is copied over
 * many turns, between batches, so peers are served meanwhile. */
#define BACKUP_PAGES_PER_TURN 64

/* After each batch until done: the committed state goes to the file, a step
 * at a time; then kms.backup is appended and the reply waits until the next
 * batch made it durable. */
static void do_backup(kms_admin *a)
{
	kmsd *k = a->k;
	psc_err e;
	kms_store_counts c;
	bool done = false;
	if (!a->bk) {
		if (kms_store_backup_begin(k->store, a->backup_path, &a->bk, &e) != PSC_OK) {
			reply_error(a, "backup: %s", psc_err_text(&e));
			return;
		}
		a->backup_steps = 0;
	}
	if (kms_store_backup_step(&a->bk, BACKUP_PAGES_PER_TURN, &done, &e) != PSC_OK) {
		reply_error(a, "backup: %s", psc_err_text(&e)); /* the partial file is gone */
		return;
	}
	a->backup_steps++;
	if (!done)
		return; /* AFTER_BACKUP stays: the next turn copies more */
	uint64_t seq = kms_store_last_audit_seq(k->store);
	if (kms_store_counts_get(k->store, &c, &e) != PSC_OK)
		memset(&c, 0, sizeof(c));
	aud_kv kv[4] = {{.key = "file", .str = a->backup_path},
			{.key = "audit_seq", .num = seq},
			{.key = "pscs", .num = c.pscs_live},
			{.key = "by", .str = "psc-kmsctl"}};
	aud_event ev = {.type = AUD_EV_KMS_BACKUP, .key_id = k->kek_id, .result = "ok",
			.detail = kv, .n_detail = 4};
	uint64_t rec = 0;
	if (aud_log_append(k->audit, &ev, &rec, &e) != PSC_OK) {
		reply_error(a, "backup written to %s but it could not be audited: %s",
			    a->backup_path, psc_err_text(&e));
		return;
	}
	k->batch_dirty = true;
	fprintf(stderr, "psc-kmsd: state backup written to %s (audit seq %llu, %u steps)\n",
		a->backup_path, (unsigned long long)seq, a->backup_steps);
	reply_ok_begin(a);
	jb_kstr(&a->reply, "file", a->backup_path);
	jb_ku64(&a->reply, "audit_seq", seq);
	jb_kstr(&a->reply, "kek_id", k->kek_id);
	jb_ku64(&a->reply, "pscs", c.pscs_live);
	jb_ku64(&a->reply, "epoch_blobs", c.epoch_blobs);
	jb_ku64(&a->reply, "peers", c.peers);
	jb_ku64(&a->reply, "steps", a->backup_steps);
	jb_put(&a->reply, "}");
	a->send_after_seq = rec;
	a->after = AFTER_SEND_NEXT;
}

static bool parse_uint(const char *s, unsigned max, unsigned *out)
{
	if (!s || !*s || strlen(s) > 9)
		return false;
	unsigned v = 0;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (unsigned)(*p - '0');
	}
	if (v > max)
		return false;
	*out = v;
	return true;
}

static void cmd_rotate(kms_admin *a, const char *chunk_s, const char *pause_s)
{
	unsigned chunk = 0, pause_ms = 0;
	/* CHUNK 0: the default */
	if ((chunk_s && !parse_uint(chunk_s, KMS_KEKROT_CHUNK_MAX, &chunk)) ||
	    (pause_s && !parse_uint(pause_s, KMS_KEKROT_PAUSE_MAX_MS, &pause_ms))) {
		reply_error(a, "rotate master-kek [CHUNK [PAUSE-MS]]: CHUNK is 1..%d blobs per "
			       "step (0: %d), PAUSE-MS 0..%d", KMS_KEKROT_CHUNK_MAX,
			    KMS_KEKROT_CHUNK_DEFAULT, KMS_KEKROT_PAUSE_MAX_MS);
		return;
	}
	psc_err e;
	if (kms_kekrot_start(a->rot, chunk, pause_ms, &e) != PSC_OK) {
		reply_error(a, "KEK rotation: %s", psc_err_text(&e));
		return;
	}
	kms_kekrot_status rs;
	kms_kekrot_status_get(a->rot, &rs);
	reply_ok_begin(a);
	jb_kstr(&a->reply, "from", rs.from);
	jb_kstr(&a->reply, "to", rs.to);
	jb_ku64(&a->reply, "remaining", rs.remaining);
	jb_ku64(&a->reply, "chunk", rs.chunk);
	jb_ku64(&a->reply, "pause_ms", rs.pause_ms);
	jb_put(&a->reply, "}");
}

static void dispatch(kms_admin *a, char *line)
{
	char *words[5] = {0};
	size_t n = 0;
	char *save = NULL;
	for (char *w = strtok_r(line, " \t\r\n", &save); w && n < 5;
	     w = strtok_r(NULL, " \t\r\n", &save))
		words[n++] = w;
	const char *w0 = words[0] ? words[0] : "", *w1 = words[1] ? words[1] : "";
	if (n == 1 && strcmp(w0, "status") == 0)
		cmd_status(a);
	else if (n == 2 && strcmp(w0, "psc") == 0 && strcmp(w1, "list") == 0)
		cmd_psc_list(a);
	else if (n == 3 && strcmp(w0, "psc") == 0 && strcmp(w1, "show") == 0)
		cmd_psc_show(a, words[2]);
	else if (n == 2 && strcmp(w0, "peer") == 0 && strcmp(w1, "list") == 0)
		cmd_peer_list(a);
	else if (n == 3 && strcmp(w0, "peer") == 0 && strcmp(w1, "ban") == 0)
		cmd_peer_ban(a, words[2]);
	else if (n == 2 && strcmp(w0, "policy") == 0 && strcmp(w1, "reload") == 0)
		cmd_policy_reload(a);
	else if (n == 2 && strcmp(w0, "audit") == 0 && strcmp(w1, "checkpoint") == 0)
		a->after = AFTER_CHECKPOINT;
	else if (n == 3 && strcmp(w0, "peer") == 0 && strcmp(w1, "show") == 0)
		cmd_peer_show(a, words[2]);
	else if (n == 3 && strcmp(w0, "peer") == 0 && strcmp(w1, "unban") == 0)
		cmd_peer_unban(a, words[2]);
	else if (n == 3 && strcmp(w0, "psc") == 0 && strcmp(w1, "destroy") == 0)
		cmd_psc_destroy(a, words[2]);
	else if (n == 2 && strcmp(w0, "backup") == 0)
		cmd_backup(a, words[1]);
	else if (n >= 2 && n <= 4 && strcmp(w0, "rotate") == 0 && strcmp(w1, "master-kek") == 0)
		cmd_rotate(a, words[2], words[3]);
	else
		reply_error(a, "unknown admin request (expected status, psc list, psc show ID, "
			       "psc destroy ID, peer list, peer show NODE-ID, peer ban NODE-ID, "
			       "peer unban NODE-ID, policy reload, audit checkpoint, backup FILE, "
			       "rotate master-kek [CHUNK [PAUSE-MS]])");
}

/* ---- the socket ----------------------------------------------------------- */

static int count_due(void *arg, const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t due_ms)
{
	(void)psc_id;
	(void)due_ms;
	(*(size_t *)arg)++;
	return 0;
}

psc_rc kms_admin_open(kms_admin **out, kmsd *k, psc_err *err)
{
	*out = NULL;
	const char *ep = k->cfg->admin_socket;
	if (strncmp(ep, "ipc://", 6) != 0)
		return psc_err_set(err, PSC_E_INVALID_ARG, "admin_socket must be ipc://path, "
				   "found '%s'", ep);
	kms_admin *a = calloc(1, sizeof(*a));
	if (!a)
		return psc_err_set(err, PSC_E_NOMEM, "out of memory");
	a->k = k;
	snprintf(a->path, sizeof(a->path), "%s", ep + 6);
	a->sock = zmq_socket(k->zctx, ZMQ_REP);
	if (!a->sock) {
		free(a);
		return psc_err_set(err, PSC_E_IO, "admin socket: %s", zmq_strerror(zmq_errno()));
	}
	int linger = 0;
	(void)zmq_setsockopt(a->sock, ZMQ_LINGER, &linger, sizeof(linger));
	int64_t maxmsg = REQ_MAX;
	(void)zmq_setsockopt(a->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg));
	/* The socket file is the access control: never wider than 0660. */
	mode_t old = umask(0117);
	int rc = zmq_bind(a->sock, ep);
	int zerr = zmq_errno();
	umask(old);
	if (rc != 0 || chmod(a->path, 0660) != 0) {
		const char *why = rc != 0 ? zmq_strerror(zerr) : strerror(errno);
		psc_err_set(err, PSC_E_IO, "cannot bind the admin socket %s: %s (does its "
			    "directory exist and belong to the service user?)", ep, why);
		zmq_close(a->sock);
		free(a);
		return PSC_E_IO;
	}
	psc_rc rrc = kms_kekrot_new(&a->rot, k, err);
	if (rrc == PSC_OK && (rrc = kms_kekrot_resume(a->rot, err)) != PSC_OK)
		psc_err_set(err, rrc, "cannot resume the master KEK rotation found on the token: %s",
			    psc_err_text(err));
	if (rrc != PSC_OK) {
		kms_admin_close(&a);
		return rrc;
	}
	a->restore_pending = true; /* until the loop finds none left */
	*out = a;
	return PSC_OK;
}

void kms_admin_start(kms_admin *a)
{
	if (!a)
		return;
	kmsd *k = a->k;
	/* PSCs a restore left below their epoch floor are rekeyed before any peer
	 * is served, so no Catchup can hand out a restored (pre-floor) epoch. In
	 * the start-up batch; what fails here (HSM) is retried from the loop. */
	size_t due = 0;
	psc_err e;
	if (kms_store_restore_due(k->store, count_due, &due, &e) != PSC_OK || due == 0)
		return;
	fprintf(stderr, "psc-kmsd: %zu restored PSCs are below their epoch floor: rekeying "
			"them above every epoch ever issued\n", due);
	for (size_t round = 0; round <= due / 16 + 1 && kmsd_rekey_restored(k) > 0; round++)
		;
}

void kms_admin_tick(kms_admin *a)
{
	if (!a)
		return;
	kmsd *k = a->k;
	if (a->restore_pending && k->now_ms >= a->restore_next_ms) {
		size_t due = kmsd_rekey_restored(k);
		if (due == 0)
			a->restore_pending = false;
		a->restore_next_ms = k->now_ms + 50;
	}
	kms_kekrot_step(a->rot);
}

uint64_t kms_admin_next_ms(const kms_admin *a)
{
	if (!a)
		return 0;
	uint64_t next = kms_kekrot_next_ms(a->rot);
	if (a->restore_pending && (!next || a->restore_next_ms < next))
		next = a->restore_next_ms ? a->restore_next_ms : 1;
	if (a->waiting && (a->after == AFTER_SEND_NEXT || a->after == AFTER_BACKUP))
		next = 1; /* a reply waits for the next batch, or a backup copies on */
	return next;
}

void *kms_admin_socket(kms_admin *a)
{
	return a ? a->sock : NULL;
}

void kms_admin_serve(kms_admin *a)
{
	if (!a || a->waiting)
		return;
	char line[REQ_MAX + 1];
	int n = zmq_recv(a->sock, line, REQ_MAX, ZMQ_DONTWAIT);
	if (n < 0)
		return;
	a->waiting = true;
	a->after = AFTER_NONE;
	int more = 0;
	size_t ml = sizeof(more);
	bool multi = zmq_getsockopt(a->sock, ZMQ_RCVMORE, &more, &ml) == 0 && more;
	while (more) { /* drain extra frames */
		char junk[64];
		(void)zmq_recv(a->sock, junk, sizeof(junk), 0);
		if (zmq_getsockopt(a->sock, ZMQ_RCVMORE, &more, &ml) != 0)
			break;
	}
	if (multi || n > REQ_MAX) {
		reply_error(a, "an admin request is one frame of at most %d bytes", REQ_MAX);
		return;
	}
	line[n] = '\0';
	if (strlen(line) != (size_t)n) {
		reply_error(a, "an admin request is one line of text");
		return;
	}
	dispatch(a, line);
}

void kms_admin_after_batch(kms_admin *a)
{
	if (!a)
		return;
	kms_kekrot_after_batch(a->rot);
	if (!a->waiting)
		return;
	if (a->after == AFTER_BAN)
		finish_ban(a);
	else if (a->after == AFTER_CHECKPOINT)
		finish_checkpoint(a);
	else if (a->after == AFTER_UNBAN)
		finish_unban(a);
	else if (a->after == AFTER_DESTROY)
		finish_destroy(a);
	else if (a->after == AFTER_BACKUP) {
		do_backup(a);
		if (a->after == AFTER_BACKUP)
			return; /* still copying */
	}
	else if (a->after == AFTER_SEND_NEXT) {
		if (aud_log_last_seq(a->k->audit) < a->send_after_seq) {
			if (aud_log_failed(a->k->audit))
				reply_error(a, "the backup file was written but its audit record "
					       "could not be made durable (audit log failed closed)");
			else
				return; /* not committed yet: the next batch */
		}
		a->after = AFTER_NONE;
	}
	if (a->after == AFTER_SEND_NEXT)
		return;
	a->after = AFTER_NONE;
	if (a->reply.failed || !a->reply.s)
		reply_error(a, "out of memory building the reply");
	const char *s = a->reply.s ? a->reply.s : "{\"ok\":false,\"error\":\"out of memory\"}";
	(void)zmq_send(a->sock, s, strlen(s), ZMQ_DONTWAIT);
	a->waiting = false;
	a->reply.len = 0;
}

void kms_admin_close(kms_admin **p)
{
	if (!p || !*p)
		return;
	kms_admin *a = *p;
	kms_store_backup_abort(&a->bk); /* a stop during a backup leaves no partial file */
	kms_kekrot_free(&a->rot);
	zmq_close(a->sock);
	free(a->reply.s);
	free(a);
	*p = NULL;
}
