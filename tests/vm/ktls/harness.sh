#!/bin/bash
# Runs one of the project's test programs inside a QEMU x86_64 machine whose Debian kernel has
# kernel TLS (the tls module), and prints the program's TAP for meson:
#   harness.sh SRCDIR WORKDIR KERNEL INIT PROGRAM [ARGS...]
# KERNEL: "new" (the newest amd64 kernel in trixie-backports, which must be 6.14 or later: kernel
# TLS 1.3 key updates) or "6.1" (bookworm's, whose kernel TLS cannot take new keys). INIT: the
# static tests/vm/ktls/ktls-init (init.c). PROGRAM: a normal, dynamically linked test binary of the build.
#
# 1. Obtains, once, into WORKDIR/cache (kept across runs; $TAGMIG_KTLS_CACHE to share one between
#    build directories) the kernel packages, with `apt-get download` through a private apt state
#    under the cache (the system's apt sources are not changed) and `dpkg-deb -x`, never
#    installed: the meta package linux-image-amd64 of the suite leads to the image package and,
#    in newer kernels (6.19 and 7.x of trixie-backports), the linux-binary/-modules/-base packages
#    it is split into. Of those it keeps vmlinuz, the config and the modules of net/tls, crypto
#    and lib (decompressed), with an index of their names, dependencies and aliases made from
#    each module's .modinfo. The kernel stays in the cache: remove cache/kernel-* for a newer one.
# 2. Packs an initramfs: init (also /sbin/modprobe, so the kernel's requests for crypto modules
#    are served), the modules, PROGRAM and every library `ldd` lists, /bin/sh, openssl and the
#    tools scripts/make-tls-creds.sh uses, that script, all at their host paths.
# 3. Boots it: KVM with -cpu host where a probe boot under KVM reaches init (tests/vm/lib/accel.sh:
#    decided once per run, TAGMIG_VM_ACCEL forces a choice), else TCG. The kernel command line carries
#    the environment (TAGMIG_EXPECT_KTLS=1 for "new", =norekey for "6.1"; G_TEST_SRCDIR;
#    TAGMIG_* variables of the caller) and, after "--", the program and its arguments.
# 4. Turns the program's output into TAP renumbered with the harness's own results: a failing
#    program, a missing module, no tls upper-layer protocol, a kernel warning or panic, a
#    timeout all end in "not ok" with the reason.
# Exits through a TAP SKIP only when the packages cannot be obtained (no QEMU, cpio or xz, no
# mirror); anything else that goes wrong is a failure.
set -uo pipefail
src=$1
work=$2
flavor=$3
init=$4
shift 4
prog=$1
shift
prog_args=("$@")
cache=${TAGMIG_KTLS_CACHE:-$work/cache}
name=$(basename "$prog")-$flavor
mkdir -p "$cache" "$work"
t_start=$(date +%s)

# skip, bail, note (TAP); mirror_of, apt_private (a private apt state under $cache/apt)
# shellcheck source=../lib/harness.sh
. "$src/tests/vm/lib/harness.sh"
# vm_accel_decide (the accelerator, by evidence)
# shellcheck source=../lib/accel.sh
. "$src/tests/vm/lib/accel.sh"

case $flavor in
new) suite=trixie-backports expect=1 ;;
6.1) suite=bookworm expect=norekey ;;
*) bail "KERNEL must be 'new' or '6.1', not '$flavor'" ;;
esac
[ -x "$init" ] || bail "no init program '$init' (build tests/vm/ktls/ktls-init)"
[ -x "$prog" ] || bail "no test program '$prog'"

# ---- 1. packages (one harness at a time prepares; the others wait and reuse) ----
exec 9>"$cache/lock"
flock 9

for tool in qemu-system-x86_64 cpio gzip xz objcopy dpkg-deb apt-get ldd; do
	command -v "$tool" >/dev/null ||
		skip "$tool is not installed (scripts/setup.sh installs qemu-system-x86, cpio, xz-utils and binutils; the packages could not be obtained)"
done

apt_archs=amd64

