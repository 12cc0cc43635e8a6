/*
 * kms_core — psc-kmsd's lifecycle: open every component from the configuration,
 * reconcile state with the audit log after a restart, run the event loop, shut
 * down cleanly.
 *
 * Owns: startup order (HSM -> identity -> trust -> policy -> audit -> state ->
 * reconciliation -> sockets), the durability batch of DESIGN.md §5 (audit
 * records synced, then the state commit recording the last audit seq, then the
 * sends), and the loop's timers.
 * Never: acknowledge anything before it is durable, or keep running with an
 * audit log it cannot write for key events (those fail; read-only requests go on).
 */
#ifndef KMS_CORE_H
#define KMS_CORE_H

#include <signal.h>

#include "kms_config.h"
#include "psc_rc.h"

typedef struct kmsd kmsd;

/* Opens everything; cfg is borrowed and must outlive the daemon. stop and reload
 * are flags set by signal handlers (SIGTERM/SIGINT, SIGHUP). */
psc_rc kmsd_open(kmsd **out, kms_config *cfg, volatile sig_atomic_t *stop,
		 volatile sig_atomic_t *reload, psc_err *err) PSC_WUR;
/* Runs until *stop; returns the reason it stopped (PSC_OK on a clean stop). */
psc_rc kmsd_run(kmsd *k, psc_err *err) PSC_WUR;
/* Finishes the open batch, writes kms.stop and a final checkpoint, frees. */
void kmsd_close(kmsd **k);

#endif
