"""The live rows (issue 12): a RUNNING guest migrated at dirty rates 0, 100 MiB/s, 1 GiB/s and
3 GiB/s, by precopy and by postcopy after one round, over loopback.

- tagmig: `tagmig demo --live --json` (writer threads dirty the guest at --dirty-rate; precopy
  until tm_sender_advise() says the rest fits in --max-downtime, or --postcopy-after 1), 4
  channels, max downtime 50 ms. Total time, downtime, rounds, wire bytes and the destination's
  fault-to-placed latency p50/p99 come from its JSON.
- QEMU beside it in the same run (qemulive.py): a tiny Debian-kernel guest whose /init
  (bench/guest-dirty/dirty.c) dirties at the same rate, migrated by QEMU multifd.

The accelerator of the QEMU rows is decided by a BOOT with a deadline (choose_accel): a stopped
guest is not enough, a paravirtual KVM runs one yet cannot boot a stock kernel. Ratios against a
QEMU under TCG are printed but never count as a goal met (goals.live_goals)."""

import csv
import json
import os
import subprocess
import tempfile
import time

from . import accel as accel_mod
from . import dirtyguest
from .common import GIB, MIB, fmt_size, log
from .qemulive import run_live_pair

RATES = (0, 100 * MIB, GIB, 3 * GIB)
MODES = ("precopy", "postcopy")
CHANNELS = 4
MAX_DOWNTIME_MS = 50
POSTCOPY_AFTER = 1
KVM_BOOT_DEADLINE = 40  # seconds for the dirtying guest's /init to speak under KVM


def rate_label(rate):
    if rate == 0:
        return "0"
    if rate % GIB == 0:
        return f"{rate // GIB}G/s"
    return f"{rate // MIB}M/s"


def live_configs(mode):
    """(rate, precopy|postcopy) pairs a bench mode runs: every pair in live and full, a few in
    quick (1 GiB/s both ways, 3 GiB/s by postcopy), none otherwise."""
    if mode in ("live", "full"):
        return [(r, m) for r in RATES for m in MODES]
    if mode == "quick":
        return [(GIB, "precopy"), (GIB, "postcopy"), (3 * GIB, "postcopy")]
    return []


def demo_argv(binary, size, rate, how, max_downtime_ms=MAX_DOWNTIME_MS, channels=CHANNELS):
    argv = [binary, "demo", "--live", "--json", "--size", str(size), "--dirty-rate", str(rate),
            "--max-downtime", f"{max_downtime_ms}ms", "--channels", str(channels)]
    if how == "postcopy":
        argv += ["--postcopy-after", str(POSTCOPY_AFTER)]
    return argv


def parse_demo(doc):
    """A live row's figures from `tagmig demo --live --json` (one object). Raises ValueError when
    it is not a live demo's output."""
    if not doc.get("live") or "seconds" not in doc or "downtime_ms" not in doc:
        raise ValueError("not the JSON of tagmig demo --live")
    size = doc["guest_bytes"]
    pc = doc.get("postcopy")
    dst = (pc or {}).get("destination") or {}
    src = (pc or {}).get("source") or {}
    return dict(tool="tagmig", mode="postcopy" if pc else "precopy", rate=doc["dirty_rate"],
                size=size, total_s=doc["seconds"], downtime_ms=doc["downtime_ms"],
                rounds=doc["rounds"], wire_bytes=doc["wire_bytes"],
                wire_per_guest=doc["wire_bytes"] / size if size else None,
                converged=doc.get("converged"), verified=doc.get("verified"),
                channels=doc.get("channels"), io=doc.get("io_backend"),
                faults=dst.get("faults") if pc else None,
                requests=dst.get("requests") if pc else None,
                p50_us=dst.get("fault_p50_us") if pc else None,
                p99_us=dst.get("fault_p99_us") if pc else None,
                max_us=dst.get("fault_max_us") if pc else None,
                service_p99_us=src.get("service_p99_us") if pc else None,
                dirty_log=doc.get("dirty_log"),
                # what the writers reached (4 KiB pages; they run from the first round to the
                # pause): on 2 cores they fall short of 3 GiB/s, said beside QEMU's guest rate
                guest_rate=(doc["guest_writes"] * 4096 / doc["seconds"]
                            if not pc and doc.get("guest_writes") and doc["seconds"] else None))


