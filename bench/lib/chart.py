"""chart.png: GiB/s against channels, one panel per data image, drawn with gnuplot."""

import os
import shutil
import subprocess

from .common import fmt_size, log


def write_chart(rows, out_png, machine, size, qemu_label="QEMU"):
    if shutil.which("gnuplot") is None:
        log("bench: gnuplot missing, no chart")
        return
    ddir = os.path.join(os.path.dirname(out_png), "chart-data")
    os.makedirs(ddir, exist_ok=True)
    series = {}
    for r in rows:
        if r.get("error") or r["tool"] not in ("tagmig", "qemu", "iperf3"):
            continue
        if r["tool"] == "iperf3":
            key = "iperf3 loopback (TCP ceiling)"
            panels = ["random", "zero", "mixed", "guest"]
        else:
            parts = [r["tool"]]
            if r["tool"] == "tagmig":
                parts.append(r["io"])
            parts.append("tls" if r["tls"] else "plain")
            if r["tool"] == "tagmig":
                parts.append(f"tags={r['tags']}")
            parts.append(r["dest"])
            if r.get("compress"):
                parts.append(f"comp={r['compress']}")
            key = " ".join(parts)
            panels = [r["data"]]
        for p in panels:
            series.setdefault(p, {}).setdefault(key, []).append((r["channels"], r["gib_per_s"]))
    panels = [p for p in ("random", "zero", "mixed", "guest") if p in series and
              any(k != "iperf3 loopback (TCP ceiling)" for k in series[p])]
    if not panels:
        return
    script = [f"set terminal pngcairo noenhanced size 1400,{430 * len(panels)} font 'sans,10'",
              f"set output '{out_png}'",
              f"set multiplot layout {len(panels)},1 title 'tagmig vs {qemu_label} multifd, "
              f"{fmt_size(size)} guest, {machine['cpu']} x{machine['cores']}, "
              f"kernel {machine['kernel']}'",
              "set logscale x 2", "set xrange [0.8:10]", "set xtics (1,2,4,8)",
              "set xlabel 'channels'", "set ylabel 'GiB/s (guest RAM)'", "set grid",
              "set key outside right top", "set yrange [0:*]"]
    n = 0
    for p in panels:
        cmds = []
        for key, pts in sorted(series[p].items()):
            pts.sort()
            fn = os.path.join(ddir, f"s{n}.dat")
            n += 1
            with open(fn, "w") as f:
                for ch, g in pts:
                    f.write(f"{ch} {g:.4f}\n")
            style = "linespoints"
            if key.startswith("iperf3"):
                style += " dt 2 lc rgb 'black'"
            elif key.startswith("qemu"):
                style += " dt 3"
            cmds.append(f"'{fn}' using 1:2 with {style} title '{key}'")
        script.append(f"set title 'data: {p}'")
        script.append("plot " + ", ".join(cmds))
    script.append("unset multiplot")
    sp = os.path.join(ddir, "chart.gp")
    with open(sp, "w") as f:
        f.write("\n".join(script) + "\n")
    r = subprocess.run(["gnuplot", sp], capture_output=True, text=True)
    if r.returncode:
        log(f"bench: gnuplot failed: {r.stderr.strip()[-300:]}")
