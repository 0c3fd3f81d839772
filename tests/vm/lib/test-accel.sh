#!/bin/bash
# TAP test of tests/vm/lib/accel.sh, the VM harnesses' choice of accelerator, against fake QEMU
# programs that behave like the hosts we meet: a KVM that boots, a paravirtual KVM on which QEMU
# aborts ("failed to set MSR"), one on which the kernel hangs in its decompressor, and no KVM at
# all. No VM is booted, so it runs everywhere in a second or two.
#   test-accel.sh SRCDIR WORKDIR
set -u
src=$1
work=$2/accel-test
rm -rf "$work"
mkdir -p "$work/bin"
# shellcheck source=accel.sh
. "$src/tests/vm/lib/accel.sh"

n=0
fails=0
check() { # check NAME CONDITION-STATUS [DETAIL]
	n=$((n + 1))
	if [ "$2" = 0 ]; then
		echo "ok $n - $1"
	else
		fails=$((fails + 1))
		echo "not ok $n - $1"
		[ -n "${3:-}" ] && echo "# $3"
	fi
}

# fake NAME BODY: a QEMU stand-in; each start is counted in $work/NAME.starts, its arguments
# kept in $work/NAME.args.
fake() {
	cat >"$work/bin/$1" <<EOF
#!/bin/bash
[ "\${1:-}" = --version ] && { echo "QEMU emulator version 9.9.9 ($1)"; exit 0; }
echo x >>"$work/$1.starts"
echo "\$*" >"$work/$1.args"
$2
EOF
	chmod +x "$work/bin/$1"
}
fake boots 'echo "Linux version 6.1.0"; echo "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"; exit 0'
fake aborts 'echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69" >&2; kill -ABRT $$'
fake hangs 'echo "Decompressing Linux... Parsing ELF..."; exec sleep 30'
fake nokvm 'echo "Could not access KVM kernel module: No such file or directory" >&2; echo "qemu-system-x86_64: failed to initialize kvm: No such file or directory" >&2; exit 1'
kernel=$work/vmlinuz
echo "not a kernel" >"$kernel"
host=$(uname -m)
starts() { [ -f "$work/$1.starts" ] && wc -l <"$work/$1.starts" || echo 0; }

decide() { # decide FAKE ARCH: runs vm_accel_decide in a fresh state directory per fake
	vm_accel_decide "$work/bin/$1" "$2" "$kernel" "$work/state-$1" "-accel tcg,thread=single -cpu max" -- -M pc
}

# A KVM that boots: chosen, with the CPU model asked for and the machine words passed on.
TAGMIG_VM_ACCEL=kvm decide boots "$host"
check "a probe that reaches init picks KVM" "$([ "$vm_accel" = kvm ] && echo 0 || echo 1)" "$vm_accel: $vm_accel_why"
check "KVM runs with -cpu host" "$([ "${vm_accel_args[*]}" = "-accel kvm -cpu host" ] && echo 0 || echo 1)" "${vm_accel_args[*]}"
check "the probe boots the harness's kernel and machine" \
	"$(grep -q -- "-accel kvm -cpu host -M pc .*-kernel $kernel" "$work/boots.args" && echo 0 || echo 1)" "$(cat "$work/boots.args")"
# The verdict is kept: a second harness of the same run does not probe again.
TAGMIG_VM_ACCEL=kvm decide boots "$host"
check "the verdict is made once per run" "$([ "$(starts boots)" = 1 ] && [ "$vm_accel" = kvm ] && echo 0 || echo 1)" "starts: $(starts boots)"
TAGMIG_VM_ACCEL=kvm:EPYC decide boots "$host"
check "kvm:CPU picks the CPU model (and probes again: another request)" \
	"$([ "${vm_accel_args[*]}" = "-accel kvm -cpu EPYC" ] && [ "$(starts boots)" = 2 ] && echo 0 || echo 1)" "${vm_accel_args[*]}, starts $(starts boots)"

