#!/usr/bin/env python3
"""Checks of the live rows' code (meson test bench-live, suite unit): reading QEMU's
query-migrate and `tagmig demo --live --json`, the rows, medians and ratios, issue 12's live
goals, the dirtying guest's initramfs and serial lines, and the guest program's pacing (built
and run on the host; skipped with the reason when no static C library is there).
Exit 0 pass, 1 fail (unittest skips count as passes and are printed)."""

import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True

from lib import dirtyguest, live  # noqa: E402
from lib.accel import Accel  # noqa: E402
from lib.goals import live_goals  # noqa: E402
from lib.qemulive import parse_query_migrate  # noqa: E402

GIB = 1 << 30
MIB = 1 << 20

# The shapes QEMU 10.0.2 answered here (trimmed): a source after precopy, a source and a
# destination after postcopy.
QM_PRECOPY = {"status": "completed", "total-time": 1340, "downtime": 27, "setup-time": 4,
              "ram": {"transferred": 1042865366, "dirty-sync-count": 5, "precopy-bytes": 192,
                      "postcopy-requests": 0, "mbps": 6244.7, "dirty-pages-rate": 0}}
QM_POSTCOPY = {"status": "completed", "total-time": 2310, "downtime": 2,
               "ram": {"transferred": 819459574, "dirty-sync-count": 3,
                       "postcopy-bytes": 321010903, "postcopy-requests": 26}}
QM_DEST = {"status": "completed", "postcopy-blocktime": 589, "postcopy-vcpu-blocktime": [589]}


