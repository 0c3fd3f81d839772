#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# A real guest's RAM through the CLI: tests/data/guest-ram-32M.xz (32 MiB of the physical memory of
# a Debian kernel running a busybox workload, saved by QEMU's pmemsave; tests/data/make-guest-ram.sh
# regenerates it) goes `tagmig send` -> `tagmig recv` over 127.0.0.1 on 4 channels with a tag
# file (the soft tag store), and must arrive bit-exact, tags included; its zero pages (a quarter
# of it) must not cross the wire as pages. When `tagmig send --help` lists --compress (issue 15;
# looked up at run time), the same again with each of none, lz4, zstd and auto.
#
# usage: guest-image.sh TAGMIG GEN_IMAGE IMAGE.xz      exit 0 pass, 1 fail, 77 skip
set -u

TAGMIG=$1
GEN=$2
IMAGE=$3
SIZE=$((32 << 20))

T=$(mktemp -d "${TMPDIR:-/tmp}/tagmig-guest.XXXXXX")
RECV_PID=
cleanup() {
	[ -z "$RECV_PID" ] || kill "$RECV_PID" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
fail() {
	echo "FAIL [guest-image]: $*" >&2
	for f in "$T"/*.err; do
		[ -s "$f" ] && { echo "--- $(basename "$f"):" >&2; head -c 4000 "$f" >&2; }
	done
	exit 1
}

command -v xz >/dev/null || { echo "SKIP: no xz to unpack $IMAGE"; exit 77; }
xz -dc "$IMAGE" >"$T/in.img" || fail "xz -dc $IMAGE"
[ "$(stat -c %s "$T/in.img")" = "$SIZE" ] || fail "$IMAGE does not unpack to 32 MiB"
"$GEN" tags $((SIZE / 16)) 15 "$T/in.tags" || fail "tm-gen-image tags"

# migrate LABEL [send args...]: one migration, compared byte for byte; prints the wire bytes.
migrate() {
	local label=$1
	shift
	rm -f "$T"/out.* "$T/port"
	timeout 120 "$TAGMIG" recv --listen 127.0.0.1:0 --port-file "$T/port" --timeout 30 \
		--ram "$T/out.img" --tags "$T/out.tags" >"$T/recv.out" 2>"$T/recv.err" &
	RECV_PID=$!
	for _ in $(seq 1 200); do
		[ -s "$T/port" ] && break
		kill -0 "$RECV_PID" 2>/dev/null || fail "$label: recv exited before listening"
		sleep 0.05
	done
	[ -s "$T/port" ] || fail "$label: recv did not listen within 10 s"
	timeout 120 "$TAGMIG" send --connect "127.0.0.1:$(cat "$T/port")" --timeout 30 --json \
		--ram "$T/in.img" --tags "$T/in.tags" --channels 4 "$@" >"$T/send.out" 2>"$T/send.err" ||
		fail "$label: send exited $?"
	wait "$RECV_PID" || fail "$label: recv exited $?"
	RECV_PID=
	cmp "$T/in.img" "$T/out.img" >/dev/null || fail "$label: RAM differs: $(cmp "$T/in.img" "$T/out.img" 2>&1)"
	cmp "$T/in.tags" "$T/out.tags" >/dev/null || fail "$label: tags differ: $(cmp "$T/in.tags" "$T/out.tags" 2>&1)"
	local wire
	wire=$(grep -o '"wire_bytes": *[0-9]*' "$T/send.out" | grep -o '[0-9]*$')
	[ -n "$wire" ] || fail "$label: no wire_bytes in send --json: $(head -c 300 "$T/send.out")"
	# A quarter of the image is zero pages: whole pages on the wire would be 32 MiB + 2 MiB tags.
	[ "$wire" -lt $((SIZE * 95 / 100)) ] || fail "$label: $wire wire bytes: zero pages were sent whole"
	echo "ok - $label: 32 MiB real guest RAM + tags bit-exact, $wire bytes on the wire"
}

migrate "plain"
if "$TAGMIG" send --help 2>&1 | grep -q -- '--compress'; then
	for c in none lz4 zstd auto; do
		migrate "--compress $c" --compress "$c"
	done
else
	echo "# tagmig send has no --compress: the compressed variants are not run"
fi
