#!/usr/bin/env bash
# PSC vs TLS 1.3 / DTLS 1.2 mesh, N = 4, 16, 64, 256, in one command:
# installs gnuplot-nox if missing (packaging/install-deps.sh), builds
# psc_vs_tls (RelWithDebInfo, with psc-kmsd), runs it, writes its section of
# docs/benchmarks.md and draws docs/psc_vs_tls.png.
# Usage: bash bench/psc_vs_tls.sh              (the full run; rewrites the docs)
#        bash bench/psc_vs_tls.sh --quick|--n N  (just prints; docs untouched)
# Env: PSC_BUILD_DIR (default build-rel), PSC_KEEP=1 keeps the scratch KMS.
# About 1 minute on 2 idle cores; prints figures, never passes or fails on time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${PSC_BUILD_DIR:-build-rel}
if ! command -v gnuplot >/dev/null; then
	if [ "$(id -u)" -eq 0 ]; then
		packaging/install-deps.sh
	else
		sudo packaging/install-deps.sh
	fi
fi
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPSC_TESTS=ON >/dev/null
cmake --build "$build" -j2 --target psc_vs_tls >/dev/null
if [ $# -gt 0 ]; then
	exec "$build/bench/psc_vs_tls" "$@"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$build/bench/psc_vs_tls" --section "$tmp/section.md" --data "$tmp/plot.dat" \
	--command "bash bench/psc_vs_tls.sh"
gnuplot -e "data='$tmp/plot.dat'; out='docs/psc_vs_tls.png'" bench/psc_vs_tls.gp
bench/update-doc.sh psc_vs_tls "$tmp/section.md"
echo "psc_vs_tls: wrote docs/benchmarks.md (section psc_vs_tls) and docs/psc_vs_tls.png"
