#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The delta choice (issue 15, tm_live_config.delta_policy auto): two rounds of a guest that
# rewrites 5% of each page between them (delta-rounds.c), random pages, compression off:
#   slow       across tests/net's 100mbit,2ms link, 16 MiB over 4 channels: auto sends (nearly)
#              every re-sent page as a delta, windows chose deltas, and round 2 puts less than
#              30% of the bytes of the same round without a cache on the wire
#   loopback   127.0.0.1 (no link), 32 MiB, three runs, two of which must show: auto sends at
#              most 10% of the re-sent pages as deltas (the first window's samples may not have
#              decided yet), its windows chose whole pages, and no channel's last reason is
#              the link (3)
#
# usage: test-delta.sh DELTA_ROUNDS TM_WIRE CASE     Exit 0 pass, 1 fail, 77 skip.
set -u
PROG=$1
export TM_WIRE=$2
CASE=$3
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=netns.sh
. "$HERE/netns.sh"
# shellcheck source=migrate.sh
. "$HERE/migrate.sh"

# field LINE KEY: the value of KEY=... in delta-rounds' line.
field() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

case $CASE in
slow)
	net_test_begin "$CASE"
	tm_link_up "100mbit,2ms" || fail "link"
	on=$(tm_in_a timeout 200 "$PROG" --addr "$TM_ADDR_B" --listen-netns "$TM_LINK_B" --size 16 \
		--policy auto 2>"$T/auto.err") || fail "delta-rounds --policy auto: $on"
	off=$(tm_in_a timeout 200 "$PROG" --addr "$TM_ADDR_B" --listen-netns "$TM_LINK_B" --size 16 \
		--policy off 2>"$T/off.err") || fail "delta-rounds --policy off: $off"
	note "auto: $on"
	note "off:  $off"
	pages=$(field "$on" round2_pages)
	[ "$(field "$on" delta_pages)" -ge $((pages * 9 / 10)) ] ||
		fail "auto sent $(field "$on" delta_pages) of $pages re-sent pages as deltas over 100 Mbit/s"
	[ "$(field "$on" windows_delta)" -gt 0 ] || fail "no window chose deltas: $on"
	[ $(($(field "$on" round2_wire_bytes) * 10)) -lt $(($(field "$off" round2_wire_bytes) * 3)) ] ||
		fail "round 2 with deltas $(field "$on" round2_wire_bytes) bytes, without $(field "$off" round2_wire_bytes)"
	;;
loopback)
	T=$(mktemp -d "${TMPDIR:-/tmp}/tagmig-delta.XXXXXX")
	trap 'rm -rf "$T"' EXIT
	# The choice is timed: on a machine loaded by other work a starved receiver can make
	# loopback look like a slow link for a window. Two of three runs must hold (a policy that
	# ignores the link fails all three).
	good=0
	for i in 1 2 3; do
		out=$("$PROG" --addr 127.0.0.1 --size 32 --policy auto 2>"$T/err") ||
			{ echo "FAIL: delta-rounds: $out $(cat "$T/err")" >&2; exit 1; }
		echo "# run $i: $out"
		pages=$(field "$out" round2_pages)
		if [ "$(field "$out" delta_pages)" -gt $((pages / 10)) ]; then
			echo "# run $i: auto sent $(field "$out" delta_pages) of $pages re-sent pages as deltas on loopback"
		elif [ "$(field "$out" windows_whole)" -le 0 ]; then
			echo "# run $i: no window chose whole pages"
		else
			case ",$(field "$out" reasons)," in
			*,3,*) echo "# run $i: a channel's last reason is the link on loopback" ;;
			*) good=$((good + 1)) ;;
			esac
		fi
	done
	[ "$good" -ge 2 ] || { echo "FAIL: $good of 3 runs chose whole pages on loopback (see above)" >&2; exit 1; }
	;;
*)
	echo "test-delta.sh: unknown case $CASE" >&2
	exit 2
	;;
esac
exit 0
