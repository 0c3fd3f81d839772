"""QEMU migrating a RUNNING guest (the live rows' baseline): the dirtying guest of dirtyguest.py
booted under QEMU (10 by preference, qemubin.py) and migrated over loopback to a second QEMU
started with the same command line and -incoming defer, driven over QMP: multifd with 4
channels, downtime-limit 50 ms, max-bandwidth 1 TiB/s; for postcopy rows postcopy-ram too (with
multifd where QEMU accepts both; QEMU 10.0 refuses, then postcopy runs on the main channel, and
the row says so) and migrate-start-postcopy once the first pass is done (dirty-sync-count 2).
Total time, downtime, passes (dirty-sync-count) and bytes come from the source's query-migrate."""

import os
import shutil
import tempfile
import time

from . import dirtyguest
from .common import MIB
from .host import free_port
from .procs import last_line
from .qmp import QMP

READY_DEADLINE_TCG = 600   # boot + fill of a 1 GiB guest under TCG takes ~25 s here when quiet
READY_DEADLINE_KVM = 60


def parse_query_migrate(info, dinfo=None):
    """The figures of a finished (or cancelled) migration from the source's query-migrate
    (info) and, when given, the destination's (dinfo). Missing fields are None, never 0."""
    ram = info.get("ram") or {}
    out = {
        "status": info.get("status"),
        "total_ms": info.get("total-time"),
        "downtime_ms": info.get("downtime"),
        "setup_ms": info.get("setup-time"),
        "expected_downtime_ms": info.get("expected-downtime"),
        "passes": ram.get("dirty-sync-count"),
        "wire_bytes": ram.get("transferred"),
        "precopy_bytes": ram.get("precopy-bytes"),
        "downtime_bytes": ram.get("downtime-bytes"),
        "postcopy_bytes": ram.get("postcopy-bytes"),
        "postcopy_requests": ram.get("postcopy-requests"),
        "dirty_pages_rate": ram.get("dirty-pages-rate"),
        "mbps": ram.get("mbps"),
    }
    if dinfo:
        out["dest_status"] = dinfo.get("status")
        out["postcopy_blocktime_ms"] = dinfo.get("postcopy-blocktime")
        out["postcopy_vcpu_blocktime_ms"] = dinfo.get("postcopy-vcpu-blocktime")
        # QEMU 10.1+ reports fault latency; 10.0 has only the blocktime
        lat = dinfo.get("postcopy-latency")
        out["postcopy_latency_us"] = lat / 1000.0 if lat is not None else None
    return out


