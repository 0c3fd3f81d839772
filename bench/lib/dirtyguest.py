"""The running guest of the QEMU live rows: a Debian kernel (bench/fetch-guest.sh, as the real
guest image uses) with an initramfs whose /init is bench/guest-dirty/dirty.c, built static here.
It fills its RAM, then dirties pages at tm.rate= bytes/s, paced by its clock, and prints a line a
second on the serial console (dirty.c says how). This module builds the pieces and reads the
guest's lines; qemulive.py boots and migrates it."""

import hashlib
import os
import re
import shutil
import stat
import subprocess

from .guest import _cpio_entry

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(BENCH, "guest-dirty", "dirty.c")
BOOTED = "TAGMIG-DIRTY-BOOTED"
READY = "TAGMIG-DIRTY-READY"
_LINE = re.compile(r"TAGMIG-DIRTY t_ms (\d+) pages (\d+) rate (\d+)")
_READY = re.compile(r"TAGMIG-DIRTY-READY fill (\d+) pages (\d+) rate (\d+) fill_ms (\d+)")
PAGE = 4096


def build(cache):
    """The static /init, compiled once per source version into cache. Returns its path; raises
    RuntimeError with the compiler's words when it cannot be built (no static libc, no cc)."""
    with open(SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    out = os.path.join(cache, f"dirty-{digest}")
    if os.path.exists(out):
        return out
    os.makedirs(cache, exist_ok=True)
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler (cc) to build bench/guest-dirty/dirty.c")
    r = subprocess.run([cc, "-static", "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror",
                        "-o", out + ".tmp", SOURCE], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError("cannot build bench/guest-dirty/dirty.c static: " +
                           (r.stderr.strip().splitlines() or ["cc failed"])[-1])
    os.rename(out + ".tmp", out)
    return out


def make_initramfs(path, init_binary):
    """An uncompressed cpio "newc" archive: /init (the dirtier), /dev/console, /proc."""
    with open(init_binary, "rb") as f:
        init = f.read()
    entries = [("dev", stat.S_IFDIR | 0o755, b"", (0, 0)),
               ("proc", stat.S_IFDIR | 0o755, b"", (0, 0)),
               ("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)),
               ("init", stat.S_IFREG | 0o755, init, (0, 0)),
               ("TRAILER!!!", 0, b"", (0, 0))]
    with open(path, "wb") as f:
        for ino, (name, mode, data, rdev) in enumerate(entries, 1):
            _cpio_entry(f, ino, name, mode, data, rdev)


def fetch_kernel(cache):
    """The Debian kernel's vmlinuz through bench/fetch-guest.sh (private apt, cached)."""
    r = subprocess.run([os.path.join(BENCH, "fetch-guest.sh"), cache], capture_output=True,
                       text=True)
    lines = r.stdout.split()
    if r.returncode or len(lines) != 2:
        raise RuntimeError((r.stderr.strip().splitlines() or ["fetch-guest.sh failed"])[-1])
    return lines[0]


def kernel_args(rate):
    """The kernel command line: serial console, no reboot on panic, the rate for /init."""
    return f"console=ttyS0 panic=-1 loglevel=4 tm.rate={int(rate)}"


def parse_ready(text):
    """The READY line: dict(fill_bytes, pages, rate, fill_ms) or None."""
    m = _READY.search(text)
    if not m:
        return None
    return dict(fill_bytes=int(m.group(1)), pages=int(m.group(2)), rate=int(m.group(3)),
                fill_ms=int(m.group(4)))


def parse_lines(text):
    """The guest's per-second lines: [(t_ms, pages so far, rate of the last second)]."""
    return [(int(a), int(b), int(c)) for a, b, c in _LINE.findall(text)]


def rate_between(before, after):
    """The guest's own dirty rate (bytes/s, its clock) from the last line before the migration
    (before: the source's lines then) to the first line after it (after: the destination's
    lines, whose counts continue the source's). None when either side has no line."""
    if not before or not after:
        return None
    t0, p0, _ = before[-1]
    later = [x for x in after if x[0] > t0]
    if not later:
        return None
    t1, p1, _ = later[0]
    return (p1 - p0) * PAGE * 1000.0 / (t1 - t0)
