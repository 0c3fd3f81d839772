#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# QEMU 10 for the bench's baseline, unpacked privately: bench/fetch-qemu.sh CACHE-DIR
# Downloads qemu-system-x86, qemu-system-common and qemu-system-data from Debian's
# <codename>-backports through a private apt state (tests/vm/lib/harness.sh's apt_private: the
# system's apt sources and state are not touched), unpacks them into CACHE-DIR/qemu and prints the
# path of qemu-system-x86_64 (run it with -L CACHE-DIR/qemu/usr/share/qemu). Reuses an earlier
# unpack. Exits 1 with the reason on stderr when the packages cannot be had or the binary does not
# run here (a shared library missing).
set -u
cache=$(mkdir -p "$1" && cd "$1" && pwd) || exit 1
here=$(cd "$(dirname "$0")" && pwd)
skip() { echo "fetch-qemu: $*" >&2; exit 1; }
bail() { skip "$@"; }
note() { echo "fetch-qemu: $*" >&2; }
# shellcheck source=../tests/vm/lib/harness.sh
. "$here/../tests/vm/lib/harness.sh"

q=$cache/qemu/usr/bin/qemu-system-x86_64
exec 9>"$cache/lock"
flock 9
if [ ! -x "$q" ]; then
	hostarch=$(dpkg --print-architecture)
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
	apt_archs=$hostarch
	main=$(mirror_of "$codename")
	[ -n "$main" ] || main=http://deb.debian.org/debian
	mkdir -p "$cache/apt"
	echo "deb [arch=$hostarch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $main $codename-backports main" \
		>"$cache/apt/sources.list"
	apt_private apt-get update >"$cache/apt-update.log" 2>&1 ||
		skip "private apt-get update failed: $(tail -1 "$cache/apt-update.log")"
	rm -rf "$cache/dl" "$cache/qemu" "$cache/qemu.tmp"
	mkdir -p "$cache/dl"
	(cd "$cache/dl" && apt_private apt-get download "qemu-system-x86/$codename-backports" \
		"qemu-system-common/$codename-backports" "qemu-system-data/$codename-backports") \
		>"$cache/download.log" 2>&1 ||
		skip "cannot download QEMU from $codename-backports: $(tail -1 "$cache/download.log")"
	for deb in "$cache"/dl/*.deb; do
		dpkg-deb -x "$deb" "$cache/qemu.tmp" || skip "dpkg-deb -x $deb failed"
	done
	mv "$cache/qemu.tmp" "$cache/qemu"
	rm -rf "$cache/dl"
fi
missing=$(ldd "$q" 2>/dev/null | grep 'not found' | head -3 | tr -s ' \t\n' ' ')
[ -z "$missing" ] || skip "$q lacks shared libraries:$missing"
"$q" --version >/dev/null 2>&1 || skip "$q --version fails"
echo "$q"
