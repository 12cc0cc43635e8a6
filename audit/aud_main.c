/*
 * psc-audit — the auditor's tool: verify an audit directory offline, show records.
 *
 * Owns: the command line, exit codes (0 ok, 1 tampered, 2 malformed or usage) and
 * the texts people read. All checking lives in aud_verify; all parsing in aud_rec.
 * Never: write to the directory it reads, or print a decoded untrusted string raw
 * (subjects are printed JSON-escaped, as in the file).
 */
#include <getopt.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aud_rec.h"
#include "aud_scan.h"
#include "aud_verify.h"

static const char usage_main[] =
	"NAME\n"
	"    psc-audit - verify and read the psc-kms audit log\n"
	"\n"
	"SYNOPSIS\n"
	"    psc-audit verify DIR [--pubkey PEM] [--trusted CHECKPOINT]\n"
	"    psc-audit show DIR [--psc HEX] [--node HEX] [--event NAME] [--since TIME]\n"
	"                       [--until TIME] [--json]\n"
	"    psc-audit COMMAND --help\n"
	"\n"
	"DESCRIPTION\n"
	"    The KMS writes every key event as one JSON line to DIR/audit-NNNNNNNN.jsonl,\n"
	"    chains each line to the one before it by SHA-256, and signs RFC 9162 Merkle\n"
	"    checkpoints into DIR/checkpoints.jsonl. psc-audit checks all of that offline.\n"
	"    The format is described in docs/audit.md.\n"
	"\n"
	"EXIT STATUS\n"
	"    0  verified (or records shown)\n"
	"    1  tampered: a record was changed, removed or reordered, or a checkpoint does\n"
	"       not match or is not validly signed; the first bad seq and why are printed\n"
	"    2  malformed input, unreadable files, or a usage error\n";

static const char usage_verify[] =
	"NAME\n"
	"    psc-audit verify - prove offline that the audit log is intact\n"
	"\n"
	"SYNOPSIS\n"
	"    psc-audit verify DIR [--pubkey PEM] [--trusted CHECKPOINT]\n"
	"\n"
	"DESCRIPTION\n"
	"    Reads every segment of DIR in order and checks that each line is a canonical\n"
	"    record, that seq runs 1, 2, 3 ... without gaps, that each record's prev is\n"
	"    the SHA-256 of the line before it (across segments), that every segment after\n"
	"    the first opens with its segment.link record, and that every checkpoint in\n"
	"    DIR/checkpoints.jsonl has the Merkle root of the records it counts.\n"
	"\n"
	"OPTIONS\n"
	"    --pubkey PEM\n"
	"        Public key of the KMS audit key (PEM). Every checkpoint signature is\n"
	"        verified with it. Without it signatures are NOT checked, and verify says\n"
	"        so: anyone could have rewritten the log and its checkpoints together.\n"
	"    --trusted CHECKPOINT\n"
	"        A checkpoint line exported earlier and kept outside the appliance (e.g.\n"
	"        `tail -n 1 DIR/checkpoints.jsonl > cp.json` copied elsewhere). The log must\n"
	"        still hold its records with the same Merkle root: this detects a removed\n"
	"        tail or a rewritten history even when the attacker held the audit key.\n"
	"\n"
	"EXIT STATUS\n"
	"    0 intact; 1 tampered (first bad seq and reason printed); 2 malformed.\n"
	"\n"
	"EXAMPLE\n"
	"    psc-audit verify /var/lib/psc-kms/audit --pubkey audit-pub.pem --trusted cp.json\n";

static const char usage_show[] =
	"NAME\n"
	"    psc-audit show - list audit records for people\n"
	"\n"
	"SYNOPSIS\n"
	"    psc-audit show DIR [--psc HEX] [--node HEX] [--event NAME] [--since TIME]\n"
	"                       [--until TIME] [--json]\n"
	"\n"
	"DESCRIPTION\n"
	"    Prints the records that match every given filter, one per line. It does not\n"
	"    verify the log: run psc-audit verify first. Strings from certificates are\n"
	"    shown JSON-escaped, exactly as stored.\n"
	"\n"
	"OPTIONS\n"
	"    --psc HEX       PSC ID (32 hex digits)\n"
	"    --node HEX      actor Node-ID (32 hex digits)\n"
	"    --event NAME    event name (psc.join) or a prefix ending in '.' (psc.)\n"
	"    --since TIME    records at or after TIME (UTC, any prefix of\n"
	"                    2026-11-26T17:20:00.000Z, e.g. 2026-11-26 or 2026-11-26T17)\n"
	"    --until TIME    records before the end of TIME (same form)\n"
	"    --json          print the stored lines instead of the table\n"
	"\n"
	"EXIT STATUS\n"
	"    0 success (also when nothing matches); 2 unreadable or malformed log.\n";

