/*
 * kms_config: the shipped example loads; defaults; relative paths resolve
 * against the file's directory; every rejection with its exact message and
 * 1-based line:column; secret files (permissions, newline, size, wiping).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kms_config.h"
#include "psc_test.h"

/* A minimal valid file: only the required keys (CURVE off so its files are not). */
#define L_ID "kms_id: k1\n"
#define L_OVERLAY "overlay: psc.test\n"
#define L_LISTEN "listen: tcp://127.0.0.1:7400\n"
#define L_CURVE "curve: {enabled: false}\n"
#define L_HSM "hsm: {module: /m.so, token_label: t, pin_file: pin}\n"
#define L_ID_CERT "identity: {certificate: kms.pem}\n"
#define L_TRUST "trust: {ca_file: ca.pem}\n"
#define L_POLICY "policy_file: policy.yaml\n"
#define L_AUDIT "audit: {dir: audit}\n"
#define L_STATE "state_db: state.db\n"
#define MINIMAL L_ID L_OVERLAY L_LISTEN L_CURVE L_HSM L_ID_CERT L_TRUST L_POLICY L_AUDIT L_STATE

static kms_config *parse_ok(const char *yaml)
{
	kms_config *c = NULL;
	psc_err e;
	psc_err_clear(&e);
	if (kms_config_parse(&c, yaml, strlen(yaml), "k.yaml", "/etc/psc-kms", &e) != PSC_OK)
		fail_msg("parse: %s", psc_err_text(&e));
	return c;
}

static void test_example_loads(void **state)
{
	(void)state;
	char path[4096], dir[4096];
	snprintf(path, sizeof(path), "%s/conf/kms.yaml", PSC_SOURCE_DIR);
	char *real = realpath(PSC_SOURCE_DIR "/conf", NULL);
	assert_non_null(real);
	snprintf(dir, sizeof(dir), "%s", real);
	free(real);
	kms_config *c = NULL;
	psc_err e;
	psc_err_clear(&e);
	if (kms_config_load(&c, path, &e) != PSC_OK)
		fail_msg("conf/kms.yaml: %s", psc_err_text(&e));
	assert_string_equal(c->kms_id, "kms-local.1");
	assert_string_equal(c->overlay, "psc.test");
	assert_string_equal(c->listen, "tcp://127.0.0.1:7400");
	char want[8192];
	snprintf(want, sizeof(want), "ipc://%s/local/admin.sock", dir);
	assert_string_equal(c->admin_socket, want);
	assert_true(c->curve.enabled);
	snprintf(want, sizeof(want), "%s/local/curve/kms.secret", dir);
	assert_string_equal(c->curve.secret_key_file, want);
	assert_string_equal(c->hsm.module, "/usr/lib/softhsm/libsofthsm2.so");
	assert_string_equal(c->hsm.token_label, "psc-local");
	snprintf(want, sizeof(want), "%s/local/token/user.pin", dir);
	assert_string_equal(c->hsm.pin_file, want);
	assert_int_equal(c->hsm.workers, 2);
	snprintf(want, sizeof(want), "%s/local/ca/kms.crt.pem", dir);
	assert_string_equal(c->identity.certificate, want);
	snprintf(want, sizeof(want), "%s/local/ca/crl.pem", dir);
	assert_string_equal(c->trust.crl_file, want);
	snprintf(want, sizeof(want), "%s/policy.yaml", dir);
	assert_string_equal(c->policy_file, want);
	snprintf(want, sizeof(want), "%s/local/state/state.db", dir);
	assert_string_equal(c->state_db, want);
	assert_int_equal(c->audit.segment_bytes, 67108864);
	assert_int_equal(c->timers.old_epoch_grace_ms, 30000);
	assert_int_equal(c->limits.max_pending_per_peer, 64);
	/* Positions for later messages about a value. */
	char where[4200];
	snprintf(want, sizeof(want), "%s:", path);
	kms_config_where(c, "trust.ca_file", where, sizeof(where));
	assert_true(strncmp(where, want, strlen(want)) == 0);
	assert_true(strlen(where) > strlen(want) + 2);
	kms_config_free(&c);
	assert_null(c);
	kms_config_free(&c); /* NULL-safe */
}