# One private index for both kernels: trixie-backports (pinned low by its Release file, so only
# asked for by name) and bookworm with its security updates, amd64 only. Refreshed daily.
apt_ready=$cache/apt/ready
apt_setup() {
	[ -f "$apt_ready" ] && [ -z "$(find "$apt_ready" -mmin +1440 2>/dev/null)" ] && return 0
	local main sec key=/usr/share/keyrings/debian-archive-keyring.gpg
	main=$(mirror_of bookworm)
	[ -n "$main" ] || main=$(mirror_of "$(. /etc/os-release && echo "${VERSION_CODENAME:-}")")
	sec=$(mirror_of bookworm-security)
	[ -n "$main" ] || main=http://deb.debian.org/debian
	[ -n "$sec" ] || sec=http://deb.debian.org/debian-security
	mkdir -p "$cache/apt"
	{
		echo "deb [arch=amd64 signed-by=$key] $main trixie-backports main"
		echo "deb [arch=amd64 signed-by=$key] $main bookworm main"
		echo "deb [arch=amd64 signed-by=$key] $sec bookworm-security main"
	} >"$cache/apt/sources.list"
	note "apt: private index of $main (trixie-backports, bookworm) and $sec (bookworm-security), amd64"
	apt_private apt-get update >"$cache/apt-update.log" 2>&1 || return 1
	# apt-get update succeeds with a warning when a source fails: check that the indexes came
	local s why
	for s in trixie-backports bookworm; do
		ls "$cache/apt/lists/"*"_dists_${s}_main_binary-amd64_Packages"* >/dev/null 2>&1 || {
			why=$(grep -m1 -E '^(Err|E:)' "$cache/apt-update.log" | tr -s ' \t' ' ')
			echo "${why:-no $s index}" >>"$cache/apt-update.log"
			return 1
		}
	done
	touch "$apt_ready"
}

# A module's .modinfo field, one value a line.
modinfo_field() { # $1: .ko file, $2: field
	local tmp=$cache/modinfo.$$
	objcopy -O binary --only-section=.modinfo "$1" "$tmp" 2>/dev/null || { rm -f "$tmp"; return 1; }
	tr '\0' '\n' <"$tmp" | sed -n "s/^$2=//p"
	rm -f "$tmp"
}

