#!/usr/bin/env bash
# Replaces one benchmark's section in docs/benchmarks.md with a new file's text.
# Usage: bench/update-doc.sh NAME SECTION_FILE
# The section lives between "<!-- BEGIN NAME -->" and "<!-- END NAME -->"; it is
# appended if absent. Each bench program writes its own section, so figures in
# the doc always come from one run of that program.
set -euo pipefail
name=${1:?usage: update-doc.sh NAME SECTION_FILE}
sec=${2:?usage: update-doc.sh NAME SECTION_FILE}
doc=$(cd "$(dirname "$0")/.." && pwd)/docs/benchmarks.md
[ -f "$doc" ] || printf '# Benchmarks\n' > "$doc"
tmp=$(mktemp)
awk -v name="$name" -v sec="$sec" '
	BEGIN { begin = "<!-- BEGIN " name " -->"; end = "<!-- END " name " -->"; done = 0 }
	$0 == begin { print; while ((getline l < sec) > 0) print l; skip = 1; done = 1; next }
	$0 == end { skip = 0 }
	!skip { print }
	END { if (!done) { print ""; print begin; while ((getline l < sec) > 0) print l; print end } }
' "$doc" > "$tmp"
mv "$tmp" "$doc"
