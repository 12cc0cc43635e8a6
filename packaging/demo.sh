#!/usr/bin/env bash
# The main job: bootstrap, build, then run psc-kms locally on throwaway material —
# a test CA, a SoftHSM token that goes through the key ceremony, one psc-kmsd,
# and five peers, each a long-lived `psc-peer shell` session driven through a
# pipe, running every flow of the draft: establish, join via ask_owner (the
# owner answers at its prompt), invite (the invitee accepts at its prompt),
# group messages, leave, departure report with eviction, timer refresh and
# destroy. The transcript shows what each peer typed and printed, and at the end
# which member could read which group message: members that left or were
# evicted read nothing sent after. Finally the audit log of the run is verified.
# Every step waits for the line it needs (bounded), never for a fixed time.
# Everything lives in a temp dir that is removed at the end (PSC_DEMO_KEEP=1
# keeps it). PSC_DEMO_BUILD=DIR uses an existing build instead of building.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
if [ -n "${PSC_DEMO_BUILD:-}" ]; then
	build=$(cd "$PSC_DEMO_BUILD" && pwd)
	echo "==> using the build in $build"
else
	bash packaging/install-deps.sh
	jobs=$(nproc 2>/dev/null || echo 2)
	build=$top/build/plain
	echo "==> building psc-kms ($build)"
	mkdir -p build
	cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >build/demo.configure.log 2>&1 ||
		{ cat build/demo.configure.log; exit 1; }
	cmake --build "$build" -j"$jobs" >build/demo.build.log 2>&1 ||
		{ grep -E 'error|Error' build/demo.build.log | head -40; exit 1; }
fi

work=$(mktemp -d /tmp/psc-demo-XXXXXX)
kmsd_pid=
declare -A pid fd shown seen
cleanup() {
	for who in "${!pid[@]}"; do kill "${pid[$who]}" 2>/dev/null || true; done
	[ -n "$kmsd_pid" ] && kill "$kmsd_pid" 2>/dev/null && wait "$kmsd_pid" 2>/dev/null
	[ "${PSC_DEMO_KEEP:-0}" = 1 ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }

say "1. A throwaway test CA and an HSM token that goes through the key ceremony"
tests/fixtures/mkca.sh "$work/ca" psc.test
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(freeport 2>/dev/null || echo 17400)
PSC_TEST_QUERY_MS=30000 PSC_TEST_INVITE_MS=30000 PSC_TEST_LIVENESS_MS=1500 \
	tests/integration/mkkms.sh "$work/kms" "$work/ca" "$build/kms" "$port" > "$work/kms.env"
while IFS='=' read -r k v; do export "$k=$v"; done < "$work/kms.env" # Z85 keys hold shell metacharacters
echo "    token 'psc-test' (SoftHSM) holds: master KEK (non-extractable), KMS identity key, audit key"
echo "    KMS certificate issued by the test CA for Node-ID $KMS_NODE_ID"

say "2. psc-kmsd starts"
"$build/kms/psc-kmsd" -c "$KMS_CONFIG" > "$work/kmsd.log" 2>&1 &
kmsd_pid=$!
for _ in $(seq 100); do grep -q 'listening on' "$work/kmsd.log" && break; sleep 0.1; done
sed 's/^/    /' "$work/kmsd.log"

name_of() { case $1 in alice) echo peer1;; bob) echo peer2;; carol) echo peer5;; dave) echo peer3;; erin) echo rsa1;; esac; }
node_of() { cat "$work/ca/$(name_of "$1").nodeid"; }

