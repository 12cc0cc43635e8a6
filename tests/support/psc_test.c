#include "psc_test.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef PSC_FIXTURES_DIR
#error "PSC_FIXTURES_DIR must be defined by the build"
#endif

const char *pt_ca_dir(void)
{
	const char *d = getenv("PSC_TEST_CA");
	if (!d || !*d) {
		fprintf(stderr, "PSC_TEST_CA is not set: run this test through ctest "
				"(the testca fixture builds the CA)\n");
		exit(2);
	}
	return d;
}

const char *pt_ca_path(const char *file)
{
	static char buf[4096];
	snprintf(buf, sizeof(buf), "%s/%s", pt_ca_dir(), file);
	return buf;
}

uint8_t *pt_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 4096, n = 0;
	uint8_t *buf = malloc(cap);
	while (buf) {
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (n < cap)
			break;
		uint8_t *nb = realloc(buf, cap * 2);
		if (!nb) {
			free(buf);
			buf = NULL;
			break;
		}
		buf = nb;
		cap *= 2;
	}
	fclose(f);
	if (buf && len)
		*len = n;
	return buf;
}

char *pt_read_text(const char *path, size_t *len)
{
	size_t n = 0;
	uint8_t *raw = pt_read_file(path, &n);
	if (!raw)
		return NULL;
	char *s = realloc(raw, n + 1);
	if (!s) {
		free(raw);
		return NULL;
	}
	s[n] = '\0';
	if (len)
		*len = n;
	return s;
}

const char *pt_doc_path(const char *name)
{
	static char p[4096];
	const char *src = getenv("PSC_SOURCE_DIR");
	snprintf(p, sizeof(p), "%s/docs/%s", src && *src ? src : PSC_SOURCE_DIR, name);
	return p;
}

int pt_doc_section_check(const char *path, const char *begin, const char *end,
			 const char *gen)
{
	char *doc = pt_read_text(path, NULL);
	char *b = doc ? strstr(doc, begin) : NULL, *e = b ? strstr(b, end) : NULL;
	int rc = -1;
	if (e) {
		size_t len = (size_t)(e - b) + strlen(end);
		rc = len == strlen(gen) && memcmp(b, gen, len) == 0 ? 0 : 1;
	}
	free(doc);
	return rc;
}

int pt_doc_section_write(const char *path, const char *begin, const char *end,
			 const char *gen)
{
	char *doc = pt_read_text(path, NULL);
	char *b = doc ? strstr(doc, begin) : NULL, *e = b ? strstr(b, end) : NULL;
	if (!e) {
		fprintf(stderr, "%s: %s\n", path, doc ? "no section markers" : "cannot read");
		free(doc);
		return -1;
	}
	FILE *f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "%s: cannot write\n", path);
		free(doc);
		return -1;
	}
	fwrite(doc, 1, (size_t)(b - doc), f);
	fputs(gen, f);
	fputs(e + strlen(end), f);
	int bad = fclose(f) != 0;
	free(doc);
	return bad ? -1 : 0;
}

int pt_ca_nodeid(const char *name, uint8_t out[16])
{
	char file[256];
	snprintf(file, sizeof(file), "%s.nodeid", name);
	size_t n = 0;
	uint8_t *txt = pt_read_file(pt_ca_path(file), &n);
	if (!txt)
		return -1;
	char hex[33] = {0};
	memcpy(hex, txt, n < 32 ? n : 32);
	free(txt);
	return pt_unhex(hex, out, 16) == 16 ? 0 : -1;
}

int pt_tmpdir(char *out, const char *tag)
{
	const char *base = getenv("TMPDIR");
	snprintf(out, 4096, "%s/psc-%s-XXXXXX", base && *base ? base : "/tmp", tag);
	return mkdtemp(out) ? 0 : -1;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void pt_rm_rf(const char *path)
{
	nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int pt_token_new(pt_token **out, const char *label)
{
	pt_token *t = calloc(1, sizeof(*t));
	if (!t)
		return -1;
	snprintf(t->label, sizeof(t->label), "%s", label ? label : "psc");
	snprintf(t->pin, sizeof(t->pin), "1234");
	snprintf(t->so_pin, sizeof(t->so_pin), "5678");
	t->module = PSC_SOFTHSM_MODULE;
	if (pt_tmpdir(t->dir, "token") != 0) {
		free(t);
		return -1;
	}
	char script[4200];
	snprintf(script, sizeof(script), "%s/mktoken.sh", PSC_FIXTURES_DIR);
	char *argv[] = {script, t->dir, t->label, t->pin, t->so_pin, NULL};
	char *txt = NULL;
	int rc = pt_run(argv, &txt, 30000);
	free(txt);
	if (rc != 0) {
		pt_rm_rf(t->dir);
		free(t);
		return -1;
	}
	snprintf(t->conf, sizeof(t->conf), "%s/softhsm2.conf", t->dir);
	setenv("SOFTHSM2_CONF", t->conf, 1);
	*out = t;
	return 0;
}

void pt_token_free(pt_token **tok)
{
	if (!tok || !*tok)
		return;
	pt_rm_rf((*tok)->dir);
	free(*tok);
	*tok = NULL;
}

int pt_free_port(void)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	if (s < 0)
		return -1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t alen = sizeof(a);
	int port = -1;
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(s, (struct sockaddr *)&a, &alen) == 0)
		port = ntohs(a.sin_port);
	close(s);
	return port;
}

