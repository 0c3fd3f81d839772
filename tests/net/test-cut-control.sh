#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The control connection cut under a running migration (issue 14: a cut of the first connection
# completes; docs/wire-format.md, "Resume of the control connection"): 64 MiB at 32 MiB/s over 4
# channels across tests/net's link; after 0.7 s the sender's connection to the receiver's port
# that moved the fewest bytes (control: PINGs only, the data channels carry megabytes) is destroyed
# in host A with ss -K (the sender sees ECONNABORTED, the receiver a reset). The sender reconnects
# it: both exit 0, RAM and tags byte-exact, and send --json counts the reconnect.
#
# usage: test-cut-control.sh TAGMIG GEN_IMAGE TM_WIRE CASE     Exit 0 pass, 1 fail, 77 skip.
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
net_test_begin "cut-control-$CASE"

# The quietest of the sender's connections to the receiver's port: the control connection.
cut_quietest() { net_cut "$1" quietest 5; } # 4 data channels + control

command -v ss >/dev/null || { echo "SKIP: no ss"; exit 77; }
case $CASE in
plain) ;;
tls) ;;
*) fail "unknown case" ;;
esac
tm_link_up "1gbit,2ms" || fail "link"
[ "$CASE" = tls ] && net_use_tls
NET_SEND_ARGS=(--rate-limit 32M/s)
NET_DURING=cut_quietest
net_migrate $((64 << 20)) 4 60
tm_link_down
[ -s "$T/cut" ] || fail "nothing was cut"
grep -q '"reconnects":1' "$T/send.out" || fail "send --json counts no reconnect: $(cat "$T/send.out")"
grep -q '"resent_bytes":0' "$T/send.out" ||
	fail "a data channel was cut, not control (bytes were sent again): $(cat "$T/send.out")"
note "connection from port $(cat "$T/cut") (control) cut and resumed: $(grep -o '"resume":{[^}]*}' "$T/send.out")"
note "link: $(tm_link_stats | tr '\n' ';')"
echo ok
