#include "psc_rc.h"

#include <stdio.h>
#include <string.h>

struct rc_entry {
	psc_rc rc;
	const char *name;
	const char *text;
};

static const struct rc_entry rc_table[] = {
	{PSC_OK, "PSC_OK", "success"},
#define PSC_RC_DEF(name, value, text) {name, #name, text},
#include "psc_rc_proto.def"
#include "psc_rc_hsm.def"
#include "psc_rc_policy.def"
#include "psc_rc_audit.def"
#include "psc_rc_kms.def"
#include "psc_rc_kmsd.def"
#include "psc_rc_peer.def"
#undef PSC_RC_DEF
};

#define RC_COUNT (sizeof(rc_table) / sizeof(rc_table[0]))

static const struct rc_entry *rc_find(psc_rc rc)
{
	for (size_t i = 0; i < RC_COUNT; i++)
		if (rc_table[i].rc == rc)
			return &rc_table[i];
	return NULL;
}

const char *psc_strerror(psc_rc rc)
{
	const struct rc_entry *e = rc_find(rc);
	return e ? e->text : "unknown error code";
}

const char *psc_rc_name(psc_rc rc)
{
	const struct rc_entry *e = rc_find(rc);
	return e ? e->name : NULL;
}

void psc_rc_foreach(void (*fn)(psc_rc rc, const char *name, const char *text, void *arg),
		    void *arg)
{
	for (size_t i = 0; i < RC_COUNT; i++)
		fn(rc_table[i].rc, rc_table[i].name, rc_table[i].text, arg);
}

psc_rc psc_err_vset(psc_err *err, psc_rc rc, const char *fmt, va_list ap)
{
	if (err) {
		err->rc = rc;
		vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
	}
	return rc;
}

psc_rc psc_err_set(psc_err *err, psc_rc rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	psc_err_vset(err, rc, fmt, ap);
	va_end(ap);
	return rc;
}

void psc_err_clear(psc_err *err)
{
	if (err) {
		err->rc = PSC_OK;
		err->detail[0] = '\0';
	}
}

const char *psc_err_text(const psc_err *err)
{
	if (!err)
		return "no error information";
	if (err->detail[0])
		return err->detail;
	return psc_strerror(err->rc);
}
