#!/usr/bin/env bash
# Installs every Debian 12 package psc-kms needs to build, test, benchmark and
# run its demo. Idempotent: prints nothing and touches nothing when all are present.
# Must run as root (or via sudo) when something is missing.
set -euo pipefail
pkgs=(
	build-essential cmake pkg-config clang libclang-rt-14-dev
	openssl libssl-dev libp11-dev libp11-kit-dev
	softhsm2 libsofthsm2-dev opensc
	libzmq3-dev libyaml-dev libcmocka-dev libsqlite3-dev sqlite3
	tzdata procps tshark
	dpkg-dev systemd shellcheck
	gnuplot-nox
)
missing=()
for p in "${pkgs[@]}"; do
	st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	[ "$st" = "install ok installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages: ${missing[*]}" >&2
	echo "install-deps: run as root (sudo $0) to install them" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture: keep the default (no).
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
