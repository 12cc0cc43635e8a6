/*
 * psc-peer — run one PSC flow against a psc-kms KMS from the command line,
 * with libpscpeer. Each run registers (Initialize), performs its command,
 * optionally keeps answering the KMS for --wait seconds, and exits.
 *
 * Commands live in one table (name, arguments, handler) so later ones
 * (interactive mode, group messaging) slot in without touching the others.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "psc/peer.h"
#include "psc_peer_cli.h"

/* The one global: a signal handler can reach nothing else. */
volatile sig_atomic_t psc_cli_stop;

static void on_signal(int sig)
{
	(void)sig;
	psc_cli_stop = 1;
}

const char *psc_cli_hex(const uint8_t id[PSC_PEER_ID_LEN], char buf[33])
{
	psc_peer_id_hex(id, buf);
	return buf;
}

int psc_cli_exit_for(psc_rc rc)
{
	switch (rc) {
	case PSC_OK:
		return EX_OK;
	case PSC_E_PEER_FORBIDDEN:
	case PSC_E_PEER_NOT_FOUND:
	case PSC_E_PEER_KMS_TIMEOUT:
	case PSC_E_PEER_IN_PROGRESS:
	case PSC_E_PEER_REJECTED:
	case PSC_E_PEER_KMS_ERROR:
		return EX_REFUSED;
	case PSC_E_PEER_CONFIG:
	case PSC_E_PEER_IDENTITY:
	case PSC_E_PEER_CURVE:
		return EX_CONFIG;
	case PSC_E_PEER_TIMEOUT:
	case PSC_E_PEER_TRANSPORT:
		return EX_UNREACH;
	default:
		return EX_FAIL;
	}
}

int psc_cli_fail(const psc_err *err)
{
	fprintf(stderr, "psc-peer: %s\n", psc_err_text(err));
	return psc_cli_exit_for(err->rc);
}

static int parse_id(const char *s, const char *what, uint8_t out[PSC_PEER_ID_LEN])
{
	if (psc_peer_id_parse(s, out) != PSC_OK) {
		fprintf(stderr, "psc-peer: %s '%s' must be 32 hex digits\n", what, s);
		return -1;
	}
	return 0;
}

/* --- callbacks: print what happens, decide as told ---------------------- */

static void cb_epoch(void *user, const uint8_t id[PSC_PEER_ID_LEN], uint64_t epoch,
		     psc_peer_reason reason)
{
	const opts *o = user;
	char h[33];
	if (!o->quiet)
		printf("epoch  PSC %s now at epoch %" PRIu64 " (%s)\n", psc_cli_hex(id, h), epoch,
		       psc_peer_reason_name(reason));
}

static void cb_gone(void *user, const uint8_t id[PSC_PEER_ID_LEN], uint64_t epoch,
		    psc_peer_reason reason)
{
	(void)user;
	char h[33];
	printf("gone   PSC %s (%s at epoch %" PRIu64 "); its keys are wiped\n", psc_cli_hex(id, h),
	       psc_peer_reason_name(reason), epoch);
}

/* The name of a PSC held, for messages ("" if unknown). */
static const char *psc_name(const opts *o, const uint8_t id[PSC_PEER_ID_LEN], psc_peer_psc_info *in)
{
	if (o->peer && psc_peer_psc_get(o->peer, id, in) == PSC_OK)
		return in->name;
	return "";
}

static int cb_query(void *user, const psc_peer_query *q)
{
	opts *o = user;
	char h1[33], h2[33];
	if (o->shell) {
		psc_peer_psc_info in;
		printf("query %u: %s (%s) asks to join PSC %s '%s'\n", ++o->n_asked,
		       psc_cli_hex(q->requester, h1), q->requester_subject,
		       psc_cli_hex(q->psc_id, h2), psc_name(o, q->psc_id, &in));
		return psc_cli_ask(o, ASK_QUERY, q->decision_id, q->timeout_ms);
	}
	printf("query  %s (%s) asks to join PSC %s: %s\n", psc_cli_hex(q->requester, h1),
	       q->requester_subject, psc_cli_hex(q->psc_id, h2),
	       o->accept_queries ? "accepted" : "denied");
	return o->accept_queries;
}

static int cb_invite(void *user, const psc_peer_invitation *inv)
{
	opts *o = user;
	char h1[33], h2[33];
	if (o->shell) {
		printf("invitation %u: %s invites us to PSC %s '%s'\n", ++o->n_asked,
		       psc_cli_hex(inv->inviter, h1), psc_cli_hex(inv->psc_id, h2), inv->psc_name);
		return psc_cli_ask(o, ASK_INVITE, inv->decision_id, inv->timeout_ms);
	}
	printf("invite %s invites us to PSC %s '%s': %s\n", psc_cli_hex(inv->inviter, h1),
	       psc_cli_hex(inv->psc_id, h2), inv->psc_name,
	       o->accept_invites ? "accepted" : "declined");
	return o->accept_invites;
}

static void cb_error(void *user, const psc_err *err)
{
	(void)user;
	fprintf(stderr, "psc-peer: warning: %s\n", psc_err_text(err));
}

