#!/bin/bash
# Runs one test program of tests/vm/aarch64/ inside an emulated arm64 machine with real KVM and MTE,
# and prints its PASS/FAIL lines as TAP for meson (a program that says "SKIP: why" and exits 77
# before any check becomes a TAP skip with that reason):
#   harness.sh SRCDIR WORKDIR TEST      (TEST: kvm-tagstore, kvm-migrate, kvm-uffd, kvm-uffd-move, kvm-tag-dirty
#                                        or vmm-migrate; TAGMIG_VMM_CASES=2e,... runs only those
#                                        cases of vmm-migrate)
#
# 1. Obtains, once, into WORKDIR/cache (kept across runs):
#    - QEMU >= 8.0 (Debian 12's 7.2 loses per-granule tags under emulation, QEMU issue 1416):
#      qemu-system-arm from <codename>-backports, fetched with `apt-get download` through a
#      private apt state under WORKDIR/cache/apt (the system's apt sources are not changed) and
#      unpacked with `dpkg-deb -x`, never installed. It runs on the shared libraries of the
#      system's qemu-system-arm, which scripts/setup.sh installs for that reason.
#    - a Debian arm64 kernel (CONFIG_KVM, CONFIG_ARM64_MTE, CONFIG_USERFAULTFD), resolved through
#      its meta package (TAGMIG_AARCH64_KERNEL=6.1, the default, or 6.12) and unpacked likewise.
# 2. Cross-builds the project with cross/aarch64-linux-gnu.ini into WORKDIR/cross (static test
#    programs) and packs init + the test program into an initramfs.
# 3. Boots `-M virt,virtualization=on,mte=on` under TCG (KVM only on an arm64 host where a probe
#    boot under it reaches init: tests/vm/lib/accel.sh, TAGMIG_VM_ACCEL); init runs the program in a
#    child process and powers off.
# Exits through a TAP SKIP only when the packages cannot be obtained (no cross compiler, no arm64
# libraries, no network or mirror); anything else that goes wrong is a failure.
set -uo pipefail
src=$1
work=$2
test=$3
flavor=${TAGMIG_AARCH64_KERNEL:-6.1}
cache=$work/cache
mkdir -p "$cache"
t_start=$(date +%s)

# skip, bail, note (TAP); mirror_of, apt_private (a private apt state under $cache/apt)
# shellcheck source=../lib/harness.sh
. "$src/tests/vm/lib/harness.sh"
# vm_accel_decide (the accelerator, by evidence)
# shellcheck source=../lib/accel.sh
. "$src/tests/vm/lib/accel.sh"

case $test in
kvm-tagstore | kvm-migrate | kvm-uffd | kvm-uffd-move | kvm-tag-dirty | vmm-migrate) ;;
*) bail "unknown test '$test'" ;;
esac

# ---- 1. packages (one harness at a time prepares; the others wait and reuse) ----
exec 9>"$cache/lock"
flock 9

for tool in aarch64-linux-gnu-gcc cpio gzip dpkg-deb apt-get meson ninja; do
	command -v "$tool" >/dev/null ||
		skip "$tool is not installed (scripts/setup.sh installs gcc-aarch64-linux-gnu, cpio and the arm64 libraries; the packages could not be obtained)"
done
[ -f /usr/lib/aarch64-linux-gnu/libglib-2.0.a ] ||
	skip "libglib2.0-dev:arm64 is not installed (scripts/setup.sh could not obtain it)"

hostarch=$(dpkg --print-architecture)
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")

apt_archs="$hostarch arm64"