static void test_defaults_and_paths(void **state)
{
	(void)state;
	kms_config *c = parse_ok(MINIMAL);
	assert_string_equal(c->admin_socket, "ipc:///run/psc-kms/admin.sock");
	assert_false(c->curve.enabled);
	assert_string_equal(c->curve.secret_key_file, "");
	assert_string_equal(c->hsm.module, "/m.so"); /* absolute stays */
	assert_string_equal(c->hsm.pin_file, "/etc/psc-kms/pin");
	assert_string_equal(c->trust.ca_file, "/etc/psc-kms/ca.pem");
	assert_string_equal(c->trust.crl_file, "");
	assert_int_equal(c->trust.crl_reload_s, 300);
	assert_int_equal(c->hsm.workers, 2);
	assert_int_equal(c->audit.checkpoint_every, 1000);
	assert_int_equal(c->audit.checkpoint_interval_s, 300);
	assert_int_equal(c->audit.segment_bytes, 64ull * 1024 * 1024);
	assert_int_equal(c->timers.refresh_default_s, 3600);
	assert_int_equal(c->timers.freshness_window_s, 300);
	assert_int_equal(c->timers.query_timeout_ms, 30000);
	assert_int_equal(c->timers.invite_timeout_ms, 60000);
	assert_int_equal(c->timers.liveness_timeout_ms, 10000);
	assert_int_equal(c->timers.old_epoch_grace_ms, 30000);
	assert_int_equal(c->limits.max_message_bytes, 1048576);
	assert_int_equal(c->limits.per_connection_msgs_per_s, 50);
	assert_int_equal(c->limits.per_connection_burst, 100);
	assert_int_equal(c->limits.sndhwm, 1000);
	assert_int_equal(c->limits.rcvhwm, 1000);
	assert_int_equal(c->limits.max_pending_per_peer, 64);
	char where[256];
	assert_string_equal(kms_config_where(c, "hsm.pin_file", where, sizeof(where)),
			    "k.yaml:5:38");
	assert_string_equal(kms_config_where(c, "trust.crl_file", where, sizeof(where)), "k.yaml");
	kms_config_free(&c);

	/* Every number at its limits; relative ipc paths resolve like files. */
	c = parse_ok(MINIMAL "admin_socket: ipc://run/a.sock\n"
			     "timers: {old_epoch_grace_ms: 0, refresh_default_s: 31536000}\n"
			     "limits: {max_message_bytes: 67108864, sndhwm: 1}\n");
	assert_string_equal(c->admin_socket, "ipc:///etc/psc-kms/run/a.sock");
	assert_int_equal(c->timers.old_epoch_grace_ms, 0);
	assert_int_equal(c->timers.refresh_default_s, 31536000);
	assert_int_equal(c->limits.max_message_bytes, 67108864);
	assert_int_equal(c->limits.sndhwm, 1);
	kms_config_free(&c);

	/* listen may be ipc:// too; CURVE on with both key files. */
	c = parse_ok(L_ID L_OVERLAY
		     "listen: ipc:///run/psc-kms/peers.sock\n"
		     "curve:\n  secret_key_file: c.key\n  public_key_file: c.pub\n" L_HSM L_ID_CERT
			 L_TRUST L_POLICY L_AUDIT L_STATE);
	assert_true(c->curve.enabled);
	assert_string_equal(c->listen, "ipc:///run/psc-kms/peers.sock");
	assert_string_equal(c->curve.public_key_file, "/etc/psc-kms/c.pub");
	kms_config_free(&c);
}

struct bad {
	const char *yaml;
	const char *msg; /* exact err.detail */
};