static void cb_reconnect(void *user)
{
	const opts *o = user;
	if (!o->quiet)
		printf("reconnected to the KMS (registered again, caught up)\n");
}

/* --- printing ------------------------------------------------------------ */

void psc_cli_print_pscs(const psc_peer *p)
{
	size_t n = psc_peer_psc_count(p);
	if (n == 0) {
		printf("no PSCs held\n");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		psc_peer_psc_info in;
		char h1[33], h2[33];
		if (psc_peer_psc_at(p, i, &in) != PSC_OK)
			continue;
		printf("PSC %s '%s'\n  owner   %s%s\n  epoch   %" PRIu64,
		       psc_cli_hex(in.psc_id, h1), in.name, psc_cli_hex(in.owner, h2),
		       in.is_owner ? " (this peer)" : "", in.epoch);
		if (in.previous_epoch)
			printf(" (previous %" PRIu64 " valid for its grace period)",
			       in.previous_epoch);
		printf("\n  sender signatures %s\n  members %zu\n",
		       in.sender_signatures ? "required" : "no", in.n_members);
		for (size_t j = 0; j < in.n_members; j++) {
			psc_peer_member m;
			if (psc_peer_psc_member(p, in.psc_id, j, &m) == PSC_OK)
				printf("    %s %s\n", psc_cli_hex(m.node_id, h1),
				       m.endpoint[0] ? m.endpoint : "-");
		}
	}
}

/* --- commands ------------------------------------------------------------ */

/* A PSC argument: 32 hex digits, or the name of a PSC this peer holds. */
static int psc_arg(const psc_peer *p, const char *s, uint8_t out[PSC_PEER_ID_LEN])
{
	if (psc_peer_id_parse(s, out) == PSC_OK)
		return 0;
	for (size_t i = 0, n = psc_peer_psc_count(p); i < n; i++) {
		psc_peer_psc_info in;
		if (psc_peer_psc_at(p, i, &in) == PSC_OK && strcmp(in.name, s) == 0) {
			memcpy(out, in.psc_id, PSC_PEER_ID_LEN);
			return 0;
		}
	}
	fprintf(stderr,
		"psc-peer: PSC '%s' is neither a PSC ID (32 hex digits) nor the name of a PSC "
		"this peer holds\n",
		s);
	return -1;
}

static psc_peer_establish_params establish_params(opts *o, const char *name)
{
	psc_peer_establish_params ep = {
	    .name = name,
	    .labels = o->labels,
	    .n_labels = o->n_labels,
	    .members = (const uint8_t(*)[PSC_PEER_ID_LEN])o->members,
	    .n_members = o->n_members,
	    .refresh_s = o->refresh_s,
	    .max_members = o->max_members,
	    .sender_signatures = o->sender_sigs,
	};
	return ep;
}

static void print_outcome(const char *what, const psc_peer_outcome *oc)
{
	char h[33];
	if (!oc->requested)
		return;
	if (oc->status == 0)
		printf("%s: ok, PSC %s\n", what, psc_cli_hex(oc->psc_id, h));
	else
		printf("%s: refused (RELOAD error %u)%s%s\n", what, oc->status,
		       oc->info[0] ? ": " : "", oc->info);
}

/* `init` registers like every command (see main); this one may also join
 * and/or establish in the same round trip, and prints what it holds. */
static int cmd_init(psc_peer *p, opts *o, char **argv, int argc)
{
	(void)o;
	(void)argv;
	(void)argc;
	psc_cli_print_pscs(p);
	return EX_OK;
}

static int cmd_establish(psc_peer *p, opts *o, char **argv, int argc)
{
	/* Members named after NAME come on top of the --member options. */
	uint8_t members[2 * MAX_LIST][PSC_PEER_ID_LEN];
	size_t n_members = o->n_members;
	memcpy(members, o->members, n_members * PSC_PEER_ID_LEN);
	for (int i = 1; i < argc; i++) {
		if (n_members == 2 * MAX_LIST) {
			fprintf(stderr, "psc-peer: at most %d initial members\n", 2 * MAX_LIST);
			return EX_USAGE;
		}
		if (parse_id(argv[i], "member Node-ID", members[n_members]))
			return EX_USAGE;
		n_members++;
	}
	psc_peer_establish_params ep = establish_params(o, argv[0]);
	ep.members = (const uint8_t(*)[PSC_PEER_ID_LEN])members;
	ep.n_members = n_members;
	uint8_t id[PSC_PEER_ID_LEN];
	uint64_t epoch = 0;
	size_t pending = 0;
	psc_err err = {0};
	if (psc_peer_establish(p, &ep, id, &epoch, &pending, &err) != PSC_OK)
		return psc_cli_fail(&err);
	char h[33];
	printf("established PSC '%s'\n  id      %s\n  epoch   %" PRIu64 "\n  pending %zu member(s) "
	       "not registered yet\n",
	       argv[0], psc_cli_hex(id, h), epoch, pending);
	return EX_OK;
}

