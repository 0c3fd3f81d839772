# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# What the tests across tests/net's link share (sourced after netns.sh, with TAGMIG and GEN set):
#   net_test_begin LABEL     skips (exit 77, with the reason) where no link can be made; makes $T
#                            and an EXIT trap that ends the receiver and removes link and files
#   fail MSG / note MSG      end the test failed (with the processes' stderr) / a TAP comment
#   net_use_tls              credentials for host B's address; later migrations run over TLS
#   net_migrate SIZE CH BOUND_S
#                            RAM and tags of SIZE bytes, tagmig recv in host B and send in host A
#                            over CH channels (SEND_IO / RECV_IO choose the backends): both exit 0
#                            within BOUND_S, RAM and tags byte-exact; sets ELAPSED_MS, WIRE_BYTES;
#                            NET_IMAGE (default ram) is the tm-gen-image kind of the RAM, NET_SEND_ARGS
#                            (an array) more options of tagmig send; send's JSON is $T/send.out
#   net_counter DIR NAME     one of the last link's counters (tm_link_stats), e.g. a_to_b lost
#   NET_SEND_ARGS=(...)      more options for tagmig send (e.g. --rate-limit)
#   NET_DURING=FUNC          run in the background while tagmig send runs (e.g. a cut)
#   net_cut PORT WHICH [N]   (as a NET_DURING body) destroys in host A the sender's busiest or
#                            quietest (WHICH) connection to PORT once N connections (default 1)
#                            stream and the busiest passed 1 MiB; its port goes to $T/cut
#   net_blackhole PORT WHICH [N]  the same connection, but the link drops its packets from then
#                            on, both ways, silently (no reset: a dead path)
#   NET_RECV_ARGS=(...)      more options for tagmig recv

NET_LABEL=
RECV_PID=
SEND_TLS=()
RECV_TLS=()
NET_SEND_ARGS=()
NET_RECV_ARGS=()
NET_DURING=

fail() {
	echo "FAIL${NET_LABEL:+ [$NET_LABEL]}: $*" >&2
	for f in "$T"/*.err; do
		[ -s "$f" ] && { echo "--- $(basename "$f"):" >&2; head -c 4000 "$f" >&2; }
	done
	exit 1
}
note() { echo "#${NET_LABEL:+ [$NET_LABEL]} $*"; }

net_cleanup() {
	[ -n "$RECV_PID" ] && kill "$RECV_PID" 2>/dev/null
	tm_link_down
	rm -rf "$T"
}

net_test_begin() { # LABEL
	local why
	NET_LABEL=$1
	if ! why=$(tm_link_check 2>&1); then
		echo "SKIP: $why"
		exit 77
	fi
	T=$(mktemp -d "${TMPDIR:-/tmp}/tagmig-net.XXXXXX")
	trap net_cleanup EXIT
}

net_use_tls() {
	local scripts
	scripts=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../scripts" && pwd)
	"$scripts/make-tls-creds.sh" "$T/creds" "$TM_ADDR_B" >"$T/creds.log" 2>&1 ||
		fail "make-tls-creds.sh: $(cat "$T/creds.log")"
	SEND_TLS=(--tls-creds "$T/creds")
	RECV_TLS=(--tls-creds "$T/creds")
}

net_migrate() { # SIZE CHANNELS BOUND_S
	local size=$1 ch=$2 bound=$3 start end rc
	"$GEN" "${NET_IMAGE:-ram}" "$size" 41 "$T/in.img" || fail "tm-gen-image ${NET_IMAGE:-ram}"
	"$GEN" tags $((size / 16)) 42 "$T/in.tags" || fail "tm-gen-image tags"
	rm -f "$T/out.img" "$T/out.tags" "$T/port"
	tm_in_b env ${RECV_IO:+TAGMIG_IO=$RECV_IO} timeout $((bound + 30)) "$TAGMIG" recv \
		--listen "$TM_ADDR_B:0" --port-file "$T/port" --timeout 30 "${RECV_TLS[@]}" \
		--ram "$T/out.img" --tags "$T/out.tags" "${NET_RECV_ARGS[@]}" \
		>"$T/recv.out" 2>"$T/recv.err" &
	RECV_PID=$!
	for _ in $(seq 1 200); do [ -s "$T/port" ] && break; sleep 0.05; done
	[ -s "$T/port" ] || fail "recv did not listen"
	start=$(date +%s%N)
	local during=
	if [ -n "$NET_DURING" ]; then
		"$NET_DURING" "$(cat "$T/port")" &
		during=$!
	fi
	tm_in_a env ${SEND_IO:+TAGMIG_IO=$SEND_IO} timeout $((bound + 30)) "$TAGMIG" send \
		--connect "$TM_ADDR_B:$(cat "$T/port")" --timeout 30 "${SEND_TLS[@]}" \
		--channels "$ch" --ram "$T/in.img" --tags "$T/in.tags" --json "${NET_SEND_ARGS[@]}" \
		>"$T/send.out" 2>"$T/send.err"
	rc=$?
	[ -z "$during" ] || wait "$during" || fail "$NET_DURING failed: $(cat "$T/during.err" 2>/dev/null)"
	end=$(date +%s%N)
	[ "$rc" = 0 ] || fail "send exited $rc"
	wait "$RECV_PID"
	rc=$?
	RECV_PID=
	[ "$rc" = 0 ] || fail "recv exited $rc"
	cmp -s "$T/in.img" "$T/out.img" || fail "RAM differs after the migration"
	cmp -s "$T/in.tags" "$T/out.tags" || fail "tags differ after the migration"
	ELAPSED_MS=$(((end - start) / 1000000))
	[ "$ELAPSED_MS" -le $((bound * 1000)) ] || fail "took $ELAPSED_MS ms, bound $bound s"
	WIRE_BYTES=$(sed -n 's/.*"wire_bytes":\([0-9]*\).*/\1/p' "$T/send.out")
	[ -n "$WIRE_BYTES" ] || fail "send --json has no wire_bytes: $(cat "$T/send.out")"
}

