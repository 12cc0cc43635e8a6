/*
 * psc_peer_shell — `psc-peer shell`: one long-lived session with the KMS (one
 * Initialize) driven by commands read from stdin, a terminal or a pipe.
 *
 * Events are printed as they arrive: new epochs (refresh, join, leave, timer),
 * PSCs gone (destroyed, removed), group messages with their sender's Node-ID,
 * and questions from the KMS (a join the owner must decide, an invitation).
 * A question is answered at the prompt (`allow N` / `deny N`,
 * `accept N` / `decline N`). The SDK asks the application for a decision
 * synchronously, inside its callback, so while a question is pending the
 * session reads only the answer (and harmless local commands): nothing else
 * can be sent to the KMS before it is answered, and the KMS's own timeout
 * bounds the wait (no answer = deny/decline).
 *
 * stdin is read with read(2) into our own line buffer, never through stdio,
 * so poll(2) on fd 0 tells the truth.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "psc_peer_cli.h"

#define SHELL_LINE_MAX 4096 /* bytes per command line */
#define SHELL_MAX_ARGS 72   /* words per command line (establish NAME + members) */
#define SHELL_TICK_MS 200   /* longest wait between two looks at the KMS connection */
#define ASK_MARGIN_MS 1000  /* answer this long before the KMS gives up */

typedef struct shell_in {
	char buf[2 * SHELL_LINE_MAX];
	size_t n;
	int eof;
	int discarding; /* inside an over-long line: drop up to its newline */
} shell_in;

static int64_t mono_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Waits up to ms for stdin and appends what it has. */
static void in_fill(shell_in *in, int ms)
{
	if (in->eof)
		return;
	struct pollfd pf = {.fd = 0, .events = POLLIN};
	if (poll(&pf, 1, ms) <= 0)
		return;
	if (in->n == sizeof(in->buf))
		return; /* in_take() makes room first */
	ssize_t r = read(0, in->buf + in->n, sizeof(in->buf) - in->n);
	if (r > 0)
		in->n += (size_t)r;
	else if (r == 0 || (errno != EINTR && errno != EAGAIN))
		in->eof = 1;
}

/* Takes one complete line (without its newline) out of the buffer: 1, or 0 if
 * there is none yet. The last line may lack a newline at the end of input. */
static int in_take(shell_in *in, char *out, size_t cap)
{
	for (;;) {
		char *nl = memchr(in->buf, '\n', in->n);
		size_t len;
		if (nl)
			len = (size_t)(nl - in->buf);
		else if (in->eof && in->n > 0)
			len = in->n;
		else if (in->n == sizeof(in->buf)) {
			/* No newline in a full buffer: the line is too long. */
			if (!in->discarding)
				fprintf(stderr,
					"psc-peer: input line longer than %d bytes "
					"ignored\n",
					SHELL_LINE_MAX);
			in->discarding = 1;
			in->n = 0;
			return 0;
		} else
			return 0;
		size_t used = nl ? len + 1 : len;
		int skip = in->discarding || len >= cap;
		if (!skip) {
			memcpy(out, in->buf, len);
			out[len] = '\0';
			if (len && out[len - 1] == '\r')
				out[len - 1] = '\0';
		} else if (!in->discarding) {
			fprintf(stderr, "psc-peer: input line longer than %zu bytes ignored\n",
				cap - 1);
		}
		in->discarding = 0;
		memmove(in->buf, in->buf + used, in->n - used);
		in->n -= used;
		if (!skip)
			return 1;
	}
}

/* Splits a line into words (spaces and tabs). With rest_at >= 0, word number
 * rest_at takes the rest of the line as it is (e.g. a message's text).
 * Returns the number of words, or -1 if there are too many. */
static int split(char *line, char **w, int max, int rest_at)
{
	int n = 0;
	char *s = line;
	for (;;) {
		while (*s == ' ' || *s == '\t')
			s++;
		if (!*s)
			return n;
		if (n == max)
			return -1;
		w[n] = s;
		if (n == rest_at) {
			size_t l = strlen(s);
			while (l && (s[l - 1] == ' ' || s[l - 1] == '\t'))
				s[--l] = '\0';
			return n + 1;
		}
		n++;
		while (*s && *s != ' ' && *s != '\t')
			s++;
		if (*s)
			*s++ = '\0';
	}
}

