# Sourced by the VM harnesses (tests/vm/ktls/, tests/vm/aarch64/): which accelerator boots the machine.
#
# "/dev/kvm opens" proves nothing: on some hosts of ours it is a paravirtual KVM (kvm_pvm) that
# runs a stopped guest but cannot boot a stock kernel (QEMU aborts with "failed to set MSR", or
# the kernel spins in its decompressor). So KVM is chosen by evidence: a probe boot of the
# suite's own kernel under KVM must reach the point where the kernel starts init (with no
# initramfs that is its "VFS: Unable to mount root fs" panic, which comes after every initcall)
# within a deadline. Anything else (QEMU aborts, exits early, or the deadline passes) falls back
# to TCG, and the reason is said. The verdict is kept in a file keyed by everything it depends on
# (this boot of the host, QEMU, the kernel, the request), so a run pays for one probe, not one
# per test.
#
# TAGMIG_VM_ACCEL chooses for every VM harness:
#   auto (default)   KVM if the guest is the host's architecture, /dev/kvm opens and the probe
#                    boots; else TCG
#   kvm[:CPU]        try KVM first even without /dev/kvm (CPU model: host unless given); a failed
#                    probe still falls back to TCG, saying so
#   tcg[:CPU]        TCG only (CPU model: the harness's default unless given)
# TAGMIG_VM_PROBE_TIMEOUT: the probe's deadline in seconds (default 20; a real KVM boot reaches
# init in 1-3 s).
#
# vm_accel_decide QEMU GUEST_ARCH KERNEL STATE_DIR TCG_ARGS -- MACHINE_ARGS...
#   QEMU       the qemu-system binary the harness boots with
#   GUEST_ARCH x86_64 or aarch64 (the console device follows from it)
#   KERNEL     the kernel the harness boots (the probe boots the same one)
#   STATE_DIR  where the verdict is kept (created; locked while probing)
#   TCG_ARGS   the harness's TCG accelerator and CPU words, one string ("-accel tcg -cpu max")
#   MACHINE_ARGS  machine words the real boot uses (e.g. -M virt,...), passed to the probe too
# Sets vm_accel (kvm or tcg), vm_accel_args (array: -accel ... -cpu ...) and vm_accel_why (one
# line for the TAP output). Returns 0; only bad arguments return 2.

vm_accel_decide() {
	local qemu=$1 arch=$2 kernel=$3 state=$4 tcg_words=$5
	shift 5
	[ "${1:-}" = -- ] || { echo "vm_accel_decide: missing -- before the machine arguments" >&2; return 2; }
	shift
	local machine=("$@")
	local req=${TAGMIG_VM_ACCEL:-auto} want cpu=
	want=${req%%:*}
	[ "$want" != "$req" ] && cpu=${req#*:}
	local -a tcg_args
	read -r -a tcg_args <<<"$tcg_words"
	if [ -n "$cpu" ] && [ "$want" = tcg ]; then
		tcg_args=("${tcg_args[@]}" -cpu "$cpu") # QEMU takes the last -cpu
	fi
	vm_accel=tcg
	vm_accel_args=("${tcg_args[@]}")
	case $want in
	tcg)
		vm_accel_why="TCG, as TAGMIG_VM_ACCEL=$req asks"
		return 0
		;;
	auto | kvm) ;;
	*)
		echo "vm_accel_decide: TAGMIG_VM_ACCEL must be auto, kvm[:CPU] or tcg[:CPU], not '$req'" >&2
		return 2
		;;
	esac
	local host
	host=$(uname -m)
	if [ "$want" = auto ]; then
		if [ "$host" != "$arch" ]; then
			vm_accel_why="TCG: an $arch guest cannot use KVM on this $host host"
			return 0
		fi
		if ! { [ -c /dev/kvm ] && (exec 8<>/dev/kvm) 2>/dev/null; }; then
			vm_accel_why="TCG: /dev/kvm does not open here"
			return 0
		fi
	fi
	[ -n "$cpu" ] || cpu=host
	local kvm_args=(-accel kvm -cpu "$cpu")

	# The verdict's key: everything the probe's outcome depends on.
	local boot_id key file
	boot_id=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown)
	key=$(printf '%s\n' "$boot_id" "$req" "$arch" "$("$qemu" --version 2>/dev/null | head -1)" \
		"$(readlink -f "$qemu")" "$(readlink -f "$kernel")" "$(stat -c %Y "$kernel" 2>/dev/null)" \
		"${machine[*]}" "$(ls -l /dev/kvm 2>/dev/null)" | sha256sum | cut -c1-16)
	mkdir -p "$state" || return 2
	file=$state/accel-$key
	(
		flock 7
		[ -s "$file" ] && exit 0
		_vm_accel_probe "$qemu" "$arch" "$kernel" "$state" "${kvm_args[*]}" "${machine[@]}" >"$file.tmp" &&
			mv "$file.tmp" "$file"
	) 7>"$state/accel.lock"
	local verdict reason
	verdict=$(head -1 "$file" 2>/dev/null)
	reason=$(sed -n 2p "$file" 2>/dev/null)
	case $verdict in
	kvm)
		vm_accel=kvm
		vm_accel_args=("${kvm_args[@]}")
		vm_accel_why="KVM (-cpu $cpu): $reason"
		;;
	*)
		vm_accel_why="TCG: ${reason:-the KVM probe left no verdict}"
		[ "$want" = kvm ] && vm_accel_why+=" (TAGMIG_VM_ACCEL=$req asked for KVM)"
		;;
	esac
	return 0
}

# _vm_accel_probe QEMU ARCH KERNEL STATE "KVM WORDS" MACHINE_ARGS...: boots KERNEL under KVM with
# no initramfs and prints two lines, "kvm" or "tcg", then why.
_vm_accel_probe() {
	local qemu=$1 arch=$2 kernel=$3 state=$4 kvm_words=$5
	shift 5
	local -a kvm_args
	read -r -a kvm_args <<<"$kvm_words"
	local deadline=${TAGMIG_VM_PROBE_TIMEOUT:-20} console tty log t0 rc
	case $arch in
	aarch64) tty=ttyAMA0 ;;
	*) tty=ttyS0 ;;
	esac
	log=$state/accel-probe.log
	t0=$(date +%s.%N)
	# (the braces keep bash's "Aborted" notice out of the TAP output)
	{ timeout -k 5 "$deadline" "$qemu" "${kvm_args[@]}" "$@" -smp 1 -m 512M -nodefaults \
		-no-user-config -display none -monitor none -no-reboot -serial stdio \
		-kernel "$kernel" -append "console=$tty panic=-1 loglevel=4" </dev/null >"$log" 2>&1; } 2>/dev/null
	rc=$?
	local secs
	secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
	console=$(tr -d '\r' <"$log" | grep -v 'terminating on signal')
	if grep -qE 'VFS: Unable to mount root fs|No working init found|Run /.* as init process' <<<"$console"; then
		echo kvm
		echo "a probe boot reached init in $secs s"
		return 0
	fi
	echo tcg
	local last
	# QEMU's own complaint if it made one, else where the kernel got to
	last=$(grep -m1 -iE 'error|fail|could not|assertion' <<<"$console" | cut -c1-160)
	[ -n "$last" ] || last=$(grep -v '^[[:space:]]*$' <<<"$console" | tail -1 | cut -c1-160)
	case $rc in
	124 | 137) echo "a probe boot under KVM did not reach init within $deadline s (${last:+last output: }${last:-no output at all})" ;;
	*) echo "a probe boot under KVM failed: QEMU exited with status $rc before init${last:+ ($last)}" ;;
	esac
	return 0
}
