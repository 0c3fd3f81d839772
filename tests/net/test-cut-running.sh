#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# A connection lost under a running migration (issue 14: a cut of any one connection completes):
# 64 MiB at 32 MiB/s over 4 channels across tests/net's link.
#   plain | tls: after 0.7 s the sender's connection to the receiver's port that moved the fewest
#     bytes (control: PINGs only, the data channels carry megabytes) is destroyed in host A with
#     ss -K (the sender sees ECONNABORTED, the receiver a reset). The sender reconnects it
#     (docs/wire-format.md, "Resume of the control connection"); no byte is sent again.
#   blackhole | blackhole-tls: the busiest data connection stays open, but the link drops all its
#     packets both ways from then on, silently (tm-wire --blackhole), with --timeout 3: only
#     TCP_INFO tells (data unacknowledged for timeout_ms); that channel is reset and resumed over
#     a new connection (docs/api.md, "Timeouts and liveness"), and the link dropped its packets.
# Either way both exit 0, RAM and tags byte-exact, and send --json counts the reconnect.
#
# usage: test-cut-running.sh TAGMIG GEN_IMAGE TM_WIRE CASE     Exit 0 pass, 1 fail, 77 skip.
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
net_test_begin "cut-running-$CASE"

cut_quietest() { net_cut "$1" quietest 5; }         # 4 data channels + control
blackhole_busiest() { net_blackhole "$1" busiest 5; }

command -v ss >/dev/null || { echo "SKIP: no ss"; exit 77; }
case $CASE in
plain | tls) NET_DURING=cut_quietest ;;
blackhole | blackhole-tls)
	NET_DURING=blackhole_busiest
	NET_SEND_ARGS=(--timeout 3)
	NET_RECV_ARGS=(--timeout 3) ;;
*) fail "unknown case" ;;
esac
tm_link_up "1gbit,2ms" || fail "link"
case $CASE in *tls) net_use_tls ;; esac
NET_SEND_ARGS+=(--rate-limit 32M/s)
net_migrate $((64 << 20)) 4 60
tm_link_down
[ -s "$T/cut" ] || fail "nothing was cut"
reconnects=$(sed -n 's/.*"reconnects":\([0-9]*\).*/\1/p' "$T/send.out")
case $CASE in
plain | tls)
	[ "$reconnects" = 1 ] || fail "send --json counts ${reconnects:-no} reconnects: $(cat "$T/send.out")"
	grep -q '"resent_bytes":0' "$T/send.out" ||
		fail "a data channel was cut, not control (bytes were sent again): $(cat "$T/send.out")"
	note "connection from port $(cat "$T/cut") (control) cut and resumed: $(grep -o '"resume":{[^}]*}' "$T/send.out")" ;;
*)
	[ "${reconnects:-0}" -ge 1 ] || fail "send --json counts no reconnect: $(cat "$T/send.out")"
	# Once (twice at most, when the receiver's body deadline, 5 s +, also fires on a slow
	# machine); a check that resumed anything else, or nothing, counts dozens.
	[ "$reconnects" -le 2 ] || fail "send --json counts $reconnects reconnects for one dead path"
	holed=$(($(net_counter a_to_b blackholed) + $(net_counter b_to_a blackholed)))
	[ "$holed" -gt 0 ] || fail "the link dropped no packet of port $(cat "$T/cut")"
	note "port $(cat "$T/cut") blackholed ($holed packets), $reconnects reconnect(s), ${ELAPSED_MS} ms" ;;
esac
note "link: $(tm_link_stats | tr '\n' ';')"
echo ok
