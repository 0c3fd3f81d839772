"""RAM images of a real running Linux guest (issue 15's "real data"), made here: a Debian kernel
(linux-image-amd64) and busybox-static, fetched privately by bench/fetch-guest.sh, boot under QEMU
with an initramfs whose /init runs a workload; when it is done the guest is stopped and its
physical memory saved with QMP `pmemsave`.

The workload (INIT below), sized from the guest's MemAvailable at the start:
  - unpacks a tar.gz of kernel modules and text files from the kernel package into a tmpfs
    (binary code and data, as a guest's page cache holds);
  - fills page cache to about 30% with copies of them: raw, gzip-compressed (incompressible
    content, like media or compressed logs) and text made by `strings` (compressible);
  - runs programs (md5sum, sort, find, gzip) and keeps busybox awk processes alive holding
    associative arrays built from that text (a heap of strings, pointers and hash tables: anonymous
    memory with real content) up to about 20%;
  - writes then deletes files of about 15% (freed pages keep their stale content, as in a guest
    that has run a while), writes ~2% random data from /dev/urandom (encrypted content);
  - what is left was never touched since boot (zero pages).
The seed (kernel command line tm.seed) varies the choice and order of the files; KASLR varies
the kernel's place. bench/README.md "Real guest image" has the make-up of the images made here.

The accelerator: KVM when a boot under it reaches /init within a deadline (a paravirtual KVM may
take a stopped guest but not boot a stock kernel: /work/shared/notes/machine.md), else TCG.
"""

import gzip
import io
import json
import os
import random
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time

from . import accel as accel_mod
from .common import MIB
from .qmp import QMP

BOOTED = "TAGMIG-GUEST-BOOTED"
READY = "TAGMIG-GUEST-READY"
BOOT_DEADLINE = 40      # seconds from start to /init under KVM before trying TCG
VERSION = 1             # of the workload: part of the cache key

INIT = r'''#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
SEED=1
for a in $(cat /proc/cmdline); do
	case $a in tm.seed=*) SEED=${a#tm.seed=} ;; esac
done
RANDOM=$SEED
echo "TAGMIG-GUEST-BOOTED seed $SEED"
kib() { awk -v k="$1" '$1 == k":" { print $2 }' /proc/meminfo; }
AVAIL=$(kib MemAvailable)
mount -t tmpfs -o size=95% tmpfs /tmp
mkdir -p /tmp/files /tmp/cache /tmp/text /tmp/stale
# Unpack the files (page cache of real binaries and text).
tar -xzf /data/files.tar.gz -C /tmp/files
rm /data/files.tar.gz
find /tmp/files -type f | sort >/tmp/list
md5sum $(head -50 /tmp/list) >/tmp/md5s
N=$(wc -l </tmp/list)
# Text the awk heaps are built from.
i=0
for f in $(awk -v s="$SEED" 'BEGIN { srand(s) } { print rand() " " $0 }' /tmp/list | sort | head -40 | cut -d' ' -f2); do
	strings -n 6 "$f" >/tmp/text/t$i.txt
	i=$((i + 1))
done
cat /tmp/text/*.txt /tmp/files/*/config* 2>/dev/null >/tmp/text/all.txt
# Page cache to ~30% of what was available: copies raw, gzip'd and as text.
i=0
while [ $(kib Shmem) -lt $((AVAIL * 30 / 100)) ] && [ $(kib MemAvailable) -gt $((AVAIL * 50 / 100)) ]; do
	f=$(sed -n "$((RANDOM % N + 1))p" /tmp/list)
	case $((i % 4)) in
	0 | 1) cp "$f" /tmp/cache/c$i ;;
	2) gzip -c "$f" >/tmp/cache/c$i.gz ;;
	3) strings -n 4 "$f" | sort >/tmp/cache/c$i.txt ;;
	esac
	i=$((i + 1))
done
# Random content (~2%): what encrypted files and keys look like.
dd if=/dev/urandom of=/tmp/cache/random bs=64k count=$((AVAIL * 2 / 100 / 64)) 2>/dev/null
# Anonymous memory to ~20%: awk processes that keep hash tables of strings.
j=0
start=$(kib AnonPages)
while [ $(( $(kib AnonPages) - start )) -lt $((AVAIL * 20 / 100)) ] && [ $j -lt 64 ]; do
	awk -v s=$((SEED * 100 + j)) -v out=/tmp/awk$j 'BEGIN { srand(s) }
		{ for (k = 1; k <= NF; k++) { last[$k] = NR; n[$k]++ }; line[NR] = $0 }
		END { printf "%d lines %d words\n", NR, length(n) > out; close(out);
		      while (1) system("sleep 3600") }' /tmp/text/all.txt &
	pid=$!
	while [ ! -s /tmp/awk$j ] && kill -0 $pid 2>/dev/null; do sleep 0.2; done
	j=$((j + 1))
	[ $(kib MemAvailable) -gt $((AVAIL * 30 / 100)) ] || break
done
# Free memory with stale content (~15%): files written, then deleted.
i=0
while [ $(( $(kib Shmem) )) -lt $((AVAIL * 48 / 100)) ] && [ $(kib MemFree) -gt $((AVAIL * 20 / 100)) ]; do
	f=$(sed -n "$((RANDOM % N + 1))p" /tmp/list)
	cat "$f" "$f" >/tmp/stale/s$i
	i=$((i + 1))
done
rm -rf /tmp/stale
find / -xdev 2>/dev/null | sort | md5sum >/tmp/find.md5
sync
echo "TAGMIG-GUEST-READY anon $(kib AnonPages) shmem $(kib Shmem) free $(kib MemFree) of $(kib MemTotal) KiB, $j awk"
while :; do sleep 3600; done
'''