apt_ready=$cache/apt/ready-$codename
apt_setup() {
	[ -f "$apt_ready" ] && [ -z "$(find "$apt_ready" -mmin +1440 2>/dev/null)" ] && return 0
	local main sec key=/usr/share/keyrings/debian-archive-keyring.gpg
	main=$(mirror_of "$codename")
	sec=$(mirror_of "$codename-security")
	[ -n "$main" ] || main=http://deb.debian.org/debian
	[ -n "$sec" ] || sec=http://deb.debian.org/debian-security
	mkdir -p "$cache/apt"
	{
		echo "deb [arch=$hostarch signed-by=$key] $main $codename-backports main"
		echo "deb [arch=arm64 signed-by=$key] $main $codename main"
		echo "deb [arch=arm64 signed-by=$key] $sec $codename-security main"
	} >"$cache/apt/sources.list"
	note "apt: private index of $main ($codename-backports for $hostarch, $codename for arm64) and $sec"
	apt_private apt-get update >"$cache/apt-update.log" 2>&1 || return 1
	touch "$apt_ready"
}

version_ge_8() { # prints the version of QEMU binary $1 and succeeds if >= 8.0
	local v
	v=$("$1" --version 2>/dev/null | head -1 | sed -n 's/.*version \([0-9]*\)\.\([0-9]*\).*/\1.\2/p')
	echo "$v"
	[ -n "$v" ] && [ "${v%%.*}" -ge 8 ]
}

t0=$(date +%s)
qemu=${TAGMIG_QEMU:-}
if [ -z "$qemu" ]; then
	sysq=$(command -v qemu-system-aarch64 || true)
	if [ -n "$sysq" ] && version_ge_8 "$sysq" >/dev/null; then
		qemu=$sysq
	else
		qemu=$cache/qemu/usr/bin/qemu-system-aarch64
		if [ ! -x "$qemu" ]; then
			apt_setup || skip "cannot obtain packages: private apt-get update failed ($(tail -1 "$cache/apt-update.log"))"
			rm -rf "$cache/dl-qemu" "$cache/qemu" "$cache/qemu.tmp"
			mkdir -p "$cache/dl-qemu"
			(cd "$cache/dl-qemu" && apt_private apt-get download "qemu-system-arm/$codename-backports") \
				>"$cache/qemu-download.log" 2>&1 ||
				skip "cannot obtain qemu-system-arm from $codename-backports ($(tail -1 "$cache/qemu-download.log"))"
			dpkg-deb -x "$cache"/dl-qemu/qemu-system-arm_*.deb "$cache/qemu.tmp" ||
				bail "dpkg-deb -x of the QEMU package failed"
			mv "$cache/qemu.tmp" "$cache/qemu"
			rm -rf "$cache/dl-qemu"
		fi
	fi
fi
qver=$(version_ge_8 "$qemu") || {
	missing=$(ldd "$qemu" 2>/dev/null | grep 'not found' | head -3 | tr -s ' \t\n' ' ')
	[ -n "$missing" ] && skip "QEMU $qemu lacks shared libraries ($missing): install Debian's qemu-system-arm (scripts/setup.sh does)"
	bail "QEMU $qemu is not version 8.0 or newer (got '$qver')"
}

