/*
 * p11fault — a fault-injecting PKCS#11 module for tests. Not a mock: every call
 * is forwarded to a real module (SoftHSM by default) unless a fault is active.
 *
 * Environment:
 *   P11FAULT_MODULE  the real module to forward to (default: SoftHSM's path)
 *   P11FAULT_CTL     a control file, re-read whenever it changes (stat per call);
 *                    absent or empty = no faults. One command per line:
 *     fail <C_Function|*> <CKR_NAME|number>   every such call returns that value
 *     invalidate <n>     when n differs from the last value given (initially 0),
 *                        every open session becomes invalid
 *                        (really closed underneath, so the login is lost as after
 *                        a token reset); later calls on it: CKR_SESSION_HANDLE_INVALID
 *     maxsessions <n>    C_GetTokenInfo reports ulMaxSessionCount = n
 *     absent [CKR_NAME]  the token is gone: no token in C_GetSlotList(TRUE),
 *                        C_OpenSession/C_GetTokenInfo/C_Login... return
 *                        CKR_TOKEN_NOT_PRESENT, calls on sessions return the given
 *                        value (default CKR_DEVICE_REMOVED); sessions open when it
 *                        went away stay invalid after it comes back.
 *   Write the file atomically (write a temp file, rename) so a reader never sees
 *   half a command.
 *
 * Global state: this is a PKCS#11 module, whose entry point C_GetFunctionList
 * has no context argument, so the fault state is process-wide (one mutex).
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <p11-kit/pkcs11.h>

#include "hsm_ckr.h" /* the CKR_* name table, compiled in */

#ifndef P11FAULT_DEFAULT_MODULE
#define P11FAULT_DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#endif

#define PF_MAX_RULES 32
#define PF_MAX_SESSIONS 1024

enum pf_kind { PF_GLOBAL, PF_SLOT, PF_SESSION };

struct pf_rule {
	char func[64];
	CK_RV rv;
};

static pthread_mutex_t pf_lock = PTHREAD_MUTEX_INITIALIZER;
static CK_FUNCTION_LIST *pf_real;
static CK_FUNCTION_LIST pf_list;
static void *pf_dl;

static struct {
	struct stat st;
	bool have_st;
	struct pf_rule rules[PF_MAX_RULES];
	int nrules;
	long invalidate;
	bool absent;
	CK_RV absent_rv;
	long max_sessions; /* 0 = report the real value */
} pf;

/* Sessions opened through us. A session killed while another thread is inside
 * a call on it is closed underneath only when that call returns: SoftHSM frees
 * a session's state on C_CloseSession, under the feet of a call in flight. */
static struct {
	CK_SESSION_HANDLE h;
	bool dead;
	bool closed; /* really closed underneath */
	int inflight;
} pf_sess[PF_MAX_SESSIONS];
static int pf_nsess;

/* "CKR_NAME" or a number; false (and a complaint on stderr) if neither, so a
 * typo in a test never turns into a silent "no fault". */
static bool parse_rv(const char *s, CK_RV *out)
{
	for (CK_RV v = 0; v < 0x400; v++) {
		if (strcmp(hsm_ckr_name(v), s) == 0) {
			*out = v;
			return true;
		}
	}
	char *end = NULL;
	unsigned long v = strtoul(s, &end, 0);
	if (end && end != s && *end == '\0' && v != CKR_OK) {
		*out = v;
		return true;
	}
	fprintf(stderr, "p11fault: unknown return value '%s' in %s: line ignored\n", s,
		getenv("P11FAULT_CTL"));
	return false;
}

/* Marks every tracked session dead and really closes the idle ones underneath
 * (the busy ones close when their call returns, pf_done). */
static void kill_sessions_locked(void)
{
	for (int i = 0; i < pf_nsess; i++) {
		pf_sess[i].dead = true;
		if (!pf_sess[i].closed && pf_sess[i].inflight == 0) {
			pf_sess[i].closed = true;
			(void)pf_real->C_CloseSession(pf_sess[i].h);
		}
	}
}

