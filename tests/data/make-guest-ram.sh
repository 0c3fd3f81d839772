#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Regenerates tests/data/guest-ram-32M.xz, the real-guest RAM image the CLI test `cli-guest-image`
# migrates: tests/data/make-guest-ram.sh [SEED]
#
# bench/make-guest-ram boots a Debian kernel with a busybox workload under QEMU (KVM where it
# boots, else TCG; network to the Debian mirror needed once) in 96 MiB, the least that kernel
# boots in (it decompresses into 64 MiB at 16 MiB), and saves its physical memory with pmemsave.
# Kept here: the top 32 MiB of it (the workload's page cache, heaps and stale free pages, 25-30%
# zero pages, as in the whole), xz -9: about 2.3 MB, where the whole 96 MiB would be 15 MB.
# The result differs from boot to boot (KASLR, timing); the test only needs real content.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
img=$("$here/../../bench/make-guest-ram" --size 96M --seed "${1:-1}")
tail -c $((32 << 20)) "$img" | xz -9 -T1 >"$here/guest-ram-32M.xz.tmp"
mv "$here/guest-ram-32M.xz.tmp" "$here/guest-ram-32M.xz"
cat "$img.json"
ls -l "$here/guest-ram-32M.xz"
