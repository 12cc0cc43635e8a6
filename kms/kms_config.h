/*
 * kms_config — /etc/psc-kms/kms.yaml: what psc-kmsd listens on, which token,
 * certificates, policy, audit directory and state database it uses, its timers
 * and its flood limits. docs/operator.md "Configuration reference" lists every
 * key with its default.
 *
 * Owns: parsing and validating the file (libyaml event API), defaults, the
 * resolution of relative paths against the config file's directory, and
 * reading secret files (token PIN, CURVE secret key) with permission checks.
 * Never: accept secrets inline, anchors, aliases, tags, duplicate or unknown
 * keys; open the files a config names (the daemon does, and reports failures
 * with kms_config_where()); keep a secret after kms_secret_read returns an error.
 *
 * A loaded kms_config is a read-only value: the struct is public because the
 * daemon reads many fields and accessors would add nothing (STYLE.md: clarity
 * wins). Build a new one and swap it; never edit one in place.
 * Errors: ONE message "file:line:column: what is wrong" (1-based), so the
 * daemon can print it and exit 2.
 */
#ifndef KMS_CONFIG_H
#define KMS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "psc_rc.h"

#define KMS_CONFIG_DEFAULT_PATH "/etc/psc-kms/kms.yaml"
#define KMS_CONFIG_FILE_MAX (256 * 1024) /* bytes in kms.yaml */
#define KMS_CONFIG_PATH_MAX 4096	 /* a resolved path, with its NUL */
#define KMS_CONFIG_STR_MAX 256		 /* ids, endpoints, labels, with the NUL */
#define KMS_SECRET_MAX 4096		 /* bytes in one secret file */

typedef struct kms_config {
	char file[KMS_CONFIG_PATH_MAX];	    /* the file loaded (for messages) */
	char base_dir[KMS_CONFIG_PATH_MAX]; /* relative paths resolve against this */

	char kms_id[KMS_CONFIG_STR_MAX];  /* required; [A-Za-z0-9._-], audit records carry it */
	char overlay[KMS_CONFIG_STR_MAX]; /* required; RELOAD overlay name */
	char listen[KMS_CONFIG_STR_MAX];  /* required; ZeroMQ endpoint peers connect to */
	char admin_socket[KMS_CONFIG_STR_MAX]; /* ipc://path for psc-kmsctl */

	struct {
		bool enabled;				   /* default true */
		char secret_key_file[KMS_CONFIG_PATH_MAX]; /* required when enabled */
		char public_key_file[KMS_CONFIG_PATH_MAX]; /* required when enabled */
	} curve;

	struct {
		char module[KMS_CONFIG_PATH_MAX];     /* required; PKCS#11 .so */
		char token_label[KMS_CONFIG_STR_MAX]; /* required; 1..32 bytes */
		char pin_file[KMS_CONFIG_PATH_MAX];   /* required */
		uint32_t workers;		      /* 1..64, default 2 */
	} hsm;

	struct {
		char certificate[KMS_CONFIG_PATH_MAX]; /* required; PEM, key in the HSM */
	} identity;

	struct {
		char ca_file[KMS_CONFIG_PATH_MAX];  /* required; PEM bundle */
		char crl_file[KMS_CONFIG_PATH_MAX]; /* optional ("" = none; discouraged) */
		uint32_t crl_reload_s;		    /* 0 = never; default 300 */
	} trust;

	char policy_file[KMS_CONFIG_PATH_MAX]; /* required */

	struct {
		char dir[KMS_CONFIG_PATH_MAX];	/* required */
		uint64_t checkpoint_every;	/* records; default 1000 */
		uint32_t checkpoint_interval_s; /* default 300 */
		uint64_t segment_bytes;		/* default 64 MiB */
	} audit;

	char state_db[KMS_CONFIG_PATH_MAX]; /* required */

	struct {
		uint32_t refresh_default_s;   /* default 3600 */
		uint32_t freshness_window_s;  /* default 300 */
		uint32_t query_timeout_ms;    /* default 30000 */
		uint32_t invite_timeout_ms;   /* default 60000 */
		uint32_t liveness_timeout_ms; /* default 10000 */
		uint32_t old_epoch_grace_ms;  /* default 30000 */
	} timers;

	struct {
		uint32_t max_message_bytes;	    /* default 1 MiB */
		uint32_t per_connection_msgs_per_s; /* default 50 */
		uint32_t per_connection_burst;	    /* default 100 */
		uint32_t sndhwm;		    /* default 1000 */
		uint32_t rcvhwm;		    /* default 1000 */
		uint32_t max_pending_per_peer;	    /* default 64 */
	} limits;

	/* Where each key was written (kms_config_where); opaque to callers. */
	struct kms_config_pos *pos;
	size_t n_pos;
} kms_config;

/* Reads, parses and validates path. Relative paths resolve against its directory. */
psc_rc kms_config_load(kms_config **out, const char *path, psc_err *err) PSC_WUR;
/*
 * Same from a buffer: name is used in messages, base_dir for relative paths
 * (must be absolute or "." ).
 */
psc_rc kms_config_parse(kms_config **out, const char *buf, size_t len, const char *name,
			const char *base_dir, psc_err *err) PSC_WUR;
void kms_config_free(kms_config **p);

/*
 * "file:line:col" of a dotted key ("trust.ca_file") as written in the file, for
 * messages about the value (e.g. "kms.yaml:12:12: trust.ca_file: cannot open
 * /etc/psc-kms/ca.pem: No such file or directory"). For a key left at its
 * default: just "file". Written into buf (cap bytes); returns buf.
 */
const char *kms_config_where(const kms_config *c, const char *key, char *buf, size_t cap);

/*
 * Reads a secret file into buf[0..cap): refuses a file that is not a regular
 * file, is group- or world-accessible (mode & 077), empty or larger than cap;
 * strips one trailing "\n" (or "\r\n"). On any error buf is wiped and *len = 0.
 * The caller wipes buf (OPENSSL_cleanse) when done.
 */
psc_rc kms_secret_read(const char *path, uint8_t *buf, size_t cap, size_t *len,
		       psc_err *err) PSC_WUR;

#endif
