#!/usr/bin/env bash
# The main job: bootstrap, build, and run psc-kms locally on throwaway material.
# Today (foundation stage) it is a self-check of the wire codec: it creates a
# throwaway test CA and SoftHSM token, produces every PSC message signed, and
# decodes and verifies each one with psc-wire, printing a transcript. Later
# stages turn this into the live demo (a KMS and four peers running every flow).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash packaging/install-deps.sh
jobs=$(nproc 2>/dev/null || echo 2)
build=build/plain
echo "==> building psc-kms ($build)"
mkdir -p build
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >build/demo.configure.log 2>&1 ||
	{ cat build/demo.configure.log; exit 1; }
cmake --build "$build" -j"$jobs" >build/demo.build.log 2>&1 ||
	{ grep -E 'error|Error' build/demo.build.log | head -40; exit 1; }

work=$(mktemp -d /tmp/psc-demo-XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "==> throwaway test CA in $work/ca"
tests/fixtures/mkca.sh "$work/ca" psc.test
echo "==> throwaway SoftHSM token in $work/token"
export "$(tests/fixtures/mktoken.sh "$work/token" psc-demo)"
softhsm2-util --show-slots | grep -E 'Label|Serial' | sed 's/^/    /' | head -2

echo "==> every PSC message, signed, then decoded and verified by psc-wire"
mkdir -p "$work/msgs"
"$build/tests/unit/proto/test_proto_vectors" --write-corpus "$work/msgs" >/dev/null
wire=$build/proto/psc-wire
signer=tests/support/vector-signer.crt.pem
ok=0; total=0
for f in "$work"/msgs/*[0-9a-f].bin; do
	total=$((total + 1))
	line=$("$wire" decode "$f" | sed -n 's/^  code \(0x[0-9a-f]*\) \(.*\), body \([0-9]*\) bytes.*/\1 \2 (\3-byte body)/p')
	if verdict=$("$wire" verify --cert "$signer" "$f"); then ok=$((ok + 1)); mark=ok; else mark=FAIL; fi
	size=$(stat -c %s "$f")
	printf '    %-52s %5d bytes  signature %s\n' "$line" "$size" "$mark"
done
echo "==> a tampered message is refused"
cp "$work/msgs/0105.bin" "$work/tampered.bin"
printf '\x01' | dd of="$work/tampered.bin" bs=1 seek=70 conv=notrunc status=none
"$wire" verify --cert "$signer" "$work/tampered.bin" | sed 's/^/    /' || true
echo "==> a certificate's Node-ID binding (test CA peer1)"
openssl x509 -in "$work/ca/peer1.crt.pem" -noout -ext subjectAltName | sed 's/^/    /'
echo
echo "psc-kms self-check: $ok of $total messages signed, decoded and verified"
[ "$ok" -eq "$total" ]
