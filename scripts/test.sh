#!/bin/sh
# Every test: install, build twice (plain with -Werror, and AddressSanitizer +
# UndefinedBehaviorSanitizer), run every meson test suite in both, and end with the line
# "N passed, N failed". Exit status 0 only if nothing failed.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/setup.sh" test || exit 1
status=0
for kind in plain sanitize; do
	dir="$top/build-test-$kind"
	rm -f "$dir/meson-logs/testlog.json" # a failed build must not report stale results
	if ! "$top/scripts/build.sh" "$dir" "$kind"; then
		echo "test: build ($kind) failed" >&2
		status=1
		continue
	fi
	echo "== tests ($kind build) ==" >&2
	meson test -C "$dir" --print-errorlogs --num-processes 2 || status=1
done
python3 "$top/scripts/summarize.py" "$top/build-test-plain" "$top/build-test-sanitize" || status=1
exit $status
