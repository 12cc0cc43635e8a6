/*
 * policy_bench — decisions per second of pol_decide() over a generated
 * 200-rule policy (20 principals, 10 groups, sets, time windows in
 * Europe/Berlin, rate and member conditions), on one core.
 * Prints figures; never passes or fails on time. Runs about 10 seconds.
 * Usage: policy_bench [--doc]   (--doc rewrites its section of docs/benchmarks.md)
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "pol_policy.h"

#define N_RULES 200
#define N_PRINCIPALS 20
#define N_GROUPS 10
#define N_REQ 256
#define RUN_SECONDS 2.0

struct sb {
	char *p;
	size_t len, cap;
};

static void sb_add(struct sb *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(struct sb *s, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(s->p + s->len, s->cap - s->len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < s->cap - s->len) {
			s->len += (size_t)n;
			return;
		}
		s->cap *= 2;
		s->p = realloc(s->p, s->cap);
		if (!s->p) {
			perror("realloc");
			exit(2);
		}
	}
}

/* Mostly non-matching forbids, permits and asks spread over all actions, so
 * a decision evaluates every forbid for its action and then the permits. */
static char *gen_policy(size_t *len)
{
	struct sb s = {malloc(65536), 0, 65536};
	static const char *const acts[] = {"establish", "join", "invite", "destroy",
					   "report_departure"};
	sb_add(&s, "version: 1\nsets:\n  banned:\n    node_ids:\n");
	for (int i = 0; i < 100; i++)
		sb_add(&s, "      - \"%032x\"\n", 0xbad00000u + (unsigned)i);
	sb_add(&s, "  orgs: {strings: [");
	for (int i = 0; i < 20; i++)
		sb_add(&s, "%s\"Org %02d\"", i ? ", " : "", i);
	sb_add(&s, "]}\nprincipals:\n  banned: {node_id: {in_set: banned}}\n");
	for (int i = 0; i < N_PRINCIPALS; i++) {
		switch (i % 4) {
		case 0:
			sb_add(
			    &s,
			    "  p%02d: {subject_ou: {eq: \"OU %02d\"}, subject_o: {in_set: orgs}}\n",
			    i, i);
			break;
		case 1:
			sb_add(&s, "  p%02d: {subject_cn: {prefix: \"user-%02d-\"}}\n", i, i);
			break;
		case 2:
			sb_add(&s,
			       "  p%02d: {subject_cn: {glob: \"*-%02d-*\"}, issuer: {eq: "
			       "\"CN=Root\"}}\n",
			       i, i);
			break;
		default:
			sb_add(&s,
			       "  p%02d: {subject_ou: {in: [\"OU %02d\", \"OU x%02d\", \"OU "
			       "y%02d\"]}}\n",
			       i, i, i, i);
		}
	}
	sb_add(&s, "groups:\n");
	for (int g = 0; g < N_GROUPS; g++)
		sb_add(&s, "  g%d: {psc: {name: {prefix: \"grp%d-\"}%s}%s}\n", g, g,
		       g % 3 == 0 ? ", labels: {env: {in: [prod, dev]}}" : "",
		       g % 2 ? ", limits: {max_members: 5000, refresh: {max: 7200}}" : "");
	sb_add(&s, "rules:\n");
	for (int r = 0; r < N_RULES; r++) {
		const char *act = acts[r % 5];
		const char *act2 = acts[(r / 5) % 5];
		int kind = r % 10;
		const char *effect = kind == 0 ? "forbid" : kind < 8 ? "permit" : "ask_owner";
		if (kind >= 8 && (!strcmp(act, "destroy") || !strcmp(act, "establish")))
			effect = "permit";
		if (kind >= 8 && (!strcmp(act2, "destroy") || !strcmp(act2, "establish")))
			act2 = act; /* ask_owner is not allowed on these */
		sb_add(&s, "  - id: r%03d\n    effect: %s\n    actions: [%s%s%s]\n", r, effect, act,
		       strcmp(act, act2) ? ", " : "", strcmp(act, act2) ? act2 : "");
		if (kind == 0) {
			if (r % 20 == 0)
				sb_add(&s, "    principals: [banned]\n");
			else
				sb_add(&s, "    when: {members: {min: 100000}}\n");
			continue;
		}
		sb_add(&s, "    principals: [p%02d, p%02d]\n", r % N_PRINCIPALS,
		       (r * 7 + 3) % N_PRINCIPALS);
		if (r % 2)
			sb_add(&s, "    groups: [g%d]\n", r % N_GROUPS);
		if (r % 5 == 1)
			sb_add(&s, "    when: {time: {zone: Europe/Berlin, days: [mon, tue, wed, "
				   "thu, fri], "
				   "from: \"07:00\", to: \"19:00\"}}\n");
		else if (r % 7 == 2)
			sb_add(&s, "    when: {rate: {max: 20, per: 3600}}\n");
		else if (r % 3 == 0)
			sb_add(&s, "    when: {members: {max: 500}}\n");
	}
	*len = s.len;
	return s.p;
}

