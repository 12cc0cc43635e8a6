/*
 * kms_store — SQLite state store (see kms_store.h).
 *
 * Determinism: every value written comes from the command or from rows the
 * commands wrote before; tables are WITHOUT ROWID (no hidden row numbers that
 * could differ between nodes); rows are read back in explicit ORDER BY order.
 * A command runs inside a SAVEPOINT, so a rejection found half-way leaves the
 * batch exactly as it was.
 */
#include "kms_store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto_buf.h"

/* "PSKM": marks the file as ours (PRAGMA application_id), so pointing state_db
 * at some other SQLite database fails at open instead of being "migrated". */
#define KMS_STORE_APP_ID 0x50534b4d

/* ---- statements ---------------------------------------------------------- */

enum st {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_SAVEPOINT,
	ST_RELEASE,
	ST_ROLLBACK_TO,
	ST_META_GET,
	ST_META_SET,
	ST_PEER_UPSERT,
	ST_PEER_EXISTS,
	ST_PEER_BAN,
	ST_PEER_GET,
	ST_PEER_ALL,
	ST_PSC_STATE,
	ST_PSC_BY_NAME_ID,
	ST_PSC_INSERT,
	ST_PSC_RECREATE,
	ST_PSC_SET_EPOCH,
	ST_PSC_DESTROY,
	ST_PSC_GET,
	ST_PSC_GET_BY_NAME,
	ST_PSC_ALL,
	ST_PSC_ALL_LIVE,
	ST_MEMBER_COUNT,
	ST_MEMBER_GET,
	ST_MEMBER_INSERT,
	ST_MEMBER_DELETE,
	ST_MEMBER_DELETE_ALL,
	ST_MEMBER_ACK,
	ST_MEMBERS_OF_PSC,
	ST_PSCS_OF_NODE,
	ST_EPOCH_INSERT,
	ST_EPOCH_PRUNE,
	ST_EPOCH_DELETE_ALL,
	ST_EPOCH_GET,
	ST_EPOCH_PREV,
	ST_EPOCH_REWRAP,
	ST_EPOCHS_BY_KEK,
	ST_EPOCHS_NOT_KEK,
	ST_EPOCHS_NOT_KEK_COUNT,
	ST_RESTORE_DUE,
	ST_HWM_GET,
	ST_HWM_RAISE,
	ST_REFRESH_DUE,
	ST_REFRESH_NEXT,
	ST_COUNTS,
	ST_COUNT_
};

#define PSC_COLS                                                                                   \
	"psc_id, name, owner, labels, flags, suite, refresh_s, max_members, created_ms, "          \
	"epoch, last_rekey_ms, destroyed, destroyed_ms, "                                          \
	"(SELECT count(*) FROM members m WHERE m.psc_id = pscs.psc_id), "                          \
	"coalesce((SELECT epoch FROM epoch_hwm h WHERE h.psc_id = pscs.psc_id), 0) "
#define MEMBER_COLS "m.psc_id, m.node_id, m.added_ms, m.acked_epoch, p.epoch "
#define EPOCH_COLS "psc_id, epoch, kek_id, wrapped, created_ms, prev_grace_ms "
#define PEER_COLS                                                                                  \
	"node_id, cert_der, cert_sha256, subject, endpoint, transport_key, wrap_alg, "             \
	"suites, banned, first_seen_ms, updated_ms, banned_ms "

static const char *const SQL[ST_COUNT_] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT kms_cmd",
    [ST_RELEASE] = "RELEASE kms_cmd",
    [ST_ROLLBACK_TO] = "ROLLBACK TO kms_cmd",
    [ST_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [ST_META_SET] = "INSERT INTO meta(key, value) VALUES(?1, ?2) "
		    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    [ST_PEER_UPSERT] =
	"INSERT INTO peers(node_id, cert_der, cert_sha256, subject, endpoint, "
	"transport_key, wrap_alg, suites, banned, first_seen_ms, updated_ms, banned_ms) "
	"VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?9, 0) "
	"ON CONFLICT(node_id) DO UPDATE SET cert_der = excluded.cert_der, "
	"cert_sha256 = excluded.cert_sha256, subject = excluded.subject, "
	"endpoint = excluded.endpoint, transport_key = excluded.transport_key, "
	"wrap_alg = excluded.wrap_alg, suites = excluded.suites, "
	"updated_ms = excluded.updated_ms",
    [ST_PEER_EXISTS] = "SELECT 1 FROM peers WHERE node_id = ?1",
    [ST_PEER_BAN] = "UPDATE peers SET banned = ?2, banned_ms = ?3 WHERE node_id = ?1",
    [ST_PEER_GET] = "SELECT " PEER_COLS "FROM peers WHERE node_id = ?1",
    [ST_PEER_ALL] = "SELECT " PEER_COLS "FROM peers ORDER BY node_id",
    [ST_PSC_STATE] = "SELECT destroyed, epoch, max_members, refresh_s, "
		     "coalesce((SELECT epoch FROM epoch_hwm h WHERE h.psc_id = ?1), 0) "
		     "FROM pscs WHERE psc_id = ?1",
    [ST_PSC_BY_NAME_ID] = "SELECT psc_id FROM pscs WHERE name = ?1 AND destroyed = 0",
    [ST_PSC_INSERT] =
	"INSERT INTO pscs(psc_id, name, owner, labels, flags, suite, refresh_s, "
	"max_members, created_ms, epoch, last_rekey_ms, due_ms, destroyed, destroyed_ms) "
	"VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, 0, NULL, 0, 0)",
    [ST_PSC_RECREATE] =
	"UPDATE pscs SET name = ?2, owner = ?3, labels = ?4, flags = ?5, suite = ?6, "
	"refresh_s = ?7, max_members = ?8, created_ms = ?9, epoch = 0, "
	"last_rekey_ms = 0, due_ms = NULL, destroyed = 0, destroyed_ms = 0 "
	"WHERE psc_id = ?1 AND destroyed = 1",
    [ST_PSC_SET_EPOCH] = "UPDATE pscs SET epoch = ?2, last_rekey_ms = ?3, due_ms = ?4 "
			 "WHERE psc_id = ?1",
    [ST_PSC_DESTROY] = "UPDATE pscs SET destroyed = 1, destroyed_ms = ?2, due_ms = NULL "
		       "WHERE psc_id = ?1",
    [ST_PSC_GET] = "SELECT " PSC_COLS "FROM pscs WHERE psc_id = ?1",
    [ST_PSC_GET_BY_NAME] = "SELECT " PSC_COLS "FROM pscs WHERE name = ?1 AND destroyed = 0",
    [ST_PSC_ALL] = "SELECT " PSC_COLS "FROM pscs ORDER BY name, psc_id",
    [ST_PSC_ALL_LIVE] = "SELECT " PSC_COLS "FROM pscs WHERE destroyed = 0 "
			"ORDER BY name, psc_id",
    [ST_MEMBER_COUNT] = "SELECT count(*) FROM members WHERE psc_id = ?1",
    [ST_MEMBER_GET] = "SELECT " MEMBER_COLS "FROM members m JOIN pscs p USING(psc_id) "
		      "WHERE m.psc_id = ?1 AND m.node_id = ?2",
    [ST_MEMBER_INSERT] = "INSERT INTO members(psc_id, node_id, added_ms, acked_epoch) "
			 "VALUES(?1, ?2, ?3, 0)",
    [ST_MEMBER_DELETE] = "DELETE FROM members WHERE psc_id = ?1 AND node_id = ?2",
    [ST_MEMBER_DELETE_ALL] = "DELETE FROM members WHERE psc_id = ?1",
    [ST_MEMBER_ACK] = "UPDATE members SET acked_epoch = ?3 WHERE psc_id = ?1 AND node_id = ?2",
    [ST_MEMBERS_OF_PSC] = "SELECT " MEMBER_COLS "FROM members m JOIN pscs p USING(psc_id) "
			  "WHERE m.psc_id = ?1 ORDER BY m.node_id",
    [ST_PSCS_OF_NODE] = "SELECT " MEMBER_COLS "FROM members m JOIN pscs p USING(psc_id) "
			"WHERE m.node_id = ?1 AND p.destroyed = 0 ORDER BY m.psc_id",
    [ST_EPOCH_INSERT] = "INSERT INTO epochs(psc_id, epoch, kek_id, wrapped, created_ms, "
			"prev_grace_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
    /* Keep the new epoch and (when it grants a grace period) the one before. */
    [ST_EPOCH_PRUNE] = "DELETE FROM epochs WHERE psc_id = ?1 AND epoch <> ?2 AND epoch <> ?3",
    [ST_EPOCH_DELETE_ALL] = "DELETE FROM epochs WHERE psc_id = ?1",
    [ST_EPOCH_GET] = "SELECT " EPOCH_COLS "FROM epochs WHERE psc_id = ?1 AND epoch = ?2",
    [ST_EPOCH_PREV] = "SELECT " EPOCH_COLS "FROM epochs WHERE psc_id = ?1 AND epoch < ?2 "
		      "ORDER BY epoch DESC LIMIT 1",
    [ST_EPOCH_REWRAP] = "UPDATE epochs SET kek_id = ?3, wrapped = ?4 "
			"WHERE psc_id = ?1 AND epoch = ?2",
    [ST_EPOCHS_BY_KEK] = "SELECT " EPOCH_COLS "FROM epochs WHERE kek_id = ?1 "
			 "ORDER BY psc_id, epoch",
    [ST_EPOCHS_NOT_KEK] = "SELECT " EPOCH_COLS "FROM epochs WHERE kek_id <> ?1 "
			  "ORDER BY psc_id, epoch",
    [ST_EPOCHS_NOT_KEK_COUNT] = "SELECT count(*) FROM epochs WHERE kek_id <> ?1",
    /* Restored PSCs: the high-water mark (EPOCH_FLOOR) is above the current epoch. */
    [ST_RESTORE_DUE] = "SELECT p.psc_id FROM pscs p JOIN epoch_hwm h USING(psc_id) "
		       "WHERE p.destroyed = 0 AND p.epoch > 0 AND h.epoch > p.epoch "
		       "ORDER BY p.psc_id",
    [ST_HWM_GET] = "SELECT epoch FROM epoch_hwm WHERE psc_id = ?1",
    [ST_HWM_RAISE] = "INSERT INTO epoch_hwm(psc_id, epoch) VALUES(?1, ?2) "
		     "ON CONFLICT(psc_id) DO UPDATE SET epoch = max(epoch, excluded.epoch)",
    [ST_REFRESH_DUE] = "SELECT psc_id, due_ms FROM pscs WHERE destroyed = 0 AND "
		       "due_ms IS NOT NULL AND due_ms <= ?1 ORDER BY due_ms, psc_id",
    [ST_REFRESH_NEXT] = "SELECT min(due_ms) FROM pscs WHERE destroyed = 0 AND "
			"due_ms IS NOT NULL",
    [ST_COUNTS] = "SELECT (SELECT count(*) FROM peers), "
		  "(SELECT count(*) FROM peers WHERE banned = 1), "
		  "(SELECT count(*) FROM pscs WHERE destroyed = 0), "
		  "(SELECT count(*) FROM pscs WHERE destroyed = 1), "
		  "(SELECT count(*) FROM members), (SELECT count(*) FROM epochs)",
};