static int cmd_join(psc_peer *p, opts *o, char **argv, int argc)
{
	(void)o;
	(void)argc;
	uint8_t id[PSC_PEER_ID_LEN];
	psc_err err = {0};
	if (psc_peer_id_parse(argv[0], id) != PSC_OK) {
		/* Not an ID: treat it as a name and look it up first. */
		psc_peer_lookup_result lr;
		if (psc_peer_lookup(p, argv[0], &lr, &err) != PSC_OK)
			return psc_cli_fail(&err);
		memcpy(id, lr.psc_id, PSC_PEER_ID_LEN);
	}
	uint64_t epoch = 0;
	if (psc_peer_join(p, id, &epoch, &err) != PSC_OK)
		return psc_cli_fail(&err);
	char h[33];
	printf("joined PSC %s at epoch %" PRIu64 "\n", psc_cli_hex(id, h), epoch);
	return EX_OK;
}

static int cmd_lookup(psc_peer *p, opts *o, char **argv, int argc)
{
	(void)o;
	(void)argc;
	psc_peer_lookup_result lr;
	psc_err err = {0};
	if (psc_peer_lookup(p, argv[0], &lr, &err) != PSC_OK)
		return psc_cli_fail(&err);
	char h1[33], h2[33];
	printf("PSC '%s'\n  id      %s\n  owner   %s\n  members %" PRIu32 "\n", argv[0],
	       psc_cli_hex(lr.psc_id, h1), psc_cli_hex(lr.owner, h2), lr.member_count);
	return EX_OK;
}

static int cmd_invite(psc_peer *p, opts *o, char **argv, int argc)
{
	(void)o;
	(void)argc;
	uint8_t id[PSC_PEER_ID_LEN], who[PSC_PEER_ID_LEN];
	if (psc_arg(p, argv[0], id) || parse_id(argv[1], "Node-ID", who))
		return EX_USAGE;
	psc_peer_invite_outcome oc;
	uint64_t epoch = 0;
	psc_err err = {0};
	if (psc_peer_invite(p, id, who, &oc, &epoch, &err) != PSC_OK)
		return psc_cli_fail(&err);
	static const char *const names[] = {"?", "accepted", "declined", "timed out",
					    "unreachable"};
	printf("invitation %s", oc >= 1 && oc <= 4 ? names[oc] : "?");
	if (oc == PSC_PEER_INVITE_ACCEPTED)
		printf(" (PSC now at epoch %" PRIu64 ")", epoch);
	printf("\n");
	return EX_OK;
}

/* leave and destroy: one PSC, one request, one line saying it is done. */
static int psc_request(psc_peer *p, const char *arg,
		       psc_rc (*fn)(psc_peer *, const uint8_t[PSC_PEER_ID_LEN], psc_err *),
		       const char *done)
{
	uint8_t id[PSC_PEER_ID_LEN];
	psc_err err = {0};
	if (psc_arg(p, arg, id))
		return EX_USAGE;
	if (fn(p, id, &err) != PSC_OK)
		return psc_cli_fail(&err);
	char h[33];
	printf("%s PSC %s\n", done, psc_cli_hex(id, h));
	return EX_OK;
}

static int cmd_leave(psc_peer *p, opts *o, char **argv, int argc)
{
	(void)o;
	(void)argc;
	return psc_request(p, argv[0], psc_peer_leave, "left");
}

static int cmd_report(psc_peer *p, opts *o, char **argv, int argc)
{
	(void)o;
	(void)argc;
	uint8_t id[PSC_PEER_ID_LEN], who[PSC_PEER_ID_LEN];
	if (psc_arg(p, argv[0], id) || parse_id(argv[1], "Node-ID", who))
		return EX_USAGE;
	psc_peer_departure_outcome oc;
	psc_err err = {0};
	if (psc_peer_report_departure(p, id, who, &oc, &err) != PSC_OK)
		return psc_cli_fail(&err);
	printf("%s\n", oc == PSC_PEER_DEPARTURE_ALIVE ? "suspect is alive; nothing changed"
		       : oc == PSC_PEER_DEPARTURE_EVICTED
			   ? "suspect did not answer: evicted, PSC rekeyed"
			   : "unknown outcome");
	return EX_OK;
}

static int cmd_destroy(psc_peer *p, opts *o, char **argv, int argc)
{
	(void)o;
	(void)argc;
	return psc_request(p, argv[0], psc_peer_destroy, "destroyed");
}

static int cmd_catchup(psc_peer *p, opts *o, char **argv, int argc)
{
	(void)o;
	(void)argv;
	(void)argc;
	psc_peer_catchup_result r;
	psc_err err = {0};
	if (psc_peer_catchup(p, &r, &err) != PSC_OK)
		return psc_cli_fail(&err);
	printf("catch-up: %zu updated, %zu current, %zu gone, %zu failed\n", r.updated, r.current,
	       r.gone, r.failed);
	psc_cli_print_pscs(p);
	return r.failed ? EX_FAIL : EX_OK;
}

/* --- group channel: send and listen -------------------------------------- */

/* How long `send` lets members (re)connect to its freshly bound PUB socket
 * before publishing: a PUB drops what is sent before a subscriber is there. */
#define SEND_SETTLE_MS 700

