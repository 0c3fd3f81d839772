"""The run's results: rows printed as they come, then results.csv, results.json, chart.png and
the summary table with the goals."""

import csv
import datetime
import json
import os
import time

from .chart import write_chart
from .common import GIB, fmt_size, log


COLUMNS = ["tool", "io", "tls", "tags", "data", "dest", "channels", "compress", "size_gib",
           "gib_per_s",
           "seconds", "wire_bytes", "tag_pct_of_wire", "send_cpu_s_per_gib",
           "recv_cpu_s_per_gib", "send_proc_cpu_s_per_gib", "recv_proc_cpu_s_per_gib",
           "e2e_gib_per_s", "qemu_gib_per_s", "vs_qemu", "ceiling", "ceiling_gib_per_s",
           "vs_ceiling", "repeats", "error", "host", "kernel", "cpu", "cores", "qemu_accel", "qemu_version", "link"]


def fmt(v, nd=2):
    if v is None or v == "":
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def row_line(r):
    cfg = (f"{r['tool']:<6} {r.get('io') or '-':<8} {'tls' if r.get('tls') else 'plain':<5} "
           f"{r.get('tags') or '-':<7} {r.get('data') or '-':<6} {r.get('dest') or '-':<4} "
           f"{fmt(r.get('channels')):>2} {r.get('compress') or '-':<4}")
    if r.get("error"):
        return f"{cfg}  ERROR {r['error']}"
    s = (f"{cfg} {fmt(r.get('gib_per_s')):>6} {fmt_bytes(r.get('wire_bytes')):>9} "
         f"{fmt(r.get('tag_pct_of_wire')):>5} {fmt(r.get('send_cpu_s_per_gib'), 3):>6} "
         f"{fmt(r.get('recv_cpu_s_per_gib'), 3):>6} {fmt(r.get('vs_qemu')):>6} "
         f"{fmt(r.get('vs_ceiling')):>6}")
    return s


HEADER = (f"{'tool':<6} {'io':<8} {'tls':<5} {'tags':<7} {'data':<6} {'dest':<4} {'ch':>2} "
          f"{'comp':<4} "
          f"{'GiB/s':>6} {'wire':>9} {'tag%':>5} {'sCPU':>6} {'rCPU':>6} {'xQEMU':>6} {'xCeil':>6}")


def fmt_bytes(n):
    if n in (None, ""):
        return "-"
    return f"{n / GIB:.3f}G"


def median_row(runs):
    ok = [r for r in runs if not r.get("error")]
    if not ok:
        return runs[-1]
    ok.sort(key=lambda r: r["gib_per_s"])
    m = dict(ok[len(ok) // 2])
    m["repeats"] = len(ok)
    m["gib_per_s_all"] = [round(r["gib_per_s"], 3) for r in ok]
    return m


def write_results(rows, goals, outdir, meta, t0):
    """Writes results.csv, results.json and chart.png to outdir and prints the summary table.
    meta: mode, size, repeat, machine, accel (accel.Accel or None without QEMU rows), qemu
    (qemubin.Qemu or None), tagmig,
    default_io, notes, ossl1, osslN."""
    machine, size, repeat, accel = meta["machine"], meta["size"], meta["repeat"], meta["accel"]
    accel_label = accel.label if accel else "none"
    qemu = meta.get("qemu")
    qemu_label = qemu.label if qemu else "no QEMU"
    csv_path = os.path.join(outdir, "results.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    doc = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": meta["mode"], "guest_bytes": size, "repeat": repeat, "machine": machine,
        "qemu_accel": accel_label, "qemu_accel_reason": accel.why if accel else "no QEMU rows",
        "qemu_version": qemu.version if qemu else None, "qemu_path": qemu.path if qemu else None,
        "qemu_reason": qemu.why if qemu else None, "link": meta.get("link") or "loopback",
        "tagmig": meta["tagmig"], "tagmig_default_io": meta["default_io"],
        "notes": meta["notes"], "openssl_aes128gcm_1core_gb_s": meta["ossl1"].get("gb_per_s"),
        "openssl_aes128gcm_all_cores_gb_s": meta["osslN"].get("gb_per_s"),
        "seconds": round(time.monotonic() - t0, 1),
        "rows": [{k: v for k, v in r.items() if k not in ("send_stats", "recv_stats")}
                 | ({"send_stats": r["send_stats"], "recv_stats": r["recv_stats"]}
                    if "send_stats" in r else {}) for r in rows],
        "goals": goals,
        "guest_images": meta.get("guest_images") or [],
    }
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(doc, f, indent=1)
    png = os.path.join(outdir, "chart.png")
    write_chart(rows, png, machine, size, qemu_label)

    print()
    print(f"# {meta['mode']} run, guest {fmt_size(size)}, median of {repeat}; {machine['cpu']}, "
          f"{machine['cores']} cores, kernel {machine['kernel']}; {qemu_label}, accel {accel_label}; "
          f"guest RAM in {machine['guest_pages']} pages; "
          f"{'link ' + meta['link'] + ' (tests/net)' if meta.get('link') else 'loopback'}")
    if qemu:
        print(f"# {qemu_label}: {qemu.path} ({qemu.why})")
    if accel:
        print(f"# QEMU accel {accel_label}: {accel.why}")
    g = meta.get("guest_images")
    if g:
        print(f"# guest image: {len(g)} boot(s) of {g[0]['ram_mib']} MiB, kernel {g[0]['kernel']}, "
              f"made under {', '.join(sorted({x['accel'] for x in g}))} with QEMU {g[0]['qemu']} "
              f"(bench/lib/guest.py); first: {g[0]['content']}")
    print(HEADER)
    for r in rows:
        print(row_line(r))
    print()
    print("# goals (issues 6 and 15)")
    for x in goals:
        met = {True: "MET", False: "MISSED", None: "n/a"}[x["met"]]
        print(f"{met:<6} [{x['io']}] {x['goal']}: tagmig {x['tagmig']}; QEMU {x['qemu']}; "
              f"goal {x['target']}; measured {x['measured']}")
    print()
    log(f"bench: wrote {csv_path}, results.json, chart.png in {outdir} "
        f"({datetime.timedelta(seconds=int(time.monotonic() - t0))})")
