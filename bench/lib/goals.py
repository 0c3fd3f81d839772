"""The goals of issue 6, checked on the rows of this run (ratios measured side by side)."""

from .output import fmt


def goals(rows, backends, default_io):
    """The goals table of issue 6, per I/O backend, from rows of this run."""
    def find(tool, **k):
        for r in rows:
            if r["tool"] == tool and not r.get("error") and all(r.get(a) == b for a, b in k.items()):
                return r
        return None

    out = []

    def ratio(a, b):
        return a / b if a is not None and b else None

    for io in backends:
        base = dict(io=io, tls=False, tags="none", data="random", channels=4)
        t = find("tagmig", dest="warm", **base)
        q = find("qemu", data="random", dest="warm", channels=4, tls=False)
        ip = find("iperf3", channels=4)
        if t:
            x_ip = ratio(t["gib_per_s"], ip and ip["gib_per_s"])
            x_q = ratio(t["gib_per_s"], q and q["gib_per_s"])
            x_cpu = ratio(t["send_cpu_s_per_gib"], q and q["send_cpu_s_per_gib"])
            ok = None if None in (x_ip, x_q, x_cpu) else (x_ip >= 0.95 and x_q >= 1.05 and x_cpu <= 0.6)
            out.append(dict(goal="random data, 4 ch, warm", io=io,
                            qemu=q and f"{q['gib_per_s']:.2f} GiB/s; CPU {q['send_cpu_s_per_gib']:.2f} + {q['recv_cpu_s_per_gib']:.2f} s/GiB",
                            tagmig=f"{t['gib_per_s']:.2f} GiB/s; CPU {t['send_cpu_s_per_gib']:.2f} + {t['recv_cpu_s_per_gib']:.2f} s/GiB",
                            target=">= 0.95x iperf3, >= 1.05x QEMU, sender CPU <= 0.6x QEMU",
                            measured=f"{fmt(x_ip)}x iperf3, {fmt(x_q)}x QEMU, sender CPU {fmt(x_cpu)}x QEMU",
                            met=ok))
        t = find("tagmig", dest="cold", **base)
        q = find("qemu", data="random", dest="cold", channels=4, tls=False)
        if t:
            x = ratio(t["gib_per_s"], q and q["gib_per_s"])
            out.append(dict(goal="random data, 4 ch, cold", io=io,
                            qemu=q and f"{q['gib_per_s']:.2f} GiB/s",
                            tagmig=f"{t['gib_per_s']:.2f} GiB/s", target=">= 1.3x QEMU",
                            measured=f"{fmt(x)}x QEMU", met=None if x is None else x >= 1.3))
        t = find("tagmig", io=io, tls=True, tags="none", data="random", channels=4, dest="warm")
        q = find("qemu", data="random", dest="warm", channels=4, tls=True)
        if t or q:
            x = ratio(t and t["gib_per_s"], q and q["gib_per_s"])
            out.append(dict(goal="TLS, 4 ch, warm", io=io,
                            qemu=q and f"{q['gib_per_s']:.2f} GiB/s",
                            tagmig=t and f"{t['gib_per_s']:.2f} GiB/s" or "not measured (no TLS row in this run)",
                            target=">= 2.5x QEMU and >= 1.5 GiB/s",
                            measured=f"{fmt(x)}x QEMU, {fmt(t and t['gib_per_s'])} GiB/s",
                            met=None if x is None else (x >= 2.5 and t["gib_per_s"] >= 1.5)))
        for dest in ("warm", "cold"):
            t = find("tagmig", io=io, tls=False, tags="none", data="zero", channels=2, dest=dest)
            q = find("qemu", data="zero", dest=dest, channels=2, tls=False)
            if t:
                x = ratio(t["gib_per_s"], q and q["gib_per_s"])
                out.append(dict(goal=f"zero pages written by the guest, 2 ch, {dest}", io=io,
                                qemu=q and f"{q['gib_per_s']:.2f} GiB/s",
                                tagmig=f"{t['gib_per_s']:.2f} GiB/s", target=">= 1.5x QEMU",
                                measured=f"{fmt(x)}x QEMU", met=None if x is None else x >= 1.5))
        t0 = find("tagmig", io=io, tls=False, tags="none", data="random", channels=4, dest="warm")
        t1 = find("tagmig", io=io, tls=False, tags="random", data="random", channels=4, dest="warm")
        if t0 and t1:
            x = ratio(t1["gib_per_s"], t0["gib_per_s"])
            pct = t1["tag_pct_of_wire"]
            out.append(dict(goal="random per-granule tags vs no tags (random data, 4 ch, warm)",
                            io=io, qemu="(no peer migrates KVM tags)",
                            tagmig=f"{t1['gib_per_s']:.2f} vs {t0['gib_per_s']:.2f} GiB/s; tags {pct:.2f}% of wire",
                            target="tag wire overhead <= 3.2%, throughput >= 0.95x no tags",
                            measured=f"{pct:.2f}% of wire, {fmt(x)}x", met=pct <= 3.2 and x >= 0.95))
    return out