net_counter() { tm_link_stats | awk -v d="$1" -v n="$2" '$1 == d { for (i = 2; i < NF; i += 2) if ($i == n) print $(i + 1) }'; }

# The local port of the sender's busiest or quietest connection to PORT, if one qualifies now.
net_pick() { # PORT busiest|quietest [CONNECTIONS]
	# quietest: only once every other connection streams (passed 1 MiB) while it has
	# not (64 KiB), so that a data channel still starting is never taken for it.
	tm_in_a ss -tni "dport = :$1" | awk -v which="$2" -v need="${3:-1}" '
		/^ESTAB/ { split($4, a, ":"); port = a[length(a)]; conns++; acked[port] = 0 }
		/bytes_acked:/ { if (match($0, /bytes_acked:[0-9]+/))
			acked[port] = substr($0, RSTART + 12, RLENGTH - 12) + 0 }
		END {
			for (p in acked) {
				n = acked[p]
				if (n > most) { most = n; busiest = p }
				if (quietest == "" || n < least) { second = least; least = n; quietest = p }
				else if (second == "" || n < second) second = n
			}
			if (conns < need || most < 1048576) exit
			if (which == "busiest") print busiest
			else if (least < 65536 && (conns == 1 || second >= 1048576)) print quietest
		}'
}

net_cut() { # PORT busiest|quietest [CONNECTIONS]
	# Retried until a kill took: under load the sender may not stream yet at the first look,
	# and `ss -K` exits 0 when its filter matched nothing (or the socket went meanwhile).
	local sport killed
	for _ in $(seq 1 30); do
		sleep 0.2
		sport=$(net_pick "$@")
		[ -n "$sport" ] || continue
		killed=$(tm_in_a ss -H -K "dport = :$1" "sport = :$sport" 2>>"$T/during.err")
		if [ -n "$killed" ]; then
			echo "$sport" >"$T/cut"
			return 0
		fi
	done
	echo "no $2 streaming connection could be cut in 6 s" >>"$T/during.err"
	return 1
}

net_blackhole() { # PORT busiest|quietest [CONNECTIONS]
	local sport
	for _ in $(seq 1 30); do
		sleep 0.2
		sport=$(net_pick "$@")
		[ -n "$sport" ] || continue
		tm_link_blackhole "$sport" || break
		echo "$sport" >"$T/cut"
		return 0
	done
	echo "no $2 streaming connection could be blackholed in 6 s" >>"$T/during.err"
	return 1
}
