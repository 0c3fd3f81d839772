"""The guest images: a RAM file of random, zero, mixed or real guest data and its tag files, on
tmpfs."""

import os
import subprocess

from .common import GRANULE, MIB, PAGE


def openssl_stream(path, size, seed):
    """size bytes of AES-CTR keystream (fast, reproducible random data) into path."""
    key = f"{seed:032x}"
    with open(path, "wb") as out:
        p = subprocess.Popen(["openssl", "enc", "-aes-128-ctr", "-K", key, "-iv", "0", "-in",
                              "/dev/zero"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        left = size
        while left:
            buf = p.stdout.read(min(left, 8 * MIB))
            if not buf:
                raise RuntimeError("openssl enc ended early")
            out.write(buf)
            left -= len(buf)
        p.kill()
        p.wait()


def write_zeros(path, size):
    """A file of zeros that is really written (pages allocated), like a guest that wrote them."""
    chunk = bytes(8 * MIB)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n


def concatenate(path, size, parts):
    """parts (files) one after the other into path, cut at size bytes."""
    left = size
    with open(path, "wb") as out:
        for p in parts:
            with open(p, "rb") as f:
                while left:
                    buf = f.read(min(left, 8 * MIB))
                    if not buf:
                        break
                    out.write(buf)
                    left -= len(buf)
    if left:
        raise RuntimeError(f"the guest images hold {size - left} bytes, not {size}")


def make_ram(path, size, data, guest_parts=None):
    """guest_parts(size): the real guest's RAM images that make up size bytes (data "guest")."""
    if data == "guest":
        # The physical memory of Debian kernels running a workload, saved by QEMU's pmemsave
        # (guest.py); above 1 GiB several boots one after the other (runner.guest_parts).
        concatenate(path, size, guest_parts(size))
    elif data == "random":
        openssl_stream(path, size, 1)
    elif data == "zero":
        write_zeros(path, size)
    elif data == "mixed":
        # Per 16-page group: 10 random pages, 4 zero pages, 2 pages of one repeated byte:
        # 62.5% random, 25% zero, 12.5% compressible-but-not-zero.
        openssl_stream(path, size, 1)
        zero = bytes(PAGE)
        with open(path, "r+b") as f:
            for off in range(0, size, 16 * PAGE):
                f.seek(off + 10 * PAGE)
                f.write(zero * 4 + bytes([0x5A]) * (2 * PAGE))
    else:
        raise ValueError(data)


def make_tags(path, size, kind):
    """One byte per 16-byte granule, tag in the low nibble."""
    n = size // GRANULE
    tmp = path + ".rnd"
    openssl_stream(tmp, n if kind == "random" else size // PAGE, 2)
    low = bytes(b & 0x0F for b in range(256))
    with open(tmp, "rb") as f, open(path, "wb") as out:
        if kind == "random":
            while True:
                buf = f.read(8 * MIB)
                if not buf:
                    break
                out.write(buf.translate(low))
        else:  # uniform: every granule of a page has the page's tag
            per_page = PAGE // GRANULE
            blocks = [bytes([v]) * per_page for v in range(16)]
            while True:
                buf = f.read(MIB)
                if not buf:
                    break
                out.write(b"".join(blocks[b & 0x0F] for b in buf))
    os.unlink(tmp)


def remove(*paths):
    for p in paths:
        if os.path.exists(p):
            os.unlink(p)


def prime(path, size):
    """Writes size bytes at path and removes them again, just before a cold destination fills:
    the memory it is about to take is then backed by the host, as a bare-metal host's is. A VM
    whose balloon reports free pages (virtio-balloon free page reporting) hands memory freed
    seconds ago back to the host, and its next first touch traps to the hypervisor: without
    this, a cold row got whatever the previous job had freed, backed or not, and measured
    the job order (bench/README.md "Full-cold, measured fairly")."""
    write_zeros(path, size)
    remove(path)