struct reqs {
	pol_request q[N_REQ];
	pol_psc psc[N_REQ];
	pol_peer inv[N_REQ];
	pol_label lab[N_REQ];
	char cn[N_REQ][32], ou[N_REQ][16], o[N_REQ][16], name[N_REQ][32];
};

static void gen_requests(struct reqs *r)
{
	static const pol_action acts[] = {POL_ACT_JOIN,
					  POL_ACT_JOIN,
					  POL_ACT_INVITE,
					  POL_ACT_ESTABLISH,
					  POL_ACT_REPORT_DEPARTURE,
					  POL_ACT_DESTROY};
	uint32_t x = 12345;
	for (int i = 0; i < N_REQ; i++) {
		x = x * 1103515245u + 12345u;
		unsigned v = x >> 8;
		pol_request *q = &r->q[i];
		memset(q, 0, sizeof(*q));
		q->action = acts[v % 6];
		q->now = 1774854000 + (int64_t)(v % 604800); /* a week from Mon 2026-03-30 */
		snprintf(r->cn[i], sizeof(r->cn[i]), "user-%02u-%u", v % 23, i);
		snprintf(r->ou[i], sizeof(r->ou[i]), "OU %02u", (v >> 5) % 23);
		snprintf(r->o[i], sizeof(r->o[i]), "Org %02u", (v >> 9) % 25);
		snprintf(r->name[i], sizeof(r->name[i]), "grp%u-%u", (v >> 3) % 12, i);
		q->requester.subject_cn = r->cn[i];
		q->requester.subject_ou = r->ou[i];
		q->requester.subject_o = r->o[i];
		q->requester.issuer = "CN=Root";
		memset(q->requester.node_id, (int)(v & 0xff), 16);
		q->requester.has_fingerprint = true;
		r->lab[i].key = "env";
		r->lab[i].value = v & 1 ? "prod" : "test";
		r->psc[i].name = r->name[i];
		r->psc[i].labels = &r->lab[i];
		r->psc[i].n_labels = 1;
		r->psc[i].member_count = v % 700;
		if (v % 4 == 0)
			memcpy(r->psc[i].owner_node_id, q->requester.node_id, 16);
		q->psc = &r->psc[i];
		r->inv[i] = q->requester;
		r->inv[i].subject_cn = "user-05-x";
		q->invitee = &r->inv[i];
	}
}

struct run {
	double per_s;
	unsigned long n;
	unsigned long outcomes[3];
};

static struct run measure(const pol_policy *pol, pol_state *st, struct reqs *r, pol_explain *ex)
{
	struct run out = {0};
	pol_decision d;
	double t0 = bench_now(), t;
	unsigned long n = 0;
	do {
		for (int k = 0; k < 4096; k++, n++) {
			if (pol_decide(pol, st, &r->q[n % N_REQ], &d, ex) != PSC_OK) {
				fprintf(stderr, "pol_decide failed\n");
				exit(2);
			}
			out.outcomes[d.outcome]++;
		}
		t = bench_now() - t0;
	} while (t < RUN_SECONDS);
	out.n = n;
	out.per_s = (double)n / t;
	return out;
}

