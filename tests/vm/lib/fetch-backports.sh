#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Unpacks Debian packages of <codename>-backports (the host's architecture) into DEST, through a
# private apt state under CACHE/apt (harness.sh's apt_private: the system's apt sources and state
# are not touched), for the QEMU versions Debian 12 does not ship: the bench's QEMU 10 baseline
# (bench/fetch-qemu.sh) and the MTE guest's QEMU >= 8 (vmm/guest/test-guest.sh).
#   fetch-backports.sh CACHE DEST PACKAGE...
# An existing DEST is kept. Exits 1 with the reason as the last line on stderr when a package
# cannot be had. Callers serialise with a lock of their own if they share CACHE.
set -u
cache=$(mkdir -p "$1" && cd "$1" && pwd) || exit 1
dest=$2
shift 2
[ -d "$dest" ] && exit 0
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=harness.sh
. "$here/harness.sh"
# After harness.sh, whose skip/bail/note speak TAP: here a failure is exit 1 with the reason.
skip() { echo "fetch-backports: $*" >&2; exit 1; }
bail() { skip "$@"; }
note() { echo "fetch-backports: $*" >&2; }

hostarch=$(dpkg --print-architecture 2>/dev/null) || skip "no dpkg to fetch packages with"
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
# shellcheck disable=SC2034 # read by apt_private
apt_archs=$hostarch
main=$(mirror_of "$codename")
[ -n "$main" ] || main=http://deb.debian.org/debian
mkdir -p "$cache/apt"
echo "deb [arch=$hostarch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $main $codename-backports main" \
	>"$cache/apt/sources.list"
note "fetching $* from $main $codename-backports (private apt state, not installed)"
apt_private apt-get update >"$cache/apt-update.log" 2>&1 ||
	skip "private apt-get update failed: $(tail -1 "$cache/apt-update.log")"
rm -rf "$cache/dl" "$dest.tmp"
mkdir -p "$cache/dl"
pkgs=()
for p in "$@"; do
	pkgs+=("$p/$codename-backports")
done
(cd "$cache/dl" && apt_private apt-get download "${pkgs[@]}") >"$cache/download.log" 2>&1 ||
	skip "cannot download $* from $codename-backports: $(tail -1 "$cache/download.log")"
for deb in "$cache"/dl/*.deb; do
	dpkg-deb -x "$deb" "$dest.tmp" || skip "dpkg-deb -x $deb failed"
done
mv "$dest.tmp" "$dest"
rm -rf "$cache/dl"
