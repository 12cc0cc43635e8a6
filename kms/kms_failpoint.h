/*
 * kms_failpoint — named crash points between the KMS's durability steps
 * (DESIGN.md §5), so a test can prove what a SIGKILL at each step leaves behind.
 *
 * Owns: reading PSC_FAILPOINT=<name>[:<n>] from the environment once, counting
 * hits of that one point, and killing the process with SIGKILL at the n-th hit
 * (n defaults to 1). Unarmed, a point costs one flag test after the first
 * call.
 * Never: do anything when PSC_FAILPOINT is unset (production), clean up, flush
 * or log on the way down: the point is a crash, exactly like a power cut for
 * this process. Building with -DPSC_NO_FAILPOINTS compiles every point out.
 *
 * Points (kms_core.c batch_end()):
 *   after_audit_sync    the batch's audit records are fdatasync'ed, the SQLite
 *                       transaction has not committed
 *   after_state_commit  the SQLite transaction committed, nothing was sent yet
 *   mid_send            the first of several queued messages was sent
 */
#ifndef KMS_FAILPOINT_H
#define KMS_FAILPOINT_H

#define KMS_FP_AFTER_AUDIT_SYNC "after_audit_sync"
#define KMS_FP_AFTER_STATE_COMMIT "after_state_commit"
#define KMS_FP_MID_SEND "mid_send"

/* Kills the process with SIGKILL if NAME is the armed point and this is its
 * n-th hit; otherwise returns. */
void kms_failpoint_hit(const char *name);

#ifdef PSC_NO_FAILPOINTS
#define KMS_FAILPOINT(name) ((void)0)
#else
#define KMS_FAILPOINT(name) kms_failpoint_hit(name)
#endif

#endif