t0=$(date +%s)
kdir=$cache/kernel-$flavor
if [ ! -f "$kdir/ready" ]; then
	apt_setup || skip "cannot obtain packages: private apt-get update failed ($(tail -1 "$cache/apt-update.log"))"
	img=$(apt_private apt-cache depends "linux-image-amd64/$suite" 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/{print $2; exit}')
	[ -n "$img" ] || skip "cannot resolve the kernel package of linux-image-amd64 in $suite"
	# newer packages split the image into linux-binary (vmlinuz), -modules and -base (config)
	mapfile -t pkgs < <(echo "$img"; apt_private apt-cache depends "$img" 2>/dev/null |
		awk '/Depends: linux-(binary|modules|base)-[0-9]/{print $2}' | sort -u)
	note "kernel $flavor: ${pkgs[*]} from $suite"
	rm -rf "$cache/dl-$flavor" "$kdir" "$kdir.tmp"
	mkdir -p "$cache/dl-$flavor" "$kdir.tmp"
	(cd "$cache/dl-$flavor" && apt_private apt-get download "${pkgs[@]}") >"$cache/download-$flavor.log" 2>&1 ||
		skip "cannot download ${pkgs[*]} ($(tail -1 "$cache/download-$flavor.log"))"
	for deb in "$cache/dl-$flavor"/*.deb; do
		# only what the machine needs; tar complains about patterns a package does not have
		dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$kdir.tmp" --wildcards \
			'./boot/vmlinuz-*' './boot/config-*' './usr/lib/modules/*/vmlinuz' \
			'./usr/lib/modules/*/config' '*/kernel/net/tls/*' '*/kernel/crypto/*' \
			'*/kernel/arch/x86/crypto/*' '*/kernel/lib/*' 2>/dev/null
		[ "${PIPESTATUS[0]}" = 0 ] || bail "unpacking $deb failed"
	done
	rm -rf "$cache/dl-$flavor"

	# The modules, decompressed, flat in one directory, and their index for init.
	mkdir -p "$kdir.tmp/ktls/modules"
	idx=$kdir.tmp/ktls/modules.ktls
	: >"$idx"
	while IFS= read -r ko; do
		base=$(basename "$ko")
		base=${base%.xz}
		base=${base%.zst}
		out=$kdir.tmp/ktls/modules/$base
		case $ko in
		*.xz) xz -dc "$ko" >"$out" || bail "xz -d $ko failed" ;;
		*.zst) zstd -qdc "$ko" >"$out" || bail "zstd -d $ko failed" ;;
		*) cp "$ko" "$out" ;;
		esac
		mname=$(modinfo_field "$out" name | head -1)
		[ -n "$mname" ] || mname=$(echo "${base%.ko}" | tr - _)
		deps=$(modinfo_field "$out" depends | tr , ' ')
		echo "mod $mname /ktls/modules/$base $deps" >>"$idx"
		modinfo_field "$out" alias | awk -v m="$mname" 'NF == 1 { print "alias", $1, m }' >>"$idx"
	done < <(find "$kdir.tmp" -path '*/kernel/*' \( -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' \) | sort)
	find "$kdir.tmp" -mindepth 1 -maxdepth 1 ! -name boot ! -name ktls ! -name usr -exec rm -rf {} +
	find "$kdir.tmp" -path '*/kernel' -type d -prune -exec rm -rf {} +
	mv "$kdir.tmp" "$kdir"
	touch "$kdir/ready"
fi
kernel=$(ls "$kdir"/boot/vmlinuz-* "$kdir"/usr/lib/modules/*/vmlinuz 2>/dev/null | head -1)
kconf=$(ls "$kdir"/boot/config-* "$kdir"/usr/lib/modules/*/config 2>/dev/null | head -1)
[ -n "$kernel" ] || bail "the kernel packages of '$flavor' have no vmlinuz"
[ -n "$kconf" ] || bail "the kernel packages of '$flavor' have no config"
kver=$(basename "$(dirname "$kernel")")
case $kernel in */boot/*) kver=${kernel##*/vmlinuz-} ;; esac
kmm=$(echo "$kver" | sed -n 's/^\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
read -r kmaj kmin <<<"$kmm"
case $flavor in
new) [ "${kmaj:-0}" -gt 6 ] || { [ "${kmaj:-0}" -eq 6 ] && [ "${kmin:-0}" -ge 14 ]; } ||
	bail "the newest kernel of $suite is $kver; kernel TLS key updates need 6.14 or later" ;;
6.1) [ "$kmaj.$kmin" = 6.1 ] || bail "bookworm's kernel is $kver, not 6.1" ;;
esac
grep -Eq '^CONFIG_TLS=(y|m)' "$kconf" || bail "kernel $kver is built without CONFIG_TLS"
preload=
if grep -q '^CONFIG_TLS=m' "$kconf"; then
	grep -q '^mod tls ' "$kdir/ktls/modules.ktls" ||
		bail "kernel $kver has CONFIG_TLS=m but its packages have no net/tls/tls.ko"
	preload=tls
fi
t1=$(date +%s)

# ---- 2. initramfs ----
root=$work/root-$name
rm -rf "$root"
mkdir -p "$root"/{proc,sys,dev,tmp,ktls}
# merged /usr: the same top-level links as the host, so host paths resolve alike
for d in bin sbin lib lib32 lib64 libx32; do
	[ -L "/$d" ] || continue
	ln -s "$(readlink "/$d")" "$root/$d"
	mkdir -p "$root/$(readlink "/$d")"
done
copy() { # copies host files (through their symlinks) to the same paths in the initramfs
	local f
	for f in "$@"; do
		mkdir -p "$root$(dirname "$f")" && cp -L "$f" "$root$f" || return 1
	done
}
add_elf() { # a program and every shared library it loads, with the dynamic loader
	local libs
	copy "$1" || return 1
	libs=$(ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }') ||
		return 1
	[ -z "$libs" ] || copy $libs # one path a word
}
cp "$init" "$root/init" || bail "copying init failed"
# the kernel's request_module() runs /sbin/modprobe: init serves it
mkdir -p "$root/usr/sbin"
ln -s /init "$root/usr/sbin/modprobe"
[ -L "$root/sbin" ] || { mkdir -p "$root/sbin" && ln -s /init "$root/sbin/modprobe"; }
cp -r "$kdir/ktls/." "$root/ktls/"
echo "$preload" >"$root/ktls/preload"
add_elf "$prog" || bail "copying $prog and its libraries failed"
# scripts/make-tls-creds.sh, which the session fixture and test-tls's "script" test run
# (found as $G_TEST_SRCDIR/../scripts: that directory must exist for ".." to resolve)
copy "$src/scripts/make-tls-creds.sh" || bail "copying make-tls-creds.sh failed"
mkdir -p "$root$src/tests"
for p in sh openssl mkdir mktemp rm cat od tr chmod; do
	path=$(command -v "$p") || bail "no $p on the host"
	add_elf "$path" || bail "copying $path failed"
