#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# A connection cut during setup, with the real CLI across tests/net's link (issue 14;
# docs/wire-format.md, "Setup"): the receiver is frozen (SIGSTOP) once it listens, so the
# sender's connections are established by the kernel but wait for their HELLO_ACK (plain) or the
# receiver's TLS answer (tls); one of them (CASE: the first or the last the sender opened) is then
# destroyed in host A with ss -K (the sender sees ECONNABORTED, the receiver a reset), and the
# receiver thawed. The sender dials that connection again: `tagmig send` and `tagmig recv` both
# exit 0, RAM and tags byte-exact, and send --json counts the redial as a reconnect.
#
# usage: test-cut-setup.sh TAGMIG GEN_IMAGE TM_WIRE CASE     Exit 0 pass, 1 fail, 77 skip.
#   first | last | first-tls | last-tls
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
net_test_begin "cut-setup-$CASE"

command -v ss >/dev/null || { echo "SKIP: no ss"; exit 77; }
case $CASE in
first | last) ;;
first-tls | last-tls) ;;
*) fail "unknown case" ;;
esac
tm_link_up "1gbit,2ms" || fail "link"
case $CASE in *-tls) net_use_tls ;; esac

# The tagmig process below pid (a subshell, ip netns exec, timeout).
tagmig_under() {
	local p=$1 k
	for _ in 1 2 3 4 5; do
		[ "$(cat "/proc/$p/comm" 2>/dev/null)" = tagmig ] && { echo "$p"; return 0; }
		k=$(pgrep -P "$p" | head -n 1)
		[ -n "$k" ] || return 1
		p=$k
	done
	return 1
}

size=$((16 << 20))
"$GEN" ram "$size" 41 "$T/in.img" || fail "tm-gen-image ram"
"$GEN" tags $((size / 16)) 42 "$T/in.tags" || fail "tm-gen-image tags"
tm_in_b env ${RECV_IO:+TAGMIG_IO=$RECV_IO} timeout 90 "$TAGMIG" recv \
	--listen "$TM_ADDR_B:0" --port-file "$T/port" --timeout 30 "${RECV_TLS[@]}" \
	--ram "$T/out.img" --tags "$T/out.tags" >"$T/recv.out" 2>"$T/recv.err" &
RECV_PID=$!
for _ in $(seq 1 200); do [ -s "$T/port" ] && break; sleep 0.05; done
[ -s "$T/port" ] || fail "recv did not listen"
PORT=$(cat "$T/port")
RECV_TM=$(tagmig_under "$RECV_PID") || fail "no tagmig process under $RECV_PID"
kill -STOP "$RECV_TM" || fail "could not stop recv"
tm_in_a env ${SEND_IO:+TAGMIG_IO=$SEND_IO} timeout 90 "$TAGMIG" send \
	--connect "$TM_ADDR_B:$PORT" --timeout 30 "${SEND_TLS[@]}" \
	--channels 4 --ram "$T/in.img" --tags "$T/in.tags" --json >"$T/send.out" 2>"$T/send.err" &
SEND_PID=$!
# 4 data channels and control, established by the receiver's kernel, none answered.
conns=
for _ in $(seq 1 100); do
	conns=$(tm_in_a ss -Htn state established "dport = :$PORT" | wc -l)
	[ "$conns" -ge 5 ] && break
	sleep 0.05
done
[ "$conns" -ge 5 ] || { kill -CONT "$RECV_TM"; fail "only $conns connections established"; }
sport=$(tm_in_a ss -Htn state established "dport = :$PORT" |
	awk '{ split($3, a, ":"); print a[length(a)] }' | sort -n |
	if [ "${CASE%-tls}" = first ]; then head -n 1; else tail -n 1; fi)
killed=$(tm_in_a ss -H -K "dport = :$PORT" "sport = :$sport" 2>"$T/during.err")
sleep 0.3
kill -CONT "$RECV_TM"
[ -n "$killed" ] || fail "ss -K killed nothing: $(cat "$T/during.err")"
wait "$SEND_PID"
rc=$?
[ "$rc" = 0 ] || fail "send exited $rc"
wait "$RECV_PID"
rc=$?
RECV_PID=
[ "$rc" = 0 ] || fail "recv exited $rc"
cmp -s "$T/in.img" "$T/out.img" || fail "RAM differs after the migration"
cmp -s "$T/in.tags" "$T/out.tags" || fail "tags differ after the migration"
grep -q '"reconnects":[1-9]' "$T/send.out" || fail "send --json counts no reconnect: $(cat "$T/send.out")"
note "connection from port $sport cut during setup and dialled again: $(grep -o '"resume":{[^}]*}' "$T/send.out")"
tm_link_down
echo ok
