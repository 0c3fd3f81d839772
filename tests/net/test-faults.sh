#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Migrations across a bad network (issue 14's fault tests; the cut cases need resume): each CASE
# brings up a link of tests/net/netns.sh, migrates RAM and tags from host A to host B with the CLI
# and checks both exit 0 and the output is byte-exact, within the case's bound. The link's counters
# prove the fault happened (packets lost, reordered).
#
# usage: test-faults.sh TAGMIG GEN_IMAGE TM_WIRE CASE     Exit 0 pass, 1 fail, 77 skip.
#   delay-50ms     1gbit, 50 ms each way (100 ms round trip), 4 channels
#   loss           1gbit, 2 ms, 1% loss, 4 channels
#   loss-tls       the same over TLS 1.3
#   reorder        1gbit, 2 ms, jitter 1 ms that reorders packets, 4 channels
#   reorder-tls    the same over TLS (the record layer sees TCP's reassembled stream)
#   cut            1gbit, 2 ms, 64 MiB at 32 MiB/s over 4 channels; after 0.7 s the data connection
#                  that moved the most is destroyed in host A (ss -K: the sender sees ECONNABORTED,
#                  the receiver a reset): resumed, both exit 0, byte-exact, --json counts it
#   cut-tls        the same over TLS
# SEND_IO / RECV_IO (environment) choose the I/O backends as in tests/cli/cases.sh.
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
net_test_begin "$CASE"

case $CASE in
delay-50ms)
	tm_link_up "1gbit,50ms" || fail "link"
	net_migrate $((16 << 20)) 4 60
	tm_link_down
	note "16 MiB over 4 channels in $ELAPSED_MS ms: exact"
	;;
loss | loss-tls)
	tm_link_up "1gbit,2ms,loss=1%" || fail "link"
	[ "$CASE" = loss-tls ] && net_use_tls
	net_migrate $((16 << 20)) 4 60
	tm_link_down
	[ "$(net_counter a_to_b lost)" -gt 0 ] || fail "no packet lost: $(tm_link_stats)"
	;;
reorder | reorder-tls)
	tm_link_up "1gbit,2ms,jitter=1ms,reorder" || fail "link"
	[ "$CASE" = reorder-tls ] && net_use_tls
	net_migrate $((16 << 20)) 4 60
	tm_link_down
	[ "$(net_counter a_to_b reordered)" -gt 0 ] || fail "no packet reordered: $(tm_link_stats)"
	;;
cut | cut-tls)
	# The sender's busiest connection to the receiver's port: a data channel, never control.
	cut_busiest() { net_cut "$1" busiest; }
	command -v ss >/dev/null || { echo "SKIP: no ss"; exit 77; }
	tm_link_up "1gbit,2ms" || fail "link"
	[ "$CASE" = cut-tls ] && net_use_tls
	NET_SEND_ARGS=(--rate-limit 32M/s)
	NET_DURING=cut_busiest
	net_migrate $((64 << 20)) 4 60
	tm_link_down
	[ -s "$T/cut" ] || fail "nothing was cut"
	grep -q '"reconnects":1' "$T/send.out" || fail "send --json counts no reconnect: $(cat "$T/send.out")"
	note "connection from port $(cat "$T/cut") cut and resumed: $(grep -o '"resume":{[^}]*}' "$T/send.out")"
	;;
*)
	fail "unknown case"
	;;
esac
note "link: $(tm_link_stats | tr '\n' ';')"
echo ok
