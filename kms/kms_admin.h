/*
 * kms_admin — the daemon's local admin socket for psc-kmsctl.
 *
 * A ZeroMQ REP socket bound at cfg->admin_socket (ipc:// only). Access control
 * is the filesystem: the socket file is created 0660 (umask 0117 around the
 * bind, then chmod), so only the service user and its group reach it; put it
 * in a directory only they can enter (systemd RuntimeDirectory=psc-kms, 0750).
 *
 * Protocol (docs/operator.md, "Admin socket and psc-kmsctl"): one request is
 * one frame holding one line of text, words separated by single spaces:
 *   status | psc list | psc show PSC-ID-HEX | psc destroy PSC-ID-HEX | peer list |
 *   peer show NODE-ID-HEX | peer ban NODE-ID-HEX | peer unban NODE-ID-HEX |
 *   policy reload | audit checkpoint | backup /ABSOLUTE/FILE |
 *   rotate master-kek [CHUNK [PAUSE-MS]]
 * One reply frame: a JSON object, {"ok":true, ...} or {"ok":false,"error":"..."}.
 *
 * Threads: the event-loop thread only. Requests are served inside the loop's
 * durability batch: kms_admin_serve() runs before batch_end (a ban applies
 * PEER_BAN, audits peer.ban and evicts the node everywhere), and
 * kms_admin_after_batch() runs after it and sends the reply, so an ok reply to
 * a state change is only sent once it is durable.
 */
#ifndef KMS_ADMIN_H
#define KMS_ADMIN_H

#include <stdint.h>

#include "psc_rc.h"

struct kmsd;
typedef struct kms_admin kms_admin;

/* Binds the admin socket in k->zctx. Fails with a message naming the path. */
psc_rc kms_admin_open(kms_admin **out, struct kmsd *k, psc_err *err) PSC_WUR;
/* In the start-up batch, after kms.start: rekeys every PSC a restore left
 * below its epoch floor, before any peer request is handled. */
void kms_admin_start(kms_admin *a);
/* The socket to poll for ZMQ_POLLIN. */
void *kms_admin_socket(kms_admin *a);
/* Receives and handles one request if one is waiting (never blocks). */
void kms_admin_serve(kms_admin *a);
/* After batch_end: finishes the request (durability check, checkpoint, backup)
 * and replies; finishes a KEK rotation whose blobs are all re-wrapped. */
void kms_admin_after_batch(kms_admin *a);
/* Inside the batch, every loop turn: rekeys PSCs left below a restore's epoch
 * floor (a bounded number per turn) and re-wraps one chunk of a KEK rotation. */
void kms_admin_tick(kms_admin *a);
/* When kms_admin_tick has work next (ms since the epoch), 0 if none: the loop
 * must not sleep past it. */
uint64_t kms_admin_next_ms(const kms_admin *a);
/* Closes the socket (removing its file) and frees. NULL-safe. */
void kms_admin_close(kms_admin **p);

#endif