# start NAME [OPTIONS]: a `psc-peer shell` for NAME; its stdin is a FIFO kept
# open here, its output goes to $work/NAME.out.
start() {
	local who=$1; shift
	local id; id=$(name_of "$who")
	rm -f "$work/$who.in"
	mkfifo "$work/$who.in"
	touch "$work/$who.out"
	"$build/peer-sdk/psc-peer" shell --kms "tcp://127.0.0.1:$port" --kms-cert "$KMS_CERT" \
		--kms-curve "$KMS_CURVE_PUB" --cert "$work/ca/$id.crt.pem" --key "$work/ca/$id.key.pem" \
		--overlay psc.test --endpoint "tcp://127.0.0.1:$(freeport)" "$@" \
		< "$work/$who.in" >> "$work/$who.out" 2>&1 &
	pid[$who]=$!
	local f; exec {f}> "$work/$who.in"
	fd[$who]=$f
	shown[$who]=${shown[$who]:-0}
	seen[$who]=${shown[$who]}
	await "$who" 'shell ready'
}
# mark: what every shell printed so far is old news for await.
mark() { local w; for w in "${!pid[@]}"; do seen[$w]=$(wc -l < "$work/$w.out"); done; }
# tell NAME LINE: types LINE at NAME's prompt (echoed into the transcript).
tell() {
	show_all
	mark
	printf '    \033[36m%s$ %s\033[0m\n' "$1" "$2"
	printf '%s\n' "$2" >&"${fd[$1]}"
}
# show NAME: prints NAME's output that was not shown yet (without the status
# lines quiesce asks for, unless show_status=1).
show_status=0
show() {
	local n; n=$(wc -l < "$work/$1.out")
	if [ "$n" -gt "${shown[$1]}" ]; then
		sed -n "$((shown[$1] + 1)),${n}p" "$work/$1.out" |
			{ if [ $show_status = 1 ]; then cat; else grep -v -E '^(peer [0-9a-f]{32}, data endpoint|group channel:)' || true; fi; } |
			sed "s/^/    $1> /"
	fi
	shown[$1]=$n
}
show_all() { local w; for w in "${!pid[@]}"; do show "$w"; done; }
# await NAME REGEX [SECONDS]: waits until NAME printed a line matching REGEX
# since the last `tell` (or its previous match), then shows it and what the
# others printed meanwhile. Gives up (and ends the demo) after 40 s.
await() {
	local who=$1 re=$2 limit=${3:-40} i at
	for ((i = 0; i < limit * 10; i++)); do
		at=$(tail -n +"$((seen[$who] + 1))" "$work/$who.out" | grep -n -m1 -E -- "$re" | cut -d: -f1 || true)
		if [ -n "$at" ]; then
			seen[$who]=$((seen[$who] + at))
			show "$who"; show_all
			return 0
		fi
		sleep 0.1
	done
	show "$who"
	echo "    (demo: $who never printed /$re/ within $limit s; giving up)" >&2
	exit 1
}
# quiesce NAME...: waits until the shells' group channels know every other
# member's endpoint (status), then lets TCP connections and subscriptions settle.
quiesce() {
	local n=$# who i ok
	for ((i = 0; i < 100; i++)); do
		ok=1
		for who in "$@"; do
			printf 'status\n' >&"${fd[$who]}"
		done
		sleep 0.2
		for who in "$@"; do
			tail -n 30 "$work/$who.out" | grep 'group channel:' | tail -1 |
				grep -q " $((n - 1)) member endpoint" || ok=0
		done
		[ $ok = 1 ] && break
	done
	sleep 1
}

say "3. alice establishes 'ops-room' (rekeyed by the timer every 8 s) with bob as an initial member; bob has not connected yet"
start alice --refresh 8
tell alice "establish ops-room $(node_of bob)"
await alice 'pending'
psc=$(sed -n 's/^  id *\([0-9a-f]\{32\}\)$/\1/p' "$work/alice.out" | head -1)
echo "    PSC ID $psc"

say "4. bob connects for the first time: his Initialize answer carries the key of ops-room"
start bob
tell bob "list"
await bob 'members'

say "5. dave joins (policy permits): the KMS rekeys so dave cannot read anything older"
start dave
tell dave "join ops-room"
await dave 'joined PSC'
await alice '\(join\)'

say "6. carol asks to join: policy says ask_owner, so the KMS asks alice, who answers at her prompt"
start carol
tell carol "join $psc"
await alice "answer 'allow 1'"
tell alice "allow 1"
await alice 'query 1: allowed'
await carol 'joined PSC'