static int pump(psc_peer_chan *c, int ms)
{
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		long left =
		    ms - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
		if (psc_cli_stop || left <= 0)
			return EX_OK;
		int n = psc_peer_chan_process(c, left > 200 ? 200 : (int)left);
		if (n < 0) {
			fprintf(stderr, "psc-peer: %s\n", psc_strerror((psc_rc)n));
			return psc_cli_exit_for((psc_rc)n);
		}
	}
}

void psc_cli_on_message(void *user, const psc_peer_msg_info *info, const uint8_t *data, size_t len)
{
	(void)user;
	char h[33];
	printf("from %s (%s): ", psc_cli_hex(info->sender, h),
	       info->sender_verified ? "verified" : "claimed");
	for (size_t i = 0; i < len; i++) {
		/* Untrusted text for a terminal: control characters replaced. */
		int ch = data[i];
		putchar(ch < 0x20 || ch == 0x7f ? '?' : ch);
	}
	putchar('\n');
	fflush(stdout);
}

psc_peer_chan_config psc_cli_chan_config(opts *o, psc_peer_msg_config *mc)
{
	memset(mc, 0, sizeof(*mc));
	mc->sender_cert = o->certs ? psc_cli_certs_lookup : NULL;
	mc->user = o->certs;
	psc_peer_chan_config cc = {.on_message = psc_cli_on_message, .user = o, .msg = mc};
	return cc;
}

static int send_text(psc_peer_chan *c, const uint8_t id[PSC_PEER_ID_LEN], const char *text)
{
	if (!c) {
		fprintf(stderr, "psc-peer: send needs --endpoint (the data endpoint this peer "
				"registers and publishes on)\n");
		return EX_USAGE;
	}
	size_t len = strlen(text);
	psc_err err = {0};
	if (psc_peer_send(c, id, (const uint8_t *)text, len, &err) != PSC_OK)
		return psc_cli_fail(&err);
	psc_peer_chan_stats st;
	psc_peer_chan_stats_get(c, &st);
	char h[33];
	printf("sent %zu byte(s) to PSC %s (%zu member endpoint(s) known)\n", len,
	       psc_cli_hex(id, h), st.connections);
	return EX_OK;
}

static int cmd_send(psc_peer *p, opts *o, char **argv, int argc)
{
	(void)o;
	(void)argc;
	uint8_t id[PSC_PEER_ID_LEN];
	if (psc_arg(p, argv[0], id))
		return EX_USAGE;
	psc_err err = {0};
	if (o->shell)
		return send_text(o->chan, id, argv[1]);
	psc_peer_msg_config mc;
	psc_peer_chan_config cc = psc_cli_chan_config(o, &mc);
	cc.on_message = NULL;
	psc_peer_chan *c = NULL;
	if (psc_peer_chan_new(&c, p, &cc, &err) != PSC_OK)
		return psc_cli_fail(&err);
	int rc = pump(c, SEND_SETTLE_MS);
	if (rc == EX_OK)
		rc = send_text(c, id, argv[1]);
	psc_peer_chan_free(&c); /* lingers until the frame left */
	return rc;
}

static int cmd_listen(psc_peer *p, opts *o, char **argv, int argc)
{
	(void)argv;
	(void)argc;
	psc_peer_msg_config mc;
	psc_peer_chan_config cc = psc_cli_chan_config(o, &mc);
	psc_peer_chan *c = NULL;
	psc_err err = {0};
	if (psc_peer_chan_new(&c, p, &cc, &err) != PSC_OK)
		return psc_cli_fail(&err);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if (!o->quiet) {
		printf("listening%s\n", o->wait_s ? "" : " (Ctrl-C stops)");
		fflush(stdout);
	}
	int rc = pump(c, o->wait_s ? o->wait_s * 1000 : 0x7fffffff);
	o->wait_s = 0; /* --wait was the listening time */
	psc_peer_chan_stats st;
	psc_peer_chan_stats_get(c, &st);
	if (!o->quiet)
		printf("received %" PRIu64 " message(s), dropped %" PRIu64 "\n", st.delivered,
		       st.dropped);
	psc_peer_chan_free(&c);
	return rc;
}

static int cmd_shell(psc_peer *p, opts *o, char **argv, int argc)
{
	(void)argv;
	(void)argc;
	return psc_cli_shell(p, o);
}

/* in_shell: 1 = also a shell command, 2 = and its last argument takes the
 * rest of the line there (a message's text need not be quoted). */
