/*
 * audit_bench — audit log throughput: one fdatasync per record vs group commit
 * (batches of 64), each beside a bare write + fdatasync loop of the very same
 * bytes in the same run and directory (the floor the disk allows).
 *
 * Owns: measuring and printing; with --update-doc it also rewrites its section of
 * docs/benchmarks.md through bench/update-doc.sh. Never passes or fails on time.
 * Bounded: every phase stops after PHASE_SECS seconds or its record count.
 * Usage: audit_bench [--update-doc] [--dir DIR]   (DIR defaults to $TMPDIR or /tmp)
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "aud_log.h"

#define PHASE_SECS 8.0
#define SINGLE_MAX 4000
#define GROUP_MAX 200000
#define BATCH 64

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what, const psc_err *e)
{
	fprintf(stderr, "audit_bench: %s: %s\n", what, e ? psc_err_text(e) : strerror(errno));
	exit(1);
}

typedef struct result {
	const char *name;
	unsigned long records, syncs;
	unsigned long long bytes;
	double secs;
} result;

/* A typical key event: a join by a peer with a certificate and a policy decision. */
static void one_record(aud_log *log, unsigned i)
{
	uint8_t node[16], psc[16], cert[32];
	memset(node, (int)(i & 0xff), sizeof(node));
	memset(psc, 0x5a, sizeof(psc));
	memset(cert, 0xc3, sizeof(cert));
	char req[32];
	snprintf(req, sizeof(req), "req-%u", i);
	aud_actor a = {.node_id = node,
		       .cert_sha256 = cert,
		       .subject = "CN=peer-0042,OU=engineering,O=Example Corp,C=DE",
		       .issuer = "CN=Overlay CA,O=Example Corp"};
	aud_decision d = {.outcome = "permit", .rule = "join-engineering", .policy_rev = "r17"};
	aud_kv kv = {.key = "members", .num = i % 1000};
	aud_event ev = {.type = AUD_EV_PSC_JOIN,
			.request_id = req,
			.actor = &a,
			.psc_id = psc,
			.has_epoch = true,
			.epoch = i + 1,
			.key_id = "epoch-0042",
			.decision = &d,
			.result = "ok",
			.detail = &kv,
			.n_detail = 1};
	psc_err e;
	psc_err_clear(&e);
	if (aud_log_append(log, &ev, NULL, &e) != PSC_OK)
		die("append", &e);
}

static result run_log(const char *dir, EVP_PKEY *key, unsigned batch, unsigned max,
		      const char *name)
{
	aud_log_opts o = {.dir = dir, .kms_id = "bench", .sign_key = key};
	aud_log *log = NULL;
	psc_err e;
	psc_err_clear(&e);
	if (aud_log_open(&log, &o, &e) != PSC_OK)
		die("open", &e);
	result r = {.name = name};
	double t0 = now();
	unsigned i = 0;
	while (i < max && now() - t0 < PHASE_SECS) {
		for (unsigned k = 0; k < batch; k++)
			one_record(log, i++);
		if (aud_log_commit(log, NULL, &e) != PSC_OK)
			die("commit", &e);
		r.syncs++;
	}
	r.secs = now() - t0;
	r.records = i;
	if (aud_log_close(&log, &e) != PSC_OK)
		die("close", &e);
	return r;
}

/* Writes the log's own segment bytes again, `batch` lines per write+fdatasync. */
static result run_bare(const char *dir, unsigned batch, const char *name)
{
	char p[4200], out[4200];
	snprintf(p, sizeof(p), "%s/audit-00000001.jsonl", dir);
	snprintf(out, sizeof(out), "%s/bare.out", dir);
	FILE *f = fopen(p, "rb");
	if (!f)
		die(p, NULL);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	rewind(f);
	char *buf = malloc((size_t)n);
	if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
		die("read segment", NULL);
	fclose(f);
	int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
	if (fd < 0)
		die(out, NULL);
	result r = {.name = name};
	double t0 = now();
	for (long off = 0; off < n;) {
		long end = off;
		for (unsigned k = 0; k < batch && end < n; k++) {
			char *nl = memchr(buf + end, '\n', (size_t)(n - end));
			end = nl ? nl - buf + 1 : n;
			r.records++;
		}
		if (write(fd, buf + off, (size_t)(end - off)) != end - off || fdatasync(fd) != 0)
			die("bare write", NULL);
		r.syncs++;
		off = end;
	}
	r.secs = now() - t0;
	r.bytes = (unsigned long long)n;
	close(fd);
	free(buf);
	unlink(out);
	return r;
}

static unsigned long long seg_bytes(const char *dir)
{
	char p[4200];
	snprintf(p, sizeof(p), "%s/audit-00000001.jsonl", dir);
	FILE *f = fopen(p, "rb");
	if (!f)
		return 0;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fclose(f);
	return n > 0 ? (unsigned long long)n : 0;
}

static void cpu_model(char *out, size_t cap)
{
	snprintf(out, cap, "unknown CPU");
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[512];
	while (f && fgets(line, sizeof(line), f)) {
		if (strncmp(line, "model name", 10) == 0) {
			char *c = strchr(line, ':');
			if (c) {
				c += 2;
				c[strcspn(c, "\n")] = '\0';
				snprintf(out, cap, "%s", c);
			}
			break;
		}
	}
	if (f)
		fclose(f);
}

