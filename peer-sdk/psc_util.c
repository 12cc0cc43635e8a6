/* Small helpers shared by the SDK: IDs, names, clocks, text for people. */
#include <string.h>
#include <time.h>

#include "proto_cert.h"
#include "psc_peer_int.h"

uint64_t psc_sdk_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int64_t psc_sdk_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void psc_peer_id_hex(const uint8_t id[PSC_PEER_ID_LEN], char out[33])
{
	proto_id_hex(id, out);
}

psc_rc psc_peer_id_parse(const char *hex, uint8_t out[PSC_PEER_ID_LEN])
{
	if (!hex || !out || strlen(hex) != 32)
		return PSC_E_BAD_VALUE;
	return proto_id_from_hex(hex, out);
}

const char *psc_peer_reason_name(psc_peer_reason r)
{
	switch (r) {
	case PSC_PEER_REASON_ESTABLISH:
		return "establish";
	case PSC_PEER_REASON_TIMER:
		return "timer";
	case PSC_PEER_REASON_JOIN:
		return "join";
	case PSC_PEER_REASON_LEAVE:
		return "leave";
	case PSC_PEER_REASON_EVICT:
		return "evict";
	case PSC_PEER_REASON_DESTROYED:
		return "destroyed";
	case PSC_PEER_REASON_REMOVED:
		return "removed";
	case PSC_PEER_REASON_RESTORE:
		return "restore";
	case PSC_PEER_REASON_CATCHUP:
		return "catchup";
	case PSC_PEER_REASON_ANSWER:
		return "answer";
	}
	return "unknown";
}

const char *psc_sdk_reason_name(uint16_t reason)
{
	static const char *const names[] = {
	    "",
	    "policy_denied",
	    "not_member",
	    "unknown_psc",
	    "owner_must_destroy",
	    "stale_timestamp",
	    "replayed",
	    "cert_invalid",
	    "cert_revoked",
	    "node_id_mismatch",
	    "audit_unavailable",
	    "hsm_unavailable",
	    "rate_limited",
	    "owner_timeout",
	    "owner_denied",
	    "not_initialized",
	    "bad_signature",
	    "malformed",
	    "too_many_members",
	    "unsupported_suite",
	    "already_member",
	    "name_taken",
	    "banned",
	    "transport_key_mismatch",
	    "busy",
	    "internal",
	    "peer_unreachable",
	};
	if (reason < sizeof(names) / sizeof(names[0]))
		return names[reason];
	return "unknown";
}

void psc_sdk_copy_text(char *dst, size_t cap, const uint8_t *src, size_t len)
{
	if (!dst || cap == 0)
		return;
	size_t n = len < cap - 1 ? len : cap - 1;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = src[i];
		dst[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	dst[n] = '\0';
}

psc_rc psc_sdk_rc_for_error(uint16_t error_code)
{
	switch (error_code) {
	case PSC_RERR_FORBIDDEN:
		return PSC_E_PEER_FORBIDDEN;
	case PSC_RERR_NOT_FOUND:
		return PSC_E_PEER_NOT_FOUND;
	case PSC_RERR_REQUEST_TIMEOUT:
		return PSC_E_PEER_KMS_TIMEOUT;
	case PSC_RERR_IN_PROGRESS:
		return PSC_E_PEER_IN_PROGRESS;
	case PSC_RERR_INVALID_MESSAGE:
		return PSC_E_PEER_REJECTED;
	default:
		return PSC_E_PEER_KMS_ERROR;
	}
}