const command psc_cli_commands[] = {
    {"init", "", 0, 0, 0, cmd_init,
     "Register with the KMS (optionally --join ID and/or --establish NAME in the\n"
     "        same round trip) and list the PSCs held.",
     0},
    {"shell", "", 0, 0, 0, cmd_shell,
     "One session: read commands from stdin (a terminal or a pipe), print events\n"
     "        as they arrive (epochs, PSCs gone, group messages with their sender,\n"
     "        queries and invitations) and answer questions from the KMS at the\n"
     "        prompt ('allow N'/'deny N', 'accept N'/'decline N'). Type 'help' in it.",
     0},
    {"establish", "NAME [MEMBER-NODE-ID...]", 1, MAX_LIST + 1, 0, cmd_establish,
     "Create a PSC owned by this peer (initial members also from --member;\n"
     "        --label, --refresh, --max-members, --sender-signatures).",
     1},
    {"join", "PSC-ID|NAME", 1, 1, 0, cmd_join,
     "Join a PSC (a NAME is looked up first); the KMS may ask its owner.", 1},
    {"lookup", "NAME", 1, 1, 0, cmd_lookup, "PSC ID, owner and member count of a PSC by name.", 1},
    {"invite", "PSC NODE-ID", 2, 2, 2, cmd_invite,
     "Owner: invite a registered peer; prints its decision.", 1},
    {"leave", "PSC", 1, 1, 0, cmd_leave, "Leave a PSC (an owner destroys instead).", 1},
    {"report", "PSC NODE-ID", 2, 2, 2, cmd_report,
     "Report a member as departed; the KMS checks its liveness.", 1},
    {"destroy", "PSC", 1, 1, 0, cmd_destroy, "Owner: destroy a PSC.", 1},
    {"catchup", "", 0, 0, 0, cmd_catchup, "Fetch the current epoch of every PSC held.", 1},
    {"send", "PSC TEXT", 2, 2, 0, cmd_send,
     "Seal TEXT for the members of a PSC and publish it on the group channel\n"
     "        (needs --endpoint: the data endpoint this peer registered).",
     2},
    {"listen", "", 0, 0, 0, cmd_listen,
     "Print group messages of every PSC held, as \"from NODE-ID (claimed|verified):\n"
     "        TEXT\", for --wait SECONDS (default: until Ctrl-C; needs --endpoint).",
     0},
};
const size_t psc_cli_n_commands = sizeof(psc_cli_commands) / sizeof(psc_cli_commands[0]);

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "NAME\n"
	    "    psc-peer - run PSC (RELOAD Public Security Channel) flows against psc-kms\n\n"
	    "SYNOPSIS\n"
	    "    psc-peer COMMAND [ARGS] --kms tcp://HOST:PORT --kms-cert PEM [--kms-curve KEY]\n"
	    "             --cert PEM --key PEM --overlay NAME [OPTIONS]\n\n"
	    "DESCRIPTION\n"
	    "    Registers this peer with the KMS (Initialize), runs COMMAND, and exits.\n"
	    "    Every KMS message must be signed by the --kms-cert key; Refreshes,\n"
	    "    Queries, Invites and Liveness checks that arrive meanwhile are handled.\n\n"
	    "COMMANDS\n");
	for (size_t i = 0; i < psc_cli_n_commands; i++)
		fprintf(f, "    %s %s\n        %s\n", psc_cli_commands[i].name,
			psc_cli_commands[i].args, psc_cli_commands[i].help);
	fprintf(
	    f,
	    "    (PSC: a PSC ID, 32 hex digits, or the name of a PSC this peer holds)\n"
	    "\nCONNECTION AND IDENTITY\n"
	    "    --kms ENDPOINT      KMS ROUTER endpoint, e.g. tcp://kms.example:7400\n"
	    "    --kms-cert PEM      KMS certificate; every KMS message must verify with it\n"
	    "    --kms-curve KEY     KMS CURVE public key: 40 Z85 characters or a file holding\n"
	    "                        them. Without it the connection is plain TCP (tests only).\n"
	    "    --cert PEM          this peer's certificate (binds its Node-ID to --overlay)\n"
	    "    --key PEM           this peer's private key (EC P-256 or RSA, unencrypted)\n"
	    "    --key-pkcs11 module=PATH,token=LABEL,key=LABEL,pin-file=PATH\n"
	    "                        the key on a PKCS#11 token instead (docs/sdk.md 4.1)\n"
	    "    --overlay NAME      overlay name\n"
	    "    --endpoint URL      data endpoint advertised to other members\n"
	    "    --timeout MS        per-request timeout (default %d)\n"
	    "    --decision-timeout MS  join, invite and report, which wait for another\n"
	    "                        peer's decision or liveness (default %d)\n\n"
	    "COMMAND OPTIONS\n"
	    "    --join PSC-ID       init: join this PSC in the same round trip\n"
	    "    --establish NAME    init: establish this PSC in the same round trip\n"
	    "    --label KEY=VALUE   establish: access-control label (repeatable, <= %d)\n"
	    "    --member NODE-ID    establish: initial member (repeatable, <= %d here)\n"
	    "    --refresh SECONDS   establish: requested refresh interval (0 = policy)\n"
	    "    --max-members N     establish: requested member cap (0 = policy)\n"
	    "    --sender-signatures establish: group messages must be signed by senders\n\n"
	    "GROUP MESSAGES\n"
	    "    --member-cert PATH  certificates of other members (a PEM file with one or\n"
	    "                        more, or a directory of *.pem/*.crt files; repeatable),\n"
	    "                        to verify messages of PSCs with sender signatures.\n"
	    "                        The KMS does not distribute member certificates:\n"
	    "                        without one, such a member's messages are dropped.\n"
	    "    --member-ca PEM     each --member-cert must chain to this CA bundle and be\n"
	    "                        valid now (revocation is not checked)\n\n"
	    "AFTER THE COMMAND\n"
	    "    --wait SECONDS      keep answering the KMS (Refresh, Query, Invite,\n"
	    "                        Liveness) for this long; Ctrl-C stops\n"
	    "    --accept-queries    as owner, accept join requests the KMS asks about\n"
	    "                        (default: deny)\n"
	    "    --accept-invites    accept invitations (default: decline)\n"
	    "    -q, --quiet         print only results and problems\n"
	    "    -h, --help          this text\n\n"
	    "EXIT STATUS\n"
	    "    0  done (for invite and report the outcome is printed)\n"
	    "    1  the KMS refused the request (its reason is printed)\n"
	    "    2  bad command line\n"
	    "    3  certificate, key, KMS certificate or CURVE key unusable\n"
	    "    4  the KMS did not answer in time, or a transport error\n"
	    "    5  any other failure (malformed answer, key material that does not unwrap)\n\n"
	    "EXAMPLE\n"
	    "    psc-peer establish ops-room --label team=ops --kms tcp://127.0.0.1:7400 \\\n"
	    "      --kms-cert kms.crt.pem --kms-curve kms.curve.pub --cert peer1.crt.pem \\\n"
	    "      --key peer1.key.pem --overlay psc.example\n",
	    PSC_PEER_DEFAULT_REQUEST_TIMEOUT_MS, PSC_PEER_DEFAULT_DECISION_TIMEOUT_MS, 32,
	    MAX_LIST);
}

