#!/bin/sh
# Every test: install, build twice (plain with -Werror, and AddressSanitizer +
# UndefinedBehaviorSanitizer), run every meson test suite in both, and end with the line
# "N passed, N failed"; between them a third build (clang, libFuzzer) runs each fuzz target for a
# short time. Exit status 0 only if nothing failed.
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
# Short fuzz runs (tests/fuzz/README.md): every target under libFuzzer for TAGMIG_FUZZ_SECONDS
# (default 20) beside the corpus replays above. Needs clang and its libFuzzer (scripts/setup.sh).
fuzz_dir=
if command -v clang >/dev/null 2>&1 && clang -fsanitize=fuzzer -x c - -o /dev/null 2>/dev/null <<-'EOF'
	#include <stddef.h>
	#include <stdint.h>
	int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }
	EOF
then
	fuzz_dir="$top/build-test-fuzz"
	rm -f "$fuzz_dir/meson-logs/testlog.json"
	if "$top/scripts/build.sh" "$fuzz_dir" fuzz; then
		echo "== fuzz runs (clang, libFuzzer) ==" >&2
		meson test -C "$fuzz_dir" --suite fuzz-run --print-errorlogs --num-processes 2 || status=1
	else
		echo "test: build (fuzz) failed" >&2
		status=1
	fi
else
	echo "SKIPPED fuzz runs: clang with libFuzzer not available (scripts/setup.sh installs clang and libclang-rt-14-dev)"
fi
python3 "$top/scripts/summarize.py" "$top/build-test-plain" "$top/build-test-sanitize" $fuzz_dir || status=1
exit $status