int pt_proc_start(pt_proc *p, char *const argv[], char *const env[], const char *log)
{
	memset(p, 0, sizeof(*p));
	snprintf(p->log, sizeof(p->log), "%s", log ? log : "/dev/null");
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		int devnull = open("/dev/null", O_RDONLY);
		if (devnull >= 0) {
			dup2(devnull, 0);
			close(devnull);
		}
		for (size_t i = 0; env && env[i]; i++)
			putenv(env[i]);
		execvp(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	p->pid = pid;
	return 0;
}

static int decode_status(int st)
{
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return -1;
}

int pt_proc_wait(pt_proc *p, int timeout_ms)
{
	if (p->exited)
		return p->status;
	if (p->pid <= 0)
		return -1;
	for (int waited = 0;; waited += 10) {
		int st = 0;
		pid_t r = waitpid(p->pid, &st, WNOHANG);
		if (r == p->pid) {
			p->exited = 1;
			p->status = decode_status(st);
			return p->status;
		}
		if (r < 0)
			return -1;
		if (waited >= timeout_ms)
			return -1;
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

void pt_proc_kill(pt_proc *p, int sig)
{
	if (p->pid > 0 && !p->exited)
		kill(p->pid, sig);
}

int pt_proc_stop(pt_proc *p, int timeout_ms)
{
	pt_proc_kill(p, SIGTERM);
	int rc = pt_proc_wait(p, timeout_ms);
	if (rc == -1 && !p->exited) {
		pt_proc_kill(p, SIGKILL);
		rc = pt_proc_wait(p, 5000);
	}
	return rc;
}

int pt_run(char *const argv[], char **out, int timeout_ms)
{
	char dir[4096], log[4200];
	if (pt_tmpdir(dir, "run") != 0)
		return -1;
	snprintf(log, sizeof(log), "%s/out.log", dir);
	pt_proc p;
	int rc = -1;
	if (pt_proc_start(&p, argv, NULL, log) == 0) {
		rc = pt_proc_wait(&p, timeout_ms);
		if (rc == -1)
			pt_proc_stop(&p, 1000);
	}
	if (out) {
		size_t n = 0;
		uint8_t *txt = pt_read_file(log, &n);
		*out = NULL;
		if (txt) {
			char *s = realloc(txt, n + 1);
			if (s) {
				s[n] = '\0';
				*out = s;
			} else {
				free(txt);
			}
		}
	}
	pt_rm_rf(dir);
	return rc;
}

size_t pt_unhex(const char *hex, uint8_t *out, size_t max)
{
	size_t n = 0;
	int hi = -1;
	for (const char *c = hex; *c && n < max; c++) {
		int v;
		if (*c >= '0' && *c <= '9')
			v = *c - '0';
		else if (*c >= 'a' && *c <= 'f')
			v = *c - 'a' + 10;
		else if (*c >= 'A' && *c <= 'F')
			v = *c - 'A' + 10;
		else
			continue; /* whitespace and separators in doc vectors */
		if (hi < 0) {
			hi = v;
		} else {
			out[n++] = (uint8_t)(hi << 4 | v);
			hi = -1;
		}
	}
	return n;
}

void pt_hex(const uint8_t *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

int pt_kmsd_start(pt_proc *p, const char *config, const char *softhsm_conf, const char *log)
{
	char env_conf[4300], bin[4200];
	snprintf(env_conf, sizeof(env_conf), "SOFTHSM2_CONF=%s", softhsm_conf);
	snprintf(bin, sizeof(bin), "%s/kms/psc-kmsd", PSC_BINARY_DIR);
	char *env[] = {env_conf, NULL};
	char *argv[] = {bin, "-c", (char *)config, NULL};
	size_t before = 0; /* the log is appended to across restarts */
	free(pt_read_file(log, &before));
	if (pt_proc_start(p, argv, env, log) != 0)
		return -1;
	for (int i = 0; i < 1000; i++) {
		size_t n = 0;
		char *txt = (char *)pt_read_file(log, &n);
		int ready = txt && n > before &&
			    memmem(txt + before, n - before, "listening on", 12) != NULL;
		free(txt);
		if (ready)
			return 0;
		if (pt_proc_wait(p, 20) != -1) {
			txt = (char *)pt_read_file(log, &n);
			fprintf(stderr, "psc-kmsd exited:\n%.*s\n", (int)n, txt ? txt : "");
			free(txt);
			return -1;
		}
	}
	return -1;
}