#define LONG40 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static const struct bad cases[] = {
    {MINIMAL "colour: blue\n", "k.yaml:11:1: unknown key 'colour'"},
    {L_ID L_OVERLAY L_LISTEN L_CURVE
     "hsm: {module: /m.so, token_label: t, pin_file: p, slot: 3}\n" L_ID_CERT L_TRUST L_POLICY
	 L_AUDIT L_STATE,
     "k.yaml:5:51: unknown key 'hsm.slot' in section 'hsm'"},
    {L_ID L_OVERLAY L_LISTEN L_CURVE
     "hsm: {module: /m.so, token_label: t, pin: \"1234\"}\n" L_ID_CERT L_TRUST L_POLICY L_AUDIT
	 L_STATE,
     "k.yaml:5:38: unknown key 'hsm.pin': secrets are never written in kms.yaml; name a file "
     "(hsm.pin_file, curve.secret_key_file)"},
    {MINIMAL "kms_id: k2\n", "k.yaml:11:1: duplicate key 'kms_id' (first at line 1, column 1)"},
    {L_ID L_OVERLAY L_LISTEN L_CURVE "hsm: 3\n" L_ID_CERT L_TRUST L_POLICY L_AUDIT L_STATE,
     "k.yaml:5:6: 'hsm' must be a mapping of keys, found a scalar"},
    {L_ID L_OVERLAY L_LISTEN L_CURVE L_HSM L_ID_CERT "trust:\n" L_POLICY L_AUDIT L_STATE,
     "k.yaml:7:7: 'trust' must be a mapping of keys, found no value"},
    {L_ID L_OVERLAY
     "listen: [tcp://a:1]\n" L_CURVE L_HSM L_ID_CERT L_TRUST L_POLICY L_AUDIT L_STATE,
     "k.yaml:3:9: 'listen' must be a single value, found a sequence"},
    {L_ID "overlay:\n" L_LISTEN L_CURVE L_HSM L_ID_CERT L_TRUST L_POLICY L_AUDIT L_STATE,
     "k.yaml:2:9: 'overlay' has no value"},
    {MINIMAL "limits: {sndhwm: \"5\"}\n",
     "k.yaml:11:18: 'limits.sndhwm' must be a whole number from 1 to 1000000, found '5'"},
    {MINIMAL "limits: {sndhwm: 0}\n",
     "k.yaml:11:18: 'limits.sndhwm' must be a whole number from 1 to 1000000, found '0'"},
    {MINIMAL "limits: {rcvhwm: 1000001}\n",
     "k.yaml:11:18: 'limits.rcvhwm' must be a whole number from 1 to 1000000, found '1000001'"},
    {MINIMAL "timers: {query_timeout_ms: -1}\n",
     "k.yaml:11:28: 'timers.query_timeout_ms' must be a whole number from 100 to 600000, found "
     "'-1'"},
    {MINIMAL "audit2: 1\n", "k.yaml:11:1: unknown key 'audit2'"},
    {L_ID L_OVERLAY L_LISTEN L_CURVE L_HSM L_ID_CERT L_TRUST L_POLICY
     "audit: {dir: a, segment_bytes: 99999999999999999999999}\n" L_STATE,
     "k.yaml:9:32: 'audit.segment_bytes' must be a whole number from 65536 to 1099511627776, "
     "found '99999999999999999999999'"},
    {L_ID L_OVERLAY L_LISTEN L_CURVE "hsm: {module: /m.so, token_label: t, pin_file: p, "
				     "workers: 1.5}\n" L_ID_CERT L_TRUST L_POLICY L_AUDIT L_STATE,
     "k.yaml:5:60: 'hsm.workers' must be a whole number from 1 to 64, found '1.5'"},
    {L_ID L_OVERLAY L_LISTEN
     "curve: {enabled: yes}\n" L_HSM L_ID_CERT L_TRUST L_POLICY L_AUDIT L_STATE,
     "k.yaml:4:18: 'curve.enabled' must be true or false, found 'yes'"},
    {L_ID L_OVERLAY L_LISTEN L_CURVE L_HSM L_ID_CERT L_TRUST L_POLICY L_AUDIT,
     "k.yaml:1:1: missing required key 'state_db'"},
    {L_ID L_OVERLAY L_LISTEN L_CURVE
     "hsm: {module: /m.so, token_label: t}\n" L_ID_CERT L_TRUST L_POLICY L_AUDIT L_STATE,
     "k.yaml:5:1: missing required key 'hsm.pin_file'"},
    {L_ID L_OVERLAY L_LISTEN L_HSM L_ID_CERT L_TRUST L_POLICY L_AUDIT L_STATE,
     "k.yaml:1:1: missing required key 'curve.secret_key_file' (CURVE is enabled; set "
     "curve.enabled: false only for a test on loopback)"},
    {L_ID L_OVERLAY L_LISTEN
     "curve: {public_key_file: p}\n" L_HSM L_ID_CERT L_TRUST L_POLICY L_AUDIT L_STATE,
     "k.yaml:4:1: missing required key 'curve.secret_key_file' (CURVE is enabled; set "
     "curve.enabled: false only for a test on loopback)"},
    {L_ID
     "overlay: &o psc.test\n" L_LISTEN L_CURVE L_HSM L_ID_CERT L_TRUST L_POLICY L_AUDIT L_STATE,
     "k.yaml:2:10: anchors (&name) are not allowed in kms.yaml; write the value out"},
    {L_ID "overlay: *o\n" L_LISTEN L_CURVE L_HSM L_ID_CERT L_TRUST L_POLICY L_AUDIT L_STATE,
     "k.yaml:2:10: aliases (*name) are not allowed in kms.yaml"},
    {"kms_id: !!str k1\n" L_OVERLAY L_LISTEN L_CURVE L_HSM L_ID_CERT L_TRUST L_POLICY L_AUDIT
	 L_STATE,
     "k.yaml:1:9: tags (!name) are not allowed in kms.yaml"},
    {MINIMAL "---\nkms_id: k2\n",
     "k.yaml:11:1: a second YAML document; kms.yaml holds exactly one"},
    {L_ID "  overlay: x\n", "k.yaml:2:10: YAML syntax error: mapping values are not allowed in "
			    "this context"},
    {"hsm: {module: x\n",
     "k.yaml:2:1: YAML syntax error: did not find expected ',' or '}' while parsing a flow "
     "mapping"},
    {"", "k.yaml:1:1: the file is empty"},
    {"# only a comment\n", "k.yaml:1:1: the file is empty"},
    {"- kms_id: k1\n",
     "k.yaml:1:1: the file must be a mapping of keys (kms_id: ..., listen: ...), found a "
     "sequence"},
    {"? {a: 1}\n: 2\n", "k.yaml:1:3: a key must be a plain name, found a mapping"},
    {"kms_id: k 1\n",
     "k.yaml:1:9: 'kms_id' must be 1 to 64 characters from A-Z a-z 0-9 . _ -, found 'k 1'"},
    {L_ID L_OVERLAY "listen: udp://1.2.3.4:5\n",
     "k.yaml:3:9: 'listen' must be a ZeroMQ endpoint tcp://host:port or ipc://path, found "
     "'udp://1.2.3.4:5'"},
    {L_ID L_OVERLAY "listen: tcp://127.0.0.1\n",
     "k.yaml:3:9: 'listen' needs a host and a port 1..65535, as in tcp://127.0.0.1:7400; "
     "found 'tcp://127.0.0.1'"},
    {L_ID L_OVERLAY "listen: tcp://:7400\n",
     "k.yaml:3:9: 'listen' needs a host and a port 1..65535, as in tcp://127.0.0.1:7400; "
     "found 'tcp://:7400'"},
    {L_ID L_OVERLAY "listen: tcp://h:70000\n",
     "k.yaml:3:9: 'listen' needs a host and a port 1..65535, as in tcp://127.0.0.1:7400; "
     "found 'tcp://h:70000'"},
    {"admin_socket: tcp://127.0.0.1:9\n",
     "k.yaml:1:15: 'admin_socket' must be ipc://path, found 'tcp://127.0.0.1:9'"},
    {"admin_socket: ipc://" LONG40 LONG40 LONG40 "\n",
     "k.yaml:1:15: 'admin_socket': the socket path is longer than 107 bytes once resolved, "
     "which Unix sockets cannot hold; use a shorter absolute path"},
    {"hsm: {token_label: " LONG40 "}\n",
     "k.yaml:1:20: 'hsm.token_label' is longer than a PKCS#11 token label (32 bytes)"},
};