def qemu_row(res, size, rate, how, accel, qemu):
    """A live row from qemulive.run_live_pair's result."""
    r = dict(tool="qemu", mode=how, rate=rate, size=size, accel=accel.label,
             qemu_version=qemu.version, notes=res.get("notes") or [])
    if res.get("error"):
        r["error"] = res["error"]
        return r
    total = res.get("total_ms")
    r.update(total_s=total / 1000.0 if total is not None else None,
             downtime_ms=res.get("downtime_ms"), rounds=res.get("passes"),
             wire_bytes=res.get("wire_bytes"),
             wire_per_guest=res["wire_bytes"] / size if res.get("wire_bytes") else None,
             converged=res.get("converged"), verified=res.get("dest_guest_running"),
             channels=res.get("channels_used"), requests=res.get("postcopy_requests"),
             guest_rate=res.get("guest_rate"), blocktime_ms=res.get("postcopy_blocktime_ms"),
             postcopy_latency_us=res.get("postcopy_latency_us"),
             boot_s=res.get("boot_seconds"), guest_fill_bytes=res.get("guest_fill_bytes"))
    # QEMU 10.0 gives no latency percentiles: the vCPU's blocked time per request is its mean
    if how == "postcopy" and r["requests"] and r["blocktime_ms"] is not None:
        r["mean_blocked_us"] = r["blocktime_ms"] * 1000.0 / r["requests"]
    if not res.get("converged"):
        r["error"] = (res.get("notes") or ["did not converge"])[-1]
    return r