/*
 * Schema version 1. Integers are SQLite's signed 64-bit; commands never carry
 * values above INT64_MAX (KMS_CMD_U64_MAX). Blob ids have checked lengths so a
 * tampered file cannot hand a 3-byte "node id" to the KMS.
 */
static const char SCHEMA_V1[] =
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE peers("
    " node_id BLOB PRIMARY KEY CHECK(length(node_id) = 16),"
    " cert_der BLOB NOT NULL, cert_sha256 BLOB NOT NULL CHECK(length(cert_sha256) = 32),"
    " subject TEXT NOT NULL, endpoint TEXT NOT NULL, transport_key BLOB NOT NULL,"
    " wrap_alg INTEGER NOT NULL, suites BLOB NOT NULL,"
    " banned INTEGER NOT NULL CHECK(banned IN (0, 1)),"
    " first_seen_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,"
    " banned_ms INTEGER NOT NULL) WITHOUT ROWID;"
    /* A destroyed PSC stays as a tombstone (destroyed = 1) with its last epoch. */
    "CREATE TABLE pscs("
    " psc_id BLOB PRIMARY KEY CHECK(length(psc_id) = 16),"
    " name TEXT NOT NULL, owner BLOB NOT NULL CHECK(length(owner) = 16),"
    " labels BLOB NOT NULL, flags INTEGER NOT NULL, suite INTEGER NOT NULL,"
    " refresh_s INTEGER NOT NULL, max_members INTEGER NOT NULL,"
    " created_ms INTEGER NOT NULL, epoch INTEGER NOT NULL, last_rekey_ms INTEGER NOT NULL,"
    " due_ms INTEGER, destroyed INTEGER NOT NULL CHECK(destroyed IN (0, 1)),"
    " destroyed_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE UNIQUE INDEX pscs_live_name ON pscs(name) WHERE destroyed = 0;"
    "CREATE INDEX pscs_due ON pscs(due_ms, psc_id) WHERE destroyed = 0 AND due_ms IS NOT NULL;"
    "CREATE TABLE members("
    " psc_id BLOB NOT NULL REFERENCES pscs(psc_id) ON DELETE CASCADE,"
    " node_id BLOB NOT NULL CHECK(length(node_id) = 16),"
    " added_ms INTEGER NOT NULL, acked_epoch INTEGER NOT NULL,"
    " PRIMARY KEY(psc_id, node_id)) WITHOUT ROWID;"
    "CREATE INDEX members_by_node ON members(node_id, psc_id);"
    /* Wrapped epoch secrets: the current epoch and, during a grace period, the previous. */
    "CREATE TABLE epochs("
    " psc_id BLOB NOT NULL REFERENCES pscs(psc_id) ON DELETE CASCADE,"
    " epoch INTEGER NOT NULL, kek_id TEXT NOT NULL, wrapped BLOB NOT NULL,"
    " created_ms INTEGER NOT NULL, prev_grace_ms INTEGER NOT NULL,"
    " PRIMARY KEY(psc_id, epoch)) WITHOUT ROWID;"
    "CREATE INDEX epochs_by_kek ON epochs(kek_id, psc_id, epoch);"
    /* Highest epoch ever issued per PSC id: survives destroy, never lowered. */
    "CREATE TABLE epoch_hwm(psc_id BLOB PRIMARY KEY CHECK(length(psc_id) = 16),"
    " epoch INTEGER NOT NULL) WITHOUT ROWID;";

struct kms_store {
	sqlite3 *db;
	char *path;
	sqlite3_stmt *st[ST_COUNT_];
	bool in_txn;
	uint64_t last_audit_seq; /* committed value */
};

/* ---- errors -------------------------------------------------------------- */

static psc_rc map_sqlite(int code)
{
	switch (code & 0xff) {
	case SQLITE_NOMEM:
		return PSC_E_NOMEM;
	case SQLITE_IOERR:
	case SQLITE_FULL:
		return PSC_E_KMS_DB_IO;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
	case SQLITE_FORMAT:
		return PSC_E_KMS_DB_CORRUPT;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return PSC_E_KMS_DB_LOCKED;
	case SQLITE_CANTOPEN:
	case SQLITE_READONLY:
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return PSC_E_KMS_DB_OPEN;
	default:
		return PSC_E_KMS_DB;
	}
}

static const char *hint(psc_rc rc)
{
	switch (rc) {
	case PSC_E_KMS_DB_IO:
		return "check free space and the disk";
	case PSC_E_KMS_DB_CORRUPT:
		return "the file is damaged or not a psc-kms state database; restore it from a "
		       "backup";
	case PSC_E_KMS_DB_LOCKED:
		return "another psc-kmsd is using it; stop that one first";
	case PSC_E_KMS_DB_OPEN:
		return "check that the directory exists and the service user can write the "
		       "file and the directory";
	case PSC_E_NOMEM:
		return "out of memory";
	default:
		return "see the SQLite message";
	}
}

/* "state database PATH: <what>: <sqlite message>: <hint>". */
static psc_rc db_fail(const kms_store *s, psc_err *err, int code, const char *what)
{
	psc_rc rc = map_sqlite(code);
	const char *msg = s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(code);
	if (s->db && sqlite3_errcode(s->db) == SQLITE_OK)
		msg = sqlite3_errstr(code);
	return psc_err_set(err, rc, "state database %s: %s: %s: %s", s->path, what, msg, hint(rc));
}

static void hex16(const uint8_t id[16], char out[33])
{
	static const char x[] = "0123456789abcdef";
	for (int i = 0; i < 16; i++) {
		out[2 * i] = x[id[i] >> 4];
		out[2 * i + 1] = x[id[i] & 15];
	}
	out[32] = '\0';
}

static psc_rc reject_psc(psc_err *err, psc_rc rc, const char *cmd, const uint8_t psc_id[16],
			 const char *what)
{
	char h[33];
	hex16(psc_id, h);
	return psc_err_set(err, rc, "%s: PSC %s %s", cmd, h, what);
}

static psc_rc reject_member(psc_err *err, psc_rc rc, const char *cmd, const uint8_t psc_id[16],
			    const uint8_t node_id[16], const char *what)
{
	char p[33], n[33];
	hex16(psc_id, p);
	hex16(node_id, n);
	return psc_err_set(err, rc, "%s: node %s %s PSC %s", cmd, n, what, p);
}

/* ---- statement helpers --------------------------------------------------- */

static psc_rc st_get(kms_store *s, enum st id, sqlite3_stmt **out, psc_err *err)
{
	*out = NULL; /* callers test rc, but -O2 cannot always see that */
	if (!s->st[id]) {
		int rc = sqlite3_prepare_v3(s->db, SQL[id], -1, SQLITE_PREPARE_PERSISTENT,
					    &s->st[id], NULL);
		if (rc != SQLITE_OK) {
			s->st[id] = NULL;
			return db_fail(s, err, rc, "preparing a statement");
		}
	}
	*out = s->st[id];
	return PSC_OK;
}

static void st_done(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

/* Steps once: *row = true on SQLITE_ROW, false on SQLITE_DONE. */
static psc_rc st_step(kms_store *s, sqlite3_stmt *st, bool *row, const char *what, psc_err *err)
{
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*row = true;
		return PSC_OK;
	}
	*row = false;
	if (rc == SQLITE_DONE)
		return PSC_OK;
	psc_rc r = db_fail(s, err, rc, what);
	st_done(st);
	return r;
}

/* Runs a statement that returns no rows. */
static psc_rc st_run(kms_store *s, sqlite3_stmt *st, const char *what, psc_err *err)
{
	bool row;
	psc_rc rc = st_step(s, st, &row, what, err);
	if (rc == PSC_OK)
		st_done(st);
	return rc;
}

static psc_rc run_simple(kms_store *s, enum st id, const char *what, psc_err *err)
{
	sqlite3_stmt *st;
	psc_rc rc = st_get(s, id, &st, err);
	if (rc != PSC_OK)
		return rc;
	return st_run(s, st, what, err);
}

static void b_blob(sqlite3_stmt *st, int i, const void *p, size_t n)
{
	/* Never NULL, even empty: a NOT NULL column gets a zero-length blob. */
	static const uint8_t empty[1];
	sqlite3_bind_blob(st, i, n ? p : empty, (int)n, SQLITE_STATIC);
}

static void b_text(sqlite3_stmt *st, int i, const void *p, size_t n)
{
	sqlite3_bind_text(st, i, n ? (const char *)p : "", (int)n, SQLITE_STATIC);
}

static void b_u64(sqlite3_stmt *st, int i, uint64_t v)
{
	sqlite3_bind_int64(st, i, v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v);
}

static uint64_t c_u64(sqlite3_stmt *st, int i)
{
	int64_t v = sqlite3_column_int64(st, i);
	return v < 0 ? 0 : (uint64_t)v;
}

/* Copies a blob column of exactly-or-at-most cap bytes; false if it does not fit. */
static bool c_blob(sqlite3_stmt *st, int i, uint8_t *out, size_t cap, size_t *len, bool exact)
{
	const void *p = sqlite3_column_blob(st, i);
	int n = sqlite3_column_bytes(st, i);
	if (n < 0 || (size_t)n > cap || (exact && (size_t)n != cap))
		return false;
	if (n)
		memcpy(out, p, (size_t)n);
	if (len)
		*len = (size_t)n;
	return true;
}

/* Copies a text column into out[cap] with its NUL; false if too long. */
static bool c_text(sqlite3_stmt *st, int i, char *out, size_t cap)
{
	const unsigned char *p = sqlite3_column_text(st, i);
	int n = sqlite3_column_bytes(st, i);
	if (n < 0 || (size_t)n >= cap)
		return false;
	if (n)
		memcpy(out, p, (size_t)n);
	out[n] = '\0';
	return true;
}

static psc_rc corrupt_row(const kms_store *s, psc_err *err, const char *table)
{
	return psc_err_set(err, PSC_E_KMS_DB_CORRUPT,
			   "state database %s: a row of table '%s' has a value outside its "
			   "limits: %s",
			   s->path, table, hint(PSC_E_KMS_DB_CORRUPT));
}

/* ---- open / close -------------------------------------------------------- */

static psc_rc exec_sql(kms_store *s, const char *sql, const char *what, psc_err *err)
{
	int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
	return rc == SQLITE_OK ? PSC_OK : db_fail(s, err, rc, what);
}

/* Runs a one-row, one-column query; *text (cap bytes) gets the value. */
static psc_rc query_text(kms_store *s, const char *sql, char *text, size_t cap, const char *what,
			 psc_err *err)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return db_fail(s, err, rc, what);
	rc = sqlite3_step(st);
	text[0] = '\0';
	if (rc == SQLITE_ROW) {
		const unsigned char *v = sqlite3_column_text(st, 0);
		snprintf(text, cap, "%s", v ? (const char *)v : "");
		rc = SQLITE_OK;
	} else if (rc == SQLITE_DONE) {
		rc = SQLITE_OK;
	}
	psc_rc r = rc == SQLITE_OK ? PSC_OK : db_fail(s, err, rc, what);
	sqlite3_finalize(st);
	return r;
}

