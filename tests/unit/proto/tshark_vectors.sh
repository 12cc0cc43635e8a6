#!/usr/bin/env bash
# Independent oracle for the RELOAD framing: Wireshark's RELOAD dissector must
# decode every sample message (the docs/protocol.md vectors, with and without
# certificates) with no "Malformed" or error-level expert info, and see the
# relo_token and the signer identity. Usage: tshark_vectors.sh CORPUS_DIR
# Exit 77 (skipped) when tshark/text2pcap are not installed.
set -euo pipefail
dir=${1:?usage: tshark_vectors.sh CORPUS_DIR}
command -v tshark >/dev/null && command -v text2pcap >/dev/null || {
	echo "tshark not installed: skipped"; exit 77; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
n=0
: > "$tmp/all.hex"
for f in "$dir"/*.bin; do
	# RELOAD stream framing: uint8 128 (data) || uint32 sequence || uint24 length || message.
	# Each packet's hex dump restarts at offset 0, which text2pcap takes as a new packet.
	len=$(stat -c %s "$f")
	{ printf '\x80\x00\x00\x00\x01'; printf "\\x$(printf %02x $((len >> 16 & 255)))\\x$(printf %02x $((len >> 8 & 255)))\\x$(printf %02x $((len & 255)))"; cat "$f"; } > "$tmp/framed"
	od -An -v -tx1 -w16 "$tmp/framed" | awk '{ printf "%06x %s\n", (NR - 1) * 16, $0 }' >> "$tmp/all.hex"
	n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "no messages in $dir"; exit 1; }
text2pcap -q -u 6084,6084 "$tmp/all.hex" "$tmp/all.pcap"
out=$(tshark -r "$tmp/all.pcap" -V -d udp.port==6084,reload-framing 2>&1)
if grep -qiE 'malformed|Expert Info \(Error' <<<"$out"; then
	echo "FAIL: Wireshark reports an error:"; grep -iE 'malformed|Expert' <<<"$out" | head -10
	exit 1
fi
tokens=$(grep -c 'relo_token (uint32): 0xd2454c4f' <<<"$out" || true)
ids=$(grep -c 'identity_type (SignerIdentityType): cert_hash (1)' <<<"$out" || true)
if [ "$tokens" -ne "$n" ] || [ "$ids" -ne "$n" ]; then
	echo "FAIL: $n messages, Wireshark saw $tokens RELOAD headers and $ids signer identities"
	exit 1
fi
echo "Wireshark decoded $n messages without errors"
