#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The two-host network of tests/net/netns.sh, checked for what it promises, with tagmig across it:
#   - the delay is there (a TCP connect takes at least one round trip of 2 x DELAY),
#   - the rate is there (a migration cannot beat the link's bits per second) and the migration
#     across it is byte-exact, RAM and tags,
#   - random loss is there (the wire counts lost packets) and TCP still brings everything over,
#   - a run killed with SIGKILL leaves namespaces that the next tm_link_up reaps, and a normal run
#     leaves nothing.
#
# usage: test-link.sh TAGMIG GEN_IMAGE TM_WIRE      Exit 0 pass, 1 fail, 77 skip (with the reason).
set -u
TAGMIG=$1
GEN=$2
export TM_WIRE=$3
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=netns.sh
. "$HERE/netns.sh"

# shellcheck source=migrate.sh
. "$HERE/migrate.sh"
net_test_begin ""
if ! command -v python3 >/dev/null 2>&1; then
	echo "SKIP: python3 not available (the round-trip probe)"
	exit 77
fi

# connect_ms: milliseconds of one TCP connect from A to a listener in B.
connect_ms() {
	tm_in_b python3 -c '
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(1)
open(sys.argv[2], "w").write(str(s.getsockname()[1]))
s.settimeout(10); c, _ = s.accept(); c.close()' "$TM_ADDR_B" "$T/probe.port" &
	local pid=$! i
	for i in $(seq 1 100); do [ -s "$T/probe.port" ] && break; sleep 0.05; done
	tm_in_a python3 -c '
import socket, sys, time
t = time.monotonic(); s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
print(int((time.monotonic() - t) * 1000)); s.close()' "$TM_ADDR_B" "$(cat "$T/probe.port")"
	wait "$pid"
	rm -f "$T/probe.port"
}

# 1. 200 Mbit/s, 5 ms each way.
tm_link_up "200mbit,5ms" || fail "tm_link_up 200mbit,5ms"
ms=$(connect_ms) || fail "round-trip probe"
note "connect across 200mbit,5ms: $ms ms"
[ "$ms" -ge 9 ] || fail "connect took $ms ms: the link has no 5 ms delay each way"
[ "$ms" -lt 500 ] || fail "connect took $ms ms: far beyond the 10 ms round trip"
size=$((24 * 1024 * 1024))
net_migrate "$size" 4 120
# What went over the wire, at 200 Mbit/s (5% off for the clocks); TCP/IP headers only add to it.
floor=$((WIRE_BYTES * 8 / 200000 * 95 / 100))
note "24 MiB + tags over 4 channels: $WIRE_BYTES bytes on the wire in $ELAPSED_MS ms (the link allows no less than $floor ms)"
[ "$ELAPSED_MS" -ge "$floor" ] || fail "migration took $ELAPSED_MS ms: faster than the 200 Mbit/s link"
tm_link_down
note "link: $(tm_link_stats | tr '\n' ';')"

# 2. 1 Gbit/s, 1 ms, 1% loss: TCP retransmits, the result is still exact.
tm_link_up "1gbit,1ms,loss=1%" || fail "tm_link_up with loss"
net_migrate $((32 * 1024 * 1024)) 2 120
tm_link_down
lost=$(net_counter a_to_b lost)
note "32 MiB over 1gbit,1ms,loss=1%: $ELAPSED_MS ms, $lost packets lost on the way"
[ "${lost:-0}" -gt 0 ] || fail "no packet lost on a link with 1% loss: $(tm_link_stats)"

# 3. A run killed with SIGKILL: its namespaces stay until the next tm_link_up reaps them.
bash -c '. "$1"; tm_link_up 100mbit,1ms || exit 1; echo "$TM_LINK_A" >"$2"; kill -9 $$' _ \
	"$HERE/netns.sh" "$T/killed" 2>"$T/killed.err"
dead=$(cat "$T/killed" 2>/dev/null)
[ -n "$dead" ] || fail "the killed run did not bring its link up: $(cat "$T/killed.err")"
ip netns list | grep -q "^$dead" || fail "namespace $dead vanished by itself: the reap test proves nothing"
tm_link_up "100mbit,1ms" || fail "tm_link_up after a killed run"
if ip netns list | grep -q "^${dead%-a}"; then
	fail "namespaces of the killed run not reaped: $(ip netns list | tr '\n' ' ')"
fi
pgrep -f "tm-wire --ns-a $dead" >/dev/null && fail "the killed run's tm-wire still runs"
tm_link_down
if ip netns list | grep -q "^tmlink-$$-"; then
	fail "tm_link_down left namespaces: $(ip netns list | tr '\n' ' ')"
fi
note "reaped the namespaces of a killed run; nothing left behind"
echo "ok"