done
copy /etc/ssl/openssl.cnf 2>/dev/null
[ -e /usr/lib/ssl/openssl.cnf ] && mkdir -p "$root/usr/lib/ssl" && cp -P /usr/lib/ssl/openssl.cnf "$root/usr/lib/ssl/"
mkdir -p "$root/etc"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$root/etc/hosts"
echo 'root:x:0:0:root:/tmp:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
initrd=$work/initrd-$name.cpio.gz
(cd "$root" && find . | cpio -o -H newc --quiet) | gzip -1 >"$initrd" || bail "packing the initramfs failed"
rm -rf "$root"
t2=$(date +%s)
flock -u 9

# ---- 3. boot ----
# The environment travels as NAME=value words before "--" (the kernel gives init those it does
# not know as its environment); the program and its arguments after it.
envs=("TAGMIG_EXPECT_KTLS=$expect" "G_TEST_SRCDIR=$src/tests" "G_TEST_BUILDDIR=$(dirname "$prog")")
while IFS='=' read -r k v; do
	case $k in TAGMIG_EXPECT_KTLS | TAGMIG_KTLS_*) continue ;; esac
	envs+=("$k=$v")
done < <(env | grep -E '^TAGMIG_[A-Z0-9_]*=')
cmdline="console=ttyS0 rdinit=/init panic=-1 quiet mitigations=off"
for w in "${envs[@]}" -- "$prog" "${prog_args[@]}"; do
	case $w in *[[:space:]\"]*) bail "cannot pass '$w' on the kernel command line (space or quote)" ;; esac
	cmdline+=" $w"
done
[ ${#cmdline} -lt 2000 ] || bail "kernel command line too long (${#cmdline} bytes)"

# The accelerator: KVM only where a probe boot of this kernel under it reaches init (once per
# run, kept in the cache), else TCG; TAGMIG_VM_ACCEL forces a choice (tests/vm/lib/accel.sh).
# TCG runs the vCPUs in one thread: with one thread per vCPU (thread=multi) the kernel's live
# code patching (int3 text pokes) crashed early boot now and then (an int3 oops in initcalls,
# before init ran: 2 boots in ~20 here).
tcg_words="-accel tcg,thread=single -cpu max"
vm_accel_decide qemu-system-x86_64 x86_64 "$kernel" "$cache" "$tcg_words" -- || bail "bad TAGMIG_VM_ACCEL"
note "accelerator: $vm_accel_why"
console=$work/console-$name.log
out=$work/out-$name.log
# A machine that dies before init has said anything never ran the program: boot it once more
# (said in the TAP output), under TCG if KVM was the one that failed. Anything after init started
# counts as it is.
accel_args=("${vm_accel_args[@]}")
for attempt in 1 2; do
	rm -f "$console" "$out"
	timeout -k 10 "${TAGMIG_KTLS_TIMEOUT:-540}" qemu-system-x86_64 "${accel_args[@]}" -smp 2 -m 2G \
		-nodefaults -no-user-config -display none -monitor none -no-reboot \
		-serial "file:$console" -serial "file:$out" \
		-kernel "$kernel" -initrd "$initrd" -append "$cmdline" </dev/null >"$work/qemu-$name.log" 2>&1
	qrc=$?
	[ "$attempt" = 1 ] && [ ! -s "$out" ] || break
	if [ "$vm_accel" = kvm ]; then
		note "under KVM the machine ended (QEMU status $qrc) before init started: booting again under TCG"
		tail -3 "$work/qemu-$name.log" 2>/dev/null | sed 's/^/# qemu: /'
		accel_args=($tcg_words)
		vm_accel=tcg
	else
		[ "$qrc" = 0 ] || break
		note "the kernel died before init started (attempt 1): booting again; its console:"
	fi
	tr -d '\r' <"$console" 2>/dev/null | grep -m4 -E 'Oops|Kernel panic|RIP:' | sed 's/^/# console: /'
done
t3=$(date +%s)

# ---- 4. TAP ----
qver=$(qemu-system-x86_64 --version | head -1 | sed 's/.*version \([^ ]*\).*/\1/')
note "QEMU $qver ($vm_accel), kernel $kver, packages $((t1 - t0)) s, initramfs $((t2 - t1)) s, boot and run $((t3 - t2)) s"
note "command line: $cmdline"
n=0
fails=0
plan=
plan_skip=
result=
done_seen=
harness_fail=()
while IFS= read -r l; do
	case $l in
	"ok "[0-9]* | "not ok "[0-9]*)
		n=$((n + 1))
		case $l in not*) fails=$((fails + 1)) ;; esac
		# renumber: the harness adds results of its own
		echo "$l" | sed -E "s/^(not )?ok [0-9]+/\1ok $n/"
		;;
	1..[0-9]*)
		plan=${l#1..}
		plan=${plan%% *}
		case $l in *"# SKIP"* | *"# skip"*) plan_skip=${l#*# [Ss][Kk][Ii][Pp]} ;; esac
		;;
	"Bail out!"*)
		n=$((n + 1))
		fails=$((fails + 1))
		echo "not ok $n - $(basename "$prog"): ${l#Bail out! }"
		;;
	"KTLS-INIT: FAIL "*) harness_fail+=("${l#KTLS-INIT: FAIL }") ;;
	"KTLS-RESULT: "*) result=${l#KTLS-RESULT: } ;;
	KTLS-DONE) done_seen=1 ;;
	"#"*) echo "$l" ;;
	"") ;;
	*) echo "# $l" ;;
	esac
