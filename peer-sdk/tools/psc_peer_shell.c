/*
 * psc_peer_shell — `psc-peer shell`: one long-lived session with the KMS (one
 * Initialize) driven by commands read from stdin, a terminal or a pipe.
 *
 * Events are printed as they arrive: new epochs (refresh, join, leave, timer),
 * PSCs gone (destroyed, removed), group messages with their sender's Node-ID,
 * and questions from the KMS (a join the owner must decide, an invitation).
 * A question is answered at the prompt (`allow N` / `deny N`,
 * `accept N` / `decline N`): its callback returns PSC_PEER_DECIDE_LATER and
 * the answer goes out with psc_peer_decide(), so while questions are open the
 * session goes on serving the KMS (refreshes, liveness checks) and running
 * commands. A question not answered a second before the KMS's own timeout is
 * denied/declined by the shell.
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

static const char *ask_what(ask_kind kind)
{
	return kind == ASK_QUERY ? "query" : "invitation";
}

/* The verb (past: the verdict) for yes or no to a question of this kind. */
static const char *ask_word(ask_kind kind, int yes, int past)
{
	static const char *const w[2][2][2] = {{{"decline", "declined"}, {"accept", "accepted"}},
					       {{"deny", "denied"}, {"allow", "allowed"}}};
	return w[kind == ASK_QUERY][yes != 0][past != 0];
}

static void answer(psc_peer *p, opts *o, const char *verb, const char *arg, int n_words);
static void settle_due(psc_peer *p, opts *o, const char *why);

static void shell_status(psc_peer *p, const opts *o)
{
	uint8_t me[PSC_PEER_ID_LEN];
	char h[33];
	psc_peer_node_id(p, me);
	printf("peer %s, data endpoint %s, %zu PSC(s) held, %zu member certificate(s)\n",
	       psc_cli_hex(me, h), o->endpoint ? o->endpoint : "none (group messages off)",
	       psc_peer_psc_count(p), psc_cli_certs_count(o->certs));
	size_t open = 0;
	for (size_t i = 0; i < PSC_PEER_OPEN_DECISIONS; i++)
		open += o->asks[i].decision != 0;
	printf("questions open: %zu\n", open);
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
		answer(p, o, name, n > 1 ? w[1] : NULL, n);
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

int psc_cli_ask(opts *o, ask_kind kind, uint64_t decision_id, uint32_t timeout_ms)
{
	unsigned num = o->n_asked;
	const char *what = ask_what(kind);
	struct shell_ask *slot = NULL;
	for (size_t i = 0; i < PSC_PEER_OPEN_DECISIONS && !slot; i++)
		if (!o->asks[i].decision)
			slot = &o->asks[i];
	if (!slot || !decision_id) {
		printf("%s %u: %s (too many questions open)\n", what, num, ask_word(kind, 0, 1));
		fflush(stdout);
		return 0;
	}
	uint32_t budget =
	    timeout_ms > 2 * ASK_MARGIN_MS ? timeout_ms - ASK_MARGIN_MS : timeout_ms / 2;
	*slot = (struct shell_ask){.num = num, .kind = (int)kind, .decision = decision_id,
				   .until_ms = mono_ms() + budget};
	printf("%s %u: answer '%s %u' or '%s %u' (within %" PRIu32 " s, else %s)\n", what, num,
	       ask_word(kind, 1, 0), num, ask_word(kind, 0, 0), num, budget / 1000,
	       ask_word(kind, 0, 1));
	fflush(stdout);
	return PSC_PEER_DECIDE_LATER;
}

/* Sends the answer to an open question and forgets it; `why` is printed
 * after the verdict when the shell, not the user, decided. */
static void settle(psc_peer *p, struct shell_ask *a, int yes, const char *why)
{
	psc_err err = {0};
	ask_kind kind = (ask_kind)a->kind;
	if (psc_peer_decide(p, a->decision, yes, &err) != PSC_OK)
		printf("%s %u: not answered: %s\n", ask_what(kind), a->num, psc_err_text(&err));
	else if (why)
		printf("%s %u: %s (%s)\n", ask_what(kind), a->num, ask_word(kind, yes, 1), why);
	else
		printf("%s %u: %s\n", ask_what(kind), a->num, ask_word(kind, yes, 1));
	fflush(stdout);
	memset(a, 0, sizeof(*a));
}

/* allow / deny / accept / decline [N]: without N, the only open question of
 * that kind. */
static void answer(psc_peer *p, opts *o, const char *verb, const char *arg, int n_words)
{
	ask_kind kind = (strcmp(verb, "allow") == 0 || strcmp(verb, "deny") == 0) ? ASK_QUERY
										 : ASK_INVITE;
	int yes = strcmp(verb, "allow") == 0 || strcmp(verb, "accept") == 0;
	struct shell_ask *found = NULL;
	size_t open = 0, of_kind = 0;
	unsigned long want = 0;
	if (arg) {
		char *end = NULL;
		want = strtoul(arg, &end, 10);
		if (!end || *end || n_words > 2) {
			fprintf(stderr, "psc-peer: usage: %s N (N: the %s's number)\n", verb,
				ask_what(kind));
			return;
		}
	}
	for (size_t i = 0; i < PSC_PEER_OPEN_DECISIONS; i++) {
		struct shell_ask *a = &o->asks[i];
		if (!a->decision)
			continue;
		open++;
		if (a->kind != (int)kind)
			continue;
		of_kind++;
		if (!arg || a->num == want)
			found = found ? found : a;
	}
	if (!open) {
		fprintf(stderr, "psc-peer: no query or invitation is pending\n");
		return;
	}
	if (!arg && of_kind > 1) {
		printf("%zu %ss are open: say which ('%s N')\n", of_kind, ask_what(kind), verb);
		fflush(stdout);
		return;
	}
	if (!found) {
		if (arg)
			printf("%s %s is not pending\n", ask_what(kind), arg);
		else
			printf("no %s is pending\n", ask_what(kind));
		fflush(stdout);
		return;
	}
	settle(p, found, yes, NULL);
}

/* Questions the user left too long, or all of them at the end (why != NULL). */
static void settle_due(psc_peer *p, opts *o, const char *why)
{
	int64_t now = mono_ms();
	for (size_t i = 0; i < PSC_PEER_OPEN_DECISIONS; i++) {
		struct shell_ask *a = &o->asks[i];
		if (a->decision && (why || now >= a->until_ms))
			settle(p, a, 0, why ? why : "no answer in time");
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
		settle_due(p, o, NULL);
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
	settle_due(p, o, in.eof ? "end of input" : "quitting");
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