static void reload_locked(void)
{
	const char *path = getenv("P11FAULT_CTL");
	struct stat st;
	if (!path || stat(path, &st) != 0) {
		memset(&st, 0, sizeof(st));
	}
	if (pf.have_st && st.st_ino == pf.st.st_ino && st.st_size == pf.st.st_size &&
	    st.st_mtim.tv_sec == pf.st.st_mtim.tv_sec &&
	    st.st_mtim.tv_nsec == pf.st.st_mtim.tv_nsec)
		return;
	pf.st = st;
	pf.have_st = true;
	pf.nrules = 0;
	bool absent = false;
	CK_RV absent_rv = CKR_DEVICE_REMOVED;
	pf.max_sessions = 0;
	FILE *f = path ? fopen(path, "r") : NULL;
	char line[256];
	while (f && fgets(line, sizeof(line), f)) {
		char a[64] = "", b[64] = "", c[64] = "";
		int n = sscanf(line, "%63s %63s %63s", a, b, c);
		if (n >= 3 && strcmp(a, "fail") == 0 && pf.nrules < PF_MAX_RULES) {
			if (!parse_rv(c, &pf.rules[pf.nrules].rv))
				continue;
			snprintf(pf.rules[pf.nrules].func, sizeof(pf.rules[0].func), "%s", b);
			pf.nrules++;
		} else if (n >= 2 && strcmp(a, "invalidate") == 0) {
			long v = strtol(b, NULL, 0);
			if (v != pf.invalidate)
				kill_sessions_locked();
			pf.invalidate = v;
		} else if (n >= 2 && strcmp(a, "maxsessions") == 0) {
			pf.max_sessions = strtol(b, NULL, 0);
		} else if (n >= 1 && strcmp(a, "absent") == 0) {
			absent = true;
			if (n >= 2 && !parse_rv(b, &absent_rv))
				absent_rv = CKR_DEVICE_REMOVED;
		}
	}
	if (f)
		fclose(f);
	if (absent && !pf.absent)
		kill_sessions_locked();
	pf.absent = absent;
	pf.absent_rv = absent_rv;
}

static int find_locked(CK_SESSION_HANDLE h)
{
	for (int i = 0; i < pf_nsess; i++)
		if (pf_sess[i].h == h)
			return i;
	return -1;
}

static CK_RV pf_check(const char *func, enum pf_kind kind, CK_ULONG id)
{
	pthread_mutex_lock(&pf_lock);
	reload_locked();
	CK_RV rv = CKR_OK;
	for (int i = 0; i < pf.nrules && rv == CKR_OK; i++)
		if (strcmp(pf.rules[i].func, "*") == 0 || strcmp(pf.rules[i].func, func) == 0)
			rv = pf.rules[i].rv;
	if (rv == CKR_OK && pf.absent)
		rv = kind == PF_SESSION ? pf.absent_rv
		     : kind == PF_SLOT	? CKR_TOKEN_NOT_PRESENT
					: CKR_OK;
	if (kind == PF_SESSION) {
		int i = find_locked(id);
		if (rv == CKR_OK && i >= 0 && pf_sess[i].dead)
			rv = CKR_SESSION_HANDLE_INVALID;
		if (rv == CKR_OK && i >= 0)
			pf_sess[i].inflight++; /* forwarded: pf_done() follows */
	}
	pthread_mutex_unlock(&pf_lock);
	return rv;
}

/* After a forwarded call: a session killed meanwhile is closed now. */
static void pf_done(enum pf_kind kind, CK_ULONG id)
{
	if (kind != PF_SESSION)
		return;
	pthread_mutex_lock(&pf_lock);
	int i = find_locked(id);
	if (i >= 0 && --pf_sess[i].inflight == 0 && pf_sess[i].dead && !pf_sess[i].closed) {
		pf_sess[i].closed = true;
		(void)pf_real->C_CloseSession(pf_sess[i].h);
	}
	pthread_mutex_unlock(&pf_lock);
}

#include "p11fault_gen.h"

static CK_RV w_C_Initialize(void *args)
{
	return pf_real->C_Initialize(args);
}

static CK_RV w_C_Finalize(void *reserved)
{
	CK_RV rv = pf_real->C_Finalize(reserved);
	if (rv == CKR_OK) {
		pthread_mutex_lock(&pf_lock);
		pf_nsess = 0;
		pthread_mutex_unlock(&pf_lock);
	}
	return rv;
}

static CK_RV w_C_GetSlotList(unsigned char token_present, CK_SLOT_ID *list, unsigned long *count)
{
	CK_RV f = pf_check("C_GetSlotList", PF_GLOBAL, 0);
	if (f != CKR_OK)
		return f;
	pthread_mutex_lock(&pf_lock);
	bool absent = pf.absent;
	pthread_mutex_unlock(&pf_lock);
	if (absent && token_present) {
		*count = 0;
		return CKR_OK;
	}
	return pf_real->C_GetSlotList(token_present, list, count);
}

static CK_RV w_C_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO *info)
{
	CK_RV f = pf_check("C_GetSlotInfo", PF_GLOBAL, 0);
	if (f != CKR_OK)
		return f;
	CK_RV rv = pf_real->C_GetSlotInfo(slot, info);
	pthread_mutex_lock(&pf_lock);
	if (rv == CKR_OK && pf.absent)
		info->flags &= ~(CK_FLAGS)CKF_TOKEN_PRESENT;
	pthread_mutex_unlock(&pf_lock);
	return rv;
}