static psc_rc meta_get(kms_store *s, const char *key, uint64_t *out, bool *found, psc_err *err)
{
	sqlite3_stmt *st;
	psc_rc rc = st_get(s, ST_META_GET, &st, err);
	if (rc != PSC_OK)
		return rc;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	bool row;
	rc = st_step(s, st, &row, "reading table 'meta'", err);
	if (rc != PSC_OK)
		return rc;
	*found = row;
	*out = row ? c_u64(st, 0) : 0;
	if (row && sqlite3_column_int64(st, 0) < 0)
		*out = UINT64_MAX; /* a tampered negative value must not read as 0 */
	st_done(st);
	return PSC_OK;
}

static psc_rc meta_set(kms_store *s, const char *key, uint64_t v, psc_err *err)
{
	sqlite3_stmt *st;
	psc_rc rc = st_get(s, ST_META_SET, &st, err);
	if (rc != PSC_OK)
		return rc;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	b_u64(st, 2, v);
	return st_run(s, st, "writing table 'meta'", err);
}

/* Inside the opening transaction: create a new store or check an existing one. */
static psc_rc schema_check(kms_store *s, psc_err *err)
{
	char buf[64];
	psc_rc rc = query_text(s, "SELECT count(*) FROM sqlite_schema", buf, sizeof(buf),
			       "reading the schema", err);
	if (rc != PSC_OK)
		return rc;
	if (strcmp(buf, "0") == 0) {
		rc = exec_sql(s, SCHEMA_V1, "creating the schema", err);
		if (rc == PSC_OK)
			rc = exec_sql(s, "PRAGMA application_id = 1347636045",
				      "setting the application id", err);
		if (rc == PSC_OK)
			rc = meta_set(s, "schema_version", KMS_STORE_SCHEMA_VERSION, err);
		if (rc == PSC_OK)
			rc = meta_set(s, "last_audit_seq", 0, err);
		return rc;
	}
	rc = query_text(s, "PRAGMA application_id", buf, sizeof(buf), "reading the application id",
			err);
	if (rc != PSC_OK)
		return rc;
	if (strtol(buf, NULL, 10) != KMS_STORE_APP_ID)
		return psc_err_set(err, PSC_E_KMS_DB_CORRUPT,
				   "state database %s: this SQLite file is not a psc-kms state "
				   "database (application_id %s); check state_db in kms.yaml",
				   s->path, buf);
	uint64_t v;
	bool found;
	rc = meta_get(s, "schema_version", &v, &found, err);
	if (rc != PSC_OK)
		return rc;
	if (!found || v == 0)
		return psc_err_set(err, PSC_E_KMS_DB_CORRUPT,
				   "state database %s: no schema_version in table 'meta': %s",
				   s->path, hint(PSC_E_KMS_DB_CORRUPT));
	if (v > KMS_STORE_SCHEMA_VERSION)
		return psc_err_set(err, PSC_E_KMS_SCHEMA_NEWER,
				   "state database %s: schema version %" PRIu64
				   " was written by a newer psc-kms (this one reads up to "
				   "version %d); upgrade psc-kms or restore an older backup",
				   s->path, v, KMS_STORE_SCHEMA_VERSION);
	/* Version 1 is the first; later versions add their migrations here. */
	rc = query_text(s, "PRAGMA quick_check", buf, sizeof(buf), "checking integrity", err);
	if (rc != PSC_OK)
		return rc;
	if (strcmp(buf, "ok") != 0)
		return psc_err_set(err, PSC_E_KMS_DB_CORRUPT,
				   "state database %s: integrity check failed (%s): %s", s->path,
				   buf, hint(PSC_E_KMS_DB_CORRUPT));
	rc = meta_get(s, "last_audit_seq", &s->last_audit_seq, &found, err);
	if (rc == PSC_OK && (!found || s->last_audit_seq > KMS_CMD_U64_MAX))
		return psc_err_set(
		    err, PSC_E_KMS_DB_CORRUPT,
		    "state database %s: table 'meta' has no valid last_audit_seq: %s", s->path,
		    hint(PSC_E_KMS_DB_CORRUPT));
	return rc;
}

static psc_rc open_db(kms_store *s, psc_err *err)
{
	int rc =
	    sqlite3_open_v2(s->path, &s->db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK)
		return db_fail(s, err, rc, "cannot open");
	sqlite3_extended_result_codes(s->db, 1);
	if (sqlite3_db_readonly(s->db, "main") == 1)
		return psc_err_set(err, PSC_E_KMS_DB_OPEN,
				   "state database %s: opened read-only: %s", s->path,
				   hint(PSC_E_KMS_DB_OPEN));
	/* Exclusive locking before WAL: the WAL index then lives in heap memory and
	 * the lock taken by the first write below keeps other processes out. */
	psc_rc r = exec_sql(s, "PRAGMA locking_mode = EXCLUSIVE", "setting the locking mode", err);
	if (r != PSC_OK)
		return r;
	char mode[16];
	r = query_text(s, "PRAGMA journal_mode = WAL", mode, sizeof(mode),
		       "switching to WAL journal mode", err);
	if (r != PSC_OK)
		return r;
	if (strcmp(mode, "wal") != 0)
		return psc_err_set(err, PSC_E_KMS_DB,
				   "state database %s: cannot use WAL journal mode (got '%s'); "
				   "put the file on a local filesystem",
				   s->path, mode);
	r = exec_sql(s,
		     "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; "
		     "PRAGMA trusted_schema = OFF; PRAGMA cell_size_check = ON; "
		     "PRAGMA busy_timeout = 0",
		     "setting pragmas", err);
	if (r != PSC_OK)
		return r;
	r = exec_sql(s, "BEGIN EXCLUSIVE", "locking the database", err);
	if (r != PSC_OK)
		return r;
	r = schema_check(s, err);
	if (r != PSC_OK) {
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		return r;
	}
	return exec_sql(s, "COMMIT", "committing the schema", err);
}

psc_rc kms_store_open(kms_store **out, const char *path, psc_err *err)
{
	if (!out || !path || !*path)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_store_open: no database path");
	*out = NULL;
	kms_store *s = calloc(1, sizeof(*s));
	if (!s || !(s->path = strdup(path))) {
		free(s);
		return psc_err_set(err, PSC_E_NOMEM, "state database %s: out of memory", path);
	}
	psc_rc rc = open_db(s, err);
	if (rc != PSC_OK) {
		kms_store_close(&s);
		return rc;
	}
	*out = s;
	return PSC_OK;
}

void kms_store_close(kms_store **p)
{
	if (!p || !*p)
		return;
	kms_store *s = *p;
	if (s->in_txn)
		kms_store_rollback(s);
	for (int i = 0; i < ST_COUNT_; i++)
		sqlite3_finalize(s->st[i]);
	sqlite3_close_v2(s->db);
	free(s->path);
	free(s);
	*p = NULL;
}

const char *kms_store_path(const kms_store *s)
{
	return s ? s->path : "";
}

/* ---- transactions -------------------------------------------------------- */

bool kms_store_in_txn(const kms_store *s)
{
	return s && s->in_txn;
}

uint64_t kms_store_last_audit_seq(const kms_store *s)
{
	return s ? s->last_audit_seq : 0;
}

psc_rc kms_store_begin(kms_store *s, psc_err *err)
{
	if (!s)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_store_begin: NULL store");
	if (s->in_txn)
		return psc_err_set(err, PSC_E_KMS_TXN,
				   "state database %s: begin while a batch is already open",
				   s->path);
	psc_rc rc = run_simple(s, ST_BEGIN, "beginning a transaction", err);
	if (rc == PSC_OK)
		s->in_txn = true;
	return rc;
}

void kms_store_rollback(kms_store *s)
{
	if (!s || !s->in_txn)
		return;
	/* SQLite may already have rolled back by itself after an I/O error. */
	if (!sqlite3_get_autocommit(s->db)) {
		sqlite3_stmt *st;
		if (st_get(s, ST_ROLLBACK, &st, NULL) == PSC_OK)
			(void)!st_run(s, st, "rolling back", NULL);
		if (!sqlite3_get_autocommit(s->db))
			sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	}
	s->in_txn = false;
}

static psc_rc exec_in_txn(kms_store *s, const char *sql, psc_err *err)
{
	if (!s || !s->in_txn)
		return psc_err_set(err, PSC_E_KMS_TXN, "state database: %s outside a batch", sql);
	char *msg = NULL;
	int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		psc_rc r = psc_err_set(err, map_sqlite(rc), "state database %s: %s: %s", s->path, sql,
				       msg ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
		return r;
	}
	return PSC_OK;
}

psc_rc kms_store_savepoint(kms_store *s, psc_err *err)
{
	return exec_in_txn(s, "SAVEPOINT request", err);
}

psc_rc kms_store_keep(kms_store *s, psc_err *err)
{
	return exec_in_txn(s, "RELEASE request", err);
}

void kms_store_undo(kms_store *s)
{
	psc_err e;
	if (exec_in_txn(s, "ROLLBACK TO request", &e) == PSC_OK)
		(void)!exec_in_txn(s, "RELEASE request", &e);
}