static int parse_uint(const char *s, const char *what, unsigned long max, unsigned long *out)
{
	char *end = NULL;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || !end || *end || s[0] == '-' || s[0] == '\0' || v > max) {
		fprintf(stderr, "psc-peer: %s '%s' must be a number 0..%lu\n", what, s, max);
		return -1;
	}
	*out = v;
	return 0;
}

enum {
	O_KMS = 256,
	O_KMS_CERT,
	O_KMS_CURVE,
	O_CERT,
	O_KEY,
	O_OVERLAY,
	O_ENDPOINT,
	O_TIMEOUT,
	O_WAIT,
	O_ACCEPT_Q,
	O_ACCEPT_I,
	O_JOIN,
	O_ESTABLISH,
	O_LABEL,
	O_MEMBER,
	O_REFRESH,
	O_MAX_MEMBERS,
	O_SENDER_SIGS,
	O_DECISION_TIMEOUT,
	O_MEMBER_CERT,
	O_MEMBER_CA,
	O_KEY_PKCS11,
};

static const struct option long_opts[] = {
    {"kms", required_argument, NULL, O_KMS},
    {"kms-cert", required_argument, NULL, O_KMS_CERT},
    {"kms-curve", required_argument, NULL, O_KMS_CURVE},
    {"cert", required_argument, NULL, O_CERT},
    {"key", required_argument, NULL, O_KEY},
    {"key-pkcs11", required_argument, NULL, O_KEY_PKCS11},
    {"overlay", required_argument, NULL, O_OVERLAY},
    {"endpoint", required_argument, NULL, O_ENDPOINT},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {"decision-timeout", required_argument, NULL, O_DECISION_TIMEOUT},
    {"wait", required_argument, NULL, O_WAIT},
    {"accept-queries", no_argument, NULL, O_ACCEPT_Q},
    {"accept-invites", no_argument, NULL, O_ACCEPT_I},
    {"join", required_argument, NULL, O_JOIN},
    {"establish", required_argument, NULL, O_ESTABLISH},
    {"label", required_argument, NULL, O_LABEL},
    {"member", required_argument, NULL, O_MEMBER},
    {"refresh", required_argument, NULL, O_REFRESH},
    {"max-members", required_argument, NULL, O_MAX_MEMBERS},
    {"sender-signatures", no_argument, NULL, O_SENDER_SIGS},
    {"member-cert", required_argument, NULL, O_MEMBER_CERT},
    {"member-ca", required_argument, NULL, O_MEMBER_CA},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* --key-pkcs11 module=PATH,token=LABEL,key=LABEL,pin-file=PATH */
static int parse_pkcs11(const char *arg, opts *o)
{
	if (strlen(arg) >= sizeof(o->key_pkcs11_spec)) {
		fprintf(stderr, "psc-peer: --key-pkcs11 is longer than %zu bytes\n",
			sizeof(o->key_pkcs11_spec) - 1);
		return -1;
	}
	snprintf(o->key_pkcs11_spec, sizeof(o->key_pkcs11_spec), "%s", arg);
	psc_peer_pkcs11 *k = &o->key_pkcs11;
	memset(k, 0, sizeof(*k));
	char *save = NULL;
	for (char *f = strtok_r(o->key_pkcs11_spec, ",", &save); f; f = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(f, '=');
		const char **slot = NULL;
		if (eq) {
			*eq = '\0';
			slot = strcmp(f, "module") == 0	  ? &k->module
			       : strcmp(f, "token") == 0  ? &k->token
			       : strcmp(f, "key") == 0	  ? &k->key_label
			       : strcmp(f, "pin-file") == 0 ? &k->pin_file
							  : NULL;
		}
		if (!slot || !eq[1]) {
			fprintf(stderr, "psc-peer: --key-pkcs11: '%s' is not one of module=PATH, "
					"token=LABEL, key=LABEL, pin-file=PATH\n",
				f);
			return -1;
		}
		*slot = eq + 1;
	}
	const char *missing = !k->module ? "module" : !k->token ? "token" : !k->key_label ? "key"
			      : !k->pin_file ? "pin-file" : NULL;
	if (missing) {
		fprintf(stderr, "psc-peer: --key-pkcs11 needs %s=...\n", missing);
		return -1;
	}
	return 0;
}

/* Parses options; returns -1 on a usage error, 1 for --help, 0 otherwise. */
static int parse_opts(int argc, char **argv, opts *o)
{
	int c;
	unsigned long v;
	while ((c = getopt_long(argc, argv, "qh", long_opts, NULL)) != -1) {
		switch (c) {
		case O_KMS:
			o->kms = optarg;
			break;
		case O_KMS_CERT:
			o->kms_cert = optarg;
			break;
		case O_KMS_CURVE:
			o->kms_curve = optarg;
			break;
		case O_CERT:
			o->cert = optarg;
			break;
		case O_KEY:
			o->key = optarg;
			break;
		case O_KEY_PKCS11:
			if (parse_pkcs11(optarg, o))
				return -1;
			break;
		case O_OVERLAY:
			o->overlay = optarg;
			break;
		case O_ENDPOINT:
			o->endpoint = optarg;
			break;
		case O_TIMEOUT:
			if (parse_uint(optarg, "--timeout", 3600000, &v))
				return -1;
			o->timeout_ms = (int)v;
			break;
		case O_DECISION_TIMEOUT:
			if (parse_uint(optarg, "--decision-timeout", 3600000, &v))
				return -1;
			o->decision_timeout_ms = (int)v;
			break;
		case O_WAIT:
			if (parse_uint(optarg, "--wait", 86400 * 365, &v))
				return -1;
			o->wait_s = (int)v;
			break;
		case O_ACCEPT_Q:
			o->accept_queries = 1;
			break;
		case O_ACCEPT_I:
			o->accept_invites = 1;
			break;
		case O_JOIN:
			o->join = optarg;
			break;
		case O_ESTABLISH:
			o->establish = optarg;
			break;
		case O_LABEL: {
			char *eq = strchr(optarg, '=');
			if (!eq || eq == optarg || o->n_labels >= MAX_LIST) {
				fprintf(stderr, "psc-peer: --label wants KEY=VALUE (at most %d)\n",
					MAX_LIST);
				return -1;
			}
			*eq = '\0';
			o->labels[o->n_labels].key = optarg;
			o->labels[o->n_labels].value = eq + 1;
			o->n_labels++;
			break;
		}
		case O_MEMBER:
			if (o->n_members >= MAX_LIST) {
				fprintf(stderr, "psc-peer: at most %d --member options\n",
					MAX_LIST);
				return -1;
			}
			if (parse_id(optarg, "--member Node-ID", o->members[o->n_members]))
				return -1;
			o->n_members++;
			break;
		case O_REFRESH:
			if (parse_uint(optarg, "--refresh", UINT32_MAX, &v))
				return -1;
			o->refresh_s = (uint32_t)v;
			break;
		case O_MAX_MEMBERS:
			if (parse_uint(optarg, "--max-members", UINT32_MAX, &v))
				return -1;
			o->max_members = (uint32_t)v;
			break;
		case O_SENDER_SIGS:
			o->sender_sigs = 1;
			break;
		case O_MEMBER_CERT:
			if (o->n_member_cert_paths >= MAX_CERT_PATHS) {
				fprintf(stderr,
					"psc-peer: at most %d --member-cert options (a "
					"directory holds any number)\n",
					MAX_CERT_PATHS);
				return -1;
			}
			o->member_cert_paths[o->n_member_cert_paths++] = optarg;
			break;
		case O_MEMBER_CA:
			o->member_ca = optarg;
			break;
		case 'q':
			o->quiet = 1;
			break;
		case 'h':
			return 1;
		default:
			return -1;
		}
	}
	return 0;
}

static int wait_events(psc_peer *p, int seconds)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		long left = (long)seconds * 1000 -
			    ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
		if (psc_cli_stop || left <= 0)
			return EX_OK;
		int n = psc_peer_process(p, left > 500 ? 500 : (int)left);
		if (n < 0) {
			fprintf(stderr, "psc-peer: %s\n", psc_strerror((psc_rc)n));
			return psc_cli_exit_for((psc_rc)n);
		}
	}
}