int main(int argc, char **argv)
{
	int doc = argc > 1 && strcmp(argv[1], "--doc") == 0;
	size_t len;
	char *yaml = gen_policy(&len);
	pol_policy *pol = NULL;
	psc_err err;
	double t0 = bench_now();
	int loads = 0;
	do {
		pol_policy_free(&pol);
		if (pol_policy_load_buffer(&pol, yaml, len, "generated.yaml", NULL, &err) !=
		    PSC_OK) {
			fprintf(stderr, "%s\n", psc_err_text(&err));
			return 2;
		}
		loads++;
	} while (bench_now() - t0 < 1.0);
	double load_ms = (bench_now() - t0) * 1000.0 / loads;
	struct reqs *r = calloc(1, sizeof(*r));
	pol_state *st = NULL;
	if (!r || pol_state_new(&st, 4096) != PSC_OK)
		return 2;
	gen_requests(r);
	for (int i = 0; i < N_REQ; i++) /* some history for the rate rules */
		for (int k = 0; k < i % 25; k++)
			pol_state_record(st, r->q[i].requester.node_id, r->q[i].action,
					 r->q[i].now - k * 60);

	struct run plain = measure(pol, NULL, r, NULL);
	struct run stated = measure(pol, st, r, NULL);
	char *buf = malloc(256 * 1024);
	pol_explain ex = {.buf = buf, .cap = 256 * 1024};
	struct run explained = measure(pol, st, r, &ex);

	char cpu[256];
	bench_cpu_model(cpu, sizeof(cpu));
	struct utsname u;
	uname(&u);
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	/* The figures depend on what else runs; record the load they were taken under. */
	char load[64] = "unknown";
	FILE *lf = fopen("/proc/loadavg", "r");
	if (lf) {
		if (fgets(load, sizeof(load), lf))
			load[strcspn(load, " ")] = '\0';
		fclose(lf);
	}
	printf("policy: %d rules, %d principals, %d groups, %zu bytes; load+compile %.2f ms\n",
	       N_RULES, N_PRINCIPALS, N_GROUPS, len, load_ms);
	printf("decide, no rate state:     %10.0f decisions/s (%lu permit, %lu deny, %lu ask)\n",
	       plain.per_s, plain.outcomes[POL_PERMIT], plain.outcomes[POL_DENY],
	       plain.outcomes[POL_ASK_OWNER]);
	printf("decide, with rate state:   %10.0f decisions/s (%lu permit, %lu deny, %lu ask)\n",
	       stated.per_s, stated.outcomes[POL_PERMIT], stated.outcomes[POL_DENY],
	       stated.outcomes[POL_ASK_OWNER]);
	printf("decide with explain trace: %10.0f decisions/s\n", explained.per_s);
	printf("goal: >= 1,000,000 decisions/s on one core: %s\n",
	       stated.per_s >= 1e6 ? "met" : "NOT met");
	printf("machine: %s, %ld cores, %s, load average %s\n", cpu, cores, u.machine, load);

	char out[4096];
	size_t o = 0;
	o += (size_t)snprintf(
	    out + o, sizeof(out) - o,
	    "## Policy decisions (policy_bench)\n\n"
	    "Machine: %s, %ld cores online, %s; 1-minute load average %s when measured "
	    "(a shared machine: expect the figures to move with other work). One thread.\n\n"
	    "A generated policy of %d rules (%d principals, %d groups, a 100-entry Node-ID set, "
	    "Europe/Berlin time windows, rate and member conditions; %zu bytes) decided for "
	    "%d rotating requests (join, invite, establish, report_departure, destroy). "
	    "Load + compile of that file: %.2f ms.\n\n"
	    "| mode | decisions/s |\n|---|---|\n"
	    "| `pol_decide`, no rate state | %.0f |\n"
	    "| `pol_decide`, with rate state (the KMS case) | %.0f |\n"
	    "| `pol_decide` with explain trace (every rule, text) | %.0f |\n\n"
	    "Goal: at least 1,000,000 decisions/s on one core — %s.\n\n"
	    "Command: `build/plain/bench/policy_bench --doc`\n",
	    cpu, cores, u.machine, load, N_RULES, N_PRINCIPALS, N_GROUPS, len, N_REQ, load_ms,
	    plain.per_s, stated.per_s, explained.per_s, stated.per_s >= 1e6 ? "met" : "not met");
	if (doc) {
		char tmp[] = "/tmp/policy_bench-XXXXXX";
		int fd = mkstemp(tmp);
		if (fd < 0 || write(fd, out, o) != (ssize_t)o)
			return 2;
		close(fd);
		char cmd[8192];
		snprintf(cmd, sizeof(cmd), "%s/bench/update-doc.sh policy_bench %s", PSC_SOURCE_DIR,
			 tmp);
		int rc = system(cmd);
		unlink(tmp);
		if (rc != 0)
			return 2;
		printf("wrote docs/benchmarks.md section policy_bench\n");
	}
	free(buf);
	free(r);
	free(yaml);
	pol_state_free(&st);
	pol_policy_free(&pol);
	return 0;
}