psc_rc kms_store_commit(kms_store *s, uint64_t audit_seq, psc_err *err)
{
	if (!s)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_store_commit: NULL store");
	if (!s->in_txn)
		return psc_err_set(err, PSC_E_KMS_TXN, "state database %s: commit without a batch",
				   s->path);
	if (audit_seq < s->last_audit_seq || audit_seq > KMS_CMD_U64_MAX)
		return psc_err_set(err, PSC_E_KMS_AUDIT_SEQ,
				   "state database %s: commit with audit seq %" PRIu64
				   " below the last committed %" PRIu64
				   " (or above 2^63); the batch is still open: roll it back",
				   s->path, audit_seq, s->last_audit_seq);
	psc_rc rc = meta_set(s, "last_audit_seq", audit_seq, err);
	if (rc == PSC_OK)
		rc = run_simple(s, ST_COMMIT, "committing", err);
	if (rc != PSC_OK) {
		kms_store_rollback(s);
		return rc;
	}
	s->in_txn = false;
	s->last_audit_seq = audit_seq;
	return PSC_OK;
}

/* ---- apply --------------------------------------------------------------- */

/* Live-or-tombstone state of one PSC id. */
struct psc_state {
	bool exists;
	bool destroyed;
	uint64_t epoch;
	uint32_t max_members;
	uint32_t refresh_s;
	uint64_t hwm; /* highest epoch ever, from epoch_hwm */
};