def median_live(runs):
    """The row of the median total time among the runs that worked, with every run's downtime,
    p99 and verdict kept (the downtime goal is about every run)."""
    ok = [r for r in runs if not r.get("error")]
    if not ok:
        m = dict(runs[-1])
        m["repeats"] = 0
        return m
    ok.sort(key=lambda r: r["total_s"])
    m = dict(ok[len(ok) // 2])
    m["repeats"] = len(ok)
    m["failed_runs"] = len(runs) - len(ok)
    m["total_s_all"] = [r["total_s"] for r in ok]
    m["downtime_ms_all"] = [r.get("downtime_ms") for r in ok]
    m["p99_us_all"] = [r.get("p99_us") for r in ok]
    m["verified_all"] = [r.get("verified") for r in ok]
    return m


def add_ratio(rows):
    """xQEMU: tagmig's total time / QEMU's at the same rate and mode (< 1: tagmig faster)."""
    q = {(r["rate"], r["mode"]): r for r in rows if r["tool"] == "qemu" and not r.get("error")}
    for r in rows:
        if r["tool"] == "tagmig" and not r.get("error"):
            b = q.get((r["rate"], r["mode"]))
            if b and b.get("total_s"):
                r["qemu_total_s"] = b["total_s"]
                r["time_vs_qemu"] = r["total_s"] / b["total_s"]


def _f(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


HEADER = (f"{'tool':<6} {'mode':<8} {'rate':>7} {'total_s':>8} {'down_ms':>8} {'rounds':>6} "
          f"{'xguest':>6} {'p50_us':>7} {'p99_us':>7} {'faults':>6} {'ok':>3} {'xQEMU':>6}  notes")


def row_line(r):
    cfg = f"{r['tool']:<6} {r['mode']:<8} {rate_label(r['rate']):>7}"
    if r.get("error") and r.get("total_s") is None:
        return f"{cfg}  ERROR {r['error']}"
    if r["tool"] == "qemu":
        p50 = "-"
        p99 = "-"
        faults = _f(r.get("requests"))
        notes = [f"accel {r.get('accel')}", f"{r.get('channels')} ch"]
        if r.get("guest_rate") is not None:
            notes.append(f"guest dirtied {r['guest_rate'] / MIB:.0f} MiB/s")
        if r.get("mean_blocked_us") is not None:
            notes.append(f"vCPU blocked {r['mean_blocked_us'] / 1000:.1f} ms/request")
    else:
        p50, p99, faults = _f(r.get("p50_us")), _f(r.get("p99_us")), _f(r.get("faults"))
        notes = [f"{r.get('channels')} ch {r.get('io')}"]
        if r.get("guest_rate") is not None:
            notes.append(f"guest dirtied {r['guest_rate'] / MIB:.0f} MiB/s")
        if r["mode"] == "precopy" and r.get("converged") is False:
            notes.append("not converged (--max-rounds)")
    if r.get("error"):
        notes.append(r["error"])
    ok = {True: "yes", False: "NO", None: "-"}[r.get("verified")]
    return (f"{cfg} {_f(r.get('total_s')):>8} {_f(r.get('downtime_ms'), 1):>8} "
            f"{_f(r.get('rounds')):>6} {_f(r.get('wire_per_guest')):>6} {p50:>7} {p99:>7} "
            f"{faults:>6} {ok:>3} {_f(r.get('time_vs_qemu')):>6}  {'; '.join(notes)}")


COLUMNS = ["tool", "mode", "rate", "size", "total_s", "downtime_ms", "rounds", "wire_bytes",
           "wire_per_guest", "p50_us", "p99_us", "max_us", "faults", "requests", "converged",
           "verified", "time_vs_qemu", "qemu_total_s", "channels", "io", "accel", "qemu_version",
           "guest_rate", "mean_blocked_us", "repeats", "error"]


def choose_accel(bench):
    """The accelerator for the QEMU live rows: KVM when the dirtying guest boots under it within
    KVM_BOOT_DEADLINE (a KVM that failed once for this kernel and QEMU is not tried again: the
    marker guest.py writes, in the same cache), else TCG. TAGMIG_VM_ACCEL=tcg skips the boot;
    =kvm tries it even after a failure."""
    mode, cpu = accel_mod.parse(os.environ.get(accel_mod.VARIABLE))
    if mode == "tcg":
        return accel_mod.Accel("tcg", cpu, f"{accel_mod.VARIABLE}=tcg")
    err = accel_mod.dev_kvm_error()
    if err:
        return accel_mod.Accel("tcg", None, err)
    kver = os.path.basename(bench.live_kernel)[len("vmlinuz-"):]
    marker = os.path.join(bench.guest_cache, f"kvm-boot-failed-{kver}-qemu{bench.qemu.version}")
    if mode != "kvm" and os.path.exists(marker):
        with open(marker) as f:
            return accel_mod.Accel("tcg", None, "KVM did not boot this kernel before ("
                                   f"{os.path.basename(marker)}: {f.read().strip()})")
    kvm = accel_mod.Accel("kvm", cpu)
    why = _kvm_boots(bench, kvm)
    if why is None:
        return accel_mod.Accel("kvm", cpu, f"the dirtying guest booted under KVM within "
                               f"{KVM_BOOT_DEADLINE} s")
    os.makedirs(bench.guest_cache, exist_ok=True)
    with open(marker, "w") as f:
        f.write(why + "\n")
    return accel_mod.Accel("tcg", None, f"a boot under KVM failed: {why}")


def _kvm_boots(bench, kvm):
    """None when the guest's /init speaks under KVM within the deadline, else why not."""
    work = tempfile.mkdtemp(prefix="kvmboot-", dir=bench.workdir)
    serial = os.path.join(work, "serial")
    argv = bench.qemu.argv() + ["-nodefaults", "-no-user-config", "-display", "none",
                                "-machine", "q35", "-m", "128M", "-smp", "1", "-no-reboot",
                                "-serial", f"file:{serial}", "-kernel", bench.live_kernel,
                                "-initrd", bench.live_initrd, "-append",
                                dirtyguest.kernel_args(0)] + kvm.argv()
    p = bench.children.spawn(argv, os.path.join(work, "out"), os.path.join(work, "err"))
    try:
        deadline = time.monotonic() + KVM_BOOT_DEADLINE
        while time.monotonic() < deadline:
            try:
                with open(serial, errors="replace") as f:
                    if dirtyguest.BOOTED in f.read():
                        return None
            except OSError:
                pass
            if p.poll() is not None:
                with open(os.path.join(work, "err"), errors="replace") as f:
                    tail = f.read().strip().splitlines()
                return f"QEMU exited with status {p.returncode}: {tail[-1] if tail else ''}"
            time.sleep(0.25)
        return f"no /init within {KVM_BOOT_DEADLINE} s"
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()


def setup(bench):
    """The pieces the QEMU live rows need: kernel, initramfs, accelerator. Returns why the QEMU
    rows cannot run, or None."""
    if not bench.have_qemu:
        return "no QEMU"
    try:
        bench.live_kernel = dirtyguest.fetch_kernel(bench.guest_cache)
        init = dirtyguest.build(os.path.join(bench.top, "build-bench", "live-cache"))
        bench.live_initrd = os.path.join(bench.workdir, "dirty-initrd.cpio")
        dirtyguest.make_initramfs(bench.live_initrd, init)
    except RuntimeError as e:
        return str(e)
    bench.live_accel = choose_accel(bench)
    log(f"bench: live rows: QEMU accel {bench.live_accel.label} ({bench.live_accel.why})")
    return None


def run_tagmig(bench, size, rate, how, timeout):
    """One `tagmig demo --live` run: its row, or {"error": ...}."""
    argv = demo_argv(bench.tagmig.binary, size, rate, how)
    try:
        p = bench.children.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return {"error": f"tagmig demo --live timed out after {timeout} s"}
    lines = [x for x in out.splitlines() if x.startswith("{")]
    try:
        row = parse_demo(json.loads(lines[-1]))
    except (IndexError, ValueError, KeyError) as e:
        last = (err.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        return {"error": f"no live JSON ({e}): {last}"}
    if p.returncode != 0:
        row["error"] = (err.strip().splitlines() or [f"exit {p.returncode}"])[-1]
    return row


def run_rows(bench, progress, repeat):
    """Every live configuration of the run's mode, tagmig and QEMU side by side, repeat times
    round-robin; returns the median rows (with ratios)."""
    cfgs = live_configs(bench.mode)
    size = bench.live_size
    qemu_why = setup(bench) if cfgs else None
    if qemu_why:
        log(f"bench: live rows: QEMU rows skipped: {qemu_why}")
    jobs = [(t, r, m) for r, m in cfgs for t in ("tagmig", "qemu")
            if t == "tagmig" or not qemu_why]
    runs = {j: [] for j in jobs}
    conv_timeout = max(30, int(60 * size / GIB))
    for rep in range(repeat):
        for j in jobs:
            tool, rate, how = j
            progress.say(f"run {rep + 1}/{repeat}: live {tool} {how} at {rate_label(rate)}, "
                         f"{fmt_size(size)} guest")
            if tool == "tagmig":
                r = run_tagmig(bench, size, rate, how, timeout=600)
                r.setdefault("tool", "tagmig")
            else:
                res = run_live_pair(bench.qemu, bench.live_accel, bench.live_kernel,
                                    bench.live_initrd, size, rate, how == "postcopy", CHANNELS,
                                    MAX_DOWNTIME_MS, conv_timeout, bench.workdir,
                                    bench.children)
                r = qemu_row(res, size, rate, how, bench.live_accel, bench.qemu)
            r.update(tool=tool, mode=how, rate=rate, size=size)
            runs[j].append(r)
            log(f"    -> {row_line(r)}")
            progress.done += 1
    rows = [median_live(runs[j]) for j in jobs]
    add_ratio(rows)
    return rows, qemu_why


def write(bench, rows, goals, qemu_why, outdir):
    """live.csv and the live part of results.json in outdir; prints the live table and goals."""
    with open(os.path.join(outdir, "live.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    path = os.path.join(outdir, "results.json")
    doc = {}
    if os.path.exists(path) and bench.mode != "live":
        with open(path) as f:
            doc = json.load(f)
    accel = getattr(bench, "live_accel", None)
    load = os.getloadavg()
    doc.update(live_rows=rows, live_goals=goals, live_guest_bytes=bench.live_size,
               live_qemu_accel=accel.label if accel else "none",
               live_qemu_accel_reason=accel.why if accel else qemu_why,
               live_qemu_version=bench.qemu.version if bench.qemu else None,
               live_loadavg_end=[round(x, 2) for x in load])
    if bench.mode == "live":
        doc.update(mode="live", machine=bench.machine, tagmig=bench.tagmig.binary)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    m = bench.machine
    print()
    print(f"# live rows (issue 12), guest {fmt_size(bench.live_size)}, loopback, max downtime "
          f"{MAX_DOWNTIME_MS} ms, {CHANNELS} channels; {m['cpu']}, {m['cores']} cores, kernel "
          f"{m['kernel']}; load average at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    if accel:
        print(f"# QEMU {bench.qemu.version} ({bench.qemu.why}), accel {accel.label}: {accel.why}"
              + ("" if accel.name == "kvm" else "; ratios against a QEMU under TCG are shown "
                 "but are not a goal met"))
    else:
        print(f"# no QEMU live rows: {qemu_why}")
    print(HEADER)
    for r in rows:
        print(row_line(r))
    print()
    print("# goals (issue 12, live)")
    for x in goals:
        met = {True: "MET", False: "MISSED", None: "n/a"}[x["met"]]
        print(f"{met:<6} {x['goal']}: tagmig {x['tagmig']}; QEMU {x['qemu']}; goal "
              f"{x['target']}; measured {x['measured']}")
    print()
