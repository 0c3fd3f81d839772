#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs one libFuzzer target (a -Dfuzzing=true build) for TAGMIG_FUZZ_SECONDS (default 20) from a
# copy of its seed corpus, so a CI run never changes the sources: run-fuzz.sh TARGET CORPUS-DIR.
# Fails on any crash, sanitizer report, leak or timeout, and keeps the input that caused it in
# the build directory (tests/fuzz/crash-NAME/), with its path and a hex dump in the log.
# To grow the corpora, run scripts/fuzz.sh instead (tests/fuzz/README.md).
set -u
exe=$1
seeds=$2
secs=${TAGMIG_FUZZ_SECONDS:-20}
name=$(basename "$exe")
work=$(mktemp -d "${TMPDIR:-/tmp}/$name.XXXXXX")
trap 'rm -rf "$work"' EXIT
crashes="$(dirname "$exe")/crash-$name"
mkdir -p "$crashes"
echo "# $name: ${secs} s from $(ls "$seeds" | wc -l) seeds"
# -timeout: one input may not take longer (a hang is a failure); -rss_limit_mb: no unbounded memory.
"$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	-artifact_prefix="$crashes/" "$work" "$seeds" >"$work/log" 2>&1
rc=$?
tail -n 40 "$work/log"
if [ "$rc" != 0 ]; then
	for f in "$crashes"/*; do
		[ -f "$f" ] || continue
		echo "# input that failed: $f"
		od -A x -t x1z "$f" | head -n 20
	done
	exit 1
fi
grep -E '^#[0-9]+ *DONE|stat::number_of_executed_units' "$work/log" | tail -n 2
exit 0
