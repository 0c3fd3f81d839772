#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# QEMU 10 for the bench's baseline, unpacked privately: bench/fetch-qemu.sh CACHE-DIR
# Downloads qemu-system-x86, qemu-system-common and qemu-system-data from Debian's
# <codename>-backports (tests/vm/lib/fetch-backports.sh: a private apt state, nothing installed),
# unpacks them into CACHE-DIR/qemu once and prints the path of qemu-system-x86_64 (run it with
# -L CACHE-DIR/qemu/usr/share/qemu). Exits 1 with the reason on stderr when the packages cannot
# be had or the binary does not run here (a shared library missing).
set -u
cache=$(mkdir -p "$1" && cd "$1" && pwd) || exit 1
here=$(cd "$(dirname "$0")" && pwd)
q=$cache/qemu/usr/bin/qemu-system-x86_64
exec 9>"$cache/lock"
flock 9
"$here/../tests/vm/lib/fetch-backports.sh" "$cache" "$cache/qemu" \
	qemu-system-x86 qemu-system-common qemu-system-data || exit 1
missing=$(ldd "$q" 2>/dev/null | grep 'not found' | head -3 | tr -s ' \t\n' ' ')
[ -z "$missing" ] || { echo "fetch-qemu: $q lacks shared libraries:$missing" >&2; exit 1; }
"$q" --version >/dev/null 2>&1 || { echo "fetch-qemu: $q --version fails" >&2; exit 1; }
echo "$q"
