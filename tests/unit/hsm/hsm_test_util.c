#include "hsm_test_util.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

int th_open(th_env *e, const char *label, const char *module, unsigned sessions)
{
	memset(e, 0, sizeof(*e));
	if (pt_token_new(&e->tok, label) != 0)
		return -1;
	hsm_config cfg = {
	    .module_path = module ? module : e->tok->module,
	    .token_label = e->tok->label,
	    .pin = e->tok->pin,
	    .sessions = sessions,
	    .retry_ms = 200,
	    .allow_no_kek = true,
	};
	psc_err err = {0};
	if (hsm_ctx_new(&e->ctx, &cfg, &err) != PSC_OK) {
		fprintf(stderr, "hsm_ctx_new: %s\n", psc_err_text(&err));
		return -1;
	}
	char san[128];
	snprintf(san, sizeof(san), "reload://5053430a000000000000000000000001@psc.test/");
	hsm_ceremony_opts o = {.subject = "/O=PSC Test/CN=kms", .uri_san = san};
	if (hsm_ceremony(e->ctx, &o, e->kek_id, &e->csr, &err) != PSC_OK) {
		fprintf(stderr, "hsm_ceremony: %s\n", psc_err_text(&err));
		return -1;
	}
	if (hsm_session_get(e->ctx, 0, &e->s, &err) != PSC_OK)
		return -1;
	return 0;
}

void th_close(th_env *e)
{
	hsm_ctx_free(&e->ctx);
	free(e->csr);
	e->csr = NULL;
	pt_token_free(&e->tok);
}

EVP_PKEY *th_cert_pub(const char *name)
{
	char file[128];
	snprintf(file, sizeof(file), "%s.crt.pem", name);
	FILE *fp = fopen(pt_ca_path(file), "r");
	if (!fp)
		return NULL;
	X509 *x = PEM_read_X509(fp, NULL, NULL, NULL);
	fclose(fp);
	EVP_PKEY *k = x ? X509_get_pubkey(x) : NULL;
	X509_free(x);
	return k;
}

EVP_PKEY *th_priv(const char *name)
{
	char file[128];
	snprintf(file, sizeof(file), "%s.key.pem", name);
	FILE *fp = fopen(pt_ca_path(file), "r");
	if (!fp)
		return NULL;
	EVP_PKEY *k = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
	fclose(fp);
	return k;
}

CK_FUNCTION_LIST *th_p11(const char *module)
{
	/* Same path as the ctx: dlopen returns the already loaded, initialised
	 * module, so this view shares its login. Never dlclosed (test process). */
	void *dl = dlopen(module, RTLD_NOW | RTLD_LOCAL);
	CK_C_GetFunctionList gfl = dl ? (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList") : NULL;
	CK_FUNCTION_LIST *f = NULL;
	if (!gfl || gfl(&f) != CKR_OK)
		return NULL;
	return f;
}

CK_SESSION_HANDLE th_p11_session(CK_FUNCTION_LIST *f, const char *label)
{
	CK_SLOT_ID ids[16];
	CK_ULONG n = 16;
	if (f->C_GetSlotList(CK_TRUE, ids, &n) != CKR_OK)
		return CK_INVALID_HANDLE;
	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO ti;
		if (f->C_GetTokenInfo(ids[i], &ti) != CKR_OK)
			continue;
		size_t l = strlen(label);
		if (memcmp(ti.label, label, l) != 0 || ti.label[l] != ' ')
			continue;
		CK_SESSION_HANDLE h;
		if (f->C_OpenSession(ids[i], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h) ==
		    CKR_OK)
			return h;
	}
	return CK_INVALID_HANDLE;
}

int th_import_secret(th_env *e, const uint8_t secret[32], hsm_key *out)
{
	CK_FUNCTION_LIST *f = th_p11(e->tok->module);
	/* An hsm_key made by the module tells us the session generation to copy. */
	hsm_key probe;
	uint8_t blob[HSM_EPOCH_BLOB_LEN];
	psc_err err;
	if (!f || hsm_epoch_generate(e->s, &probe, blob, &err) != PSC_OK)
		return -1;
	CK_SESSION_HANDLE h = th_p11_session(f, e->tok->label);
	if (h == CK_INVALID_HANDLE)
		return -1;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
	CK_BBOOL t = CK_TRUE, fa = CK_FALSE;
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},  {CKA_KEY_TYPE, &kt, sizeof(kt)},
	    {CKA_VALUE, (void *)secret, 32}, {CKA_TOKEN, &fa, sizeof(fa)},
	    {CKA_SENSITIVE, &t, sizeof(t)},  {CKA_EXTRACTABLE, &t, sizeof(t)},
	    {CKA_PRIVATE, &t, sizeof(t)},
	};
	CK_OBJECT_HANDLE obj;
	/* The object must outlive this helper's session: create it on a session
	 * we leave open (session objects die with the session that made them). */
	CK_RV rv = f->C_CreateObject(h, tmpl, 7, &obj);
	if (rv != CKR_OK)
		return -1;
	*out = probe;
	out->handle = obj;
	return hsm_key_destroy(e->s, &probe, &err) == PSC_OK ? 0 : -1;
}

int th_has(const char *haystack, const char *needle)
{
	return haystack && needle && strstr(haystack, needle) != NULL;
}
