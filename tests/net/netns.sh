# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Two hosts on one machine, for the tests and bench/: source this file (bash), then
#
#   tm_link_check             says why this machine cannot (on stderr) and returns 1, else 0
#   tm_link_up SPEC           two network namespaces joined by one emulated link (tests/net/wire.c)
#                             SPEC: RATE,DELAY[,jitter=TIME][,reorder][,loss=P%][,limit=BYTES][,mtu=BYTES],
#                             e.g. 1gbit,5ms  10gbit,1ms  200mbit,5ms,loss=0.1%  (DELAY is one-way)
#                             sets TM_LINK_A, TM_LINK_B (namespace names) and TM_ADDR_A,
#                             TM_ADDR_B (198.18.0.1 and .2, only inside those namespaces)
#   tm_in_a CMD...            runs CMD in host A (ip netns exec); tm_in_b likewise
#   tm_link_stats             the last link's counters, after tm_link_down (a line per direction:
#                             packets, bytes, lost, dropped, max_backlog)
#   tm_link_down              removes the namespaces and the link; safe to call twice
#   tm_link_reap              removes what runs that died left behind (namespaces tmlink-PID-*
#                             whose PID is gone, and every process still inside them)
#
# Needs root, iproute2, /dev/net/tun and TM_WIRE (the tm-wire program's path). Addresses are
# from 198.18.0.0/15 (RFC 2544, for benchmarks) and exist only inside the two namespaces, so
# parallel links never meet and nothing leaves the machine. One link per shell ($$ names it).
# Call tm_link_down from the caller's EXIT trap; tm_link_up reaps leftovers of killed runs first.

TM_ADDR_A=198.18.0.1
TM_ADDR_B=198.18.0.2
TM_LINK_A=
TM_LINK_B=
TM_WIRE_PID=
TM_LINK_DIR=
TM_LINK_LAST_STATS=

tm_link_check() {
	if [ "$(id -u)" != 0 ]; then
		echo "network namespaces need root (running as uid $(id -u))" >&2
		return 1
	fi
	if ! command -v ip >/dev/null 2>&1; then
		echo "ip (iproute2) not installed" >&2
		return 1
	fi
	if [ ! -c /dev/net/tun ]; then
		echo "/dev/net/tun missing (kernel without TUN)" >&2
		return 1
	fi
	if [ -z "${TM_WIRE:-}" ] || [ ! -x "$TM_WIRE" ]; then
		echo "TM_WIRE does not name the tm-wire program ('${TM_WIRE:-}')" >&2
		return 1
	fi
	local probe="tmlink-probe-$$" out
	if ! out=$(ip netns add "$probe" 2>&1); then
		echo "cannot create a network namespace: $out" >&2
		return 1
	fi
	ip netns del "$probe" 2>/dev/null
	return 0
}

tm_link_reap() {
	local ns pid
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
		case $ns in
		tmlink-[0-9]*-a | tmlink-[0-9]*-b) ;;
		*) continue ;;
		esac
		pid=${ns#tmlink-}
		pid=${pid%-?}
		kill -0 "$pid" 2>/dev/null && continue
		# The wire (it lives in host B's namespace) and anything a test left running there.
		ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
		ip netns del "$ns" 2>/dev/null
	done
}

tm_link_up() { # SPEC
	local spec=$1 i mtu
	tm_link_reap
	TM_LINK_A="tmlink-$$-a"
	TM_LINK_B="tmlink-$$-b"
	TM_LINK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/tmlink.XXXXXX") || return 1
	ip netns add "$TM_LINK_A" || return 1
	ip netns add "$TM_LINK_B" || { tm_link_down; return 1; }
	ip -n "$TM_LINK_A" link set lo up && ip -n "$TM_LINK_B" link set lo up || { tm_link_down; return 1; }
	"$TM_WIRE" --ns-a "$TM_LINK_A" --ns-b "$TM_LINK_B" --link "$spec" \
		--ready "$TM_LINK_DIR/ready" --stats "$TM_LINK_DIR/stats" \
		--blackhole "$TM_LINK_DIR/blackhole" 2>"$TM_LINK_DIR/wire.err" &
	TM_WIRE_PID=$!
	for i in $(seq 1 100); do
		[ -s "$TM_LINK_DIR/ready" ] && break
		if ! kill -0 "$TM_WIRE_PID" 2>/dev/null; then
			echo "tm-wire: $(cat "$TM_LINK_DIR/wire.err")" >&2
			TM_WIRE_PID=
			tm_link_down
			return 1
		fi
		sleep 0.05
	done
	[ -s "$TM_LINK_DIR/ready" ] || { echo "tm-wire did not start within 5 s" >&2; tm_link_down; return 1; }
	mtu=$(awk '/^mtu/ {print $2}' "$TM_LINK_DIR/ready")
	ip -n "$TM_LINK_A" link set tmw0 mtu "$mtu" up &&
		ip -n "$TM_LINK_A" addr add "$TM_ADDR_A" peer "$TM_ADDR_B" dev tmw0 &&
		ip -n "$TM_LINK_B" link set tmw0 mtu "$mtu" up &&
		ip -n "$TM_LINK_B" addr add "$TM_ADDR_B" peer "$TM_ADDR_A" dev tmw0 ||
		{ tm_link_down; return 1; }
	return 0
}

tm_in_a() { ip netns exec "$TM_LINK_A" "$@"; }
tm_in_b() { ip netns exec "$TM_LINK_B" "$@"; }

tm_link_stats() { printf '%s\n' "$TM_LINK_LAST_STATS"; }

# From now on the link drops every packet to or from TCP port PORT, both ways, silently.
tm_link_blackhole() { # PORT
	echo "$1" >"$TM_LINK_DIR/blackhole" && kill -USR1 "$TM_WIRE_PID"
}

tm_link_down() {
	local ns
	if [ -n "$TM_WIRE_PID" ]; then
		kill "$TM_WIRE_PID" 2>/dev/null
		wait "$TM_WIRE_PID" 2>/dev/null
		TM_WIRE_PID=
	fi
	for ns in $TM_LINK_A $TM_LINK_B; do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
		ip netns del "$ns" 2>/dev/null
	done
	TM_LINK_A=
	TM_LINK_B=
	if [ -n "$TM_LINK_DIR" ]; then
		TM_LINK_LAST_STATS=$(cat "$TM_LINK_DIR/stats" 2>/dev/null)
		rm -rf "$TM_LINK_DIR"
		TM_LINK_DIR=
	fi
	return 0
}
