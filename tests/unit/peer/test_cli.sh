#!/usr/bin/env bash
# psc-peer's command line without a KMS: help, usage errors, identity errors
# and an unreachable KMS each give their documented exit code.
set -u
peer=${1:?psc-peer binary}; ca=${2:?test CA dir}
fail=0
expect() { # expected-code description command...
	local want=$1 what=$2; shift 2
	local out; out=$("$@" 2>&1); local got=$?
	if [ "$got" != "$want" ]; then
		echo "FAIL: $what: exit $got, expected $want"; echo "$out" | sed 's/^/    /'; fail=1
	else
		echo "ok: $what"
	fi
}
common=(--kms-cert "$ca/kms.crt.pem" --cert "$ca/peer1.crt.pem" --key "$ca/peer1.key.pem" --overlay psc.test)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

expect 0 "--help" "$peer" --help
"$peer" --help | grep -q "EXIT STATUS" || { echo "FAIL: --help lacks EXIT STATUS"; fail=1; }
expect 2 "no command" "$peer"
expect 2 "unknown command" "$peer" frobnicate --kms tcp://127.0.0.1:1 "${common[@]}"
expect 2 "missing --kms" "$peer" lookup ops "${common[@]}"
expect 2 "wrong argument count" "$peer" invite abc --kms tcp://127.0.0.1:1 "${common[@]}"
# A PSC argument that is not 32 hex digits may be the name of a PSC held, known
# only after Initialize: without a KMS it is "KMS unreachable" (4); the "neither
# a PSC ID nor a name held" refusal is tested against a real KMS (test_peer_shell).
expect 4 "PSC name without a KMS" "$peer" leave not-hex --kms tcp://127.0.0.1:$port "${common[@]}" --timeout 200
expect 2 "--join outside init" "$peer" lookup x --join 00 --kms tcp://127.0.0.1:1 "${common[@]}"
expect 3 "key of another certificate" "$peer" lookup ops --kms tcp://127.0.0.1:$port \
	--kms-cert "$ca/kms.crt.pem" --cert "$ca/peer1.crt.pem" --key "$ca/peer2.key.pem" --overlay psc.test
expect 3 "bad CURVE key" "$peer" lookup ops --kms tcp://127.0.0.1:$port "${common[@]}" --kms-curve short
expect 4 "KMS unreachable" "$peer" lookup ops --kms tcp://127.0.0.1:$port "${common[@]}" --timeout 300
out=$("$peer" lookup ops --kms tcp://127.0.0.1:$port "${common[@]}" --timeout 300 2>&1)
echo "$out" | grep -q "no answer to Initialize" || { echo "FAIL: timeout message: $out"; fail=1; }
exit $fail
