#!/bin/bash
# Boots the reference VMM's MTE test guest (vmm/guest/) on QEMU's `virt` machine with MTE under
# TCG, with no kernel and no VMM, and turns what it reports into TAP (docs/aarch64.md):
#   test-guest.sh SRCDIR WORKDIR BUILDROOT built|REASON
#
# Each run gets a copy of guest.elf whose parameter block (guest-params.h) is patched the way a
# loader would patch it (passes, window, RAM size, self-check mode), so the binary under test is
# the one the VMM loads. Checks:
#   1. passes: at least 3 consecutive "pass N ok" lines, then "done 4 passes" and a power-off;
#   2. the loader's block is obeyed: another RAM size and window, reported back by the guest; a
#      block without its magic is refused;
#   3. the flat guest.bin, placed at its load address with QEMU's generic loader (as a VMM does);
#   4. a machine without tag memory: "error: no MTE ..." and a stop;
#   5. self-checks that must fail: a flipped data word ("mismatch ... data"), a changed tag (a
#      synchronous tag-check fault at that granule) and a tag changed after the data sweep
#      ("mismatch ... tag", found by LDG), each at the granule the guest announced.
#
# QEMU: $TAGMIG_QEMU, else a qemu-system-aarch64 >= 8.0 on PATH, else the one the aarch64 suite
# unpacked into BUILDROOT/tests/vm/aarch64/cache, else qemu-system-arm from <codename>-backports,
# fetched with `apt-get download` into WORKDIR/cache through a private apt state and unpacked,
# never installed. QEMU 7.2 (Debian 12's) keeps one tag per page under TCG (QEMU issue 1416): the
# guest faults on its first granule there, so 7.2 is not used. Skips (TAP SKIP, with the reason)
# when the guest is not built or no QEMU >= 8.0 can be had; anything else that goes wrong fails.
# TAGMIG_GUEST_TIMEOUT: seconds per boot (default 60; a boot takes about a second).
set -uo pipefail
src=$1
work=$2
buildroot=$3
built=$4
cache=$work/cache
mkdir -p "$cache"

# skip, bail, note (TAP); mirror_of, apt_private
# shellcheck source=../../tests/vm/lib/harness.sh
. "$src/tests/vm/lib/harness.sh"

[ "$built" = built ] || skip "the guest is not built: $built"
elf=$work/guest.elf
bin=$work/guest.bin
if [ ! -f "$elf" ] || [ ! -f "$bin" ]; then
	bail "guest.elf or guest.bin missing in $work"
fi
command -v python3 >/dev/null || skip "python3 is not installed (it patches the parameter block)"

# ---- QEMU ----
qemu_version() { # prints major.minor of QEMU binary $1
	"$1" --version 2>/dev/null | head -1 | sed -n 's/.*version \([0-9]*\)\.\([0-9]*\).*/\1.\2/p'
}
usable() { # QEMU $1 is >= 8.0 and runs
	local v
	v=$(qemu_version "$1")
	[ -n "$v" ] && [ "${v%%.*}" -ge 8 ]
}
qemu=${TAGMIG_QEMU:-}
why_not=
if [ -z "$qemu" ]; then
	sysq=$(command -v qemu-system-aarch64 || true)
	suiteq=$buildroot/tests/vm/aarch64/cache/qemu/usr/bin/qemu-system-aarch64
	ownq=$cache/qemu/usr/bin/qemu-system-aarch64
	if [ -n "$sysq" ] && usable "$sysq"; then
		qemu=$sysq
	elif [ -x "$suiteq" ]; then
		qemu=$suiteq
	else
		[ -n "$sysq" ] && why_not="$sysq is QEMU $(qemu_version "$sysq"), older than 8.0 (one tag per page under TCG, QEMU issue 1416)"
		exec 9>"$cache/lock"
		flock 9
		if [ ! -x "$ownq" ]; then
			note "fetching qemu-system-arm from backports (private apt state, not installed)"
			"$src/tests/vm/lib/fetch-backports.sh" "$cache" "$cache/qemu" qemu-system-arm \
				2>"$cache/fetch.log" ||
				skip "no QEMU >= 8.0 ($why_not), and qemu-system-arm could not be fetched ($(tail -1 "$cache/fetch.log")): set TAGMIG_QEMU"
		fi
		flock -u 9
		qemu=$ownq
	fi
fi
if ! usable "$qemu"; then
	missing=$(ldd "$qemu" 2>/dev/null | grep 'not found' | head -3 | tr -s ' \t\n' ' ')
	[ -n "$missing" ] && skip "QEMU $qemu lacks shared libraries ($missing): install Debian's qemu-system-arm (scripts/setup.sh does)"
	bail "QEMU $qemu is not version 8.0 or newer (got '$(qemu_version "$qemu")')"
