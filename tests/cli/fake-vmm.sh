#!/bin/bash
# A stand-in for tagmig-vmm (vmm/), for `tagmig demo --kvm-guest --test-any-host --vmm` on a host
# without arm64 KVM: it prints the real VMM's lines, so the demo's relay, port hand-over and
# verdict can be tested anywhere (tests/cli/cases.sh demo-kvm-guest-run).
#   fake-vmm.sh incoming --listen 127.0.0.1:0 --check-tag-pattern
#       says it listens on port 4999, waits for the source's mark in $FAKE_VMM_DIR, then reports
#       the guest's passes continuing from the source's
#   fake-vmm.sh run --guest IMAGE --migrate-to 127.0.0.1:4999 --tag-pattern [--postcopy-after N]
#       checks its arguments, marks $FAKE_VMM_DIR/migrated, prints a round and the switchover;
#       with FAKE_VMM_FAIL=1 it fails as the real one does (exit 3) and marks nothing
set -u
dir=${FAKE_VMM_DIR:?}
echo "$*" >>"$dir/argv"
case $1 in
incoming)
	[ "$*" = "incoming --listen 127.0.0.1:0 --check-tag-pattern" ] || { echo "bad args: $*" >&2; exit 2; }
	echo "vmm: waiting for the migration on 127.0.0.1:4999 (VM with MTE, 64 MiB)"
	for _ in $(seq 100); do
		if [ -f "$dir/migrated" ]; then
			echo "vmm: the tag pattern of the upper half of RAM arrived intact"
			echo "vmm: the migrated guest passed passes 7..9 on the destination, continuing from the source's pass 6"
			exit 0
		fi
		sleep 0.1
	done
	echo "tagmig-vmm: incoming migration: no source in 10 s" >&2
	exit 1
	;;
run)
	[ "$1 $2 $4 $5 $6" = "run --guest --migrate-to 127.0.0.1:4999 --tag-pattern" ] && [ -r "$3" ] ||
		{ echo "bad args: $*" >&2; exit 2; }
	echo "vmm: migrating to 127.0.0.1:4999 at guest pass 1"
	if [ "${FAKE_VMM_FAIL:-0}" = 1 ]; then
		echo "tagmig-vmm: migration failed: precopy round 1 (guest running): channel 0: receive: connection closed by the peer" >&2
		exit 3
	fi
	echo "vmm: round 1: 16384 pages, 991344 bytes in 0.810 s; 258 pages dirty since, expected downtime 40.8 ms; guest at pass 5"
	touch "$dir/migrated"
	if [ "${7:-}" = --postcopy-after ]; then
		echo "vmm: switched to postcopy after $8 precopy round at guest pass 6 (paused at the pass's end), 258 pages dirty since the last round"
		exit 0
	fi
	echo "vmm: switchover after 1 precopy rounds at guest pass 6 (6 passes reported here): downtime 50.0 ms"
	exit 0
	;;
esac
echo "fake-vmm.sh: unknown command $1" >&2
exit 2
