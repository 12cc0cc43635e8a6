#!/usr/bin/env bash
# The test command: bootstrap dependencies, build, and run the whole suite twice,
# plain (RelWithDebInfo) and under ASan+UBSan. Exits non-zero if anything fails.
# Usage: tests/run-all.sh [extra ctest args]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash packaging/install-deps.sh
jobs=$(nproc 2>/dev/null || echo 2)

run_suite() { # $1 = build dir, rest = cmake args
	local dir=$1; shift
	echo "==> configure $dir $*"
	cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >"$dir.configure.log" 2>&1 ||
		{ cat "$dir.configure.log"; return 1; }
	echo "==> build $dir"
	cmake --build "$dir" -j"$jobs" >"$dir.build.log" 2>&1 ||
		{ grep -E 'error|Error' "$dir.build.log" | head -40; return 1; }
	echo "==> test $dir"
	(cd "$dir" && ctest --output-on-failure -j"$jobs" "${CTEST_EXTRA[@]}")
}

CTEST_EXTRA=("$@")
mkdir -p build
rc=0
run_suite build/plain || rc=1
mkdir -p build/asan
cat tests/sanitizer/*.supp > build/asan/lsan.supp
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	LSAN_OPTIONS=suppressions=$top/build/asan/lsan.supp \
	run_suite build/asan -DPSC_SANITIZE=ON -DPSC_BENCH=OFF || rc=1
if [ $rc -eq 0 ]; then echo "psc-kms: all suites passed (plain and ASan+UBSan)"; else echo "psc-kms: FAILED"; fi
exit $rc