static CK_RV w_C_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO *info)
{
	CK_RV f = pf_check("C_GetTokenInfo", PF_SLOT, slot);
	if (f != CKR_OK)
		return f;
	CK_RV rv = pf_real->C_GetTokenInfo(slot, info);
	pthread_mutex_lock(&pf_lock);
	if (rv == CKR_OK && pf.max_sessions > 0)
		info->ulMaxSessionCount = (CK_ULONG)pf.max_sessions;
	pthread_mutex_unlock(&pf_lock);
	return rv;
}

static CK_RV w_C_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, void *app, CK_NOTIFY notify,
			     CK_SESSION_HANDLE *session)
{
	CK_RV f = pf_check("C_OpenSession", PF_SLOT, slot);
	if (f != CKR_OK)
		return f;
	CK_RV rv = pf_real->C_OpenSession(slot, flags, app, notify, session);
	if (rv != CKR_OK)
		return rv;
	pthread_mutex_lock(&pf_lock);
	int i;
	for (i = 0; i < pf_nsess && pf_sess[i].h != *session; i++)
		;
	if (i == pf_nsess && pf_nsess < PF_MAX_SESSIONS)
		pf_nsess++;
	if (i < PF_MAX_SESSIONS) { /* a reused handle number is a live session again */
		pf_sess[i].h = *session;
		pf_sess[i].dead = false;
		pf_sess[i].closed = false;
		pf_sess[i].inflight = 0;
	}
	pthread_mutex_unlock(&pf_lock);
	return rv;
}

static CK_RV w_C_CloseSession(CK_SESSION_HANDLE h)
{
	pthread_mutex_lock(&pf_lock);
	reload_locked();
	int i = find_locked(h);
	bool dead = i >= 0 && pf_sess[i].dead;
	if (dead) {
		if (!pf_sess[i].closed && pf_sess[i].inflight == 0)
			(void)pf_real->C_CloseSession(h);
		if (pf_sess[i].inflight == 0)
			pf_sess[i] = pf_sess[--pf_nsess];
		pthread_mutex_unlock(&pf_lock);
		return CKR_SESSION_HANDLE_INVALID;
	}
	if (i >= 0)
		pf_sess[i] = pf_sess[--pf_nsess];
	pthread_mutex_unlock(&pf_lock);
	CK_RV f = pf_check("C_CloseSession", PF_SESSION, h); /* untracked now: no inflight */
	CK_RV rv = pf_real->C_CloseSession(h);		     /* always free the real session */
	return f != CKR_OK ? f : rv;
}

static CK_RV w_C_CloseAllSessions(CK_SLOT_ID slot)
{
	CK_RV f = pf_check("C_CloseAllSessions", PF_SLOT, slot);
	if (f != CKR_OK)
		return f;
	pthread_mutex_lock(&pf_lock);
	pf_nsess = 0;
	pthread_mutex_unlock(&pf_lock);
	return pf_real->C_CloseAllSessions(slot);
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST **out);
CK_RV C_GetFunctionList(CK_FUNCTION_LIST **out)
{
	if (!out)
		return CKR_ARGUMENTS_BAD;
	pthread_mutex_lock(&pf_lock);
	CK_RV rv = CKR_OK;
	if (!pf_real) {
		const char *path = getenv("P11FAULT_MODULE");
		pf_dl =
		    dlopen(path && *path ? path : P11FAULT_DEFAULT_MODULE, RTLD_NOW | RTLD_LOCAL);
		CK_C_GetFunctionList gfl =
		    pf_dl ? (CK_C_GetFunctionList)dlsym(pf_dl, "C_GetFunctionList") : NULL;
		rv = gfl ? gfl(&pf_real) : CKR_GENERAL_ERROR;
		if (rv == CKR_OK) {
			pf_list.version = pf_real->version;
			pf_fill(&pf_list);
			pf_list.C_Initialize = w_C_Initialize;
			pf_list.C_Finalize = w_C_Finalize;
			pf_list.C_GetFunctionList = C_GetFunctionList;
			pf_list.C_GetSlotList = w_C_GetSlotList;
			pf_list.C_GetSlotInfo = w_C_GetSlotInfo;
			pf_list.C_GetTokenInfo = w_C_GetTokenInfo;
			pf_list.C_OpenSession = w_C_OpenSession;
			pf_list.C_CloseSession = w_C_CloseSession;
			pf_list.C_CloseAllSessions = w_C_CloseAllSessions;
		} else {
			pf_real = NULL;
		}
	}
	pthread_mutex_unlock(&pf_lock);
	if (rv == CKR_OK)
		*out = &pf_list;
	return rv;
}