def _cpio_entry(out, ino, name, mode, data=b"", rdev=(0, 0)):
    """One file of a cpio "newc" archive (the initramfs format)."""
    namez = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(namez), 0]
    out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
    out.write(namez + b"\0" * ((4 - (110 + len(namez)) % 4) % 4))
    out.write(data + b"\0" * ((4 - len(data) % 4) % 4))


def _payload(root, size_mib, seed):
    """A tar.gz of about size_mib MiB (uncompressed) of kernel modules and the kernel's text files,
    chosen by seed."""
    mods = []
    for d, _, files in os.walk(os.path.join(root, "lib", "modules")):
        mods += [os.path.join(d, f) for f in files]
    mods.sort()
    rng = random.Random(seed)
    rng.shuffle(mods)
    text = [os.path.join(root, "boot", f) for f in os.listdir(os.path.join(root, "boot"))
            if f.startswith("config-")]
    text += [p for p in mods if not p.endswith(".ko")]
    bio = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=bio, mode="w:gz", compresslevel=6) as tar:
        for p in text + [m for m in mods if m.endswith(".ko")]:
            if total >= size_mib * MIB and p not in text:
                break
            tar.add(p, arcname=f"d{total % 7}/{os.path.basename(p)}")
            total += os.path.getsize(p)
    return bio.getvalue()