class _Guest:
    """One QEMU process of the pair: its argv, files and QMP."""

    def __init__(self, name, work):
        self.name = name
        self.serial = os.path.join(work, f"{name}.serial")
        self.qmp_path = os.path.join(work, f"{name}.qmp")
        self.err = os.path.join(work, f"{name}.err")
        self.proc = None
        self.qmp = None

    def text(self):
        try:
            with open(self.serial, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def _wait_serial(g, marker, deadline):
    while time.monotonic() < deadline:
        t = g.text()
        if marker in t:
            return t
        if g.proc.poll() is not None:
            raise RuntimeError(f"{g.name} QEMU exited (status {g.proc.returncode}): "
                               f"{last_line(g.err) or last_line(g.serial)}")
        time.sleep(0.2)
    raise RuntimeError(f"{g.name} guest did not print {marker} in time: {last_line(g.serial)}")


def _caps(q, names):
    q.cmd("migrate-set-capabilities",
          capabilities=[{"capability": n, "state": True} for n in names])


def run_live_pair(qemu, accel, kernel, initrd, size, rate, postcopy, channels, max_downtime_ms,
                  timeout, workdir, children):
    """One live migration of the dirtying guest (size bytes of RAM, dirtying rate bytes/s) between
    two QEMUs over 127.0.0.1. postcopy: switch after the first pass. Returns a dict of figures
    (parse_query_migrate's, plus converged, channels_used, notes, the guest's own dirty rate
    over the migration, whether the destination's guest kept running) or {"error": why}."""
    work = tempfile.mkdtemp(prefix="qlive-", dir=workdir)
    mb = size // MIB
    src, dst = _Guest("src", work), _Guest("dst", work)

    def argv(g):
        return qemu.argv() + ["-nodefaults", "-no-user-config", "-display", "none",
                              "-machine", "q35", "-m", f"{mb}M", "-smp", "1", "-no-reboot",
                              "-serial", f"file:{g.serial}", "-kernel", kernel, "-initrd", initrd,
                              "-append", dirtyguest.kernel_args(rate),
                              "-qmp", f"unix:{g.qmp_path},server=on,wait=off"] + accel.argv()

    notes = []
    res = {}
    try:
        src.proc = children.spawn(argv(src), os.path.join(work, "src.out"), src.err)
        dst.proc = children.spawn(argv(dst) + ["-incoming", "defer"],
                                  os.path.join(work, "dst.out"), dst.err)
        t_boot = time.monotonic()
        ready_by = t_boot + (READY_DEADLINE_KVM if accel.name == "kvm" else READY_DEADLINE_TCG)
        text = _wait_serial(src, dirtyguest.READY, ready_by)
        ready = dirtyguest.parse_ready(text)
        boot_s = time.monotonic() - t_boot
        # two of the guest's lines: it dirties at its pace before the migration starts
        while len(dirtyguest.parse_lines(src.text())) < 2 and time.monotonic() < ready_by:
            if src.proc.poll() is not None:
                raise RuntimeError(f"src QEMU exited: {last_line(src.err)}")
            time.sleep(0.2)
        src.qmp = QMP(src.qmp_path, timeout=60, alive=lambda: src.proc.poll() is None)
        dst.qmp = QMP(dst.qmp_path, timeout=60, alive=lambda: dst.proc.poll() is None)
        caps = ["multifd"]
        used = channels
        if postcopy:
            try:
                for q in (src.qmp, dst.qmp):
                    _caps(q, ["multifd", "postcopy-ram"])
                caps = ["multifd", "postcopy-ram"]
            except RuntimeError as e:
                notes.append(f"QEMU {qemu.version} refuses multifd with postcopy-ram ({e}): "
                             "postcopy on the main channel alone")
                caps = ["postcopy-ram"]
                used = 1
        for q in (src.qmp, dst.qmp):
            _caps(q, caps)
            if "multifd" in caps:
                q.cmd("migrate-set-parameters", **{"multifd-channels": channels})
        if postcopy:
            try:
                _caps(dst.qmp, caps + ["postcopy-blocktime"])
            except RuntimeError as e:
                notes.append(f"no postcopy-blocktime: {e}")
        src.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40,
                                                 "downtime-limit": int(max_downtime_ms)})
        uri = f"tcp:127.0.0.1:{free_port()}"
        dst.qmp.cmd("migrate-incoming", uri=uri)
        before = dirtyguest.parse_lines(src.text())
        t0 = time.monotonic()
        src.qmp.cmd("migrate", uri=uri)
        switched = None
        converged = True
        while True:
            info = src.qmp.cmd("query-migrate")
            st = info.get("status")
            if st == "completed" and info.get("total-time"):
                break
            if st in ("failed", "cancelled"):
                raise RuntimeError(f"source migration {st}: {info.get('error-desc', '')}")
            passes = (info.get("ram") or {}).get("dirty-sync-count") or 0
            if postcopy and switched is None and st == "active" and passes >= 2:
                src.qmp.cmd("migrate-start-postcopy")
                switched = time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                # precopy that does not converge: cancel, report what it did
                converged = False
                src.qmp.cmd("migrate_cancel")
                for _ in range(500):
                    info = src.qmp.cmd("query-migrate")
                    if info.get("status") in ("cancelled", "failed", "completed"):
                        break
                    time.sleep(0.01)
                break
            time.sleep(0.01)
        dinfo = None
        if converged:
            while True:
                dinfo = dst.qmp.cmd("query-migrate")
                if dinfo.get("status") == "completed":
                    break
                if dinfo.get("status") == "failed":
                    raise RuntimeError("destination migration failed: " + last_line(dst.err))
                if time.monotonic() - t0 > timeout + 60:
                    raise RuntimeError(f"destination did not complete ({dinfo.get('status')})")
                time.sleep(0.01)
        e2e = time.monotonic() - t0
        res = parse_query_migrate(info, dinfo)
        after = []
        if converged:
            # the destination's guest runs on: its next line continues the source's count
            alive_by = time.monotonic() + 10
            while time.monotonic() < alive_by:
                after = [x for x in dirtyguest.parse_lines(dst.text())
                         if not before or x[0] > before[-1][0]]
                if after:
                    break
                time.sleep(0.2)
        res.update(converged=converged, channels_used=used, capabilities=caps,
                   postcopy_switch_s=switched, e2e_seconds=e2e, boot_seconds=boot_s,
                   guest_fill_bytes=ready and ready["fill_bytes"],
                   guest_rate=dirtyguest.rate_between(before, after) if after else None,
                   guest_rate_before=before[-1][2] if before else None,
                   dest_guest_running=bool(after) if converged else None, notes=notes)
        if not converged:
            res["notes"] = notes + [f"did not converge in {timeout} s: cancelled after "
                                    f"{res.get('passes')} passes"]
    except Exception as e:  # one failed row must not end the run
        err = str(e)
        for g in (src, dst):
            line = last_line(g.err)
            if line:
                err += f" [{g.name}: {line}]"
        res = {"error": err, "notes": notes}
    finally:
        for g in (src, dst):
            if g.qmp:
                g.qmp.close()
            if g.proc:
                if g.proc.poll() is None:
                    g.proc.kill()
                g.proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    return res