static const command *find(const char *name)
{
	for (size_t i = 0; i < psc_cli_n_commands; i++)
		if (psc_cli_commands[i].in_shell && strcmp(psc_cli_commands[i].name, name) == 0)
			return &psc_cli_commands[i];
	return NULL;
}

static void shell_help(void)
{
	printf("commands (IDs are 32 hex digits; a PSC may also be named by its name):\n");
	for (size_t i = 0; i < psc_cli_n_commands; i++) {
		const command *c = &psc_cli_commands[i];
		if (c->in_shell)
			printf("  %s %s\n      %s\n", c->name, c->args, c->help);
	}
	printf("  list\n      PSCs held, their epochs and members.\n"
	       "  status\n      This peer, its data endpoint, group channel counters.\n"
	       "  wait SECONDS\n      Only print events for this long (for scripts).\n"
	       "  allow N | deny N\n      Answer query N (a join the KMS asks us, the owner, "
	       "to decide).\n"
	       "  accept N | decline N\n      Answer invitation N.\n"
	       "  help\n      This text.\n"
	       "  quit\n      End the session (also: end of input, Ctrl-C).\n");
}

static void shell_status(psc_peer *p, const opts *o)
{
	uint8_t me[PSC_PEER_ID_LEN];
	char h[33];
	psc_peer_node_id(p, me);
	printf("peer %s, data endpoint %s, %zu PSC(s) held, %zu member certificate(s)\n",
	       psc_cli_hex(me, h), o->endpoint ? o->endpoint : "none (group messages off)",
	       psc_peer_psc_count(p), psc_cli_certs_count(o->certs));
	if (o->chan) {
		psc_peer_chan_stats st;
		psc_peer_chan_stats_get(o->chan, &st);
		printf("group channel: %" PRIu64 " sent, %" PRIu64 " received, %" PRIu64
		       " dropped (epoch %" PRIu64 ", replay %" PRIu64 ", authentication %" PRIu64
		       ", unknown PSC %" PRIu64 "), %zu member endpoint(s), %zu subscription(s)\n",
		       st.sent, st.delivered, st.dropped, st.dropped_epoch, st.dropped_replay,
		       st.dropped_auth, st.dropped_unknown_psc, st.connections, st.subscriptions);
	}
}

/* Serves the KMS and the group channel for about ms (events are printed by
 * the callbacks). Returns 0, or -1 when the session must end. */
static int serve(psc_peer *p, opts *o, int ms)
{
	int fds_n = 0;
	struct pollfd pf[3];
	pf[fds_n++] = (struct pollfd){.fd = 0, .events = POLLIN};
	int pfd = psc_peer_fd(p);
	if (pfd >= 0)
		pf[fds_n++] = (struct pollfd){.fd = pfd, .events = POLLIN};
	int cfd = o->chan ? psc_peer_chan_fd(o->chan) : -1;
	if (cfd >= 0)
		pf[fds_n++] = (struct pollfd){.fd = cfd, .events = POLLIN};
	int tmo = psc_peer_next_timeout_ms(p);
	if (tmo < 0 || tmo > ms)
		tmo = ms;
	/* The ZeroMQ descriptors are edge-triggered: process after every wake-up,
	 * and at least every SHELL_TICK_MS anyway. stdin is polled only while it
	 * has not ended (an ended pipe is always readable). */
	int r = poll(o->in->eof ? pf + 1 : pf, (nfds_t)(o->in->eof ? fds_n - 1 : fds_n), tmo);
	if (r > 0 && !o->in->eof && (pf[0].revents & (POLLIN | POLLHUP)))
		in_fill(o->in, 0);
	int n = o->chan ? psc_peer_chan_process(o->chan, 0) : psc_peer_process(p, 0);
	if (n < 0) {
		fprintf(stderr, "psc-peer: warning: serving the KMS connection: %s\n",
			psc_strerror((psc_rc)n));
		if (n == PSC_E_NOMEM)
			return -1;
	}
	return 0;
}