fi
note "QEMU $(qemu_version "$qemu") ($qemu), TCG"

# ---- the loader: a copy of the image with fields of its parameter block changed ----
# patch IN OUT field=value...  (IN an ELF: the block is found through its program headers at
# TM_GUEST_LOAD_ADDR + 8; IN anything else: at offset 8)
patch() {
	python3 - "$@" <<'EOF'
import struct, sys
src, dst, sets = sys.argv[1], sys.argv[2], sys.argv[3:]
img = bytearray(open(src, 'rb').read())
off = 8
if img[:4] == b'\x7fELF':
    phoff, = struct.unpack_from('<Q', img, 32)
    phentsize, phnum = struct.unpack_from('<HH', img, 54)
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from('<IIQQQQ', img, phoff + i * phentsize)
        if p_type == 1 and p_vaddr <= 0x40200008 < p_vaddr + p_filesz:
            off = p_offset + 0x40200008 - p_vaddr
            break
    else:
        sys.exit('no PT_LOAD holds the parameter block')
# struct tm_guest_params (guest-params.h): name -> (offset, struct format)
fields = {'magic': (0, 'Q'), 'version': (8, 'I'), 'size': (12, 'I'), 'ram_base': (16, 'Q'),
          'ram_size': (24, 'Q'), 'port': (32, 'Q'), 'window_base': (40, 'Q'),
          'window_size': (48, 'Q'), 'passes': (56, 'Q'), 'selftest': (64, 'I'),
          'selftest_pass': (68, 'I'), 'selftest_offset': (72, 'Q'), 'stop': (80, 'I'),
          'hold_ms': (84, 'I')}
if img[off:off + 8] != b'TMGUEST1':
    sys.exit('no parameter block (magic TMGUEST1) at file offset %#x' % off)
for s in sets:
    k, v = s.split('=')
    o, f = fields[k]
    struct.pack_into('<' + f, img, off + o, int(v, 0))
open(dst, 'wb').write(img)
EOF
}

n=0
fails=0
ok() {
	n=$((n + 1))
	echo "ok $n - $*"
}
notok() {
	n=$((n + 1))
	fails=$((fails + 1))
	echo "not ok $n - $*"
}
# boot NAME MEM QEMU-ARGS...: runs the machine ($machine, default virt,mte=on) until the guest
# powers it off; the console in $work/console-NAME.log, CR stripped
boot() {
	local name=$1 mem=$2 t0 rc
	shift 2
	t0=$(date +%s%N)
	timeout -k 5 "${TAGMIG_GUEST_TIMEOUT:-60}" "$qemu" -M "${machine:-virt,mte=on}" -accel tcg -cpu max \
		-m "$mem" -nographic -no-reboot -monitor none -serial stdio -nodefaults "$@" \
		</dev/null 2>&1 | tr -d '\r' >"$work/console-$name.log"
	rc=${PIPESTATUS[0]}
	boot_rc=$rc
	note "$name: QEMU exit $rc after $((($(date +%s%N) - t0) / 1000000)) ms"
	[ "$rc" = 124 ] && note "$name: timed out"
	return 0
}
console_tail() {
	tail -8 "$work/console-$1.log" | sed 's/^/# console: /'
}
# passes_ok NAME WANT: the console has "pass 1 ok" ... "pass WANT ok" in order and "done WANT passes"
passes_ok() {
	local want=$1 got
	got=$(grep -c '^pass [0-9]* ok$' "$work/console-$2.log")
	[ "$(grep '^pass [0-9]* ok$' "$work/console-$2.log" | awk '{print $2}' | tr '\n' ' ')" = \
		"$(seq -s ' ' 1 "$want") " ] && [ "$got" -ge 3 ] &&
		grep -qx "done $want passes" "$work/console-$2.log"
}

# 1. passes, with the QEMU defaults built into the image
patch "$elf" "$work/run-passes.elf" passes=4 || bail "patching the parameter block failed"
boot passes 128M -kernel "$work/run-passes.elf"
if passes_ok 4 passes && ! grep -q '^mismatch\|^fault\|^error' "$work/console-passes.log" &&
	[ "$boot_rc" = 0 ]; then
	ok "4 passes over the default window (1 MiB at 0x40400000), each 'pass N ok', then 'done 4 passes' and PSCI SYSTEM_OFF"
else
	notok "the guest did not report passes 1..4 ok and done"
	console_tail passes
fi

# 2. the loader's parameter block: 256 MiB of RAM, a 256 KiB window near the end of RAM
patch "$elf" "$work/run-params.elf" passes=3 ram_size=0x10000000 window_base=0x4ff00000 \
	window_size=0x40000 || bail "patching the parameter block failed"