def make_initramfs(path, root, busybox, ram_mib, seed):
    # The payload: a sixteenth of the guest, at least 2 MiB (it is in RAM twice while unpacking).
    payload = _payload(root, max(2, ram_mib // 16), seed)
    with open(busybox, "rb") as f:
        bb = f.read()
    entries = [(d, stat.S_IFDIR | 0o755, b"", (0, 0))
               for d in ("bin", "dev", "proc", "sys", "tmp", "data")]
    entries += [("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)),
                ("bin/busybox", stat.S_IFREG | 0o755, bb, (0, 0)),
                ("init", stat.S_IFREG | 0o755, INIT.encode(), (0, 0)),
                ("data/files.tar.gz", stat.S_IFREG | 0o644, payload, (0, 0)),
                ("TRAILER!!!", 0, b"", (0, 0))]
    raw = io.BytesIO()
    for ino, (name, mode, data, rdev) in enumerate(entries, 1):
        _cpio_entry(raw, ino, name, mode, data, rdev)
    with open(path, "wb") as f:
        f.write(gzip.compress(raw.getvalue(), 6))


def _wait_for(serial, marker, proc, deadline):
    """The serial line holding marker, or None when proc died or the deadline passed."""
    while time.monotonic() < deadline:
        try:
            with open(serial, errors="replace") as f:
                for line in f:
                    if marker in line:
                        return line.strip()
        except OSError:
            pass
        if proc.poll() is not None:
            return None
        time.sleep(0.25)
    return None


def _tail(path, n=3):
    try:
        with open(path, errors="replace") as f:
            return " | ".join(l.strip() for l in f.read().splitlines()[-n:] if l.strip())
    except OSError:
        return ""


def boot_and_save(qemu, accel, kernel, initrd, ram_mib, seed, out, work, deadline):
    """Boots, waits for the workload, pmemsaves guest RAM to out. Returns (ok, what happened)."""
    qmp_path = os.path.join(work, "qmp")
    serial = os.path.join(work, f"serial-{accel.name}.log")
    for p in (qmp_path, serial):
        if os.path.exists(p):
            os.unlink(p)
    argv = qemu.argv() + ["-nodefaults", "-no-user-config", "-display", "none",
                          "-machine", "q35", "-m", f"{ram_mib}M", "-smp", "1", "-no-reboot",
                          "-serial", f"file:{serial}", "-kernel", kernel, "-initrd", initrd,
                          "-append", f"console=ttyS0 panic=-1 loglevel=4 tm.seed={seed}",
                          "-qmp", f"unix:{qmp_path},server=on,wait=off"] + accel.argv()
    with open(os.path.join(work, "qemu.err"), "wb") as err:
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
    try:
        t0 = time.monotonic()
        booted = _wait_for(serial, BOOTED, p, t0 + (BOOT_DEADLINE if accel.name == "kvm" else deadline))
        if not booted:
            why = (f"QEMU exited (status {p.returncode}) before /init" if p.poll() is not None
                   else "no /init within the deadline")
            return False, (f"{accel.label}: {why}: "
                           f"{_tail(os.path.join(work, 'qemu.err')) or _tail(serial)}")
        t_boot = time.monotonic() - t0
        ready = _wait_for(serial, READY, p, t0 + deadline)
        if not ready:
            return False, f"{accel.label}: the workload did not finish within {deadline} s: {_tail(serial)}"
        q = QMP(qmp_path, timeout=30)
        q.cmd("stop")
        tmp = out + ".tmp"
        q.cmd("pmemsave", val=0, size=ram_mib * MIB, filename=tmp)
        q.cmd("quit")
        q.close()
        p.wait(timeout=60)
        if os.path.getsize(tmp) != ram_mib * MIB:
            return False, f"pmemsave wrote {os.path.getsize(tmp)} bytes, not {ram_mib} MiB"
        os.rename(tmp, out)
        return True, (f"{accel.label}: booted in {t_boot:.1f} s, workload done at "
                      f"{time.monotonic() - t0:.1f} s; guest says: {ready[len(READY):].strip()}")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def content(path):
    """The make-up of an image: shares of zero pages, pages of one repeated byte, and the zlib -1
    ratio of the rest (a rough measure of how compressible it is)."""
    import zlib
    pages = zero = same = 0
    raw = comp = 0
    with open(path, "rb") as f:
        while True:
            buf = f.read(4 * MIB)
            if not buf:
                break
            for o in range(0, len(buf), 4096):
                pg = buf[o:o + 4096]
                pages += 1
                if pg.count(pg[0]) == len(pg):
                    if pg[0] == 0:
                        zero += 1
                    else:
                        same += 1
                elif pages % 8 == 0:  # a sample of the other pages
                    raw += len(pg)
                    comp += len(zlib.compress(pg, 1))
    return {"pages": pages, "zero_pct": round(100 * zero / max(pages, 1), 1),
            "one_byte_pct": round(100 * same / max(pages, 1), 1),
            "rest_zlib1_ratio": round(raw / comp, 2) if comp else None}


def make(qemu, cache, ram_mib, seed, log, env_accel=None):
    """The cached image of one boot (ram_mib MiB, seed): makes it when missing. Returns its path;
    its .json beside it says how it was made. Raises RuntimeError when no boot worked."""
    fetch = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "fetch-guest.sh")
    r = subprocess.run([fetch, cache], capture_output=True, text=True)
    lines = r.stdout.split()
    if r.returncode or len(lines) != 2:
        raise RuntimeError((r.stderr.strip().splitlines() or ["fetch-guest.sh failed"])[-1])
    kernel, busybox = lines
    kver = os.path.basename(kernel)[len("vmlinuz-"):]
    out = os.path.join(cache, "images", f"guest-{ram_mib}M-seed{seed}-{kver}-w{VERSION}.ram")
    if os.path.exists(out):
        return out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    root = os.path.dirname(os.path.dirname(kernel))
    work = tempfile.mkdtemp(prefix="guest-", dir=os.path.dirname(out))
    try:
        initrd = os.path.join(work, "initrd.gz")
        make_initramfs(initrd, root, busybox, ram_mib, seed)
        mode, cpu = accel_mod.parse(env_accel)
        tries = []
        # A KVM that did not boot this kernel once is not tried again (delete the file to retry).
        no_kvm = os.path.join(cache, f"kvm-boot-failed-{kver}-qemu{qemu.version}")
        if mode != "tcg" and accel_mod.dev_kvm_error() is None:
            if mode == "kvm" or not os.path.exists(no_kvm):
                tries.append(accel_mod.Accel("kvm", cpu))
            else:
                with open(no_kvm) as f:
                    log(f"bench: guest image: not trying KVM again ({no_kvm}: {f.read().strip()})")
        tries.append(accel_mod.Accel("tcg", cpu if mode == "tcg" else None))
        deadline = 300 + ram_mib * 2  # TCG fills about 1 MiB in 1-2 s here
        notes = []
        for a in tries:
            log(f"bench: booting a {ram_mib} MiB guest (seed {seed}, {kver}) under {a.label} "
                f"for its RAM image")
            ok, what = boot_and_save(qemu, a, kernel, initrd, ram_mib, seed, out, work, deadline)
            log(f"bench: guest image: {what}")
            notes.append(what)
            if not ok and a.name == "kvm" and "/init" in what:  # the boot failed, not the workload
                with open(no_kvm, "w") as f:
                    f.write(what + "\n")
            if ok:
                info = {"accel": a.label, "qemu": qemu.version, "kernel": kver, "ram_mib": ram_mib,
                        "seed": seed, "workload_version": VERSION, "boots": notes,
                        "content": content(out)}
                with open(out + ".json", "w") as f:
                    json.dump(info, f, indent=1)
                log(f"bench: guest image {out}: {info['content']}")
                return out
        raise RuntimeError("no boot made an image: " + "; ".join(notes))
    finally:
        shutil.rmtree(work, ignore_errors=True)