/* Filesystem type and device of the mount holding path (longest prefix). */
static void fs_of(const char *path, char *out, size_t cap)
{
	FILE *f = fopen("/proc/mounts", "r");
	char dev[256], mnt[1024], type[64], best[1400] = "unknown";
	size_t best_len = 0;
	while (f && fscanf(f, "%255s %1023s %63s %*[^\n]", dev, mnt, type) == 3) {
		size_t l = strlen(mnt);
		if (strncmp(path, mnt, l) == 0 && (path[l] == '/' || path[l] == '\0' || l == 1) &&
		    l >= best_len) {
			best_len = l;
			snprintf(best, sizeof(best), "%s on %s (%s)", type, mnt, dev);
		}
	}
	if (f)
		fclose(f);
	snprintf(out, cap, "%s", best);
}

static void row(FILE *o, const result *r)
{
	double mb = (double)r->bytes / 1e6;
	fprintf(o, "| %-34s | %8lu | %6lu | %6.2f | %10.0f | %7.3f |\n", r->name, r->records,
		r->syncs, r->secs, (double)r->records / r->secs, mb / r->secs);
}

int main(int argc, char **argv)
{
	bool update = false;
	const char *base = getenv("TMPDIR");
	if (!base || !*base)
		base = "/tmp";
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--update-doc") == 0)
			update = true;
		else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
			base = argv[++i];
		else {
			fprintf(stderr, "usage: audit_bench [--update-doc] [--dir DIR]\n");
			return 2;
		}
	}
	char root[4096];
	snprintf(root, sizeof(root), "%s/psc-audit-bench-XXXXXX", base);
	if (!mkdtemp(root))
		die("mkdtemp", NULL);
	char d1[4200], d2[4200];
	snprintf(d1, sizeof(d1), "%s/single", root);
	snprintf(d2, sizeof(d2), "%s/group", root);
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (!key)
		die("keygen", NULL);

	result a = run_log(d1, key, 1, SINGLE_MAX, "audit log, fdatasync per record");
	a.bytes = seg_bytes(d1);
	result ab = run_bare(d1, 1, "bare write+fdatasync, per record");
	result b = run_log(d2, key, BATCH, GROUP_MAX, "audit log, group commit of 64");
	b.bytes = seg_bytes(d2);
	result bb = run_bare(d2, BATCH, "bare write+fdatasync, 64 records");

	char cpu[256], fs[1500], sec[4200];
	cpu_model(cpu, sizeof(cpu));
	fs_of(root, fs, sizeof(fs));
	struct utsname u;
	uname(&u);
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	double ratio = ((double)b.bytes / b.secs) / ((double)bb.bytes / bb.secs);

	snprintf(sec, sizeof(sec), "%s/section.md", root);
	FILE *o = fopen(sec, "w");
	if (!o)
		die(sec, NULL);
	fprintf(o, "## Audit log: fdatasync per record vs group commit (`bench/audit_bench`)\n\n");
	fprintf(o, "Machine: %s, %ld cores, %s; filesystem: %s. Records are typical "
		   "`psc.join` events (%.0f bytes each on average) with signed checkpoints "
		   "every 1000 records. Each bare loop writes the same bytes the log wrote, in "
		   "the same directory, with the same number of fdatasync calls.\n\n",
		cpu, cores, u.machine, fs, (double)b.bytes / (double)b.records);
	fprintf(o, "| mode | records | fsyncs | s | records/s | MB/s |\n");
	fprintf(o, "|---|---:|---:|---:|---:|---:|\n");
	row(o, &a);
	row(o, &ab);
	row(o, &b);
	row(o, &bb);
	fprintf(o, "\nGroup commit reaches %.0f%% of the bare loop's bytes/s (goal: within 20%%, "
		   "i.e. >= 80%%); it is %.1fx the records/s of one fdatasync per record.\n"
		   "Rerun: `build/bench/audit_bench --update-doc`.\n",
		100.0 * ratio, ((double)b.records / b.secs) / ((double)a.records / a.secs));
	fclose(o);

	FILE *in = fopen(sec, "r");
	char line[2048];
	while (in && fgets(line, sizeof(line), in))
		fputs(line, stdout);
	if (in)
		fclose(in);
	int rc = 0;
	if (update) {
		char cmd[9000];
		snprintf(cmd, sizeof(cmd), "'%s/bench/update-doc.sh' audit_bench '%s'", PSC_SOURCE_DIR,
			 sec);
		rc = system(cmd);
		if (rc != 0)
			fprintf(stderr, "audit_bench: update-doc.sh failed (%d)\n", rc);
		else
			printf("\n(section written to docs/benchmarks.md)\n");
	}
	EVP_PKEY_free(key);
	char rm[4200];
	snprintf(rm, sizeof(rm), "rm -rf '%s'", root);
	if (system(rm) != 0)
		fprintf(stderr, "audit_bench: could not remove %s\n", root);
	return rc ? 1 : 0;
}