def demo_doc(postcopy=False, **kw):
    d = {"command": "demo", "live": True, "verified": True, "guest_bytes": GIB,
         "dirty_rate": GIB, "dirty_log": "uffd-wp-async", "channels": 4,
         "io_backend": "io_uring", "max_downtime_ms": 50, "converged": not postcopy,
         "rounds": 1 if postcopy else 4, "round_stats": [], "final_pages": 10,
         "downtime_ms": 31.5, "seconds": 2.5, "wire_bytes": 3 * GIB // 2, "pages_sent": 1}
    if postcopy:
        d["postcopy"] = {"after_rounds": 1, "source": {"service_p99_us": 51},
                         "destination": {"faults": 3937, "requests": 2743, "fault_p50_us": 51,
                                         "fault_p99_us": 880, "fault_max_us": 5259}}
    d.update(kw)
    return d


class QueryMigrate(unittest.TestCase):
    def test_precopy(self):
        r = parse_query_migrate(QM_PRECOPY)
        self.assertEqual((r["total_ms"], r["downtime_ms"], r["passes"], r["wire_bytes"]),
                         (1340, 27, 5, 1042865366))
        self.assertIsNone(r["expected_downtime_ms"])  # absent is None, never 0
        self.assertNotIn("postcopy_blocktime_ms", r)

    def test_postcopy_with_destination(self):
        r = parse_query_migrate(QM_POSTCOPY, QM_DEST)
        self.assertEqual((r["postcopy_requests"], r["postcopy_bytes"], r["postcopy_blocktime_ms"]),
                         (26, 321010903, 589))
        self.assertIsNone(r["postcopy_latency_us"])  # QEMU 10.0 has none
        r = parse_query_migrate(QM_POSTCOPY, dict(QM_DEST, **{"postcopy-latency": 250000}))
        self.assertEqual(r["postcopy_latency_us"], 250.0)  # ns -> us

    def test_qemu_row(self):
        q = parse_query_migrate(QM_POSTCOPY, QM_DEST)
        q.update(converged=True, dest_guest_running=True, channels_used=1, notes=["n"])
        row = live.qemu_row(q, 512 * MIB, GIB, "postcopy", Accel("tcg"),
                            type("Q", (), {"version": "10.0.2"})())
        self.assertEqual((row["total_s"], row["rounds"], row["channels"]), (2.31, 3, 1))
        self.assertAlmostEqual(row["wire_per_guest"], 819459574 / (512 * MIB))
        self.assertAlmostEqual(row["mean_blocked_us"], 589000 / 26)
        self.assertNotIn("error", row)
        q.update(converged=False, notes=["did not converge in 60 s"])
        row = live.qemu_row(q, 512 * MIB, GIB, "postcopy", Accel("tcg"),
                            type("Q", (), {"version": "10.0.2"})())
        self.assertEqual(row["error"], "did not converge in 60 s")


class Demo(unittest.TestCase):
    def test_precopy(self):
        r = live.parse_demo(demo_doc())
        self.assertEqual((r["mode"], r["rounds"], r["total_s"], r["downtime_ms"]),
                         ("precopy", 4, 2.5, 31.5))
        self.assertEqual(r["wire_per_guest"], 1.5)
        self.assertIsNone(r["p99_us"])

    def test_postcopy(self):
        r = live.parse_demo(demo_doc(postcopy=True))
        self.assertEqual((r["mode"], r["faults"], r["p50_us"], r["p99_us"]),
                         ("postcopy", 3937, 51, 880))

    def test_not_live(self):
        with self.assertRaises(ValueError):
            live.parse_demo({"command": "demo", "verified": True, "seconds": 1.0})

    def test_argv(self):
        a = live.demo_argv("tagmig", GIB, 3 * GIB, "postcopy")
        self.assertEqual(a[:3], ["tagmig", "demo", "--live"])
        self.assertEqual(a[a.index("--dirty-rate") + 1], str(3 * GIB))
        self.assertEqual(a[a.index("--postcopy-after") + 1], "1")
        self.assertEqual(a[a.index("--max-downtime") + 1], "50ms")
        self.assertNotIn("--postcopy-after", live.demo_argv("tagmig", GIB, 0, "precopy"))

    def test_configs(self):
        self.assertEqual(len(live.live_configs("live")), 8)
        self.assertEqual({r for r, _ in live.live_configs("full")}, {0, 100 * MIB, GIB, 3 * GIB})
        self.assertIn((3 * GIB, "postcopy"), live.live_configs("quick"))
        self.assertEqual(live.live_configs("io"), [])


def t_row(mode, rate, total, downs, p99s=None, faults=None, **kw):
    runs = []
    for i, d in enumerate(downs):
        runs.append(dict(tool="tagmig", mode=mode, rate=rate, total_s=total + i * 0.1,
                         downtime_ms=d, p99_us=(p99s or [None] * len(downs))[i], faults=faults,
                         verified=True, **kw))
    return live.median_live(runs)


def q_row(mode, rate, total, accel="kvm", version="10.0.2"):
    return dict(tool="qemu", mode=mode, rate=rate, total_s=total, accel=accel,
                qemu_version=version)


class Goals(unittest.TestCase):
    def goal(self, rows, text):
        g = [x for x in live_goals(rows) if text in x["goal"]]
        self.assertEqual(len(g), 1, g)
        return g[0]

    def test_downtime_every_run(self):
        # the median run is within 50 ms, one run is not: missed
        rows = [t_row("precopy", GIB, 1.0, [30.0, 40.0, 51.0])]
        self.assertEqual(rows[0]["downtime_ms"], 40.0)
        self.assertIs(self.goal(rows, "precopy: downtime")["met"], False)
        rows = [t_row("precopy", GIB, 1.0, [30.0, 50.0, 12.0])]
        self.assertIs(self.goal(rows, "precopy: downtime")["met"], True)

    def test_downtime_failed_run(self):
        runs = [dict(tool="tagmig", mode="postcopy", rate=GIB, total_s=1.0, downtime_ms=10.0),
                dict(tool="tagmig", mode="postcopy", rate=GIB, error="receiver: timed out")]
        self.assertIs(self.goal([live.median_live(runs)], "postcopy: downtime")["met"], False)
        # every run failed: no downtime at all, still missed (not "n/a")
        runs = [dict(tool="tagmig", mode="postcopy", rate=GIB, error="receiver: timed out")]
        self.assertIs(self.goal([live.median_live(runs)], "postcopy: downtime")["met"], False)

    def test_time_against_qemu(self):
        t = t_row("precopy", GIB, 0.69, [10.0])
        for q, met in ((q_row("precopy", GIB, 1.0), True),
                       (q_row("precopy", GIB, 0.9), False),
                       (q_row("precopy", GIB, 1.0, accel="tcg"), None),
                       (q_row("precopy", GIB, 1.0, version="7.2.19"), None)):
            g = self.goal([dict(t), q], "precopy: total time")
            self.assertIs(g["met"], met, (q, g))
        live.add_ratio(rows := [dict(t), q_row("precopy", GIB, 2.0, accel="tcg")])
        self.assertAlmostEqual(rows[0]["time_vs_qemu"], 0.345)
        self.assertIn("not a goal met", self.goal(rows, "precopy: total time")["measured"])

    def test_postcopy_3g(self):
        ok = t_row("postcopy", 3 * GIB, 1.0, [60.0, 70.0], p99s=[800, 950], faults=4000)
        self.assertIs(self.goal([ok], "3 GiB/s")["met"], True)
        slow = t_row("postcopy", 3 * GIB, 1.0, [60.0, 70.0], p99s=[800, 1200], faults=4000)
        self.assertIs(self.goal([slow], "3 GiB/s")["met"], False)
        none = t_row("postcopy", 3 * GIB, 1.0, [60.0], p99s=[0], faults=0)
        self.assertIsNone(self.goal([none], "3 GiB/s")["met"])
        bad = dict(ok, error="verification failed")
        self.assertIs(self.goal([bad], "3 GiB/s")["met"], False)

    def test_line(self):
        r = t_row("postcopy", 3 * GIB, 1.0, [60.0], p99s=[800], faults=4000)
        r.update(channels=4, io="io_uring", rounds=1, wire_per_guest=1.2, p50_us=40)
        line = live.row_line(r)
        self.assertTrue(line.startswith("tagmig postcopy    3G/s     1.00     60.0"), line)
        self.assertIn(" 800 ", line)


class Guest(unittest.TestCase):
    def test_lines_and_rate(self):
        src = ("TAGMIG-DIRTY-BOOTED\nTAGMIG-DIRTY-READY fill 8192 pages 2 rate 100 fill_ms 3\n"
               "TAGMIG-DIRTY t_ms 1000 pages 100 rate 409600\n"
               "TAGMIG-DIRTY t_ms 2000 pages 200 rate 409600\n")
        dst = "garbage\nTAGMIG-DIRTY t_ms 2000 pages 200 rate 1\nTAGMIG-DIRTY t_ms 4000 pages 300 rate 204800\n"
        self.assertEqual(dirtyguest.parse_ready(src)["fill_bytes"], 8192)
        before, after = dirtyguest.parse_lines(src), dirtyguest.parse_lines(dst)
        self.assertEqual(before[-1], (2000, 200, 409600))
        # from the last line before to the first strictly later one: 100 pages in 2 s
        self.assertEqual(dirtyguest.rate_between(before, after), 100 * 4096 / 2.0)
        self.assertIsNone(dirtyguest.rate_between(before, []))

    def test_initramfs(self):
        with tempfile.TemporaryDirectory() as d:
            init = os.path.join(d, "init")
            with open(init, "wb") as f:
                f.write(b"\x7fELF" + b"x" * 1001)
            path = os.path.join(d, "initrd")
            dirtyguest.make_initramfs(path, init)
            with open(path, "rb") as f:
                raw = f.read()
        names, off = {}, 0
        while True:
            self.assertEqual(raw[off:off + 6], b"070701")
            h = [int(raw[off + 6 + 8 * i:off + 14 + 8 * i], 16) for i in range(13)]
            name = raw[off + 110:off + 110 + h[11] - 1].decode()
            doff = (off + 110 + h[11] + 3) & ~3
            names[name] = (h[1], raw[doff:doff + h[6]], (h[9], h[10]))
            off = (doff + h[6] + 3) & ~3
            if name == "TRAILER!!!":
                break
        self.assertEqual(off, len(raw))
        self.assertEqual(names["init"][1], b"\x7fELF" + b"x" * 1001)
        self.assertEqual(names["init"][0] & 0o777, 0o755)
        self.assertEqual(names["dev/console"][2], (5, 1))
        self.assertIn("proc", names)

    def test_kernel_args(self):
        self.assertIn("tm.rate=3221225472", dirtyguest.kernel_args(3 * GIB))


class Pacing(unittest.TestCase):
    """The guest program on the host: it never dirties faster than asked (a guest that ran ahead
    of its rate would make every QEMU row harder than tagmig's), and an idle one dirties none."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        try:
            cls.binary = dirtyguest.build(cls.tmp.name)
        except RuntimeError as e:
            raise unittest.SkipTest(f"cannot build the guest program here: {e}")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def run_dirty(self, rate, seconds):
        r = subprocess.run([self.binary, "--rate", str(rate), "--fill", str(8 * MIB),
                            "--seconds", str(seconds)], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        done = [x for x in r.stdout.splitlines() if x.startswith("TAGMIG-DIRTY-DONE")]
        self.assertEqual(len(done), 1, r.stdout)
        self.assertIsNotNone(dirtyguest.parse_ready(r.stdout), r.stdout)
        return int(done[0].split()[2]), r.stdout

    def test_never_faster_than_the_rate(self):
        rate, seconds = 64 * MIB, 2
        pages, out = self.run_dirty(rate, seconds)
        want = rate * seconds // 4096
        # at most one batch (256 pages) ahead of the clock
        self.assertLessEqual(pages, want + 256, out)
        # and it does dirty: even a loaded machine gives it a tenth of its time
        self.assertGreater(pages, want // 10, out)

    def test_idle(self):
        pages, out = self.run_dirty(0, 1)
        self.assertEqual(pages, 0, out)

    def test_usage(self):
        r = subprocess.run([self.binary, "--rate", "1G"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)


if __name__ == "__main__":
    r = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if r.wasSuccessful() else 1)