kdir=$cache/kernel-$flavor
if ! ls "$kdir"/boot/vmlinuz-* >/dev/null 2>&1; then
	case $flavor in
	6.1) meta=linux-image-arm64 ;;
	6.12) meta=linux-image-6.12-arm64 ;;
	*) bail "TAGMIG_AARCH64_KERNEL must be 6.1 or 6.12" ;;
	esac
	apt_setup || skip "cannot obtain packages: private apt-get update failed ($(tail -1 "$cache/apt-update.log"))"
	kpkg=$(apt_private apt-cache depends "$meta:arm64" 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/{print $2; exit}')
	kpkg=${kpkg%:arm64}
	[ -n "$kpkg" ] || skip "cannot resolve the kernel package of $meta:arm64"
	rm -rf "$cache/dl-kernel" "$kdir" "$kdir.tmp"
	mkdir -p "$cache/dl-kernel"
	(cd "$cache/dl-kernel" && apt_private apt-get download "$kpkg:arm64") >"$cache/kernel-download.log" 2>&1 ||
		skip "cannot download $kpkg:arm64 ($(tail -1 "$cache/kernel-download.log"))"
	dpkg-deb --fsys-tarfile "$cache"/dl-kernel/linux-image-*_arm64.deb |
		tar -x -C "$(mkdir -p "$kdir.tmp" && echo "$kdir.tmp")" --wildcards './boot/*' ||
		bail "unpacking $kpkg failed"
	mv "$kdir.tmp" "$kdir"
	rm -rf "$cache/dl-kernel"
fi
kernel=$(ls "$kdir"/boot/vmlinuz-* | head -1)
kconf=$(ls "$kdir"/boot/config-* | head -1)
for opt in CONFIG_KVM CONFIG_ARM64_MTE CONFIG_USERFAULTFD; do
	grep -q "^$opt=y" "$kconf" || bail "$kernel lacks $opt=y"
done
t1=$(date +%s)

# ---- 2. cross build and initramfs ----
# A test build like scripts/build.sh's: with the test hooks (-Dtest_hooks=true), which the suite's
# programs use (tagmig-vmm's hidden --test-* options); a cross build set up before without them
# gets them.
cross=$work/cross
if [ ! -f "$cross/build.ninja" ]; then
	rm -rf "$cross"
	meson setup "$cross" "$src" --cross-file "$src/cross/aarch64-linux-gnu.ini" -Dwerror=true \
		--buildtype=debugoptimized -Dtest_hooks=true >"$work/cross-setup.log" 2>&1 ||
		{ sed 's/^/# /' "$work/cross-setup.log" | tail -30; bail "meson setup of the cross build failed"; }
elif ! grep -q -- '-DTAGMIG_TEST_HOOKS=1' "$cross/build.ninja"; then
	meson configure "$cross" -Dtest_hooks=true >"$work/cross-setup.log" 2>&1 ||
		{ sed 's/^/# /' "$work/cross-setup.log" | tail -30; bail "meson configure of the cross build failed"; }
fi
ninja -C "$cross" tests/vm/aarch64/init "tests/vm/aarch64/test-$test" >"$work/cross-build.log" 2>&1 ||
	{ sed 's/^/# /' "$work/cross-build.log" | tail -40; bail "cross build failed"; }
# vmm-migrate also runs the reference VMM and the MTE test guest (where the cross build has an
# aarch64 GCC that builds it; else the test's own small guest). Asked after the build above, which
# reconfigured the cross build if meson files changed.
extra=()
if [ "$test" = vmm-migrate ]; then
	extra=(vmm/tagmig-vmm tools/tagmig-static)
	# (grep reads all: grep -q would end the pipe early, which pipefail counts as a failure)
	ninja -C "$cross" -t targets all 2>/dev/null | grep -c '^vmm/guest/guest.bin:' >/dev/null &&
		extra+=(vmm/guest/guest.bin)
	ninja -C "$cross" "${extra[@]}" >>"$work/cross-build.log" 2>&1 ||
		{ sed 's/^/# /' "$work/cross-build.log" | tail -40; bail "cross build failed"; }
fi

root=$work/root-$test
rm -rf "$root"
mkdir -p "$root"/{proc,sys,dev,tmp,tests}
cp "$cross/tests/vm/aarch64/init" "$root/init"
cp "$cross/tests/vm/aarch64/test-$test" "$root/tests/"
if [ ${#extra[@]} -gt 0 ]; then # outside /tests, which init runs program by program
	mkdir -p "$root/vmm"
	for f in "${extra[@]}"; do cp "$cross/$f" "$root/vmm/"; done
fi
initrd=$work/initrd-$test.cpio.gz
(cd "$root" && find . | cpio -o -H newc --quiet) | gzip -1 >"$initrd" || bail "packing the initramfs failed"
t2=$(date +%s)
flock -u 9

# ---- 3. boot ----
# The accelerator (tests/vm/lib/accel.sh): TCG on any host but arm64; there KVM where a probe boot
# of this kernel with EL2 and MTE reaches init (nested virtualization with MTE is rare).
# TAGMIG_VM_ACCEL forces a choice; a failed KVM boot falls back to TCG, saying why.
machine=(-M virt,virtualization=on,mte=on,gic-version=3)
tcg_words="-accel tcg,thread=multi -cpu max,pauth-impdef=on"
vm_accel_decide "$qemu" aarch64 "$kernel" "$cache" "$tcg_words" -- "${machine[@]}" ||
	bail "bad TAGMIG_VM_ACCEL"
console=$work/console-$test.log
# TAGMIG_VMM_CASES (vmm-migrate only: the cases to run, e.g. 2e or 2b,2c) goes to the program as
# an environment variable: the kernel hands a command-line word NAME=VALUE it does not know (and
# without a dot) to init's environment, which init passes on.
cmdline="console=ttyAMA0 rdinit=/init panic=-1 quiet"
if [ "$test" = vmm-migrate ] && [ -n "${TAGMIG_VMM_CASES:-}" ]; then
	[[ $TAGMIG_VMM_CASES =~ ^[0-9a-z,]+$ ]] || bail "TAGMIG_VMM_CASES: a comma-separated list of cases (1,2,2b,...,5)"
	cmdline+=" TAGMIG_VMM_CASES=$TAGMIG_VMM_CASES"
	note "only the cases $TAGMIG_VMM_CASES (TAGMIG_VMM_CASES)"
fi
boot() {
	timeout -k 10 "${TAGMIG_AARCH64_TIMEOUT:-600}" "$qemu" "${machine[@]}" "$@" -smp 2 -m 1G \
		-nographic -no-reboot -monitor none -serial stdio -nodefaults \
		-kernel "$kernel" -initrd "$initrd" \
		-append "$cmdline" </dev/null >"$console" 2>&1
}
boot "${vm_accel_args[@]}"
qrc=$?
if [ "$vm_accel" = kvm ] && ! grep -q '^RUNNER:' "$console"; then
	note "under KVM the machine ended (QEMU status $qrc) before init started: booting again under TCG"
	tail -3 "$console" | tr -d '\r' | sed 's/^/# qemu: /'
	vm_accel=tcg
	vm_accel_why="TCG: the boot under KVM did not reach init"
	# shellcheck disable=SC2086 # one word an argument
	boot $tcg_words
	qrc=$?
fi
t3=$(date +%s)

# ---- 4. TAP ----
note "accelerator: $vm_accel_why"
note "QEMU $qver ($qemu, $vm_accel), kernel $(basename "$kernel"), packages $((t1 - t0)) s, cross build $((t2 - t1)) s, boot and run $((t3 - t2)) s"
n=0
fails=0
result=
skipped=
while IFS= read -r l; do
	case $l in
	PASS:*) n=$((n + 1)); echo "ok $n - ${l#PASS: }" ;;
	FAIL:*) n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - ${l#FAIL: }" ;;
	INFO:*) echo "# ${l#INFO: }" ;;
	SKIP:*) skipped=${l#SKIP: } ;;
	"RUNNER: test-$test exit="*) result=${l#RUNNER: test-$test exit=} ;;
	RUNNER:*) echo "# $l" ;;
	esac
done < <(tr -d '\r' <"$console")
# A program that cannot run on this kernel says "SKIP: why" and exits 77, before any check.
if [ "${result%% *}" = 77 ] && [ -n "$skipped" ] && [ $n -eq 0 ]; then
	echo "1..0 # SKIP $skipped"
	note "total $(($(date +%s) - t_start)) s"
	exit 0
fi
if [ -z "$result" ]; then
	n=$((n + 1))
	echo "not ok $n - test-$test gave no result (QEMU exit $qrc: timeout, panic or crash); console tail:"
	tail -30 "$console" | tr -d '\r' | sed 's/^/# /'
elif [ "${result%% *}" != 0 ] && [ $fails -eq 0 ]; then
	n=$((n + 1))
	echo "not ok $n - test-$test exited with status $result"
	tail -20 "$console" | tr -d '\r' | sed 's/^/# /'
elif [ $n -eq 0 ]; then
	n=1
	echo "not ok 1 - test-$test printed no PASS line"
fi
echo "1..$n"
note "total $(($(date +%s) - t_start)) s"
exit 0
