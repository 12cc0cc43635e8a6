#include "kmsfx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

static void value(const char *out, const char *key, char *val, size_t cap)
{
	const char *p = strstr(out, key);
	val[0] = '\0';
	if (p)
		snprintf(val, cap, "%.*s", (int)strcspn(p + strlen(key), "\n"), p + strlen(key));
}

int kmsfx_sh(const char *cmd)
{
	char *argv[] = {"sh", "-c", (char *)cmd, NULL};
	char *out = NULL;
	int rc = pt_run(argv, &out, 60000);
	if (rc != 0)
		fprintf(stderr, "%s: exit %d\n%s\n", cmd, rc, out ? out : "");
	free(out);
	return rc;
}

int kmsfx_install(kmsfx *fx, const char *tag, const char *ca, const char *const *env)
{
	memset(fx, 0, sizeof(*fx));
	if (pt_tmpdir(fx->dir, tag) != 0)
		return -1;
	int port = pt_free_port();
	snprintf(fx->endpoint, sizeof(fx->endpoint), "tcp://127.0.0.1:%d", port);
	char script[4200], bindir[4200], portstr[16], cadir[4200];
	snprintf(script, sizeof(script), "%s/tests/integration/mkkms.sh", PSC_SOURCE_DIR);
	snprintf(fx->kmsdir, sizeof(fx->kmsdir), "%s/kms", fx->dir);
	snprintf(bindir, sizeof(bindir), "%s/kms", PSC_BINARY_DIR);
	snprintf(portstr, sizeof(portstr), "%d", port);
	snprintf(cadir, sizeof(cadir), "%s", ca ? ca : pt_ca_dir());
	char *argv[] = {script, fx->kmsdir, cadir, bindir, portstr, NULL};
	for (size_t i = 0; env && env[i]; i++)
		putenv((char *)env[i]);
	char *out = NULL;
	int rc = pt_run(argv, &out, 60000);
	for (size_t i = 0; env && env[i]; i++) {
		char name[128];
		snprintf(name, sizeof(name), "%.*s", (int)strcspn(env[i], "="), env[i]);
		unsetenv(name);
	}
	if (rc != 0) {
		fprintf(stderr, "mkkms.sh failed (%d):\n%s\n", rc, out ? out : "");
		free(out);
		return -1;
	}
	value(out, "KMS_CONFIG=", fx->config, sizeof(fx->config));
	value(out, "KMS_CERT=", fx->cert, sizeof(fx->cert));
	value(out, "KMS_CURVE_PUB=", fx->curve, sizeof(fx->curve));
	value(out, "SOFTHSM2_CONF=", fx->softhsm, sizeof(fx->softhsm));
	free(out);
	snprintf(fx->log, sizeof(fx->log), "%s/kmsd.log", fx->dir);
	fx->zctx = zmq_ctx_new();
	return fx->zctx ? 0 : -1;
}

int kmsfx_start(kmsfx *fx)
{
	return pt_kmsd_start(&fx->kmsd, fx->config, fx->softhsm, fx->log);
}

int kmsfx_stop(kmsfx *fx)
{
	int rc = pt_proc_stop(&fx->kmsd, 10000);
	fx->kmsd.pid = 0;
	return rc;
}

void kmsfx_cleanup(kmsfx *fx)
{
	if (fx->kmsd.pid && !fx->kmsd.exited)
		(void)kmsfx_stop(fx);
	if (fx->zctx)
		zmq_ctx_term(fx->zctx);
	fx->zctx = NULL;
	if (fx->dir[0] && !getenv("PSC_KEEP"))
		pt_rm_rf(fx->dir);
}

int kmsfx_audit(kmsfx *fx, const char *sub, const char *a1, const char *a2, char **out)
{
	char bin[4200], dir[4300];
	snprintf(bin, sizeof(bin), "%s/audit/psc-audit", PSC_BINARY_DIR);
	snprintf(dir, sizeof(dir), "%s/audit", fx->kmsdir);
	char *argv[] = {bin, (char *)sub, dir, (char *)a1, (char *)a2, NULL};
	if (!a1)
		argv[3] = NULL;
	return pt_run(argv, out, 60000);
}

int kmsfx_audit_verify(kmsfx *fx)
{
	char *out = NULL;
	int rc = kmsfx_audit(fx, "verify", NULL, NULL, &out);
	if (rc != 0)
		fprintf(stderr, "psc-audit verify: exit %d\n%s\n", rc, out ? out : "");
	free(out);
	return rc;
}

int kmsfx_ctl(const kmsfx *fx, char **out, const char *const *words)
{
	char bin[4200];
	snprintf(bin, sizeof(bin), "%s/kms/psc-kmsctl", PSC_BINARY_DIR);
	char *argv[12] = {bin};
	size_t n = 1;
	for (size_t i = 0; words[i] && n < 9; i++)
		argv[n++] = (char *)words[i];
	argv[n++] = "-c";
	argv[n++] = (char *)fx->config;
	argv[n] = NULL;
	setenv("SOFTHSM2_CONF", fx->softhsm, 1);
	*out = NULL;
	int rc = pt_run(argv, out, 120000);
	if (!*out)
		*out = calloc(1, 1);
	return rc;
}

const char *kmsfx_json_find(const char *json, const char *obj, const char *key)
{
	const char *p = json;
	char pat[80];
	if (obj) {
		snprintf(pat, sizeof(pat), "\"%s\":{", obj);
		p = strstr(json, pat);
		if (!p)
			return NULL;
	}
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(p, pat);
	return p ? p + strlen(pat) : NULL;
}
