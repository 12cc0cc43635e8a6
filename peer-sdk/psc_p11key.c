#include "psc_p11key.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libp11.h>
#include <openssl/crypto.h>
#include <openssl/err.h>

#define P11KEY_PIN_MAX 256

struct psc_p11key {
	PKCS11_CTX *ctx;
	PKCS11_SLOT *slots;
	unsigned n_slots;
	int loaded;
};

void psc_p11key_free(psc_p11key **pk)
{
	if (!pk || !*pk)
		return;
	psc_p11key *k = *pk;
	if (k->slots)
		PKCS11_release_all_slots(k->ctx, k->slots, k->n_slots);
	if (k->loaded)
		PKCS11_CTX_unload(k->ctx);
	if (k->ctx)
		PKCS11_CTX_free(k->ctx);
	free(k);
	*pk = NULL;
}

/* The PIN: the file's first line, at most P11KEY_PIN_MAX bytes. */
static psc_rc read_pin(const char *path, char pin[P11KEY_PIN_MAX + 1], psc_err *err)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return psc_err_set(err, PSC_E_PEER_IDENTITY, "PIN file %s: %s", path,
				   strerror(errno));
	size_t n = fread(pin, 1, P11KEY_PIN_MAX + 1, f);
	fclose(f);
	if (n > P11KEY_PIN_MAX) {
		OPENSSL_cleanse(pin, P11KEY_PIN_MAX + 1);
		return psc_err_set(err, PSC_E_PEER_IDENTITY, "PIN file %s is longer than %d bytes",
				   path, P11KEY_PIN_MAX);
	}
	pin[n] = '\0';
	pin[strcspn(pin, "\r\n")] = '\0';
	if (!pin[0])
		return psc_err_set(err, PSC_E_PEER_IDENTITY, "PIN file %s is empty", path);
	return PSC_OK;
}

psc_rc psc_p11key_open(psc_p11key **out, const psc_peer_pkcs11 *cfg, EVP_PKEY **key_out,
		       psc_err *err)
{
	*out = NULL;
	*key_out = NULL;
	if (!cfg->module || !cfg->token || !cfg->pin_file || !cfg->key_label)
		return psc_err_set(err, PSC_E_PEER_CONFIG, "key_pkcs11 needs module, token, "
				   "pin_file and key_label");
	psc_p11key *k = calloc(1, sizeof(*k));
	if (!k)
		return psc_err_set(err, PSC_E_NOMEM, "out of memory");
	char pin[P11KEY_PIN_MAX + 1];
	psc_rc rc = read_pin(cfg->pin_file, pin, err);
	if (rc != PSC_OK)
		goto fail;
	rc = PSC_E_PEER_IDENTITY;
	k->ctx = PKCS11_CTX_new();
	if (!k->ctx) {
		psc_err_set(err, PSC_E_NOMEM, "out of memory (libp11)");
		rc = PSC_E_NOMEM;
		goto fail;
	}
	if (PKCS11_CTX_load(k->ctx, cfg->module) != 0) {
		psc_err_set(err, rc, "PKCS#11 module %s cannot be loaded", cfg->module);
		goto fail;
	}
	k->loaded = 1;
	if (PKCS11_enumerate_slots(k->ctx, &k->slots, &k->n_slots) != 0) {
		psc_err_set(err, rc, "PKCS#11 module %s: no slot list", cfg->module);
		goto fail;
	}
	PKCS11_SLOT *slot = NULL;
	for (unsigned i = 0; i < k->n_slots && !slot; i++)
		if (k->slots[i].token && k->slots[i].token->initialized &&
		    strcmp(k->slots[i].token->label, cfg->token) == 0)
			slot = &k->slots[i];
	if (!slot) {
		psc_err_set(err, rc, "PKCS#11 module %s has no token labelled '%s'", cfg->module,
			    cfg->token);
		goto fail;
	}
	if (PKCS11_login(slot, 0, pin) != 0) {
		psc_err_set(err, rc, "token '%s' refused the PIN from %s (PKCS#11 tokens lock "
			    "the PIN after a few wrong tries)", cfg->token, cfg->pin_file);
		goto fail;
	}
	PKCS11_KEY *keys = NULL;
	unsigned n_keys = 0;
	if (PKCS11_enumerate_keys(slot->token, &keys, &n_keys) != 0)
		n_keys = 0;
	PKCS11_KEY *key = NULL;
	for (unsigned i = 0; i < n_keys && !key; i++)
		if (keys[i].isPrivate && keys[i].label && strcmp(keys[i].label, cfg->key_label) == 0)
			key = &keys[i];
	if (!key) {
		psc_err_set(err, rc, "token '%s' holds no private key labelled '%s'", cfg->token,
			    cfg->key_label);
		goto fail;
	}
	*key_out = PKCS11_get_private_key(key);
	if (!*key_out) {
		psc_err_set(err, rc, "token '%s': private key '%s' cannot be used through libp11",
			    cfg->token, cfg->key_label);
		goto fail;
	}
	OPENSSL_cleanse(pin, sizeof(pin));
	ERR_clear_error();
	*out = k;
	return PSC_OK;
fail:
	OPENSSL_cleanse(pin, sizeof(pin));
	ERR_clear_error();
	psc_p11key_free(&k);
	return rc;
}
