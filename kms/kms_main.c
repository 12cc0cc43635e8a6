/*
 * psc-kmsd — the PSC Key Management Server daemon.
 *
 *   psc-kmsd [-c /etc/psc-kms/kms.yaml]        run
 *   psc-kmsd --check-config [-c FILE]          validate the configuration and exit
 *   psc-kmsd --gen-curve-keys DIR              write DIR/curve.key (secret) and DIR/curve.pub
 *
 * Exit status: 0 clean stop, 1 runtime failure, 2 bad configuration or usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <zmq.h>

#include "kms_config.h"
#include "kms_core.h"

static volatile sig_atomic_t stop_flag, reload_flag;

static void on_stop(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static void on_hup(int sig)
{
	(void)sig;
	reload_flag = 1;
}

static const char usage[] =
	"usage: psc-kmsd [-c CONFIG]\n"
	"       psc-kmsd --check-config [-c CONFIG]\n"
	"       psc-kmsd --gen-curve-keys DIR\n"
	"\n"
	"Runs the PSC Key Management Server described by CONFIG (default\n"
	"/etc/psc-kms/kms.yaml). SIGHUP reloads the policy (a bad policy is rejected and\n"
	"the old one stays active); SIGTERM or SIGINT finish the batch in flight, write\n"
	"a final audit checkpoint and stop.\n"
	"\n"
	"--check-config   validate CONFIG and exit (0 valid, 2 invalid)\n"
	"--gen-curve-keys write a CURVE key pair for the peer socket: DIR/curve.key\n"
	"                 (secret, mode 0600) and DIR/curve.pub; peers need curve.pub\n"
	"\n"
	"Exit status: 0 clean stop, 1 runtime failure, 2 configuration or usage error.\n";

static int write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
	if (fd < 0) {
		fprintf(stderr, "psc-kmsd: %s: %s%s\n", path, strerror(errno),
			errno == EEXIST ? " (refusing to overwrite an existing key)" : "");
		return -1;
	}
	size_t len = strlen(text);
	int ok = write(fd, text, len) == (ssize_t)len && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
	close(fd);
	return ok ? 0 : -1;
}

static int gen_curve_keys(const char *dir)
{
	char pub[41], sec[41], p1[4096], p2[4096];
	if (zmq_curve_keypair(pub, sec) != 0) {
		fprintf(stderr, "psc-kmsd: this libzmq has no CURVE support\n");
		return 1;
	}
	snprintf(p1, sizeof(p1), "%s/curve.key", dir);
	snprintf(p2, sizeof(p2), "%s/curve.pub", dir);
	int rc = write_file(p1, sec, 0600) || write_file(p2, pub, 0644);
	OPENSSL_cleanse(sec, sizeof(sec));
	if (rc)
		return 1;
	printf("wrote %s (secret) and %s (give it to peers)\n", p1, p2);
	return 0;
}

int main(int argc, char **argv)
{
	const char *config = "/etc/psc-kms/kms.yaml";
	int check = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			config = argv[++i];
		} else if (strcmp(argv[i], "--check-config") == 0) {
			check = 1;
		} else if (strcmp(argv[i], "--gen-curve-keys") == 0 && i + 1 < argc) {
			return gen_curve_keys(argv[i + 1]);
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			fputs(usage, stdout);
			return 0;
		} else {
			fprintf(stderr, "psc-kmsd: unknown argument '%s'\n%s", argv[i], usage);
			return 2;
		}
	}
	kms_config *cfg = NULL;
	psc_err err;
	psc_err_clear(&err);
	if (kms_config_load(&cfg, config, &err) != PSC_OK) {
		fprintf(stderr, "psc-kmsd: %s\n", psc_err_text(&err));
		return 2;
	}
	if (check) {
		printf("%s: valid\n", config);
		kms_config_free(&cfg);
		return 0;
	}
	struct sigaction sa = {0};
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_hup;
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	kmsd *k = NULL;
	if (kmsd_open(&k, cfg, &stop_flag, &reload_flag, &err) != PSC_OK) {
		fprintf(stderr, "psc-kmsd: cannot start: %s\n", psc_err_text(&err));
		kms_config_free(&cfg);
		return 1;
	}
	psc_rc rc = kmsd_run(k, &err);
	if (rc != PSC_OK)
		fprintf(stderr, "psc-kmsd: stopped: %s\n", psc_err_text(&err));
	kmsd_close(&k);
	kms_config_free(&cfg);
	return rc == PSC_OK ? 0 : 1;
}
