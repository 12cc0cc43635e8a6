/* libFuzzer harness for kms_cmd_decode: any bytes either decode or fail with a
 * named error, never crash or read out of bounds. A command that decodes is
 * canonical (re-encodes to the same bytes) and is applied to a small store
 * (then rolled back): apply must accept it or reject it with a kms code,
 * and a rejection must leave the state digest unchanged. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kms_cmd.h"
#include "kms_store.h"
#include "test_cmd_samples.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static kms_store *store;
static char dir[256], path[300];

static void cleanup(void)
{
	kms_store_close(&store);
	unlink(path);
	rmdir(dir);
}

/* A store with a few peers, PSCs, members and epochs for commands to hit. */
static kms_store *fixture(void)
{
	if (store)
		return store;
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, sizeof(dir), "%s/psc-fuzz-kms-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir))
		abort();
	snprintf(path, sizeof(path), "%s/state.db", dir);
	psc_err e;
	if (kms_store_open(&store, path, &e) != PSC_OK || kms_store_begin(store, &e) != PSC_OK)
		abort();
	kms_cmd cmds[] = {ks_peer(1, 10),
			  ks_peer(2, 10),
			  ks_create(1, "one", 1, 60, 3, 2, 20),
			  ks_create(2, "two", 2, 0, 0, 0, 20),
			  ks_add(1, 1, 30),
			  ks_add(1, 2, 30),
			  ks_epoch(1, 1, 0, 40),
			  ks_epoch(1, 2, 1000, 50),
			  ks_destroy(2, 60)};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (kms_store_apply(store, &cmds[i], &e) != PSC_OK)
			abort();
	if (kms_store_commit(store, 1, &e) != PSC_OK)
		abort();
	atexit(cleanup);
	return store;
}

static int is_kms_rejection(psc_rc rc)
{
	return rc <= -406 && rc >= -423 && rc != PSC_E_KMS_TXN && rc != PSC_E_KMS_AUDIT_SEQ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	kms_cmd c;
	psc_err e;
	psc_err_clear(&e);
	if (kms_cmd_decode(data, size, &c, &e) != PSC_OK) {
		if (e.detail[0] == '\0' || c.type != 0)
			__builtin_trap();
		return 0;
	}
	uint8_t *buf = NULL;
	size_t len = 0;
	if (kms_cmd_encode(&c, &buf, &len, &e) != PSC_OK || len != size ||
	    memcmp(buf, data, size) != 0)
		__builtin_trap();
	free(buf);

	kms_store *s = fixture();
	uint8_t before[32], after[32];
	if (kms_store_begin(s, &e) != PSC_OK || kms_store_digest(s, before, &e) != PSC_OK)
		abort();
	psc_rc rc = kms_store_apply(s, &c, &e);
	if (rc != PSC_OK) {
		if (!is_kms_rejection(rc))
			__builtin_trap();
		if (kms_store_digest(s, after, &e) != PSC_OK || memcmp(before, after, 32) != 0)
			__builtin_trap();
	}
	kms_store_rollback(s);
	return 0;
}
