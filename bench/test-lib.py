#!/usr/bin/env python3
"""Checks of bench/lib's pure parts (meson test bench-lib, suite unit): issue 15's goals, the
compression table's rows, the guest image's concatenation and its initramfs (cpio newc), the
priming of a cold destination.
Exit 0 pass, 1 fail."""

import gzip
import os
import sys
import tempfile
import unittest
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True

from lib import guest, images  # noqa: E402
from lib.goals import compression_goals, link_gbit  # noqa: E402
from lib.matrix import build_matrix, qemu_configs  # noqa: E402

MODES = ["none", "lz4", "zstd", "auto"]


def row(tool, data, comp, gib):
    return dict(tool=tool, data=data, compress=comp, channels=4, dest="warm", tls=False,
                tags="none", gib_per_s=gib)


class Goals(unittest.TestCase):
    def test_link_rate(self):
        self.assertEqual(link_gbit("1gbit,5ms"), 1.0)
        self.assertEqual(link_gbit("25gbit,0.2ms,loss=0.1%"), 25.0)
        self.assertEqual(link_gbit("500mbit,1ms"), 0.5)
        self.assertIsNone(link_gbit(None))

    def test_1gbit_against_qemus_best(self):
        rows = [row("qemu", "guest", "zlib", 0.10), row("qemu", "guest", "zstd", 0.20),
                row("tagmig", "guest", "auto", 0.29)]
        g = compression_goals(rows, "1gbit,5ms", MODES)
        self.assertEqual(len(g), 1)
        self.assertIs(g[0]["met"], False)  # 1.45x the best (zstd), not of zlib
        self.assertIn("(zstd)", g[0]["qemu"])
        rows[-1]["gib_per_s"] = 0.31
        self.assertIs(compression_goals(rows, "1gbit,5ms", MODES)[0]["met"], True)

    def test_fast_links_auto_against_none(self):
        rows = []
        for d in ("random", "mixed", "guest"):
            rows += [row("tagmig", d, "none", 1.0), row("tagmig", d, "auto", 0.96)]
        rows[-1]["gib_per_s"] = 0.94
        for link in (None, "25gbit,0.2ms"):
            g = compression_goals(rows, link, MODES)
            self.assertEqual([x["met"] for x in g], [True, True, False])
        self.assertEqual(compression_goals(rows, "10gbit,1ms", MODES), [])

    def test_not_measured_without_compress(self):
        rows = [row("qemu", "guest", "zstd", 0.2), row("tagmig", "guest", None, 0.1)]
        for link in ("1gbit,5ms", None):
            g = compression_goals(rows, link, [None])
            self.assertTrue(g)
            for x in g:
                self.assertIsNone(x["met"])
                self.assertIn("not measured", x["tagmig"])


class Rows(unittest.TestCase):
    def test_compression_table(self):
        m = build_matrix("compress", ["sockets", "io_uring"], True, MODES)
        self.assertEqual(sorted({(r["data"], r["compress"]) for r in m}),
                         sorted((d, c) for d in ("random", "mixed", "guest") for c in MODES))
        self.assertEqual({r["io"] for r in m}, {"sockets"})
        q = qemu_configs(m, True, "compress")
        self.assertEqual(sorted(q), sorted((d, "warm", 4, False, c)
                                           for d in ("random", "mixed", "guest")
                                           for c in ("none", "zlib", "zstd")))
        self.assertEqual({r["compress"] for r in build_matrix("compress", ["sockets"], True)},
                         {None})

    def test_other_modes_compare_with_uncompressed_qemu(self):
        m = build_matrix("quick", ["sockets"], False)
        self.assertIn("guest", {r["data"] for r in m})
        self.assertEqual({k[4] for k in qemu_configs(m, False, "quick")}, {"none"})


class Image(unittest.TestCase):
    def test_concatenate_cuts(self):
        with tempfile.TemporaryDirectory() as d:
            parts = []
            for i in range(3):
                parts.append(os.path.join(d, f"p{i}"))
                with open(parts[-1], "wb") as f:
                    f.write(bytes([i + 1]) * 3000)
            out = os.path.join(d, "out")
            images.concatenate(out, 7000, parts)
            with open(out, "rb") as f:
                self.assertEqual(f.read(), b"\1" * 3000 + b"\2" * 3000 + b"\3" * 1000)
            with self.assertRaises(RuntimeError):
                images.concatenate(out, 9001, parts)

    def test_prime_writes_then_removes(self):
        """A cold destination's memory is written just before the job, and nothing stays."""
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "dst.img")
            seen = []
            real = images.write_zeros

            def spy(p, size):
                real(p, size)
                seen.append((p, os.path.getsize(p)))

            with mock.patch.object(images, "write_zeros", spy):
                images.prime(path, 3 << 20)
            self.assertEqual(seen, [(path, 3 << 20)])
            self.assertFalse(os.path.exists(path))

    def test_cpio_newc(self):
        with tempfile.TemporaryDirectory() as d:
            root = os.path.join(d, "root")
            for sub, name, data in (("boot", "config-1", b"CONFIG_X=y\n"),
                                    ("lib/modules/1/kernel", "a.ko", b"\x7fELF" * 100)):
                os.makedirs(os.path.join(root, sub))
                with open(os.path.join(root, sub, name), "wb") as f:
                    f.write(data)
            bb = os.path.join(d, "busybox")
            with open(bb, "wb") as f:
                f.write(b"BB" * 1001)
            path = os.path.join(d, "initrd.gz")
            guest.make_initramfs(path, root, bb, 96, 1)
            with open(path, "rb") as f:
                raw = gzip.decompress(f.read())
            names, off = {}, 0
            while True:
                self.assertEqual(raw[off:off + 6], b"070701")
                h = [int(raw[off + 6 + 8 * i:off + 14 + 8 * i], 16) for i in range(13)]
                nlen, flen = h[11], h[6]
                name = raw[off + 110:off + 110 + nlen - 1].decode()
                doff = (off + 110 + nlen + 3) & ~3
                names[name] = (h[1], raw[doff:doff + flen], (h[9], h[10]))
                off = (doff + flen + 3) & ~3
                if name == "TRAILER!!!":
                    break
            self.assertEqual(off, len(raw))
            self.assertEqual(names["bin/busybox"][1], b"BB" * 1001)
            self.assertEqual(names["init"][1], guest.INIT.encode())
            self.assertEqual(names["dev/console"][2], (5, 1))
            self.assertTrue(names["data/files.tar.gz"][1].startswith(b"\x1f\x8b"))


if __name__ == "__main__":
    r = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if r.wasSuccessful() else 1)
