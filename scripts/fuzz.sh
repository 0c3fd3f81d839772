#!/bin/sh
# Long fuzz runs that grow the seed corpora: scripts/fuzz.sh [SECONDS [TARGET...]]
# Builds build-fuzz/ (clang, libFuzzer, ASan + UBSan: scripts/build.sh DIR fuzz), runs each target
# (default: all of tests/fuzz/meson.build) for SECONDS (default 3600), one after the other on one
# core (run several scripts/fuzz.sh with different targets to use more), then merges
# the inputs that added coverage into tests/fuzz/corpus/ (libFuzzer -merge=1: only new coverage,
# minimized), ready to review and commit. A crash stops that target and leaves the input in
# build-fuzz/tests/fuzz/crash-fuzz-TARGET/; the exit status is 1 if any target crashed.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-3600}
[ $# -gt 0 ] && shift
# Default: every tests/fuzz/fuzz-*.c (the targets of tests/fuzz/meson.build).
targets=${*:-$(cd "$top/tests/fuzz" && ls fuzz-*.c | sed 's/^fuzz-//; s/\.c$//')}
build="$top/build-fuzz"
"$top/scripts/build.sh" "$build" fuzz || exit 1
status=0
for t in $targets; do
	case $t in
	recv-plan) corpus=data ;;
	*) corpus=$t ;;
	esac
	exe="$build/tests/fuzz/fuzz-$t"
	seeds="$top/tests/fuzz/corpus/$corpus"
	[ -x "$exe" ] || { echo "fuzz: no target $t" >&2; status=1; continue; }
	new=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-$t.XXXXXX")
	crashes="$build/tests/fuzz/crash-fuzz-$t"
	mkdir -p "$crashes"
	echo "fuzz: $t for $secs s (seeds: $seeds)" >&2
	"$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$crashes/" "$new" "$seeds" >"$new.log" 2>&1 || {
		echo "fuzz: $t failed; inputs in $crashes, log $new.log" >&2
		status=1
	}
	before=$(ls "$seeds" | wc -l)
	"$exe" -merge=1 "$seeds" "$new" >>"$new.log" 2>&1
	echo "fuzz: $t: corpus $before -> $(ls "$seeds" | wc -l) files" >&2
	rm -rf "$new"
done
exit $status
