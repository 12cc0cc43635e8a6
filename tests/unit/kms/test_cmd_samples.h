/*
 * test_cmd_samples — deterministic state commands for the kms store/cmd tests
 * and the fuzz seed corpus. Byte fields borrow static storage, so commands can
 * be passed around by value. Ids are derived from small numbers (ks_id).
 */
#ifndef TEST_CMD_SAMPLES_H
#define TEST_CMD_SAMPLES_H

#include <stdint.h>

#include "kms_cmd.h"

/* 16 bytes: n in the last 4 bytes, a fixed tag before, so ids sort by n. */
void ks_id(uint8_t out[16], unsigned n);

kms_cmd ks_peer(unsigned node, uint64_t now_ms);
kms_cmd ks_ban(unsigned node, bool banned, uint64_t now_ms);
/* labels: 0..KMS_LABELS_MAX, generated ("k0"="v0", ...). */
kms_cmd ks_create(unsigned psc, const char *name, unsigned owner, uint32_t refresh_s,
		  uint32_t max_members, unsigned n_labels, uint64_t now_ms);
kms_cmd ks_add(unsigned psc, unsigned node, uint64_t now_ms);
kms_cmd ks_remove(unsigned psc, unsigned node);
/* The wrapped blob depends on (psc, epoch) so queries can be checked. */
kms_cmd ks_epoch(unsigned psc, uint64_t epoch, uint32_t prev_grace_ms, uint64_t now_ms);
kms_cmd ks_ack(unsigned psc, unsigned node, uint64_t epoch);
kms_cmd ks_destroy(unsigned psc, uint64_t now_ms);
kms_cmd ks_rewrap(unsigned psc, uint64_t epoch, const char *kek_id);
kms_cmd ks_floor(unsigned psc, uint64_t epoch);

/* Expected blob of ks_epoch(psc, epoch): KS_WRAPPED_LEN bytes. */
#define KS_WRAPPED_LEN 40
const uint8_t *ks_wrapped(unsigned psc, uint64_t epoch);
#define KS_KEK "kek-1"

/* A command of type t with every field at its maximum size (or count). */
kms_cmd ks_max(kms_cmd_type t);

#endif