static int cmd_wait(psc_peer *p, opts *o, const char *arg)
{
	char *end = NULL;
	long s = arg ? strtol(arg, &end, 10) : -1;
	if (!arg || !end || *end || s < 0 || s > 86400) {
		fprintf(stderr, "psc-peer: wait wants SECONDS (0..86400), e.g. 'wait 5'\n");
		return EX_USAGE;
	}
	int64_t until = mono_ms() + s * 1000;
	/* Input typed meanwhile is kept for after the wait. */
	while (!psc_cli_stop && mono_ms() < until) {
		int64_t left = until - mono_ms();
		if (serve(p, o, left > SHELL_TICK_MS ? SHELL_TICK_MS : (int)left) < 0)
			return EX_FAIL;
	}
	return EX_OK;
}

/* One command line. */
static void run_line(psc_peer *p, opts *o, char *line)
{
	char *w[SHELL_MAX_ARGS];
	char copy[SHELL_LINE_MAX];
	snprintf(copy, sizeof(copy), "%s", line);
	int n = split(copy, w, SHELL_MAX_ARGS, -1);
	if (n == 0 || w[0][0] == '#')
		return;
	const char *name = w[0];
	if (n < 0) {
		fprintf(stderr, "psc-peer: too many words (at most %d)\n", SHELL_MAX_ARGS);
		return;
	}
	if (strcmp(name, "quit") == 0 || strcmp(name, "exit") == 0) {
		o->quit = 1;
		return;
	}
	if (strcmp(name, "help") == 0) {
		shell_help();
		return;
	}
	if (strcmp(name, "list") == 0) {
		psc_cli_print_pscs(p);
		return;
	}
	if (strcmp(name, "status") == 0) {
		shell_status(p, o);
		return;
	}
	if (strcmp(name, "wait") == 0) {
		(void)cmd_wait(p, o, n > 1 ? w[1] : NULL);
		return;
	}
	if (strcmp(name, "allow") == 0 || strcmp(name, "deny") == 0 ||
	    strcmp(name, "accept") == 0 || strcmp(name, "decline") == 0) {
		fprintf(stderr, "psc-peer: no query or invitation is pending\n");
		return;
	}
	const command *c = find(name);
	if (!c) {
		fprintf(stderr, "psc-peer: unknown command '%s'; 'help' lists them\n", name);
		return;
	}
	/* Again, now with the command's own shape: its last argument may take
	 * the rest of the line. */
	snprintf(copy, sizeof(copy), "%s", line);
	n = split(copy, w, SHELL_MAX_ARGS, c->in_shell == 2 ? c->max_args : -1);
	int argc = n - 1;
	if (n < 0 || argc < c->min_args || argc > c->max_args) {
		fprintf(stderr, "psc-peer: usage: %s %s\n", c->name, c->args);
		return;
	}
	for (int i = 0; i < argc; i++) {
		uint8_t tmp[PSC_PEER_ID_LEN];
		if ((c->id_args >> i & 1u) && psc_peer_id_parse(w[1 + i], tmp) != PSC_OK) {
			fprintf(stderr, "psc-peer: %s: '%s' must be 32 hex digits\n", c->name,
				w[1 + i]);
			return;
		}
	}
	(void)c->run(p, o, w + 1, argc);
}

