/*
 * psc_rc — the project-wide error type.
 *
 * Owns: the one negative error enum shared by every module, its strings, and a
 * small error-detail carrier (psc_err) for messages that reach a person.
 * Never: allocate, log, or hold secrets (details must not quote key material).
 *
 * Codes are append-only and grouped in blocks, one .def file per module, so a
 * value once shipped never changes meaning:
 *   proto  -1 ..  -99   psc_rc_proto.def
 *   hsm  -100 .. -199   psc_rc_hsm.def
 *   policy -200 .. -299 psc_rc_policy.def
 *   audit -300 .. -399  psc_rc_audit.def
 *   kms  -400 .. -449   psc_rc_kms.def   (state store, commands, config)
 *   kmsd -450 .. -499   psc_rc_kmsd.def  (daemon: authentication, flows)
 *   peer -500 .. -599   psc_rc_peer.def
 */
#ifndef PSC_RC_H
#define PSC_RC_H

#include <stdarg.h>
#include <stddef.h>

#define PSC_WUR __attribute__((warn_unused_result))

typedef enum psc_rc {
	PSC_OK = 0,
#define PSC_RC_DEF(name, value, text) name = (value),
#include "psc_rc_proto.def"
#include "psc_rc_hsm.def"
#include "psc_rc_policy.def"
#include "psc_rc_audit.def"
#include "psc_rc_kms.def"
#include "psc_rc_kmsd.def"
#include "psc_rc_peer.def"
#undef PSC_RC_DEF
} psc_rc;

/* Static string for a code; "unknown error code" for values never defined. */
const char *psc_strerror(psc_rc rc);

/* Symbolic name of a code ("PSC_E_TRUNCATED"); NULL for unknown values. */
const char *psc_rc_name(psc_rc rc);

/* Visits every defined code in declaration order (tests, docs). */
void psc_rc_foreach(void (*fn)(psc_rc rc, const char *name, const char *text, void *arg),
		    void *arg);

/*
 * psc_err: a code plus a human sentence saying what failed, on what input and
 * what to do. Functions that can explain themselves take a nullable psc_err *.
 */
#define PSC_ERR_DETAIL_MAX 512
typedef struct psc_err {
	psc_rc rc;
	char detail[PSC_ERR_DETAIL_MAX];
} psc_err;

/* Sets err (if non-NULL) and returns rc, so callers can `return psc_err_set(...)`. */
psc_rc psc_err_set(psc_err *err, psc_rc rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
psc_rc psc_err_vset(psc_err *err, psc_rc rc, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));
void psc_err_clear(psc_err *err);

/* "detail" if set, else psc_strerror(rc). Never NULL. */
const char *psc_err_text(const psc_err *err);

#endif