int main(int argc, char **argv)
{
	/* Line by line even into a pipe: events (epochs, queries, messages) must
	 * show when they happen, in order with what a script sends. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	opts o;
	memset(&o, 0, sizeof(o));
	int r = parse_opts(argc, argv, &o);
	if (r == 1) {
		usage(stdout);
		return EX_OK;
	}
	if (r < 0 || optind >= argc) {
		if (r == 0)
			fprintf(stderr, "psc-peer: no command given\n");
		fprintf(stderr, "Try 'psc-peer --help'.\n");
		return EX_USAGE;
	}
	const char *name = argv[optind];
	const command *cmd = NULL;
	for (size_t i = 0; i < psc_cli_n_commands; i++)
		if (strcmp(psc_cli_commands[i].name, name) == 0)
			cmd = &psc_cli_commands[i];
	int nargs = argc - optind - 1;
	if (!cmd) {
		fprintf(stderr, "psc-peer: unknown command '%s'. Try 'psc-peer --help'.\n", name);
		return EX_USAGE;
	}
	if (nargs < cmd->min_args || nargs > cmd->max_args) {
		fprintf(stderr, "psc-peer: usage: psc-peer %s %s [OPTIONS]\n", cmd->name,
			cmd->args);
		return EX_USAGE;
	}
	if ((o.join || o.establish) && strcmp(cmd->name, "init") != 0 &&
	    strcmp(cmd->name, "shell") != 0) {
		fprintf(stderr, "psc-peer: --join and --establish belong to 'init' and 'shell'\n");
		return EX_USAGE;
	}
	if (o.member_ca && o.n_member_cert_paths == 0) {
		fprintf(stderr, "psc-peer: --member-ca checks --member-cert certificates; none "
				"given\n");
		return EX_USAGE;
	}
	const char *missing = !o.kms	    ? "--kms"
			      : !o.kms_cert ? "--kms-cert"
			      : !o.cert	    ? "--cert"
			      : !o.key && !o.key_pkcs11.module ? "--key (or --key-pkcs11)"
			      : !o.overlay  ? "--overlay"
					    : NULL;
	if (missing) {
		fprintf(stderr, "psc-peer: %s is required. Try 'psc-peer --help'.\n", missing);
		return EX_USAGE;
	}
	if (o.key && o.key_pkcs11.module) {
		fprintf(stderr, "psc-peer: --key and --key-pkcs11 exclude each other\n");
		return EX_USAGE;
	}
	for (int i = 0; i < nargs; i++) {
		uint8_t tmp[PSC_PEER_ID_LEN];
		if ((cmd->id_args >> i & 1u) &&
		    parse_id(argv[optind + 1 + i], i == 0 ? "PSC ID" : "Node-ID", tmp))
			return EX_USAGE;
	}
	uint8_t join_id[PSC_PEER_ID_LEN];
	if (o.join && parse_id(o.join, "--join PSC ID", join_id))
		return EX_USAGE;
	if (o.n_member_cert_paths &&
	    psc_cli_certs_load(&o.certs, o.member_cert_paths, o.n_member_cert_paths, o.overlay,
			       o.member_ca) != 0)
		return EX_CONFIG;

	psc_peer_callbacks cb = {
	    .on_epoch = cb_epoch,
	    .on_gone = cb_gone,
	    .on_query = cb_query,
	    .on_invite = cb_invite,
	    .on_error = cb_error,
	    .on_reconnect = cb_reconnect,
	};
	psc_peer_config cfg = {
	    .cert_file = o.cert,
	    .key_file = o.key,
	    .key_pkcs11 = o.key_pkcs11.module ? &o.key_pkcs11 : NULL,
	    .kms_endpoint = o.kms,
	    .kms_cert_file = o.kms_cert,
	    .kms_curve_key = o.kms_curve,
	    .overlay = o.overlay,
	    .data_endpoint = o.endpoint,
	    .request_timeout_ms = o.timeout_ms,
	    .decision_timeout_ms = o.decision_timeout_ms,
	    .auto_reconnect = 1,
	    .callbacks = &cb,
	    .user = &o,
	};
	psc_peer *p = NULL;
	psc_err err = {0};
	if (psc_peer_new(&p, &cfg, &err) != PSC_OK) {
		psc_cli_certs_free(&o.certs);
		return psc_cli_fail(&err);
	}
	o.peer = p;

	psc_peer_establish_params ep = establish_params(&o, o.establish);
	psc_peer_init_options io = {.join_psc = o.join ? join_id : NULL,
				    .establish = o.establish ? &ep : NULL};
	psc_peer_init_result ir;
	int rc;
	if (psc_peer_initialize(p, &io, &ir, &err) != PSC_OK) {
		rc = psc_cli_fail(&err);
	} else {
		char h[33];
		uint8_t me[PSC_PEER_ID_LEN];
		psc_peer_node_id(p, me);
		if (!o.quiet)
			printf("registered as %s (KMS clock %+" PRId64
			       " ms from ours, %zu PSC(s))\n",
			       psc_cli_hex(me, h), ir.clock_skew_ms, ir.n_memberships);
		print_outcome("join", &ir.join);
		print_outcome("establish", &ir.establish);
		rc = cmd->run(p, &o, argv + optind + 1, nargs);
		if ((ir.join.requested && ir.join.status) ||
		    (ir.establish.requested && ir.establish.status))
			rc = rc ? rc : EX_REFUSED;
		if (rc == EX_OK && o.wait_s > 0)
			rc = wait_events(p, o.wait_s);
	}
	psc_peer_free(&p);
	psc_cli_certs_free(&o.certs);
	return rc;
}