static EVP_PKEY *load_pub(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	EVP_PKEY *k = PEM_read_PUBKEY(f, NULL, NULL, NULL);
	if (!k) {
		/* Accept a certificate too: the audit key's certificate is what many keep. */
		rewind(f);
		X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
		if (x) {
			k = X509_get_pubkey(x);
			X509_free(x);
		}
	}
	fclose(f);
	return k;
}

static int cmd_verify(int argc, char **argv)
{
	static const struct option lo[] = {{"pubkey", required_argument, NULL, 'p'},
					   {"trusted", required_argument, NULL, 't'},
					   {"help", no_argument, NULL, 'h'},
					   {NULL, 0, NULL, 0}};
	const char *pub_path = NULL, *trusted_path = NULL;
	int c;
	while ((c = getopt_long(argc, argv, "p:t:h", lo, NULL)) != -1) {
		if (c == 'p')
			pub_path = optarg;
		else if (c == 't')
			trusted_path = optarg;
		else if (c == 'h') {
			fputs(usage_verify, stdout);
			return 0;
		} else {
			fputs(usage_verify, stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "psc-audit verify: expected one DIR\n\n%s", usage_verify);
		return 2;
	}
	const char *dir = argv[optind];
	EVP_PKEY *pub = NULL;
	if (pub_path && !(pub = load_pub(pub_path))) {
		fprintf(stderr, "psc-audit verify: %s is not a PEM public key or certificate\n",
			pub_path);
		return 2;
	}
	aud_ckpt trusted;
	if (trusted_path) {
		psc_err e;
		psc_err_clear(&e);
		if (aud_ckpt_read_file(trusted_path, &trusted, &e) != PSC_OK) {
			fprintf(stderr, "psc-audit verify: --trusted %s: %s\n", trusted_path,
				psc_err_text(&e));
			EVP_PKEY_free(pub);
			return 2;
		}
	}
	aud_verify_opts o = {.dir = dir, .pubkey = pub, .trusted = trusted_path ? &trusted : NULL};
	aud_verify_report rep;
	psc_rc rc = aud_verify_dir(&o, &rep);
	EVP_PKEY_free(pub);
	if (rc != PSC_OK) {
		if (rep.status == AUD_VERIFY_TAMPERED && rep.bad_seq)
			printf("psc-audit: TAMPERED: first bad seq %llu: %s\n",
			       (unsigned long long)rep.bad_seq, rep.why);
		else if (rep.status == AUD_VERIFY_TAMPERED)
			printf("psc-audit: TAMPERED: %s\n", rep.why);
		else
			printf("psc-audit: MALFORMED: %s\n", rep.why);
		printf("psc-audit: %llu records verified before the failure\n",
		       (unsigned long long)rep.records);
		return rep.status == AUD_VERIFY_TAMPERED ? 1 : 2;
	}
	printf("psc-audit: OK: %llu records in %u segment(s); seq gap-free, hash chain intact\n",
	       (unsigned long long)rep.records, rep.segments);
	printf("psc-audit: %llu checkpoint(s) match their Merkle roots", (unsigned long long)rep.checkpoints);
	if (pub_path)
		printf("; %llu signature(s) verified with %s\n",
		       (unsigned long long)rep.signatures_checked, pub_path);
	else
		printf("\npsc-audit: WARNING: signatures NOT checked (no --pubkey)\n");
	if (trusted_path)
		printf("psc-audit: trusted checkpoint at size %llu matches\n",
		       (unsigned long long)trusted.size);
	if (rep.covered < rep.records)
		printf("psc-audit: records %llu..%llu are not yet covered by a checkpoint\n",
		       (unsigned long long)rep.covered + 1, (unsigned long long)rep.records);
	if (rep.repairs || rep.recoveries || rep.aborted)
		printf("psc-audit: %llu torn-tail repair(s), %llu fail-closed recovery(ies), %llu "
		       "aborted record(s) are in the log (see psc-audit show --event log.)\n",
		       (unsigned long long)rep.repairs, (unsigned long long)rep.recoveries,
		       (unsigned long long)rep.aborted);
	return 0;
}

static bool hex16(const char *s, uint8_t out[16])
{
	if (!s || strlen(s) != 32)
		return false;
	for (int i = 0; i < 16; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return false;
		out[i] = (uint8_t)v;
	}
	return true;
}

typedef struct filter {
	bool psc_set, node_set;
	uint8_t psc[16], node[16];
	const char *event, *since, *until;
	bool json;
} filter;

static bool matches(const filter *f, const aud_rec *r)
{
	if (f->psc_set && (!r->psc || memcmp(r->psc, f->psc, 16) != 0))
		return false;
	if (f->node_set && (!r->node || memcmp(r->node, f->node, 16) != 0))
		return false;
	if (f->event) {
		size_t n = strlen(f->event);
		bool prefix = n > 0 && f->event[n - 1] == '.';
		if (prefix ? strncmp(r->event, f->event, n) != 0 : strcmp(r->event, f->event) != 0)
			return false;
	}
	if (f->since && strncmp(r->time, f->since, strlen(f->since)) < 0)
		return false;
	if (f->until && strncmp(r->time, f->until, strlen(f->until)) > 0)
		return false;
	return true;
}

static void put_esc(const char *label, const char *s)
{
	char buf[6 * AUD_TEXT_MAX + 16];
	if (!s)
		return;
	size_t n = aud_json_escape(s, buf, sizeof(buf) - 1);
	if (n == (size_t)-1)
		n = 0;
	buf[n] = '\0';
	printf(" %s=\"%s\"", label, buf);
}

static void print_rec(const aud_rec *r)
{
	char h[65];
	printf("%8llu %s %-15s", (unsigned long long)r->seq, r->time, r->event);
	put_esc("result", r->result);
	if (r->psc) {
		aud_hex(r->psc, 16, h);
		printf(" psc=%s", h);
	}
	if (r->has_epoch)
		printf(" epoch=%llu", (unsigned long long)r->epoch);
	if (r->node) {
		aud_hex(r->node, 16, h);
		printf(" node=%s", h);
	}
	put_esc("subject", r->subject);
	put_esc("key", r->key);
	if (r->has_decision) {
		put_esc("decision", r->outcome);
		put_esc("rule", r->rule);
		put_esc("rev", r->rev);
	}
	put_esc("req", r->req);
	for (size_t i = 0; i < r->n_detail; i++) {
		if (r->detail[i].str)
			put_esc(r->detail[i].key, r->detail[i].str);
		else
			printf(" %s=%llu", r->detail[i].key, (unsigned long long)r->detail[i].num);
	}
	putchar('\n');
}

static int cmd_show(int argc, char **argv)
{
	static const struct option lo[] = {
		{"psc", required_argument, NULL, 'P'},    {"node", required_argument, NULL, 'N'},
		{"event", required_argument, NULL, 'E'},  {"since", required_argument, NULL, 'S'},
		{"until", required_argument, NULL, 'U'},  {"json", no_argument, NULL, 'J'},
		{"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
	filter f = {0};
	int c;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'P':
			if (!(f.psc_set = hex16(optarg, f.psc))) {
				fprintf(stderr, "psc-audit show: --psc wants 32 hex digits\n");
				return 2;
			}
			break;
		case 'N':
			if (!(f.node_set = hex16(optarg, f.node))) {
				fprintf(stderr, "psc-audit show: --node wants 32 hex digits\n");
				return 2;
			}
			break;
		case 'E': f.event = optarg; break;
		case 'S': f.since = optarg; break;
		case 'U': f.until = optarg; break;
		case 'J': f.json = true; break;
		case 'h': fputs(usage_show, stdout); return 0;
		default: fputs(usage_show, stderr); return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "psc-audit show: expected one DIR\n\n%s", usage_show);
		return 2;
	}
	const char *dir = argv[optind];
	psc_err e;
	psc_err_clear(&e);
	unsigned nseg = 0;
	if (aud_seg_count(dir, &nseg, &e) != PSC_OK) {
		fprintf(stderr, "psc-audit show: %s\n", psc_err_text(&e));
		return 2;
	}
	aud_parsed *p = malloc(sizeof(*p));
	if (!p)
		return 2;
	int status = 0;
	for (unsigned s = 1; s <= nseg && status == 0; s++) {
		char path[AUD_PATH_MAX];
		aud_lines *rd = NULL;
		if (aud_seg_path(dir, s, path, sizeof(path)) != PSC_OK ||
		    aud_lines_open(&rd, path, &e) != PSC_OK) {
			fprintf(stderr, "psc-audit show: %s\n", psc_err_text(&e));
			status = 2;
			break;
		}
		const char *line;
		size_t len;
		uint64_t off;
		aud_line_kind k;
		while ((k = aud_lines_next(rd, &line, &len, &off)) == AUD_LINE_OK) {
			if (aud_rec_parse(line, len, p, &e) != PSC_OK) {
				fprintf(stderr, "psc-audit show: %s line %llu: %s\n", path,
					(unsigned long long)aud_lines_lineno(rd), psc_err_text(&e));
				status = 2;
				break;
			}
			if (!matches(&f, &p->rec))
				continue;
			if (f.json)
				printf("%.*s\n", (int)len, line);
			else
				print_rec(&p->rec);
		}
		if (status == 0 && k != AUD_LINE_EOF) {
			fprintf(stderr, "psc-audit show: %s line %llu: %s\n", path,
				(unsigned long long)aud_lines_lineno(rd),
				k == AUD_LINE_TORN ? "torn last line (not yet repaired)" : "unreadable");
			status = 2;
		}
		aud_lines_free(&rd);
	}
	free(p);
	return status;
}

int main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		fputs(usage_main, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "verify") == 0)
		return cmd_verify(argc - 1, argv + 1);
	if (strcmp(argv[1], "show") == 0)
		return cmd_show(argc - 1, argv + 1);
	fprintf(stderr, "psc-audit: unknown command '%s'\n\n%s", argv[1], usage_main);
	return 2;
}
