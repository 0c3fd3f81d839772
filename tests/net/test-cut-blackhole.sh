#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# A data channel's path dies under a running migration without a reset (issue 14: a cut of any
# one channel completes; docs/api.md, "Timeouts and liveness"): 64 MiB at 32 MiB/s over 4 channels
# across tests/net's link, --timeout 3; once the channels stream, the link drops every packet of
# the sender's busiest connection, both ways, silently (tm-wire --blackhole). Only TCP_INFO tells:
# the sender's data is not acknowledged for timeout_ms. The sender resumes that channel over a new
# connection: both exit 0, RAM and tags byte-exact, send --json counts the reconnect, and the link
# dropped packets of the dead connection.
#
# usage: test-cut-blackhole.sh TAGMIG GEN_IMAGE TM_WIRE CASE     Exit 0 pass, 1 fail, 77 skip.
#   plain | tls
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
net_test_begin "cut-blackhole-$CASE"

blackhole_busiest() { net_blackhole "$1" busiest 5; } # 4 data channels + control

command -v ss >/dev/null || { echo "SKIP: no ss"; exit 77; }
case $CASE in
plain) ;;
tls) ;;
*) fail "unknown case" ;;
esac
tm_link_up "1gbit,2ms" || fail "link"
[ "$CASE" = tls ] && net_use_tls
NET_SEND_ARGS=(--rate-limit 32M/s --timeout 3)
NET_RECV_ARGS=(--timeout 3)
NET_DURING=blackhole_busiest
net_migrate $((64 << 20)) 4 40
tm_link_down
reconnects=$(sed -n 's/.*"reconnects":\([0-9]*\).*/\1/p' "$T/send.out")
[ "${reconnects:-0}" -ge 1 ] || fail "send --json counts no reconnect: $(cat "$T/send.out")"
# The dead channel is reconnected once (twice at most, when the receiver's body deadline, 5 s +,
# also fires on a slow machine); a check that resumed anything else, or nothing, counts dozens.
[ "$reconnects" -le 2 ] || fail "send --json counts $reconnects reconnects for one dead path"
holed=$(($(net_counter a_to_b blackholed) + $(net_counter b_to_a blackholed)))
[ "$holed" -gt 0 ] || fail "the link dropped no packet of port $(cat "$T/cut")"
note "$CASE: port $(cat "$T/cut") blackholed ($holed packets), $reconnects reconnect(s), ${ELAPSED_MS} ms"
echo "PASS: cut-blackhole-$CASE"
