#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Unpacks Debian packages of <codename>-backports (the host's architecture) into DEST, through a
# private apt state under CACHE/apt (fetch-debs.sh: the system's apt sources and state are
# not touched), for the QEMU versions Debian 12 does not ship: the bench's QEMU 10 baseline
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
# shellcheck source=fetch-debs.sh
. "$here/fetch-debs.sh"
# After harness.sh, whose skip/bail/note speak TAP: here a failure is exit 1 with the reason.
debs_standalone fetch-backports

debs_host
debs_update -backports "$*"
pkgs=()
for p in "$@"; do
	pkgs+=("$p/$codename-backports")
done
debs_unpack "$dest" "${pkgs[@]}"