done < <(tr -d '\r' <"$out" 2>/dev/null)

console_tail() { # the first lines of an oops or panic, then the last lines of the console
	tr -d '\r' <"$console" 2>/dev/null |
		grep -m6 -E 'BUG:|Oops|general protection|Kernel panic|WARNING:|RIP:|Comm:' | sed 's/^/# console: /'
	echo "# console: ..."
	tr -d '\r' <"$console" 2>/dev/null | grep -v '^$' | tail -"${1:-25}" | sed 's/^/# console: /'
	tail -5 "$work/qemu-$name.log" 2>/dev/null | sed 's/^/# qemu: /'
}
fail() {
	n=$((n + 1))
	echo "not ok $n - kernel TLS machine ($flavor, $kver): $*"
}
for r in "${harness_fail[@]}"; do
	fail "$r"
done
if [ -z "$result" ]; then
	case $qrc in
	124 | 137) why="timed out after ${TAGMIG_KTLS_TIMEOUT:-540} s" ;;
	0) why="the machine stopped (kernel panic or crash?)" ;;
	*) why="QEMU exited with status $qrc" ;;
	esac
	fail "$(basename "$prog") gave no result: $why; console tail follows"
	console_tail 40
elif [ "$result" != exit=0 ] && [ "$fails" -eq 0 ]; then
	fail "$(basename "$prog") ended with $result"
	console_tail 15
elif [ -n "$plan" ] && [ -z "$plan_skip" ] && [ "$plan" != "$((n - ${#harness_fail[@]}))" ] &&
	[ "$result" = exit=0 ]; then
	fail "$(basename "$prog") planned $plan results and printed $((n - ${#harness_fail[@]}))"
fi
if [ -n "$result" ] && [ -z "$done_seen" ]; then
	fail "init did not finish after the program (QEMU exit $qrc)"
	console_tail 20
elif [ -n "$result" ] && [ "$qrc" != 0 ]; then
	fail "the machine did not power off cleanly (QEMU exit $qrc)"
	console_tail 20
fi
note "total $(($(date +%s) - t_start)) s"
if [ $n -eq 0 ] && [ -n "$plan_skip" ]; then
	echo "1..0 # SKIP$plan_skip"
	exit 0
fi
if [ $n -eq 0 ]; then
	fail "$(basename "$prog") printed no result"
fi
echo "1..$n"
exit 0