static psc_rc psc_state(kms_store *s, const uint8_t psc_id[16], struct psc_state *ps, psc_err *err)
{
	memset(ps, 0, sizeof(*ps));
	sqlite3_stmt *st;
	psc_rc rc = st_get(s, ST_PSC_STATE, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_blob(st, 1, psc_id, 16);
	bool row;
	rc = st_step(s, st, &row, "reading table 'pscs'", err);
	if (rc != PSC_OK)
		return rc;
	if (row) {
		ps->exists = true;
		ps->destroyed = sqlite3_column_int(st, 0) != 0;
		ps->epoch = c_u64(st, 1);
		ps->max_members = (uint32_t)c_u64(st, 2);
		ps->refresh_s = (uint32_t)c_u64(st, 3);
		ps->hwm = c_u64(st, 4);
	}
	st_done(st);
	return PSC_OK;
}

/* A live PSC or a rejection naming the command. */
static psc_rc need_live(kms_store *s, const char *cmd, const uint8_t psc_id[16],
			struct psc_state *ps, psc_err *err)
{
	psc_rc rc = psc_state(s, psc_id, ps, err);
	if (rc != PSC_OK)
		return rc;
	if (!ps->exists)
		return reject_psc(err, PSC_E_KMS_UNKNOWN_PSC, cmd, psc_id, "is unknown");
	if (ps->destroyed)
		return reject_psc(err, PSC_E_KMS_PSC_DESTROYED, cmd, psc_id, "was destroyed");
	return PSC_OK;
}

/* Membership row: *found, and the acked epoch. */
static psc_rc member_find(kms_store *s, const uint8_t psc_id[16], const uint8_t node_id[16],
			  bool *found, uint64_t *acked, psc_err *err)
{
	sqlite3_stmt *st;
	psc_rc rc = st_get(s, ST_MEMBER_GET, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_blob(st, 1, psc_id, 16);
	b_blob(st, 2, node_id, 16);
	bool row;
	rc = st_step(s, st, &row, "reading table 'members'", err);
	if (rc != PSC_OK)
		return rc;
	*found = row;
	*acked = row ? c_u64(st, 3) : 0;
	st_done(st);
	return PSC_OK;
}

static psc_rc count_one(kms_store *s, enum st id, const uint8_t key[16], uint64_t *n, psc_err *err)
{
	sqlite3_stmt *st;
	psc_rc rc = st_get(s, id, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_blob(st, 1, key, 16);
	bool row;
	rc = st_step(s, st, &row, "counting rows", err);
	if (rc != PSC_OK)
		return rc;
	*n = row ? c_u64(st, 0) : 0;
	st_done(st);
	return PSC_OK;
}

static psc_rc hwm_raise(kms_store *s, const uint8_t psc_id[16], uint64_t epoch, psc_err *err)
{
	sqlite3_stmt *st;
	psc_rc rc = st_get(s, ST_HWM_RAISE, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_blob(st, 1, psc_id, 16);
	b_u64(st, 2, epoch);
	return st_run(s, st, "writing table 'epoch_hwm'", err);
}

static psc_rc apply_peer_upsert(kms_store *s, const kms_cmd_peer_upsert *c, psc_err *err)
{
	uint8_t suites[2 * KMS_SUITES_MAX];
	for (size_t i = 0; i < c->n_suites; i++) {
		suites[2 * i] = (uint8_t)(c->suites[i] >> 8);
		suites[2 * i + 1] = (uint8_t)c->suites[i];
	}
	sqlite3_stmt *st;
	psc_rc rc = st_get(s, ST_PEER_UPSERT, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_blob(st, 1, c->node_id, 16);
	b_blob(st, 2, c->cert_der.p, c->cert_der.len);
	b_blob(st, 3, c->cert_sha256, 32);
	b_text(st, 4, c->subject.p, c->subject.len);
	b_text(st, 5, c->endpoint.p, c->endpoint.len);
	b_blob(st, 6, c->transport_key.p, c->transport_key.len);
	sqlite3_bind_int(st, 7, c->wrap_alg);
	b_blob(st, 8, suites, 2 * c->n_suites);
	b_u64(st, 9, c->now_ms);
	return st_run(s, st, "writing table 'peers'", err);
}

static psc_rc apply_peer_ban(kms_store *s, const kms_cmd_peer_ban *c, psc_err *err)
{
	sqlite3_stmt *st;
	psc_rc rc = st_get(s, ST_PEER_EXISTS, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_blob(st, 1, c->node_id, 16);
	bool row;
	rc = st_step(s, st, &row, "reading table 'peers'", err);
	if (rc != PSC_OK)
		return rc;
	st_done(st);
	if (!row) {
		char h[33];
		hex16(c->node_id, h);
		return psc_err_set(err, PSC_E_KMS_UNKNOWN_PEER,
				   "PEER_BAN: node %s is unknown (it never ran Initialize)", h);
	}
	rc = st_get(s, ST_PEER_BAN, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_blob(st, 1, c->node_id, 16);
	sqlite3_bind_int(st, 2, c->banned ? 1 : 0);
	b_u64(st, 3, c->now_ms);
	return st_run(s, st, "writing table 'peers'", err);
}

/* Labels column: u8 count ‖ per label vec<1> key ‖ vec<1> value (proto_buf). */
static psc_rc labels_encode(const kms_cmd_psc_create *c, proto_wr *w)
{
	proto_wr_init(w, 1 + KMS_LABELS_MAX * (2 + KMS_LABEL_KEY_MAX + KMS_LABEL_VALUE_MAX));
	proto_wr_u8(w, (uint8_t)c->n_labels);
	for (size_t i = 0; i < c->n_labels; i++) {
		proto_wr_vec(w, 1, 1, KMS_LABEL_KEY_MAX, c->labels[i].key.p, c->labels[i].key.len,
			     "labels.key");
		proto_wr_vec(w, 1, 0, KMS_LABEL_VALUE_MAX, c->labels[i].value.p,
			     c->labels[i].value.len, "labels.value");
	}
	return w->err;
}

static bool labels_decode(const uint8_t *p, size_t n, kms_psc *out)
{
	proto_rd r;
	proto_rd_init(&r, p, n);
	size_t count = proto_rd_u8(&r, "labels");
	if (count > KMS_LABELS_MAX)
		return false;
	for (size_t i = 0; i < count && !r.err; i++) {
		size_t kl, vl;
		const uint8_t *k = proto_rd_vec(&r, 1, 1, KMS_LABEL_KEY_MAX, &kl, "key");
		const uint8_t *v = proto_rd_vec(&r, 1, 0, KMS_LABEL_VALUE_MAX, &vl, "value");
		if (r.err)
			break;
		memcpy(out->labels[i].key, k, kl);
		out->labels[i].key[kl] = '\0';
		if (vl)
			memcpy(out->labels[i].value, v, vl);
		out->labels[i].value[vl] = '\0';
	}
	out->n_labels = count;
	return proto_rd_finish(&r, "labels") == PSC_OK;
}

static psc_rc apply_psc_create(kms_store *s, const kms_cmd_psc_create *c, psc_err *err)
{
	struct psc_state ps;
	psc_rc rc = psc_state(s, c->psc_id, &ps, err);
	if (rc != PSC_OK)
		return rc;
	if (ps.exists && !ps.destroyed)
		return reject_psc(err, PSC_E_KMS_PSC_EXISTS, "PSC_CREATE", c->psc_id,
				  "already exists");
	sqlite3_stmt *st;
	rc = st_get(s, ST_PSC_BY_NAME_ID, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_text(st, 1, c->name.p, c->name.len);
	bool row;
	rc = st_step(s, st, &row, "reading table 'pscs'", err);
	if (rc != PSC_OK)
		return rc;
	st_done(st);
	if (row)
		return psc_err_set(err, PSC_E_KMS_NAME_TAKEN,
				   "PSC_CREATE: a live PSC is already named '%.*s'",
				   (int)c->name.len, (const char *)c->name.p);
	proto_wr w;
	if (labels_encode(c, &w) != PSC_OK) {
		proto_wr_free(&w);
		return psc_err_set(err, PSC_E_KMS_CMD_FIELD, "PSC_CREATE: labels do not encode");
	}
	rc = st_get(s, ps.exists ? ST_PSC_RECREATE : ST_PSC_INSERT, &st, err);
	if (rc != PSC_OK) {
		proto_wr_free(&w);
		return rc;
	}
	b_blob(st, 1, c->psc_id, 16);
	b_text(st, 2, c->name.p, c->name.len);
	b_blob(st, 3, c->owner, 16);
	b_blob(st, 4, w.buf, w.len);
	sqlite3_bind_int64(st, 5, c->flags);
	sqlite3_bind_int(st, 6, c->suite);
	sqlite3_bind_int64(st, 7, c->refresh_s);
	sqlite3_bind_int64(st, 8, c->max_members);
	b_u64(st, 9, c->now_ms);
	rc = st_run(s, st, "writing table 'pscs'", err);
	proto_wr_free(&w);
	return rc;
}

static psc_rc apply_member_add(kms_store *s, const kms_cmd_member *c, psc_err *err)
{
	struct psc_state ps;
	psc_rc rc = need_live(s, "MEMBER_ADD", c->psc_id, &ps, err);
	if (rc != PSC_OK)
		return rc;
	bool found;
	uint64_t acked, n;
	rc = member_find(s, c->psc_id, c->node_id, &found, &acked, err);
	if (rc != PSC_OK)
		return rc;
	if (found)
		return reject_member(err, PSC_E_KMS_ALREADY_MEMBER, "MEMBER_ADD", c->psc_id,
				     c->node_id, "is already a member of");
	if (ps.max_members) {
		rc = count_one(s, ST_MEMBER_COUNT, c->psc_id, &n, err);
		if (rc != PSC_OK)
			return rc;
		if (n >= ps.max_members) {
			char h[33];
			hex16(c->psc_id, h);
			return psc_err_set(err, PSC_E_KMS_PSC_FULL,
					   "MEMBER_ADD: PSC %s already has its maximum of %" PRIu32
					   " members",
					   h, ps.max_members);
		}
	}
	sqlite3_stmt *st;
	rc = st_get(s, ST_MEMBER_INSERT, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_blob(st, 1, c->psc_id, 16);
	b_blob(st, 2, c->node_id, 16);
	b_u64(st, 3, c->now_ms);
	return st_run(s, st, "writing table 'members'", err);
}

static psc_rc apply_member_remove(kms_store *s, const kms_cmd_member *c, psc_err *err)
{
	struct psc_state ps;
	psc_rc rc = need_live(s, "MEMBER_REMOVE", c->psc_id, &ps, err);
	if (rc != PSC_OK)
		return rc;
	bool found;
	uint64_t acked;
	rc = member_find(s, c->psc_id, c->node_id, &found, &acked, err);
	if (rc != PSC_OK)
		return rc;
	if (!found)
		return reject_member(err, PSC_E_KMS_NOT_MEMBER, "MEMBER_REMOVE", c->psc_id,
				     c->node_id, "is not a member of");
	sqlite3_stmt *st;
	rc = st_get(s, ST_MEMBER_DELETE, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_blob(st, 1, c->psc_id, 16);
	b_blob(st, 2, c->node_id, 16);
	return st_run(s, st, "writing table 'members'", err);
}

static psc_rc apply_epoch_new(kms_store *s, const kms_cmd_epoch_new *c, psc_err *err)
{
	struct psc_state ps;
	psc_rc rc = need_live(s, "EPOCH_NEW", c->psc_id, &ps, err);
	if (rc != PSC_OK)
		return rc;
	uint64_t floor = ps.hwm > ps.epoch ? ps.hwm : ps.epoch;
	if (c->epoch <= floor) {
		char h[33];
		hex16(c->psc_id, h);
		return psc_err_set(err, PSC_E_KMS_EPOCH_NOT_INCREASING,
				   "EPOCH_NEW: epoch %" PRIu64 " for PSC %s is not above %" PRIu64
				   " (current %" PRIu64 ", highest ever issued %" PRIu64
				   "); epochs are never reused",
				   c->epoch, h, floor, ps.epoch, ps.hwm);
	}
	sqlite3_stmt *st;
	rc = st_get(s, ST_EPOCH_INSERT, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_blob(st, 1, c->psc_id, 16);
	b_u64(st, 2, c->epoch);
	b_text(st, 3, c->kek_id.p, c->kek_id.len);
	b_blob(st, 4, c->wrapped.p, c->wrapped.len);
	b_u64(st, 5, c->now_ms);
	sqlite3_bind_int64(st, 6, c->prev_grace_ms);
	rc = st_run(s, st, "writing table 'epochs'", err);
	if (rc != PSC_OK)
		return rc;
	/* Without a grace period nobody may be handed the previous epoch again. */
	rc = st_get(s, ST_EPOCH_PRUNE, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_blob(st, 1, c->psc_id, 16);
	b_u64(st, 2, c->epoch);
	b_u64(st, 3, c->prev_grace_ms ? ps.epoch : c->epoch);
	rc = st_run(s, st, "writing table 'epochs'", err);
	if (rc != PSC_OK)
		return rc;
	rc = st_get(s, ST_PSC_SET_EPOCH, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_blob(st, 1, c->psc_id, 16);
	b_u64(st, 2, c->epoch);
	b_u64(st, 3, c->now_ms);
	/* The timer rekey falls due one refresh period after this rekey. */
	if (ps.refresh_s) {
		uint64_t add = (uint64_t)ps.refresh_s * 1000u; /* < 2^42: no overflow */
		uint64_t due =
		    c->now_ms > KMS_CMD_U64_MAX - add ? KMS_CMD_U64_MAX : c->now_ms + add;
		b_u64(st, 4, due);
	} else {
		sqlite3_bind_null(st, 4);
	}
	rc = st_run(s, st, "writing table 'pscs'", err);
	if (rc != PSC_OK)
		return rc;
	return hwm_raise(s, c->psc_id, c->epoch, err);
}

static psc_rc apply_member_ack(kms_store *s, const kms_cmd_member_ack *c, psc_err *err)
{
	struct psc_state ps;
	psc_rc rc = need_live(s, "MEMBER_ACK", c->psc_id, &ps, err);
	if (rc != PSC_OK)
		return rc;
	bool found;
	uint64_t acked;
	rc = member_find(s, c->psc_id, c->node_id, &found, &acked, err);
	if (rc != PSC_OK)
		return rc;
	if (!found)
		return reject_member(err, PSC_E_KMS_NOT_MEMBER, "MEMBER_ACK", c->psc_id, c->node_id,
				     "is not a member of");
	if (c->epoch > ps.epoch) {
		char h[33];
		hex16(c->psc_id, h);
		return psc_err_set(err, PSC_E_KMS_EPOCH_UNKNOWN,
				   "MEMBER_ACK: epoch %" PRIu64 " of PSC %s was never issued "
				   "(current %" PRIu64 ")",
				   c->epoch, h, ps.epoch);
	}
	if (c->epoch < acked) {
		char h[33];
		hex16(c->psc_id, h);
		return psc_err_set(err, PSC_E_KMS_ACK_STALE,
				   "MEMBER_ACK: epoch %" PRIu64 " of PSC %s is older than the "
				   "acknowledged %" PRIu64,
				   c->epoch, h, acked);
	}
	if (c->epoch == acked)
		return PSC_OK;
	sqlite3_stmt *st;
	rc = st_get(s, ST_MEMBER_ACK, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_blob(st, 1, c->psc_id, 16);
	b_blob(st, 2, c->node_id, 16);
	b_u64(st, 3, c->epoch);
	return st_run(s, st, "writing table 'members'", err);
}

static psc_rc apply_psc_destroy(kms_store *s, const kms_cmd_psc_destroy *c, psc_err *err)
{
	struct psc_state ps;
	psc_rc rc = need_live(s, "PSC_DESTROY", c->psc_id, &ps, err);
	if (rc != PSC_OK)
		return rc;
	sqlite3_stmt *st;
	static const enum st dels[] = {ST_MEMBER_DELETE_ALL, ST_EPOCH_DELETE_ALL};
	for (size_t i = 0; i < sizeof(dels) / sizeof(dels[0]); i++) {
		rc = st_get(s, dels[i], &st, err);
		if (rc != PSC_OK)
			return rc;
		b_blob(st, 1, c->psc_id, 16);
		rc = st_run(s, st, "deleting PSC rows", err);
		if (rc != PSC_OK)
			return rc;
	}
	rc = st_get(s, ST_PSC_DESTROY, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_blob(st, 1, c->psc_id, 16);
	b_u64(st, 2, c->now_ms);
	/* The tombstone keeps the last epoch in its epoch column; epoch_hwm, written
	 * by every EPOCH_NEW, keeps epochs from being reused after a re-create. */
	return st_run(s, st, "writing table 'pscs'", err);
}

static psc_rc apply_kek_rewrap(kms_store *s, const kms_cmd_kek_rewrap *c, psc_err *err)
{
	struct psc_state ps;
	psc_rc rc = need_live(s, "KEK_REWRAP", c->psc_id, &ps, err);
	if (rc != PSC_OK)
		return rc;
	sqlite3_stmt *st;
	rc = st_get(s, ST_EPOCH_REWRAP, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_blob(st, 1, c->psc_id, 16);
	b_u64(st, 2, c->epoch);
	b_text(st, 3, c->kek_id.p, c->kek_id.len);
	b_blob(st, 4, c->wrapped.p, c->wrapped.len);
	rc = st_run(s, st, "writing table 'epochs'", err);
	if (rc != PSC_OK)
		return rc;
	if (sqlite3_changes(s->db) == 0) {
		char h[33];
		hex16(c->psc_id, h);
		return psc_err_set(err, PSC_E_KMS_EPOCH_UNKNOWN,
				   "KEK_REWRAP: PSC %s holds no blob for epoch %" PRIu64
				   " (current %" PRIu64 ")",
				   h, c->epoch, ps.epoch);
	}
	return PSC_OK;
}

static psc_rc apply_one(kms_store *s, const kms_cmd *cmd, psc_err *err)
{
	switch (cmd->type) {
	case KMS_CMD_PEER_UPSERT:
		return apply_peer_upsert(s, &cmd->peer_upsert, err);
	case KMS_CMD_PEER_BAN:
		return apply_peer_ban(s, &cmd->peer_ban, err);
	case KMS_CMD_PSC_CREATE:
		return apply_psc_create(s, &cmd->psc_create, err);
	case KMS_CMD_MEMBER_ADD:
		return apply_member_add(s, &cmd->member_add, err);
	case KMS_CMD_MEMBER_REMOVE:
		return apply_member_remove(s, &cmd->member_remove, err);
	case KMS_CMD_EPOCH_NEW:
		return apply_epoch_new(s, &cmd->epoch_new, err);
	case KMS_CMD_MEMBER_ACK:
		return apply_member_ack(s, &cmd->member_ack, err);
	case KMS_CMD_PSC_DESTROY:
		return apply_psc_destroy(s, &cmd->psc_destroy, err);
	case KMS_CMD_KEK_REWRAP:
		return apply_kek_rewrap(s, &cmd->kek_rewrap, err);
	case KMS_CMD_EPOCH_FLOOR:
		return hwm_raise(s, cmd->epoch_floor.psc_id, cmd->epoch_floor.epoch, err);
	}
	return psc_err_set(err, PSC_E_KMS_CMD_TYPE, "unknown state command type %d",
			   (int)cmd->type);
}

psc_rc kms_store_apply(kms_store *s, const kms_cmd *cmd, psc_err *err)
{
	if (!s || !cmd)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_store_apply: NULL argument");
	if (!s->in_txn)
		return psc_err_set(err, PSC_E_KMS_TXN,
				   "state database %s: %s applied outside a batch (call "
				   "kms_store_begin first)",
				   s->path, kms_cmd_type_name(cmd->type));
	/* After some I/O errors SQLite rolls the whole transaction back by itself;
	 * a SAVEPOINT would then silently start a new one outside the batch. */
	if (sqlite3_get_autocommit(s->db))
		return psc_err_set(err, PSC_E_KMS_DB,
				   "state database %s: the batch was already rolled back after an "
				   "earlier error; roll it back and start again",
				   s->path);
	psc_rc rc = kms_cmd_validate(cmd, err);
	if (rc != PSC_OK)
		return rc;
	rc = run_simple(s, ST_SAVEPOINT, "opening a savepoint", err);
	if (rc != PSC_OK)
		return rc;
	rc = apply_one(s, cmd, err);
	if (rc == PSC_OK)
		return run_simple(s, ST_RELEASE, "releasing a savepoint", err);
	/* Undo whatever the command wrote before it was rejected; keep its error
	 * unless undoing fails, which makes the whole batch unusable. */
	if (!sqlite3_get_autocommit(s->db)) {
		psc_err undo;
		psc_err_clear(&undo);
		psc_rc r2 = run_simple(s, ST_ROLLBACK_TO, "undoing a rejected command", &undo);
		if (r2 == PSC_OK)
			r2 = run_simple(s, ST_RELEASE, "releasing a savepoint", &undo);
		if (r2 != PSC_OK)
			return psc_err_set(err, r2, "%s; roll the batch back", psc_err_text(&undo));
	}
	return rc;
}

/* ---- queries ------------------------------------------------------------- */

static psc_rc read_peer(kms_store *s, sqlite3_stmt *st, kms_peer *p, psc_err *err)
{
	memset(p, 0, sizeof(*p));
	uint8_t suites[2 * KMS_SUITES_MAX];
	size_t slen = 0;
	if (!c_blob(st, 0, p->node_id, 16, NULL, true) ||
	    !c_blob(st, 1, p->cert_der, KMS_CERT_DER_MAX, &p->cert_der_len, false) ||
	    !c_blob(st, 2, p->cert_sha256, 32, NULL, true) ||
	    !c_text(st, 3, p->subject, sizeof(p->subject)) ||
	    !c_text(st, 4, p->endpoint, sizeof(p->endpoint)) ||
	    !c_blob(st, 5, p->transport_key, KMS_TRANSPORT_KEY_MAX, &p->transport_key_len, false) ||
	    !c_blob(st, 7, suites, sizeof(suites), &slen, false) || slen % 2)
		return corrupt_row(s, err, "peers");
	p->wrap_alg = (uint8_t)sqlite3_column_int(st, 6);
	p->n_suites = slen / 2;
	for (size_t i = 0; i < p->n_suites; i++)
		p->suites[i] = (uint16_t)(suites[2 * i] << 8 | suites[2 * i + 1]);
	p->banned = sqlite3_column_int(st, 8) != 0;
	p->first_seen_ms = c_u64(st, 9);
	p->updated_ms = c_u64(st, 10);
	p->banned_ms = c_u64(st, 11);
	return PSC_OK;
}

static psc_rc read_psc(kms_store *s, sqlite3_stmt *st, kms_psc *p, psc_err *err)
{
	memset(p, 0, sizeof(*p));
	if (!c_blob(st, 0, p->psc_id, 16, NULL, true) || !c_text(st, 1, p->name, sizeof(p->name)) ||
	    !c_blob(st, 2, p->owner, 16, NULL, true) ||
	    !labels_decode(sqlite3_column_blob(st, 3), (size_t)sqlite3_column_bytes(st, 3), p))
		return corrupt_row(s, err, "pscs");
	p->flags = (uint32_t)c_u64(st, 4);
	p->suite = (uint16_t)c_u64(st, 5);
	p->refresh_s = (uint32_t)c_u64(st, 6);
	p->max_members = (uint32_t)c_u64(st, 7);
	p->created_ms = c_u64(st, 8);
	p->epoch = c_u64(st, 9);
	p->last_rekey_ms = c_u64(st, 10);
	p->destroyed = sqlite3_column_int(st, 11) != 0;
	p->destroyed_ms = c_u64(st, 12);
	p->n_members = (uint32_t)c_u64(st, 13);
	p->highest_epoch = c_u64(st, 14);
	if (p->highest_epoch < p->epoch)
		p->highest_epoch = p->epoch;
	return PSC_OK;
}

static psc_rc read_member(kms_store *s, sqlite3_stmt *st, kms_member *m, psc_err *err)
{
	memset(m, 0, sizeof(*m));
	if (!c_blob(st, 0, m->psc_id, 16, NULL, true) || !c_blob(st, 1, m->node_id, 16, NULL, true))
		return corrupt_row(s, err, "members");
	m->added_ms = c_u64(st, 2);
	m->acked_epoch = c_u64(st, 3);
	m->psc_epoch = c_u64(st, 4);
	return PSC_OK;
}

static psc_rc read_epoch(kms_store *s, sqlite3_stmt *st, kms_epoch *e, psc_err *err)
{
	memset(e, 0, sizeof(*e));
	if (!c_blob(st, 0, e->psc_id, 16, NULL, true) ||
	    !c_text(st, 2, e->kek_id, sizeof(e->kek_id)) ||
	    !c_blob(st, 3, e->wrapped, KMS_WRAPPED_MAX, &e->wrapped_len, false))
		return corrupt_row(s, err, "epochs");
	e->epoch = c_u64(st, 1);
	e->created_ms = c_u64(st, 4);
	e->prev_grace_ms = (uint32_t)c_u64(st, 5);
	return PSC_OK;
}

typedef psc_rc (*row_reader)(kms_store *s, sqlite3_stmt *st, void *row, psc_err *err);

/*
 * Runs a prepared, bound statement and hands each row (read into `row`) to fn.
 * Each call site pairs a reader and an adapter for the same row type.
 */
static psc_rc each_row(kms_store *s, sqlite3_stmt *st, row_reader rd, void *row,
		       int (*fn)(void *, const void *), void *arg, const char *what, psc_err *err)
{
	for (;;) {
		bool more;
		psc_rc rc = st_step(s, st, &more, what, err);
		if (rc != PSC_OK)
			return rc;
		if (!more)
			break;
		rc = rd(s, st, row, err);
		if (rc != PSC_OK) {
			st_done(st);
			return rc;
		}
		if (fn(arg, row) != 0)
			break;
	}
	st_done(st);
	return PSC_OK;
}

/* Typed adapters (no function-pointer casts: UBSan's -fsanitize=function). */

static psc_rc rd_psc(kms_store *s, sqlite3_stmt *st, void *row, psc_err *err)
{
	return read_psc(s, st, row, err);
}
static psc_rc rd_member(kms_store *s, sqlite3_stmt *st, void *row, psc_err *err)
{
	return read_member(s, st, row, err);
}
static psc_rc rd_epoch(kms_store *s, sqlite3_stmt *st, void *row, psc_err *err)
{
	return read_epoch(s, st, row, err);
}

struct peer_fn {
	int (*fn)(void *, const kms_peer *);
	void *arg;
};
static int call_peer(void *a, const void *row)
{
	struct peer_fn *f = a;
	return f->fn(f->arg, row);
}
struct psc_fn {
	int (*fn)(void *, const kms_psc *);
	void *arg;
};
static int call_psc(void *a, const void *row)
{
	struct psc_fn *f = a;
	return f->fn(f->arg, row);
}
struct member_fn {
	int (*fn)(void *, const kms_member *);
	void *arg;
};
static int call_member(void *a, const void *row)
{
	struct member_fn *f = a;
	return f->fn(f->arg, row);
}
struct epoch_fn {
	int (*fn)(void *, const kms_epoch *);
	void *arg;
};
static int call_epoch(void *a, const void *row)
{
	struct epoch_fn *f = a;
	return f->fn(f->arg, row);
}

/* Runs a keyed single-row query; *found says whether a row came back. */
static psc_rc get_one(kms_store *s, enum st id, const void *key, size_t key_len, bool text_key,
		      row_reader rd, void *row, bool *found, const char *what, psc_err *err)
{
	sqlite3_stmt *st;
	psc_rc rc = st_get(s, id, &st, err);
	if (rc != PSC_OK)
		return rc;
	if (text_key)
		b_text(st, 1, key, key_len);
	else
		b_blob(st, 1, key, key_len);
	rc = st_step(s, st, found, what, err);
	if (rc != PSC_OK)
		return rc;
	if (*found)
		rc = rd(s, st, row, err);
	st_done(st);
	return rc;
}

static psc_rc rd_peer(kms_store *s, sqlite3_stmt *st, void *row, psc_err *err)
{
	return read_peer(s, st, row, err);
}

psc_rc kms_store_peer_get(kms_store *s, const uint8_t node_id[PSC_NODE_ID_LEN], kms_peer *out,
			  psc_err *err)
{
	if (!s || !node_id || !out)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_store_peer_get: NULL argument");
	bool found;
	psc_rc rc = get_one(s, ST_PEER_GET, node_id, 16, false, rd_peer, out, &found,
			    "reading table 'peers'", err);
	if (rc == PSC_OK && !found) {
		char h[33];
		hex16(node_id, h);
		return psc_err_set(err, PSC_E_KMS_UNKNOWN_PEER, "node %s is unknown", h);
	}
	return rc;
}

psc_rc kms_store_peer_foreach(kms_store *s, int (*fn)(void *arg, const kms_peer *p), void *arg,
			      psc_err *err)
{
	if (!s || !fn)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_store_peer_foreach: NULL argument");
	sqlite3_stmt *st;
	psc_rc rc = st_get(s, ST_PEER_ALL, &st, err);
	if (rc != PSC_OK)
		return rc;
	kms_peer *row = malloc(sizeof(*row));
	if (!row) {
		st_done(st);
		return psc_err_set(err, PSC_E_NOMEM, "state database %s: out of memory", s->path);
	}
	struct peer_fn f = {fn, arg};
	rc = each_row(s, st, rd_peer, row, call_peer, &f, "reading table 'peers'", err);
	free(row);
	return rc;
}

psc_rc kms_store_psc_get(kms_store *s, const uint8_t psc_id[PSC_PSC_ID_LEN], kms_psc *out,
			 psc_err *err)
{
	if (!s || !psc_id || !out)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_store_psc_get: NULL argument");
	bool found;
	psc_rc rc = get_one(s, ST_PSC_GET, psc_id, 16, false, rd_psc, out, &found,
			    "reading table 'pscs'", err);
	if (rc == PSC_OK && !found)
		return reject_psc(err, PSC_E_KMS_UNKNOWN_PSC, "lookup", psc_id, "is unknown");
	return rc;
}

psc_rc kms_store_psc_by_name(kms_store *s, const char *name, kms_psc *out, psc_err *err)
{
	if (!s || !name || !out)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_store_psc_by_name: NULL argument");
	bool found;
	psc_rc rc = get_one(s, ST_PSC_GET_BY_NAME, name, strlen(name), true, rd_psc, out, &found,
			    "reading table 'pscs'", err);
	if (rc == PSC_OK && !found)
		return psc_err_set(err, PSC_E_KMS_UNKNOWN_PSC, "no live PSC is named '%s'", name);
	return rc;
}

psc_rc kms_store_psc_foreach(kms_store *s, bool include_destroyed,
			     int (*fn)(void *arg, const kms_psc *p), void *arg, psc_err *err)
{
	if (!s || !fn)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_store_psc_foreach: NULL argument");
	sqlite3_stmt *st;
	psc_rc rc = st_get(s, include_destroyed ? ST_PSC_ALL : ST_PSC_ALL_LIVE, &st, err);
	if (rc != PSC_OK)
		return rc;
	kms_psc *row = malloc(sizeof(*row));
	if (!row)
		return psc_err_set(err, PSC_E_NOMEM, "state database %s: out of memory", s->path);
	struct psc_fn f = {fn, arg};
	rc = each_row(s, st, rd_psc, row, call_psc, &f, "reading table 'pscs'", err);
	free(row);
	return rc;
}

psc_rc kms_store_member_get(kms_store *s, const uint8_t psc_id[PSC_PSC_ID_LEN],
			    const uint8_t node_id[PSC_NODE_ID_LEN], kms_member *out, psc_err *err)
{
	if (!s || !psc_id || !node_id || !out)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_store_member_get: NULL argument");
	struct psc_state ps;
	psc_rc rc = psc_state(s, psc_id, &ps, err);
	if (rc != PSC_OK)
		return rc;
	if (!ps.exists)
		return reject_psc(err, PSC_E_KMS_UNKNOWN_PSC, "member lookup", psc_id,
				  "is unknown");
	sqlite3_stmt *st;
	rc = st_get(s, ST_MEMBER_GET, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_blob(st, 1, psc_id, 16);
	b_blob(st, 2, node_id, 16);
	bool row;
	rc = st_step(s, st, &row, "reading table 'members'", err);
	if (rc != PSC_OK)
		return rc;
	if (row)
		rc = read_member(s, st, out, err);
	st_done(st);
	if (rc == PSC_OK && !row)
		return reject_member(err, PSC_E_KMS_NOT_MEMBER, "member lookup", psc_id, node_id,
				     "is not a member of");
	return rc;
}

psc_rc kms_store_members(kms_store *s, const uint8_t psc_id[PSC_PSC_ID_LEN],
			 int (*fn)(void *arg, const kms_member *m), void *arg, psc_err *err)
{
	if (!s || !psc_id || !fn)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_store_members: NULL argument");
	struct psc_state ps;
	psc_rc rc = psc_state(s, psc_id, &ps, err);
	if (rc != PSC_OK)
		return rc;
	if (!ps.exists)
		return reject_psc(err, PSC_E_KMS_UNKNOWN_PSC, "member list", psc_id, "is unknown");
	sqlite3_stmt *st;
	rc = st_get(s, ST_MEMBERS_OF_PSC, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_blob(st, 1, psc_id, 16);
	kms_member row;
	struct member_fn f = {fn, arg};
	return each_row(s, st, rd_member, &row, call_member, &f, "reading table 'members'", err);
}

psc_rc kms_store_pscs_of_node(kms_store *s, const uint8_t node_id[PSC_NODE_ID_LEN],
			      int (*fn)(void *arg, const kms_member *m), void *arg, psc_err *err)
{
	if (!s || !node_id || !fn)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_store_pscs_of_node: NULL argument");
	sqlite3_stmt *st;
	psc_rc rc = st_get(s, ST_PSCS_OF_NODE, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_blob(st, 1, node_id, 16);
	kms_member row;
	struct member_fn f = {fn, arg};
	return each_row(s, st, rd_member, &row, call_member, &f, "reading table 'members'", err);
}

static psc_rc epoch_row(kms_store *s, enum st id, const uint8_t psc_id[16], uint64_t epoch,
			kms_epoch *out, bool *found, psc_err *err)
{
	sqlite3_stmt *st;
	psc_rc rc = st_get(s, id, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_blob(st, 1, psc_id, 16);
	b_u64(st, 2, epoch);
	rc = st_step(s, st, found, "reading table 'epochs'", err);
	if (rc != PSC_OK)
		return rc;
	if (*found)
		rc = read_epoch(s, st, out, err);
	st_done(st);
	return rc;
}

psc_rc kms_store_epoch_current(kms_store *s, const uint8_t psc_id[PSC_PSC_ID_LEN], kms_epoch *out,
			       psc_err *err)
{
	if (!s || !psc_id || !out)
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "kms_store_epoch_current: NULL argument");
	struct psc_state ps;
	psc_rc rc = psc_state(s, psc_id, &ps, err);
	if (rc != PSC_OK)
		return rc;
	if (!ps.exists)
		return reject_psc(err, PSC_E_KMS_UNKNOWN_PSC, "epoch lookup", psc_id, "is unknown");
	if (ps.destroyed)
		return reject_psc(err, PSC_E_KMS_NO_EPOCH, "epoch lookup", psc_id, "was destroyed");
	if (ps.epoch == 0)
		return reject_psc(err, PSC_E_KMS_NO_EPOCH, "epoch lookup", psc_id,
				  "has no epoch yet");
	bool found;
	rc = epoch_row(s, ST_EPOCH_GET, psc_id, ps.epoch, out, &found, err);
	if (rc == PSC_OK && !found)
		return corrupt_row(s, err, "epochs");
	return rc;
}

psc_rc kms_store_epoch_previous(kms_store *s, const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t now_ms,
				kms_epoch *out, psc_err *err)
{
	kms_epoch *cur = malloc(sizeof(*cur));
	if (!cur)
		return psc_err_set(err, PSC_E_NOMEM, "out of memory");
	psc_rc rc = kms_store_epoch_current(s, psc_id, cur, err);
	if (rc != PSC_OK) {
		free(cur);
		return rc;
	}
	uint64_t until = cur->created_ms + cur->prev_grace_ms; /* both < 2^63 + 2^32 */
	uint64_t epoch = cur->epoch;
	free(cur);
	if (now_ms >= until)
		return reject_psc(err, PSC_E_KMS_NO_EPOCH, "previous epoch", psc_id,
				  "has no previous epoch in its grace period");
	bool found;
	rc = epoch_row(s, ST_EPOCH_PREV, psc_id, epoch, out, &found, err);
	if (rc == PSC_OK && !found)
		return reject_psc(err, PSC_E_KMS_NO_EPOCH, "previous epoch", psc_id,
				  "has no previous epoch");
	return rc;
}

/* Every epoch row of statement id (bound to kek_id) through fn. */
static psc_rc epochs_with_kek(kms_store *s, enum st id, const char *what, const char *kek_id,
			      int (*fn)(void *arg, const kms_epoch *e), void *arg, psc_err *err)
{
	if (!s || !kek_id || !fn)
		return psc_err_set(err, PSC_E_INVALID_ARG, "%s: NULL argument", what);
	sqlite3_stmt *st;
	psc_rc rc = st_get(s, id, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_text(st, 1, kek_id, strlen(kek_id));
	kms_epoch *row = malloc(sizeof(*row));
	if (!row) {
		st_done(st);
		return psc_err_set(err, PSC_E_NOMEM, "out of memory");
	}
	struct epoch_fn f = {fn, arg};
	rc = each_row(s, st, rd_epoch, row, call_epoch, &f, "reading table 'epochs'", err);
	free(row);
	return rc;
}

psc_rc kms_store_epochs_by_kek(kms_store *s, const char *kek_id,
			       int (*fn)(void *arg, const kms_epoch *e), void *arg, psc_err *err)
{
	return epochs_with_kek(s, ST_EPOCHS_BY_KEK, "kms_store_epochs_by_kek", kek_id, fn, arg,
			       err);
}

psc_rc kms_store_epochs_not_kek(kms_store *s, const char *kek_id,
				int (*fn)(void *arg, const kms_epoch *e), void *arg, psc_err *err)
{
	return epochs_with_kek(s, ST_EPOCHS_NOT_KEK, "kms_store_epochs_not_kek", kek_id, fn, arg,
			       err);
}

psc_rc kms_store_count_not_kek(kms_store *s, const char *kek_id, uint64_t *n, psc_err *err)
{
	if (!s || !kek_id || !n)
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "kms_store_count_not_kek: NULL argument");
	sqlite3_stmt *st;
	psc_rc rc = st_get(s, ST_EPOCHS_NOT_KEK_COUNT, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_text(st, 1, kek_id, strlen(kek_id));
	bool row;
	rc = st_step(s, st, &row, "counting rows", err);
	if (rc != PSC_OK)
		return rc;
	*n = row ? c_u64(st, 0) : 0;
	st_done(st);
	return PSC_OK;
}

/* Every row's PSC id (column 0) and, with_due, its due time (column 1). */
static psc_rc psc_id_rows(kms_store *s, sqlite3_stmt *st, bool with_due, kms_psc_due_fn fn,
			  void *arg, psc_err *err)
{
	for (;;) {
		bool row;
		psc_rc rc = st_step(s, st, &row, "reading table 'pscs'", err);
		if (rc != PSC_OK)
			return rc;
		if (!row)
			break;
		uint8_t id[16];
		if (!c_blob(st, 0, id, 16, NULL, true)) {
			st_done(st);
			return corrupt_row(s, err, "pscs");
		}
		if (fn(arg, id, with_due ? c_u64(st, 1) : 0) != 0)
			break;
	}
	st_done(st);
	return PSC_OK;
}

psc_rc kms_store_restore_due(kms_store *s, kms_psc_due_fn fn, void *arg, psc_err *err)
{
	if (!s || !fn)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_store_restore_due: NULL argument");
	sqlite3_stmt *st;
	psc_rc rc = st_get(s, ST_RESTORE_DUE, &st, err);
	if (rc != PSC_OK)
		return rc;
	return psc_id_rows(s, st, false, fn, arg, err);
}

psc_rc kms_store_highest_epoch(kms_store *s, const uint8_t psc_id[PSC_PSC_ID_LEN], uint64_t *out,
			       psc_err *err)
{
	if (!s || !psc_id || !out)
		return psc_err_set(err, PSC_E_INVALID_ARG,
				   "kms_store_highest_epoch: NULL argument");
	struct psc_state ps;
	psc_rc rc = psc_state(s, psc_id, &ps, err);
	if (rc != PSC_OK)
		return rc;
	if (ps.exists) {
		*out = ps.hwm > ps.epoch ? ps.hwm : ps.epoch;
		return PSC_OK;
	}
	/* A floored id that was never created has only its high-water mark. */
	return count_one(s, ST_HWM_GET, psc_id, out, err);
}

psc_rc kms_store_refresh_due(kms_store *s, uint64_t now_ms, kms_psc_due_fn fn, void *arg,
			     psc_err *err)
{
	if (!s || !fn)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_store_refresh_due: NULL argument");
	sqlite3_stmt *st;
	psc_rc rc = st_get(s, ST_REFRESH_DUE, &st, err);
	if (rc != PSC_OK)
		return rc;
	b_u64(st, 1, now_ms);
	return psc_id_rows(s, st, true, fn, arg, err);
}

psc_rc kms_store_next_refresh(kms_store *s, uint64_t *due_ms, bool *found, psc_err *err)
{
	if (!s || !due_ms || !found)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_store_next_refresh: NULL argument");
	sqlite3_stmt *st;
	psc_rc rc = st_get(s, ST_REFRESH_NEXT, &st, err);
	if (rc != PSC_OK)
		return rc;
	bool row;
	rc = st_step(s, st, &row, "reading table 'pscs'", err);
	if (rc != PSC_OK)
		return rc;
	*found = row && sqlite3_column_type(st, 0) != SQLITE_NULL;
	*due_ms = *found ? c_u64(st, 0) : 0;
	st_done(st);
	return PSC_OK;
}

psc_rc kms_store_counts_get(kms_store *s, kms_store_counts *out, psc_err *err)
{
	if (!s || !out)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_store_counts_get: NULL argument");
	memset(out, 0, sizeof(*out));
	sqlite3_stmt *st;
	psc_rc rc = st_get(s, ST_COUNTS, &st, err);
	if (rc != PSC_OK)
		return rc;
	bool row;
	rc = st_step(s, st, &row, "counting rows", err);
	if (rc != PSC_OK)
		return rc;
	if (row) {
		out->peers = c_u64(st, 0);
		out->peers_banned = c_u64(st, 1);
		out->pscs_live = c_u64(st, 2);
		out->pscs_destroyed = c_u64(st, 3);
		out->memberships = c_u64(st, 4);
		out->epoch_blobs = c_u64(st, 5);
	}
	st_done(st);
	return PSC_OK;
}

/* Tables and their primary key order; the digest format depends on this list. */
static const char *const DIGEST_SQL[] = {
    "SELECT * FROM peers ORDER BY node_id",	      "SELECT * FROM pscs ORDER BY psc_id",
    "SELECT * FROM members ORDER BY psc_id, node_id", "SELECT * FROM epochs ORDER BY psc_id, epoch",
    "SELECT * FROM epoch_hwm ORDER BY psc_id",
};

static void dg_u64(EVP_MD_CTX *md, uint64_t v)
{
	uint8_t b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (56 - 8 * i));
	EVP_DigestUpdate(md, b, sizeof(b));
}

psc_rc kms_store_digest(kms_store *s, uint8_t out[PSC_HASH_LEN], psc_err *err)
{
	if (!s || !out)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_store_digest: NULL argument");
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(md);
		return psc_err_set(err, PSC_E_CRYPTO, "state digest: SHA-256 unavailable");
	}
	psc_rc rc = PSC_OK;
	for (size_t t = 0; rc == PSC_OK && t < sizeof(DIGEST_SQL) / sizeof(DIGEST_SQL[0]); t++) {
		sqlite3_stmt *st = NULL;
		int r = sqlite3_prepare_v2(s->db, DIGEST_SQL[t], -1, &st, NULL);
		if (r != SQLITE_OK) {
			rc = db_fail(s, err, r, "computing the state digest");
			break;
		}
		dg_u64(md, t); /* table separator */
		while ((r = sqlite3_step(st)) == SQLITE_ROW) {
			int nc = sqlite3_column_count(st);
			dg_u64(md, (uint64_t)nc);
			for (int i = 0; i < nc; i++) {
				int type = sqlite3_column_type(st, i);
				dg_u64(md, (uint64_t)type);
				if (type == SQLITE_INTEGER) {
					dg_u64(md, (uint64_t)sqlite3_column_int64(st, i));
				} else if (type == SQLITE_BLOB || type == SQLITE_TEXT) {
					const void *p =
					    type == SQLITE_BLOB
						? sqlite3_column_blob(st, i)
						: (const void *)sqlite3_column_text(st, i);
					int n = sqlite3_column_bytes(st, i);
					dg_u64(md, (uint64_t)n);
					if (n > 0)
						EVP_DigestUpdate(md, p, (size_t)n);
				} else if (type == SQLITE_FLOAT) {
					/* The schema has no REAL columns: a float is tampering. */
					rc = corrupt_row(s, err, "(digest)");
					break;
				}
			}
			if (rc != PSC_OK)
				break;
		}
		if (rc == PSC_OK && r != SQLITE_DONE)
			rc = db_fail(s, err, r, "computing the state digest");
		sqlite3_finalize(st);
	}
	unsigned int n = 0;
	if (rc == PSC_OK && (EVP_DigestFinal_ex(md, out, &n) != 1 || n != PSC_HASH_LEN))
		rc = psc_err_set(err, PSC_E_CRYPTO, "state digest: SHA-256 failed");
	EVP_MD_CTX_free(md);
	return rc;
}

struct kms_store_bk {
	kms_store *s;
	sqlite3 *dst;
	sqlite3_backup *b;
	char *path;
	int remaining, total; /* pages, after the last step */
};

static void bk_discard(kms_store_bk *b)
{
	if (b->b)
		sqlite3_backup_finish(b->b);
	if (b->dst)
		sqlite3_close(b->dst);
	if (b->path) {
		unlink(b->path);
		char side[4200];
		snprintf(side, sizeof(side), "%s-wal", b->path);
		unlink(side);
		snprintf(side, sizeof(side), "%s-shm", b->path);
		unlink(side);
	}
	free(b->path);
	free(b);
}

static psc_rc bk_fail(kms_store_bk **pb, int rc, const char *what, psc_err *err)
{
	kms_store_bk *b = *pb;
	psc_rc code = map_sqlite(rc);
	psc_err_set(err, code, "state backup %s (from %s): %s: %s: %s", b->path, b->s->path, what,
		    b->dst ? sqlite3_errmsg(b->dst) : sqlite3_errstr(rc), hint(code));
	bk_discard(b);
	*pb = NULL;
	return code;
}

psc_rc kms_store_backup_begin(kms_store *s, const char *dest_path, kms_store_bk **out, psc_err *err)
{
	if (!s || !dest_path || !*dest_path || !out)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_store_backup_begin: NULL argument");
	*out = NULL;
	if (s->in_txn)
		return psc_err_set(err, PSC_E_KMS_TXN,
				   "state database %s: backup requested inside a batch", s->path);
	/* O_EXCL: never overwrite an earlier backup or some other file. */
	int fd = open(dest_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return psc_err_set(err, PSC_E_KMS_DB_OPEN, "state backup %s: cannot create: %s",
				   dest_path, strerror(errno));
	close(fd);
	kms_store_bk *b = calloc(1, sizeof(*b));
	if (!b || !(b->path = strdup(dest_path))) {
		free(b);
		unlink(dest_path);
		return psc_err_set(err, PSC_E_NOMEM, "state backup %s: out of memory", dest_path);
	}
	b->s = s;
	b->remaining = -1;
	int rc = sqlite3_open_v2(dest_path, &b->dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
				 NULL);
	if (rc != SQLITE_OK)
		return bk_fail(&b, rc, "opening the copy", err);
	b->b = sqlite3_backup_init(b->dst, "main", s->db, "main");
	if (!b->b)
		return bk_fail(&b, sqlite3_errcode(b->dst), "starting the copy", err);
	*out = b;
	return PSC_OK;
}

psc_rc kms_store_backup_step(kms_store_bk **pb, int pages, bool *done, psc_err *err)
{
	if (!pb || !*pb || !done)
		return psc_err_set(err, PSC_E_INVALID_ARG, "kms_store_backup_step: NULL argument");
	kms_store_bk *b = *pb;
	*done = false;
	/* Outside a batch only: the copy reads through the store's connection and
	 * would see the batch's uncommitted pages. */
	if (b->s->in_txn)
		return psc_err_set(err, PSC_E_KMS_TXN,
				   "state backup %s: step inside a batch (call it between batches)",
				   b->path);
	int rc = sqlite3_backup_step(b->b, pages);
	b->remaining = sqlite3_backup_remaining(b->b);
	b->total = sqlite3_backup_pagecount(b->b);
	if (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
		return PSC_OK;
	if (rc != SQLITE_DONE)
		return bk_fail(pb, rc, "copying", err);
	rc = sqlite3_backup_finish(b->b);
	b->b = NULL;
	if (rc != SQLITE_OK)
		return bk_fail(pb, rc, "finishing the copy", err);
	/* The copy is a WAL database like the original; fold its WAL into the
	 * file so the backup is one self-contained file. */
	rc = sqlite3_exec(b->dst, "PRAGMA synchronous = FULL; PRAGMA wal_checkpoint(TRUNCATE)",
			  NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		return bk_fail(pb, rc, "checkpointing the copy", err);
	rc = sqlite3_close(b->dst);
	b->dst = NULL;
	if (rc != SQLITE_OK)
		return bk_fail(pb, rc, "closing the copy", err);
	/* SQLite syncs the data it wrote; the directory entry needs its own sync. */
	char dir[4096];
	const char *slash = strrchr(b->path, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == b->path)
		snprintf(dir, sizeof(dir), "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - b->path), b->path);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) != 0) {
		psc_err_set(err, PSC_E_KMS_DB_IO, "state backup %s: syncing %s: %s", b->path, dir,
			    strerror(errno));
		if (dfd >= 0)
			close(dfd);
		bk_discard(b);
		*pb = NULL;
		return PSC_E_KMS_DB_IO;
	}
	close(dfd);
	free(b->path);
	free(b);
	*pb = NULL;
	*done = true;
	return PSC_OK;
}

void kms_store_backup_progress(const kms_store_bk *b, int *remaining, int *total)
{
	*remaining = b ? b->remaining : 0;
	*total = b ? b->total : 0;
}

void kms_store_backup_abort(kms_store_bk **pb)
{
	if (!pb || !*pb)
		return;
	bk_discard(*pb);
	*pb = NULL;
}

psc_rc kms_store_backup(kms_store *s, const char *dest_path, psc_err *err)
{
	kms_store_bk *b = NULL;
	psc_rc rc = kms_store_backup_begin(s, dest_path, &b, err);
	bool done = false;
	if (rc == PSC_OK)
		rc = kms_store_backup_step(&b, -1, &done, err);
	if (rc == PSC_OK && !done) {
		/* -1 copies everything in one step unless the source is busy */
		kms_store_backup_abort(&b);
		rc = psc_err_set(err, PSC_E_KMS_DB_LOCKED, "state backup %s: the database was busy",
				 dest_path);
	}
	return rc;
}
