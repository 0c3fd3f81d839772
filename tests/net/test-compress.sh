#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Compression on the wire (issue 15) across tests/net's link and on loopback, with the CLI:
#   slow       100mbit,2ms; 48 MiB of compressible RAM (tm-gen-image text) and tags over 4
#              channels: --compress auto is at least 1.5x as fast as --compress none, byte-exact,
#              and its JSON shows compressed packets and a total ratio below 0.7 (each channel's
#              first 5 packets go raw; then zstd makes a channel 0.41, lz4 0.62: on a loaded
#              machine auto takes lz4 on some channels, so all on lz4 must pass, all raw is 1)
#   loss       1gbit,5ms,loss=0.1%: lz4, zstd:3 and auto each migrate 32 MiB byte-exact, and the
#              link counted lost packets (both directions: about 7 expected)
#   loopback   127.0.0.1 (no link): auto is not measurably slower than none: of 7 alternating
#              runs of 64 MiB each, auto's fastest within 15% (+30 ms) of none's fastest (the
#              fastest, not the median: on a shared machine the others measure the neighbours),
#              and auto sent (nearly) nothing compressed: the link is faster than any codec
#
# usage: test-compress.sh TAGMIG GEN_IMAGE TM_WIRE CASE     Exit 0 pass, 1 fail, 77 skip.
set -u
TAGMIG=$1
GEN=$2
export TM_WIRE=$3
CASE=$4
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=netns.sh
. "$HERE/netns.sh"

# shellcheck source=migrate.sh
. "$HERE/migrate.sh"

# json_num KEY: the first number called KEY in send's JSON.
json_num() { sed -n "s/.*\"$1\":\([0-9.e+-]*\).*/\1/p" "$T/send.out" | head -1; }
# The compression object (its totals, then "channels":[{...}, ...]).
json_compress() { sed -n "s/.*\"compression\":{\(.*\)/\1/p" "$T/send.out"; }
# The totals' ratio: the object's first "ratio" (the totals come before the channels).
compress_ratio() { json_compress | grep -o '"ratio":[0-9.e+-]*' | head -1 | cut -d: -f2; }
compressed_packets() {
	json_compress | grep -o '"packets_\(lz4\|zstd\)":[0-9]*' | awk -F: '{ s += $2 } END { print s + 0 }'
}

case $CASE in
slow)
	net_test_begin "$CASE"
	NET_IMAGE=text
	tm_link_up "100mbit,2ms" || fail "link"
	NET_SEND_ARGS=(--compress none)
	net_migrate $((48 << 20)) 4 120
	none_ms=$ELAPSED_MS
	NET_SEND_ARGS=(--compress auto)
	net_migrate $((48 << 20)) 4 120
	auto_ms=$ELAPSED_MS
	ratio=$(compress_ratio)
	packets=$(compressed_packets)
	tm_link_down
	note "48 MiB of text over 100mbit: none $none_ms ms, auto $auto_ms ms (page data ratio $ratio, $packets packets compressed)"
	[ "$packets" -gt 0 ] || fail "auto compressed no packet on a 100 Mbit/s link: $(cat "$T/send.out")"
	awk -v r="$ratio" 'BEGIN { exit !(r > 0 && r < 0.7) }' || fail "auto's ratio $ratio, expected below 0.7"
	[ $((auto_ms * 3)) -le $((none_ms * 2)) ] ||
		fail "auto took $auto_ms ms, none $none_ms ms: not 1.5x as fast on a slow link"
	;;
loss)
	net_test_begin "$CASE"
	NET_IMAGE=text
	tm_link_up "1gbit,5ms,loss=0.1%" || fail "link"
	for m in lz4 zstd:3 auto; do
		NET_SEND_ARGS=(--compress "$m")
		net_migrate $((32 << 20)) 4 90
		note "32 MiB with --compress $m across 1gbit,5ms,loss=0.1%: $ELAPSED_MS ms, exact (ratio $(compress_ratio), $(compressed_packets) packets compressed)"
		if [ "$m" != auto ] && [ "$(compressed_packets)" -eq 0 ]; then
			fail "--compress $m sent no compressed packet"
		fi
	done
	tm_link_down
	lost=$(($(net_counter a_to_b lost) + $(net_counter b_to_a lost)))
	note "link: $(tm_link_stats | tr '\n' ';')"
	[ "$lost" -gt 0 ] || fail "the link lost no packet: the loss was not there"
	;;
loopback)
	# No link: both ends on 127.0.0.1 of this host.
	T=$(mktemp -d "${TMPDIR:-/tmp}/tagmig-net.XXXXXX")
	trap 'rm -rf "$T"' EXIT
	"$GEN" text $((64 << 20)) 41 "$T/in.img" || fail "tm-gen-image text"
	run() { # MODE: sets MS
		local start end
		rm -f "$T/out.img" "$T/port"
		"$TAGMIG" recv --listen 127.0.0.1:0 --port-file "$T/port" --timeout 30 \
			--ram "$T/out.img" >"$T/recv.out" 2>"$T/recv.err" &
		local pid=$!
		for _ in $(seq 1 200); do [ -s "$T/port" ] && break; sleep 0.05; done
		start=$(date +%s%N)
		"$TAGMIG" send --connect "127.0.0.1:$(cat "$T/port")" --timeout 30 --ram "$T/in.img" \
			--compress "$1" --json >"$T/send.out" 2>"$T/send.err" || fail "send $1"
		end=$(date +%s%N)
		wait "$pid" || fail "recv exited with $?"
		cmp -s "$T/in.img" "$T/out.img" || fail "RAM differs after --compress $1"
		MS=$(((end - start) / 1000000))
	}
	none=() auto=()
	zpackets=0
	for _ in 1 2 3 4 5 6 7; do
		run none && none+=("$MS")
		run auto && auto+=("$MS") && zpackets=$((zpackets + $(compressed_packets)))
	done
	fastest() { printf '%s\n' "$@" | sort -n | head -1; }
	n=$(fastest "${none[@]}") a=$(fastest "${auto[@]}")
	note "64 MiB of text on loopback, 7 runs each: none ${none[*]} ms (fastest $n), auto ${auto[*]} ms (fastest $a); auto compressed $zpackets of $((7 * 128)) packets"
	[ "$zpackets" -le $((7 * 128 / 10)) ] ||
		fail "auto compressed $zpackets of $((7 * 128)) packets on loopback"
	[ "$a" -le $((n * 115 / 100 + 30)) ] ||
		fail "auto's fastest run $a ms is more than 15% (+30 ms) over none's $n ms on loopback"
	;;
*)
	echo "test-compress.sh: unknown case $CASE" >&2
	exit 2
	;;
esac
exit 0
