#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Migrations across a bad network (issue 14's fault tests, the parts that need no resume): each CASE
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
# SEND_IO / RECV_IO (environment) choose the I/O backends as in tests/cli/cases.sh.
set -u
TAGMIG=$1
GEN=$2
export TM_WIRE=$3
CASE=$4
HERE=$(cd "$(dirname "$0")" && pwd)
SCRIPTS=$(cd "$HERE/../../scripts" && pwd)
# shellcheck source=netns.sh
. "$HERE/netns.sh"

if ! why=$(tm_link_check 2>&1); then
	echo "SKIP: $why"
	exit 77
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/tagmig-netf.XXXXXX")
RECV_PID=
cleanup() {
	[ -n "$RECV_PID" ] && kill "$RECV_PID" 2>/dev/null
	tm_link_down
	rm -rf "$T"
}
trap cleanup EXIT
fail() {
	echo "FAIL [$CASE]: $*" >&2
	for f in "$T"/*.err; do
		[ -s "$f" ] && { echo "--- $(basename "$f"):" >&2; head -c 4000 "$f" >&2; }
	done
	exit 1
}
note() { echo "# [$CASE] $*"; }

SEND_TLS=()
RECV_TLS=()
use_tls() {
	"$SCRIPTS/make-tls-creds.sh" "$T/creds" "$TM_ADDR_B" >"$T/creds.log" 2>&1 || fail "make-tls-creds.sh: $(cat "$T/creds.log")"
	SEND_TLS=(--tls-creds "$T/creds")
	RECV_TLS=(--tls-creds "$T/creds")
}

# migrate SIZE CHANNELS BOUND_S: receiver in B, sender in A; both exit 0, output exact, in time.
migrate() {
	local size=$1 ch=$2 bound=$3 start end rc
	"$GEN" ram "$size" 41 "$T/in.img" || fail "tm-gen-image ram"
	"$GEN" tags $((size / 16)) 42 "$T/in.tags" || fail "tm-gen-image tags"
	tm_in_b env ${RECV_IO:+TAGMIG_IO=$RECV_IO} timeout $((bound + 30)) "$TAGMIG" recv \
		--listen "$TM_ADDR_B:0" --port-file "$T/port" --timeout 30 "${RECV_TLS[@]}" \
		--ram "$T/out.img" --tags "$T/out.tags" >"$T/recv.out" 2>"$T/recv.err" &
	RECV_PID=$!
	for _ in $(seq 1 200); do [ -s "$T/port" ] && break; sleep 0.05; done
	[ -s "$T/port" ] || fail "recv did not listen"
	start=$(date +%s)
	tm_in_a env ${SEND_IO:+TAGMIG_IO=$SEND_IO} timeout $((bound + 30)) "$TAGMIG" send \
		--connect "$TM_ADDR_B:$(cat "$T/port")" --timeout 30 "${SEND_TLS[@]}" \
		--channels "$ch" --ram "$T/in.img" --tags "$T/in.tags" >"$T/send.out" 2>"$T/send.err"
	rc=$?
	end=$(date +%s)
	[ "$rc" = 0 ] || fail "send exited $rc"
	wait "$RECV_PID"
	rc=$?
	RECV_PID=
	[ "$rc" = 0 ] || fail "recv exited $rc"
	cmp -s "$T/in.img" "$T/out.img" || fail "RAM differs after the migration"
	cmp -s "$T/in.tags" "$T/out.tags" || fail "tags differ after the migration"
	[ $((end - start)) -le "$bound" ] || fail "took $((end - start)) s, bound $bound s"
	note "$size bytes over $ch channels in $((end - start)) s: exact; $(tail -c 300 "$T/send.err")"
}

# counter DIRECTION NAME: one of the wire's counters of the last link.
counter() { tm_link_stats | awk -v d="$1" -v n="$2" '$1 == d { for (i = 2; i < NF; i += 2) if ($i == n) print $(i + 1) }'; }

case $CASE in
delay-50ms)
	tm_link_up "1gbit,50ms" || fail "link"
	migrate $((16 << 20)) 4 60
	tm_link_down
	;;
loss | loss-tls)
	tm_link_up "1gbit,2ms,loss=1%" || fail "link"
	[ "$CASE" = loss-tls ] && use_tls
	migrate $((16 << 20)) 4 60
	tm_link_down
	[ "$(counter a_to_b lost)" -gt 0 ] || fail "no packet lost: $(tm_link_stats)"
	;;
reorder | reorder-tls)
	tm_link_up "1gbit,2ms,jitter=1ms,reorder" || fail "link"
	[ "$CASE" = reorder-tls ] && use_tls
	migrate $((16 << 20)) 4 60
	tm_link_down
	[ "$(counter a_to_b reordered)" -gt 0 ] || fail "no packet reordered: $(tm_link_stats)"
	;;
*)
	fail "unknown case"
	;;
esac
note "link: $(tm_link_stats | tr '\n' ';')"
echo ok