say "7. alice invites erin (RSA key: her copy is wrapped with RSA-OAEP); erin accepts at her prompt"
start erin
tell alice "invite ops-room $(node_of erin)"
await erin "answer 'accept 1'"
tell erin "accept 1"
await erin 'invitation 1: accepted'
await alice 'invitation accepted'

say "8. alice writes to the group: every member reads it (AES-256-GCM under the PSC key, over ZeroMQ PUB/SUB; no TLS between peers)"
quiesce alice bob carol dave erin
tell alice "send ops-room M1: hello ops-room, this is alice"
for w in bob carol dave erin; do await "$w" 'M1:'; done
tell dave "send ops-room M2: dave here, about to leave"
for w in alice bob carol erin; do await "$w" 'M2:'; done

say "9. dave leaves: the KMS rekeys without grace; dave holds nothing of the new epoch"
tell dave "leave ops-room"
await dave 'left PSC'
await bob '\(leave\)'
quiesce alice bob carol erin
tell alice "send ops-room M3: dave has left, this is for the four of us"
for w in bob carol erin; do await "$w" 'M3:'; done

say "10. carol goes offline; bob reports her: the KMS checks her liveness, she does not answer, she is evicted"
tell carol "quit"
wait "${pid[carol]}" || true
show carol
unset 'pid[carol]'
exec {fd[carol]}>&-
tell bob "report ops-room $(node_of carol)"
await bob 'evicted|alive'
await alice '\(evict\)'

say "11. carol comes back: she is no longer a member, the KMS gives her nothing"
start carol
tell carol "list"
await carol 'no PSCs held|members'
quiesce alice bob erin
tell alice "send ops-room M4: carol was evicted, she cannot read this"
for w in bob erin; do await "$w" 'M4:'; done

say "12. the refresh timer (8 s for ops-room) rekeys by itself, and messages go on under the new epoch"
show_all
mark
await bob '\(timer\)' 20
await erin '\(timer\)' 20
quiesce alice bob erin
tell erin "send ops-room M5: erin, after a timer rekey"
for w in alice bob; do await "$w" 'M5:'; done

say "13. bob (not the owner) may not destroy ops-room; alice may, and every member is told"
tell bob "destroy ops-room"
await bob 'refused|Forbidden'
tell alice "destroy ops-room"
await alice 'destroyed PSC'
await bob 'gone .*destroyed'
await erin 'gone .*destroyed'

say "14. who could read what (a member that left or was evicted read nothing sent after)"
show_status=1
for w in carol dave; do tell "$w" "status"; await "$w" 'group channel:'; done
declare -A sender=([M1]=alice [M2]=dave [M3]=alice [M4]=alice [M5]=erin)
printf '    %-7s' ""; for m in M1 M2 M3 M4 M5; do printf '%-6s' "$m"; done; echo
for w in alice bob carol dave erin; do
	printf '    %-7s' "$w"
	for m in M1 M2 M3 M4 M5; do
		if [ "${sender[$m]}" = "$w" ]; then printf '%-6s' "sent"
		elif grep -q "): $m:" "$work/$w.out"; then printf '%-6s' "read"
		else printf '%-6s' "-"; fi
	done
	echo
done
echo "    (read = printed with its sender's Node-ID; - = not read: sent while the member"
echo "     was not in ops-room, under an epoch whose key it never held)"
for w in alice bob carol dave erin; do
	[ -n "${pid[$w]:-}" ] && { tell "$w" "quit"; wait "${pid[$w]}" || true; show "$w"; unset "pid[$w]"; }
done

say "15. psc-kmsd stops; the audit log of this run is verified offline, checkpoint signatures"
echo "    checked with the audit public key that psc-kmsctl init exported (audit-pub.pem)"
kill -TERM "$kmsd_pid"; wait "$kmsd_pid" || true; kmsd_pid=
"$build/audit/psc-audit" verify "$work/kms/audit" --pubkey "$work/kms/audit-pub.pem" | sed 's/^/    /'
echo "    key events recorded:"
"$build/audit/psc-audit" show "$work/kms/audit" --json | grep -o '"event":"[a-z._]*"' |
	sort | uniq -c | sed 's/"event"://; s/^/     /'
echo
echo "psc-kms demo: done"