# The paravirtual KVM: QEMU aborts; the harness takes TCG and says why.
TAGMIG_VM_ACCEL=kvm decide aborts "$host"
check "QEMU aborting under KVM falls back to TCG" \
	"$([ "$vm_accel" = tcg ] && [ "${vm_accel_args[*]}" = "-accel tcg,thread=single -cpu max" ] && echo 0 || echo 1)" "$vm_accel ${vm_accel_args[*]}"
check "the reason names QEMU's error" \
	"$(grep -q 'failed to set MSR' <<<"$vm_accel_why" && grep -q 'status 134' <<<"$vm_accel_why" && echo 0 || echo 1)" "$vm_accel_why"

# The kernel that never reaches init: the deadline ends the probe.
t0=$(date +%s)
TAGMIG_VM_PROBE_TIMEOUT=2 TAGMIG_VM_ACCEL=kvm decide hangs "$host"
t1=$(date +%s)
check "a probe that hangs falls back to TCG within its deadline" \
	"$([ "$vm_accel" = tcg ] && [ $((t1 - t0)) -le 10 ] && echo 0 || echo 1)" "$vm_accel after $((t1 - t0)) s"
check "the reason says the deadline and the last output" \
	"$(grep -q 'did not reach init within 2 s' <<<"$vm_accel_why" && grep -q Decompressing <<<"$vm_accel_why" && echo 0 || echo 1)" "$vm_accel_why"

# Forcing KVM where there is none: the fallback still boots under TCG.
TAGMIG_VM_ACCEL=kvm decide nokvm "$host"
check "forced KVM without KVM falls back to TCG, saying it was asked for" \
	"$([ "$vm_accel" = tcg ] && grep -q 'asked for KVM' <<<"$vm_accel_why" && grep -q 'KVM kernel module' <<<"$vm_accel_why" && echo 0 || echo 1)" "$vm_accel_why"

# TCG asked for: no probe at all; a CPU model is honoured.
TAGMIG_VM_ACCEL=tcg:Skylake-Client decide boots "$host"
check "TAGMIG_VM_ACCEL=tcg:CPU boots TCG with that CPU and no probe" \
	"$([ "$vm_accel" = tcg ] && [ "${vm_accel_args[*]}" = "-accel tcg,thread=single -cpu max -cpu Skylake-Client" ] && [ "$(starts boots)" = 2 ] && echo 0 || echo 1)" "${vm_accel_args[*]}"

# auto: a guest of another architecture never tries KVM.
other=aarch64
[ "$host" = aarch64 ] && other=x86_64
TAGMIG_VM_ACCEL= decide boots "$other"
check "auto: an $other guest on $host takes TCG without a probe" \
	"$([ "$vm_accel" = tcg ] && [ "$(starts boots)" = 2 ] && grep -q "cannot use KVM" <<<"$vm_accel_why" && echo 0 || echo 1)" "$vm_accel_why"

# auto on this host: KVM only where /dev/kvm opens, and then only through the probe.
rm -rf "$work/state-boots"
TAGMIG_VM_ACCEL=auto decide boots "$host"
if [ -c /dev/kvm ] && (exec 8<>/dev/kvm) 2>/dev/null; then
	check "auto with /dev/kvm: the probe decides (KVM here)" "$([ "$vm_accel" = kvm ] && [ "$(starts boots)" = 3 ] && echo 0 || echo 1)" "$vm_accel_why"
else
	check "auto without /dev/kvm: TCG without a probe" "$([ "$vm_accel" = tcg ] && [ "$(starts boots)" = 2 ] && echo 0 || echo 1)" "$vm_accel_why"
fi

# A bad request is refused, not guessed.
TAGMIG_VM_ACCEL=hvf decide boots "$host" 2>/dev/null
rc=$?
check "an unknown TAGMIG_VM_ACCEL is refused" "$([ $rc = 2 ] && echo 0 || echo 1)" "status $rc"

echo "1..$n"
rm -rf "$work"
[ "$fails" = 0 ]