boot params 256M -kernel "$work/run-params.elf"
if passes_ok 3 params &&
	grep -q '^tmguest: ram 0x40000000+0x10000000 window 0x4ff00000+0x40000 ' "$work/console-params.log"; then
	ok "the parameter block as a loader writes it: 256 MiB RAM, window 0x4ff00000+0x40000, 3 passes"
else
	notok "the guest did not run with the patched parameter block"
	console_tail params
fi

# ... and a block without its magic is refused, not run
patch "$elf" "$work/run-badblock.elf" magic=0 passes=3 || bail "patching the parameter block failed"
boot badblock 128M -kernel "$work/run-badblock.elf"
if grep -q '^error: bad parameter block' "$work/console-badblock.log" &&
	! grep -q '^pass' "$work/console-badblock.log" && [ "$boot_rc" = 0 ]; then
	ok "a parameter block without its magic is refused: '$(grep -m1 '^error' "$work/console-badblock.log")'"
else
	notok "a parameter block without its magic was not refused"
	console_tail badblock
fi

# 3. the flat image at its load address, started there (what a VMM does with guest.bin)
patch "$bin" "$work/run-flat.bin" passes=3 || bail "patching guest.bin failed"
boot flat 128M -device loader,file="$work/run-flat.bin",addr=0x40200000,cpu-num=0
if passes_ok 3 flat; then
	ok "guest.bin loaded at 0x40200000 and started there: 3 passes"
else
	notok "guest.bin at 0x40200000 did not pass"
	console_tail flat
fi

# 4. a CPU without tag memory (virt without mte=on: ID_AA64PFR1_EL1.MTE = 1), like a KVM VM
# without KVM_CAP_ARM_MTE: refused with the reason, and stopped (QEMU exits)
machine=virt boot nomte 128M -kernel "$work/run-passes.elf"
if grep -q '^error: no MTE with tag memory (FEAT_MTE2): ID_AA64PFR1_EL1.MTE = 0x[01]$' "$work/console-nomte.log" &&
	! grep -q '^pass' "$work/console-nomte.log" && [ "$boot_rc" = 0 ]; then
	ok "without tag memory the guest says so and stops: '$(grep -m1 '^error' "$work/console-nomte.log")'"
else
	notok "without mte=on the guest did not refuse"
	console_tail nomte
fi

# 5. self-checks: each must stop pass 2 with the damage found at the announced granule
# (the default: window + 0x1030, granule 3 of a zero-data page)
want_addr=0x40401030
selfcheck() { # NAME MODE PATTERN DESCRIPTION
	local name=$1 mode=$2 pattern=$3 what=$4 log="$work/console-$1.log" line
	patch "$elf" "$work/run-$name.elf" passes=4 selftest="$mode" selftest_pass=2 ||
		bail "patching the parameter block failed"
	boot "$name" 128M -kernel "$work/run-$name.elf"
	line=$(grep -m1 '^mismatch\|^fault' "$log")
	if grep -qx 'pass 1 ok' "$log" && ! grep -q '^pass 2 ok' "$log" &&
		grep -q "^selftest: .* at $want_addr" "$log" && [[ $line =~ $pattern ]]; then
		ok "self-check $what: '$line'"
	else
		notok "self-check $what was not reported at $want_addr (first report: '${line:-none}')"
		console_tail "$name"
	fi
}
# the fault's address is anywhere inside the 16-byte granule (FAR_EL1 for a Tag Check Fault)
selfcheck data 1 "^mismatch pass 2 data at $want_addr expected 0x0 found 0x1$" \
	"(a data word flipped)"
selfcheck tag 2 "^fault pass 2 tag-check at ${want_addr%?}[0-9a-f] pointer tag 0x[0-9a-f] memory tag 0x[0-9a-f] esr " \
	"(a tag changed: synchronous tag-check fault)"
selfcheck tag-ldg 3 "^mismatch pass 2 tag at $want_addr expected 0x[0-9a-f] found 0x[0-9a-f]$" \
	"(a tag changed after the data sweep: LDG)"
# the changed tags differ from the expected ones
for name in tag tag-ldg; do
	line=$(grep -m1 '^mismatch\|^fault' "$work/console-$name.log")
	if [[ $line =~ pointer\ tag\ (0x[0-9a-f])\ memory\ tag\ (0x[0-9a-f]) ]] ||
		[[ $line =~ expected\ (0x[0-9a-f])\ found\ (0x[0-9a-f]) ]]; then
		if [ "${BASH_REMATCH[1]}" != "${BASH_REMATCH[2]}" ]; then
			ok "self-check $name: tags ${BASH_REMATCH[1]} (expected) and ${BASH_REMATCH[2]} (in memory) differ"
		else
			notok "self-check $name: the reported tags are equal ($line)"
		fi
	else
		notok "self-check $name: no tags in the report"
	fi
done

echo "1..$n"
exit 0
