#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A Debian kernel and a static busybox for the real-guest RAM images (bench/make-guest-ram),
# unpacked privately: bench/fetch-guest.sh CACHE-DIR
# Downloads the kernel linux-image-amd64 currently depends on and busybox-static from the
# system's Debian release (not backports) through a private apt state under CACHE-DIR/apt
# (tests/vm/lib/fetch-debs.sh: the system's sources and state are untouched, nothing is
# installed), unpacks them into CACHE-DIR/root once and prints two lines: the kernel (vmlinuz)
# and busybox paths.
# Exits 1 with the reason on stderr when the packages cannot be had.
set -u
cache=$(mkdir -p "$1" && cd "$1" && pwd) || exit 1
here=$(cd "$(dirname "$0")" && pwd)
root=$cache/root
exec 9>"$cache/lock"
flock 9
show() {
	local k
	k=$(find "$root/boot" -name 'vmlinuz-*' 2>/dev/null | sort | tail -1)
	[ -n "$k" ] && [ -x "$root/bin/busybox" ] || return 1
	echo "$k"
	echo "$root/bin/busybox"
}
if [ -d "$root" ]; then
	show && exit 0
	rm -rf "$root"
fi
# shellcheck source-path=SCRIPTDIR source=../tests/vm/lib/harness.sh
. "$here/../tests/vm/lib/harness.sh"
# shellcheck source-path=SCRIPTDIR source=../tests/vm/lib/fetch-debs.sh
. "$here/../tests/vm/lib/fetch-debs.sh"
debs_standalone fetch-guest

debs_host
[ "$hostarch" = amd64 ] || skip "the guest kernel is linux-image-amd64; this host is $hostarch"
debs_update "" "linux-image-amd64's kernel and busybox-static"
# The metapackage holds no kernel: take the versioned package it depends on.
kernel=$(apt_private apt-cache depends linux-image-amd64 2>/dev/null |
	awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
[ -n "$kernel" ] || skip "linux-image-amd64 names no kernel package in $codename"
debs_unpack "$root" "$kernel" busybox-static
show || skip "no vmlinuz or busybox in the unpacked packages"
