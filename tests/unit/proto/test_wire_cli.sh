#!/usr/bin/env bash
# psc-wire, as a person uses it: decode every sample message, verify with the
# right and a wrong certificate, and get exit 2 with a named error on garbage.
set -euo pipefail
wire=${1:?usage: test_wire_cli.sh PSC_WIRE SOURCE_DIR CA_DIR}; src=${2:?}; ca=${3:?}
corpus=$src/tests/fuzz/corpus/proto_message
signer=$src/tests/support/vector-signer.crt.pem
fail() { echo "FAIL: $*"; exit 1; }
n=0
for f in "$corpus"/*.bin; do
	out=$("$wire" decode "$f") || fail "decode $f exit $?"
	grep -q '^RELOAD message' <<<"$out" || fail "decode $f: no summary"
	"$wire" verify --cert "$signer" "$f" >/dev/null || fail "verify $f with the signer"
	set +e; "$wire" verify --cert "$ca/peer1.crt.pem" "$f" >/dev/null; rc=$?; set -e
	[ $rc -eq 1 ] || fail "verify $f with another certificate: exit $rc, want 1"
	n=$((n + 1))
done
# Hex input is accepted; a truncated message is malformed (2) and says why.
od -An -v -tx1 "$corpus/0105.bin" | "$wire" decode --hex | grep -q 'PscJoin request' || fail "hex decode"
set +e
err=$(head -c 50 "$corpus/0105.bin" | "$wire" decode 2>&1); rc=$?
set -e
[ $rc -eq 2 ] || fail "truncated input: exit $rc, want 2"
grep -q 'PSC_E_BAD_LENGTH' <<<"$err" || fail "truncated input: '$err' does not name the error"
set +e; "$wire" frobnicate </dev/null >/dev/null 2>&1; rc=$?; set -e
[ $rc -eq 2 ] || fail "unknown command: exit $rc"
"$wire" --help | grep -q 'usage: psc-wire decode' || fail "--help"
echo "psc-wire: $n messages decoded and verified; errors and usage checked"
