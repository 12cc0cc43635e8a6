#!/usr/bin/env bash
# The main job: bootstrap, build, then run psc-kms locally on throwaway material —
# a test CA, a SoftHSM token that goes through the key ceremony, one psc-kmsd,
# and five peers (psc-peer) running every flow of the draft, with a transcript of
# who did what and which epoch each member holds. Finally the audit log of the
# run is verified. Everything lives in a temp dir that is removed at the end
# (PSC_DEMO_KEEP=1 keeps it).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash packaging/install-deps.sh
jobs=$(nproc 2>/dev/null || echo 2)
build=$top/build/plain
echo "==> building psc-kms ($build)"
mkdir -p build
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >build/demo.configure.log 2>&1 ||
	{ cat build/demo.configure.log; exit 1; }
cmake --build "$build" -j"$jobs" >build/demo.build.log 2>&1 ||
	{ grep -E 'error|Error' build/demo.build.log | head -40; exit 1; }

work=$(mktemp -d /tmp/psc-demo-XXXXXX)
kmsd_pid=
cleanup() {
	[ -n "$kmsd_pid" ] && kill "$kmsd_pid" 2>/dev/null && wait "$kmsd_pid" 2>/dev/null
	pkill -P $$ psc-peer 2>/dev/null || true
	[ "${PSC_DEMO_KEEP:-0}" = 1 ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }

say "1. A throwaway test CA and an HSM token that goes through the key ceremony"
tests/fixtures/mkca.sh "$work/ca" psc.test
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 17400)
PSC_TEST_QUERY_MS=10000 PSC_TEST_LIVENESS_MS=1500 \
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
peer() { # peer NAME COMMAND ARGS... : runs psc-peer as NAME, prefixing its output
	local who=$1; shift
	local id; id=$(name_of "$who")
	"$build/peer-sdk/psc-peer" "$@" --kms "tcp://127.0.0.1:$port" --kms-cert "$KMS_CERT" \
		--kms-curve "$KMS_CURVE_PUB" --cert "$work/ca/$id.crt.pem" --key "$work/ca/$id.key.pem" \
		--overlay psc.test 2>&1 | sed "s/^/    $who> /"
	return "${PIPESTATUS[0]}"
}

say "3. alice establishes 'ops-room' with bob as an initial member (bob has not connected yet)"
peer alice establish ops-room --member "$(node_of bob)" --refresh 4
psc=$(peer alice lookup ops-room | sed -n 's/.*\b\([0-9a-f]\{32\}\)\b.*/\1/p' | head -1)
echo "    PSC ID $psc"

say "4. bob connects for the first time: his Initialize answer carries the key of ops-room"
peer bob init

say "5. dave joins (policy permits): the KMS rekeys so dave cannot read anything older"
peer dave join ops-room

say "6. carol asks to join: policy says ask_owner, so the KMS asks alice, who accepts"
peer alice init --wait 4 --accept-queries -q > "$work/alice.out" &
bg=$!
sleep 1
peer carol join ops-room
wait "$bg" || true
cat "$work/alice.out"

say "7. alice invites erin (RSA key: her copy is wrapped with RSA-OAEP), erin accepts"
peer erin init --wait 4 --accept-invites -q > "$work/erin.out" &
bg=$!
sleep 1
peer alice invite "$psc" "$(node_of erin)"
wait "$bg" || true
cat "$work/erin.out"

say "8. dave leaves: the KMS rekeys without grace, dave gets nothing new"
peer dave leave "$psc"

say "9. bob reports carol as gone: the KMS checks her liveness, she is offline, she is evicted"
peer bob report "$psc" "$(node_of carol)"

say "10. the refresh timer (4 s for ops-room) rekeys by itself; bob catches up"
sleep 5
peer bob catchup

say "11. alice writes to the group: bob and erin read it (AES-256-GCM under the PSC key, over ZeroMQ PUB/SUB; no TLS between peers)"
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ep_alice=tcp://127.0.0.1:$(freeport); ep_bob=tcp://127.0.0.1:$(freeport); ep_erin=tcp://127.0.0.1:$(freeport)
peer alice init --endpoint "$ep_alice" -q >/dev/null   # members learn alice's data endpoint
peer bob listen --wait 4 --endpoint "$ep_bob" -q > "$work/bob.listen" &
l1=$!
peer erin listen --wait 4 --endpoint "$ep_erin" -q > "$work/erin.listen" &
l2=$!
sleep 1.5
peer alice send "$psc" "hello ops-room, this is alice" --endpoint "$ep_alice"
wait "$l1" "$l2" || true
grep -h 'from ' "$work/bob.listen" "$work/erin.listen" || echo "    (no message arrived)"

say "12. bob (not the owner) may not destroy ops-room; alice may"
peer bob destroy "$psc" || echo "    (refused, as policy says)"
peer alice destroy "$psc"

say "13. psc-kmsd stops; the audit log of this run is verified offline"
kill -TERM "$kmsd_pid"; wait "$kmsd_pid" || true; kmsd_pid=
"$build/audit/psc-audit" verify "$work/kms/audit" | sed 's/^/    /'
echo "    key events recorded:"
"$build/audit/psc-audit" show "$work/kms/audit" --json | grep -o '"event":"[a-z._]*"' |
	sort | uniq -c | sed 's/"event"://; s/^/     /'
echo
echo "psc-kms demo: done"