int psc_cli_ask(opts *o, ask_kind kind, uint32_t timeout_ms)
{
	unsigned num = o->n_asked;
	const char *what = kind == ASK_QUERY ? "query" : "invitation";
	const char *yes = kind == ASK_QUERY ? "allow" : "accept";
	const char *no = kind == ASK_QUERY ? "deny" : "decline";
	const char *done_yes = kind == ASK_QUERY ? "allowed" : "accepted";
	const char *done_no = kind == ASK_QUERY ? "denied" : "declined";
	uint32_t budget =
	    timeout_ms > 2 * ASK_MARGIN_MS ? timeout_ms - ASK_MARGIN_MS : timeout_ms / 2;
	printf("%s %u: answer '%s %u' or '%s %u' (within %" PRIu32 " s, else %s)\n", what, num, yes,
	       num, no, num, budget / 1000, done_no);
	fflush(stdout);
	int64_t until = mono_ms() + budget;
	char line[SHELL_LINE_MAX];
	for (;;) {
		while (in_take(o->in, line, sizeof(line))) {
			char *w[3];
			int n = split(line, w, 3, -1);
			if (n == 0 || (n > 0 && w[0][0] == '#'))
				continue;
			int is_yes = n > 0 && strcmp(w[0], yes) == 0;
			int is_no = n > 0 && strcmp(w[0], no) == 0;
			if (is_yes || is_no) {
				char *end = NULL;
				unsigned long k = n > 1 ? strtoul(w[1], &end, 10) : num;
				if (n > 2 || (n > 1 && (!end || *end || k != num))) {
					printf("%s %s is not pending; %s %u is: '%s %u' or '%s "
					       "%u'\n",
					       what, n > 1 ? w[1] : "?", what, num, yes, num, no,
					       num);
					continue;
				}
				printf("%s %u: %s\n", what, num, is_yes ? done_yes : done_no);
				fflush(stdout);
				return is_yes;
			}
			/* n < 0: more than three words, not an answer either */
			if (n > 0 && (strcmp(w[0], "quit") == 0 || strcmp(w[0], "exit") == 0)) {
				o->quit = 1;
				printf("%s %u: %s (quitting)\n", what, num, done_no);
				return 0;
			}
			if (n > 0 && strcmp(w[0], "list") == 0) {
				psc_cli_print_pscs(o->peer);
				continue;
			}
			printf("the KMS is waiting for the answer to %s %u: '%s %u' or '%s %u' "
			       "first\n",
			       what, num, yes, num, no, num);
			fflush(stdout);
		}
		int64_t left = until - mono_ms();
		if (o->in->eof || left <= 0 || psc_cli_stop) {
			printf("%s %u: %s (%s)\n", what, num, done_no,
			       o->in->eof ? "end of input" : "no answer in time");
			fflush(stdout);
			return 0;
		}
		in_fill(o->in, left > SHELL_TICK_MS ? SHELL_TICK_MS : (int)left);
	}
}

static void on_signal(int sig)
{
	(void)sig;
	psc_cli_stop = 1;
}

int psc_cli_shell(psc_peer *p, opts *o)
{
	shell_in in;
	memset(&in, 0, sizeof(in));
	o->in = &in;
	o->shell = 1;
	o->peer = p;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	int rc = EX_OK;
	if (o->endpoint) {
		psc_peer_msg_config mc;
		psc_peer_chan_config cc = psc_cli_chan_config(o, &mc);
		psc_err err = {0};
		if (psc_peer_chan_new(&o->chan, p, &cc, &err) != PSC_OK)
			return psc_cli_fail(&err);
	}
	int tty = isatty(0);
	printf("shell ready%s; 'help' lists the commands\n",
	       o->chan ? "" : " (no --endpoint: group messages off)");
	char line[SHELL_LINE_MAX];
	int prompt = tty; /* a prompt only for people; scripts read clean output */
	while (!o->quit && !psc_cli_stop) {
		if (in_take(&in, line, sizeof(line))) {
			run_line(p, o, line);
			prompt = tty;
			continue;
		}
		if (in.eof)
			break;
		if (prompt) {
			printf("psc> ");
			fflush(stdout);
			prompt = 0;
		}
		if (serve(p, o, SHELL_TICK_MS) < 0) {
			rc = EX_FAIL;
			break;
		}
	}
	if (o->chan) {
		psc_peer_chan_stats st;
		psc_peer_chan_stats_get(o->chan, &st);
		printf("session ends: %" PRIu64 " message(s) sent, %" PRIu64 " received, %" PRIu64
		       " dropped\n",
		       st.sent, st.delivered, st.dropped);
		psc_peer_chan_free(&o->chan);
	} else {
		printf("session ends\n");
	}
	o->in = NULL;
	return rc;
}