static void test_rejections(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		kms_config *c = (kms_config *)&c; /* must come back NULL */
		psc_err e;
		psc_err_clear(&e);
		psc_rc rc = kms_config_parse(&c, cases[i].yaml, strlen(cases[i].yaml), "k.yaml",
					     "/etc/psc-kms", &e);
		if (rc != PSC_E_KMS_CONFIG)
			fail_msg("case %zu: want PSC_E_KMS_CONFIG, got %s (%s)", i, psc_rc_name(rc),
				 psc_err_text(&e));
		assert_null(c);
		if (strcmp(e.detail, cases[i].msg) != 0)
			fail_msg("case %zu:\n want '%s'\n got  '%s'", i, cases[i].msg, e.detail);
	}
}

static void test_file_errors(void **state)
{
	(void)state;
	char dir[4096], path[4200];
	assert_int_equal(pt_tmpdir(dir, "kms-config"), 0);
	snprintf(path, sizeof(path), "%s/missing.yaml", dir);
	kms_config *c = NULL;
	psc_err e;
	psc_err_clear(&e);
	assert_int_equal(kms_config_load(&c, path, &e), PSC_E_KMS_CONFIG_IO);
	char want[4400];
	snprintf(want, sizeof(want), "%s: cannot open: No such file or directory", path);
	assert_string_equal(e.detail, want);

	/* A file's errors carry the path as given; relative paths use its directory. */
	snprintf(path, sizeof(path), "%s/kms.yaml", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(MINIMAL "limits: {sndhwm: 0}\n", f);
	fclose(f);
	assert_int_equal(kms_config_load(&c, path, &e), PSC_E_KMS_CONFIG);
	snprintf(want, sizeof(want),
		 "%s:11:18: 'limits.sndhwm' must be a whole number from 1 to 1000000, found '0'",
		 path);
	assert_string_equal(e.detail, want);
	f = fopen(path, "w");
	fputs(MINIMAL, f);
	fclose(f);
	assert_int_equal(kms_config_load(&c, path, &e), PSC_OK);
	char *real = realpath(dir, NULL);
	snprintf(want, sizeof(want), "%s/state.db", real);
	assert_string_equal(c->state_db, want);
	free(real);
	kms_config_free(&c);

	/* Larger than the cap. */
	f = fopen(path, "w");
	for (int i = 0; i < KMS_CONFIG_FILE_MAX / 10 + 1; i++)
		fputs("# padding\n", f);
	fclose(f);
	assert_int_equal(kms_config_load(&c, path, &e), PSC_E_KMS_CONFIG);
	assert_non_null(strstr(e.detail, "larger than 262144 bytes"));
	pt_rm_rf(dir);
}

/* ---- secrets ------------------------------------------------------------- */

static void put(const char *path, const void *p, size_t n, mode_t mode)
{
	unlink(path);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(p, 1, n, f), n);
	fclose(f);
	assert_int_equal(chmod(path, mode), 0);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static void test_secret_files(void **state)
{
	(void)state;
	char dir[4096], path[4200];
	assert_int_equal(pt_tmpdir(dir, "kms-secret"), 0);
	snprintf(path, sizeof(path), "%s/pin", dir);
	uint8_t buf[64];
	size_t len = 99;
	psc_err e;

	put(path, "1234\n", 5, 0600);
	assert_int_equal(kms_secret_read(path, buf, sizeof(buf), &len, &e), PSC_OK);
	assert_int_equal(len, 4);
	assert_memory_equal(buf, "1234", 4);
	put(path, "1234\r\n", 6, 0400);
	assert_int_equal(kms_secret_read(path, buf, sizeof(buf), &len, &e), PSC_OK);
	assert_int_equal(len, 4);
	put(path, "ab\n\n", 4, 0600); /* only one newline is stripped */
	assert_int_equal(kms_secret_read(path, buf, sizeof(buf), &len, &e), PSC_OK);
	assert_int_equal(len, 3);
	assert_memory_equal(buf, "ab\n", 3);
	put(path, "x y", 3, 0600); /* no newline at all */
	assert_int_equal(kms_secret_read(path, buf, sizeof(buf), &len, &e), PSC_OK);
	assert_int_equal(len, 3);
	uint8_t exact[64];
	memset(exact, 'p', sizeof(exact));
	put(path, exact, sizeof(exact), 0600); /* exactly cap bytes */
	assert_int_equal(kms_secret_read(path, buf, sizeof(buf), &len, &e), PSC_OK);
	assert_int_equal(len, 64);

	static const mode_t bad_modes[] = {0640, 0604, 0644, 0660, 0601, 0610};
	for (size_t i = 0; i < sizeof(bad_modes) / sizeof(bad_modes[0]); i++) {
		put(path, "1234\n", 5, bad_modes[i]);
		memset(buf, 0xee, sizeof(buf));
		psc_err_clear(&e);
		assert_int_equal(kms_secret_read(path, buf, sizeof(buf), &len, &e),
				 PSC_E_KMS_SECRET_PERMS);
		char want[9000];
		snprintf(want, sizeof(want),
			 "secret file %s: mode %04o lets group or others access it; run chmod 600 "
			 "%s (and check who may have read it)",
			 path, (unsigned)bad_modes[i], path);
		assert_string_equal(e.detail, want);
		assert_int_equal(len, 0);
		assert_true(all_zero(buf, sizeof(buf)));
	}

	/* Too large: refused and the part read is wiped. */
	uint8_t big[65];
	memset(big, 's', sizeof(big));
	put(path, big, sizeof(big), 0600);
	memset(buf, 0xee, sizeof(buf));
	assert_int_equal(kms_secret_read(path, buf, sizeof(buf), &len, &e), PSC_E_KMS_SECRET);
	assert_non_null(strstr(e.detail, "larger than 64 bytes"));
	assert_true(all_zero(buf, sizeof(buf)));
	assert_int_equal(len, 0);

	put(path, "\n", 1, 0600);
	assert_int_equal(kms_secret_read(path, buf, sizeof(buf), &len, &e), PSC_E_KMS_SECRET);
	assert_non_null(strstr(e.detail, ": empty"));
	put(path, "", 0, 0600);
	assert_int_equal(kms_secret_read(path, buf, sizeof(buf), &len, &e), PSC_E_KMS_SECRET);

	snprintf(path, sizeof(path), "%s/none", dir);
	assert_int_equal(kms_secret_read(path, buf, sizeof(buf), &len, &e), PSC_E_KMS_SECRET);
	assert_non_null(strstr(e.detail, "No such file or directory"));
	assert_int_equal(kms_secret_read(dir, buf, sizeof(buf), &len, &e), PSC_E_KMS_SECRET);
	assert_non_null(strstr(e.detail, "not a regular file"));
	/* A symlink to a good file is followed (systemd credentials, /run/secrets). */
	snprintf(path, sizeof(path), "%s/pin", dir);
	put(path, "1234\n", 5, 0600);
	char link[4300];
	snprintf(link, sizeof(link), "%s/pin.link", dir);
	assert_int_equal(symlink(path, link), 0);
	assert_int_equal(kms_secret_read(link, buf, sizeof(buf), &len, &e), PSC_OK);
	assert_int_equal(len, 4);
	pt_rm_rf(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_example_loads), cmocka_unit_test(test_defaults_and_paths),
	    cmocka_unit_test(test_rejections),	  cmocka_unit_test(test_file_errors),
	    cmocka_unit_test(test_secret_files),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
