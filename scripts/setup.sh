#!/bin/sh
# Installs what tagmig needs on Debian 12 (run as root): scripts/setup.sh [demo|test]
#   demo  what building the library and the CLI and running `tagmig demo` need (scripts/demo.sh)
#   test  that, and what the test suites need: the arm64 cross toolchain and libraries and the
#         QEMU packages of the VM suites (scripts/test.sh; the default)
# Idempotent: packages already installed are not touched.
set -eu
export DEBIAN_FRONTEND=noninteractive
part=${1:-test}
case $part in
demo | test) ;;
*) echo "usage: scripts/setup.sh [demo|test]" >&2; exit 2 ;;
esac

# missing PKG...: prints the packages that are not installed.
missing() {
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			printf ' %s' "$p"
	done
}

# The build, the tests and the TLS credentials script (openssl).
need=$(missing build-essential meson ninja-build pkg-config libglib2.0-dev liburing-dev \
	libssl-dev libzstd-dev liblz4-dev openssl python3 iproute2)
if [ -n "$need" ]; then
	echo "setup: installing$need" >&2
	apt-get update -qq >/dev/null || echo "setup: apt-get update failed; trying the install anyway" >&2
	apt-get install -y -qq $need >/dev/null
fi

[ "$part" = test ] || exit 0

# The package test (tests/package/): Debian's packaging tools.
need=$(missing debhelper lintian dpkg-dev fakeroot groff-base)
if [ -n "$need" ]; then
	echo "setup: installing for the package test:$need" >&2
	apt-get install -y -qq --no-install-recommends $need >/dev/null 2>&1 ||
		{ apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $need >/dev/null; } ||
		echo "setup: could not install the packaging tools; the package test will skip" >&2
fi

# The short fuzz runs of scripts/test.sh (tests/fuzz/README.md): clang and its libFuzzer. Not
# fatal: without them the fuzz runs are skipped and the test summary says why.
need=$(missing clang libclang-rt-14-dev)
if [ -n "$need" ]; then
	echo "setup: installing for the fuzz runs:$need" >&2
	apt-get install -y -qq --no-install-recommends $need >/dev/null 2>&1 ||
		{ apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $need >/dev/null; } ||
		echo "setup: could not install clang/libFuzzer; the fuzz runs will be skipped" >&2
fi

# The emulated arm64 suite (tests/vm/aarch64/, docs/aarch64.md): the cross compiler, arm64 -dev
# packages side by side through multiarch (static archives for the test programs), and Debian's
# qemu-system-arm for its shared libraries only (the harness runs QEMU >= 8.0 unpacked from
# backports). Not fatal: without them that suite skips and says why.
need=$(missing gcc-aarch64-linux-gnu libc6-dev-arm64-cross linux-libc-dev-arm64-cross \
	libglib2.0-dev:arm64 libssl-dev:arm64 liburing-dev:arm64 qemu-system-arm cpio)
if [ -n "$need" ]; then
	echo "setup: installing for the arm64 suite:$need" >&2
	if ! dpkg --print-foreign-architectures | grep -qx arm64; then
		dpkg --add-architecture arm64
		apt-get update -qq >/dev/null || echo "setup: apt-get update failed" >&2
	fi
	apt-get install -y -qq --no-install-recommends $need >/dev/null ||
		echo "setup: could not install the arm64 suite's packages; it will skip" >&2
fi

# The kernel TLS suite (tests/vm/ktls/): QEMU for x86_64 to boot a Debian kernel with the tls module,
# cpio for its initramfs, xz to unpack the kernel's modules (the harness fetches the kernel
# itself). Not fatal: without them that suite skips and says why.
need=$(missing qemu-system-x86 cpio xz-utils binutils)
if [ -n "$need" ]; then
	echo "setup: installing for the kernel TLS suite:$need" >&2
	apt-get install -y -qq --no-install-recommends $need >/dev/null 2>&1 ||
		{ apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $need >/dev/null; } ||
		echo "setup: could not install the kernel TLS suite's packages; it will skip" >&2
fi
