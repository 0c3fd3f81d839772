"""One run of bench/run: setup, the data groups run round-robin, the medians and ratios, the
results. All its state is in a Bench object, which bench/run makes from the command line."""

import datetime
import json
import os
import shutil
import tempfile
import time

from . import accel as accel_mod
from . import guest, host, images, live, qemubin
from .baselines import run_iperf3, run_openssl_speed
from .common import GIB, GRANULE, MIB, fmt_size, log
from .creds import make_creds
from .goals import goals, live_goals
from .link import Link
from .matrix import build_matrix, qemu_configs
from .output import HEADER, median_row, row_line, write_results
from .procs import Children
from .qemu import run_qemu_pair
from .tagmig import Tagmig


class Progress:
    """The "[done/total pct elapsed, ~left]" line before each job."""

    def __init__(self, total):
        self.total = total
        self.done = 0
        self.t_begin = time.monotonic()

    def say(self, what):
        el = time.monotonic() - self.t_begin
        eta = el / self.done * (self.total - self.done) if self.done else 0
        log(f"[{self.done + 1}/{self.total} {100 * self.done // self.total}% "
            f"{datetime.timedelta(seconds=int(el))} elapsed"
            f"{', ~' + str(datetime.timedelta(seconds=int(eta))) + ' left' if self.done else ''}] {what}")


class Bench:
    """A run: args is bench/run's parsed command line, top the source tree."""

    def __init__(self, args, top):
        self.args = args
        self.top = top
        self.children = Children()
        self.huge = host.HugeTmpfs()
        self.workdir = None
        self.rows = []
        self.ceilings = {}   # channels -> iperf3 GiB/s
        self.qemu_rows = {}  # (data, dest, channels, tls, compression) -> median QEMU row
        self.crypto_ceiling = None
        self.link = None
        self.guest_images = []  # the .json of each real guest image this run used

    # ------------------------------------------------------------ life cycle

    def cleanup(self):
        """Ends the processes this run started, removes its files and its mount. Idempotent."""
        self.children.kill_all()
        if self.link:
            stats = self.link.down()
            if stats:
                log("bench: link counters: " + "; ".join(stats.splitlines()))
            self.link = None
        if self.workdir and os.path.isdir(self.workdir):
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.huge.unmount()

    def setup(self):
        a = self.args
        self.mode = a.mode or "quick"
        self.size = a.size or {"quick": 512 * MIB, "live": GIB}.get(self.mode, 4 * GIB)
        self.repeat = a.repeat or (1 if self.mode == "live" else 3)
        self.outdir = os.path.abspath(a.out or os.path.join(self.top, "bench", "results",
                                                            self.mode))
        os.makedirs(self.outdir, exist_ok=True)

        host.ensure_packages(["gnuplot", "iperf3", "openssl"] +
                             ([] if a.no_qemu else ["qemu-system-x86_64"]) +
                             (["perf"] if a.perf else []))
        binary = os.path.abspath(a.tagmig or os.environ.get("TAGMIG") or
                                 host.build_tagmig(self.top, os.path.join(self.top, "build-bench")))
        shm = self.huge.mount() if a.pages == "huge" else a.shm
        host.remove_leftovers(shm)
        self.shm = shm
        self.workdir = tempfile.mkdtemp(prefix=f"tagmig-bench-{os.getpid()}-", dir=shm)
        self.tagmig = Tagmig(binary, self.workdir, self.children)
        if a.link:
            if os.geteuid() != 0:
                raise SystemExit("bench: --link needs root (network namespaces)")
            self.link = Link(a.link, self.top, self.workdir)
        self.machine = host.machine_info()
        self.machine["guest_pages"] = "huge" if self.huge.mountpoint else "4k"
        self.qemu = None
        if not a.no_qemu:
            self.qemu = qemubin.choose(a.qemu, self.top,
                                       os.path.join(self.top, "build-bench", "qemu-cache"), log)
        self.have_qemu = self.qemu is not None
        self.accel = None
        if self.have_qemu:
            try:
                self.accel = accel_mod.choose(os.environ.get(accel_mod.VARIABLE), self.qemu,
                                              self.workdir, self.children, log)
            except ValueError as e:
                raise SystemExit(f"bench: {e}")

        # Room for source + destination images and tags, plus QEMU and slack.
        size = self.size
        need = 2 * (size + size // GRANULE) + GIB
        have = min(shutil.disk_usage(shm).free, host.mem_available())
        while need > have and size > 64 * MIB:
            log(f"bench: WARNING: {fmt_size(size)} needs {need / GIB:.1f} GiB in {shm} and "
                f"RAM, only {have / GIB:.1f} GiB free: halving the guest size")
            size //= 2
            need = 2 * (size + size // GRANULE) + GIB
        size -= size % (2 * MIB)
        self.size = size
        # live rows (live.py): the run's guest in --live, at most 1 GiB in the other modes
        self.live_size = size if self.mode == "live" else min(size, GIB)
        if a.link and self.mode == "live":
            raise SystemExit("bench: --live runs over loopback only (tagmig demo --live is one "
                             "process); drop --link")

        m = self.machine
        log(f"bench: {self.mode} mode, guest {fmt_size(size)}, {self.repeat} run(s) per row, "
            f"tagmig {binary}")
        log(f"bench: machine {m['host']}: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, "
            f"kernel {m['kernel']}; {self.qemu.label if self.qemu else 'no QEMU'}, accel "
            f"{self.accel.label if self.accel else 'none'}")
        self.backends, self.notes, self.default_io = self.tagmig.detect_backends()
        for n in self.notes:
            log("bench: " + n)
        if not self.backends:
            raise SystemExit("bench: tagmig accepts no --io backend; is the binary broken?")
        log(f"bench: I/O backends: {', '.join(self.backends)} "
            f"(library default: {self.default_io or '?'})")
        self.creds = make_creds(os.path.join(self.workdir, "creds"))
        self.tls_ok, self.tls_note = self.tagmig.detect_tls(self.creds)
        log("bench: " + self.tls_note)
        self.compress_modes, self.compress_note = self.tagmig.detect_compress()
        log("bench: " + self.compress_note)
        if not self.have_qemu:
            log("bench: QEMU rows skipped: " + ("--no-qemu" if a.no_qemu else
                                                 "no QEMU (neither 10 from backports nor "
                                                 "qemu-system-x86_64)"))

    # ------------------------------------------------------------ the jobs

    def groups(self):
        """Each data image is one group of jobs; a group's runs go round-robin (run 1 of every
        row, then run 2...), so slow phases of a shared machine hit every row alike and
        side-by-side ratios hold."""
        matrix = build_matrix(self.mode, self.backends, self.tls_ok, self.compress_modes)
        qcfgs = qemu_configs(matrix, self.creds is not None, self.mode) if self.have_qemu else []
        channels_used = sorted({r["channels"] for r in matrix})
        order = []  # data kinds in matrix order
        for r in matrix:
            if r["data"] not in order:
                order.append(r["data"])
        groups = {}
        for d in order:
            jobs = []
            if d == order[0]:
                jobs += [("iperf3", ch) for ch in channels_used]
            jobs += [("qemu", q) for q in qcfgs if q[0] == d]
            jobs += [("tagmig", r) for r in matrix if r["data"] == d]
            groups[d] = jobs
        return groups

    def emit(self, r):
        r.update({k: self.machine[k] for k in ("host", "kernel", "cpu", "cores")})
        r["qemu_accel"] = self.accel.label if self.accel else "none"
        r["qemu_version"] = self.qemu.version if self.qemu else "none"
        r["link"] = self.link.spec if self.link else "loopback"
        self.rows.append(r)
        print(row_line(r), flush=True)

    def add_ratios(self, r):
        """To the matching QEMU row and to the ceiling (iperf3; for TLS also the crypto one)."""
        if r.get("error") or r["tool"] not in ("tagmig", "qemu"):
            return
        if r["tool"] == "tagmig":
            q = self.qemu_rows.get((r["data"], r["dest"], r["channels"], r["tls"], "none"))
            if q and not q.get("error"):
                r["qemu_gib_per_s"] = q["gib_per_s"]
                r["vs_qemu"] = r["gib_per_s"] / q["gib_per_s"]
        ceil = self.ceilings.get(r["channels"])
        r["ceiling"] = "iperf3"
        if r["tls"] and self.crypto_ceiling:
            r["ceiling"] = "min(iperf3, openssl aes-128-gcm all cores / 2)"
            ceil = min(ceil or self.crypto_ceiling, self.crypto_ceiling)
        if ceil:
            r["ceiling_gib_per_s"] = ceil
            r["vs_ceiling"] = r["gib_per_s"] / ceil

    def job_desc(self, kind, c):
        if kind == "iperf3":
            return f"iperf3 -P {c}, {self.iperf_seconds} s"
        if kind == "qemu":
            d, dest, ch, tls, comp = c
            return (f"QEMU multifd {'tls' if tls else 'plain'} {d} {dest} {ch} ch"
                    f"{'' if comp == 'none' else ' multifd-compression ' + comp}")
        return (f"tagmig {c['io']} {'tls' if c['tls'] else 'plain'} tags={c['tags']} "
                f"{c['data']} {c['dest']} {c['channels']} ch"
                f"{' --compress ' + c['compress'] if c.get('compress') else ''}")

    def run_job(self, kind, c):
        size_gib = self.size / GIB
        if kind == "iperf3":
            if not shutil.which("iperf3"):
                return {"error": "iperf3 not installed"}
            res = run_iperf3(c, self.iperf_seconds, self.children, self.link)
            if res.get("error"):
                return res
            return dict(gib_per_s=res["gib_per_s"], seconds=self.iperf_seconds)
        if kind == "qemu":
            d, dest, ch, tls, comp = c
            res = run_qemu_pair(self.qemu, self.src, self.size, ch, dest, self.creds if tls else None,
                                self.timeout, self.accel, self.workdir, self.children, self.link,
                                compression=comp)
            if res.get("error"):
                return res
            return dict(gib_per_s=size_gib / res["seconds"], seconds=res["seconds"],
                        wire_bytes=res["wire_bytes"],
                        send_cpu_s_per_gib=res["send_cpu"] / size_gib,
                        recv_cpu_s_per_gib=res["recv_cpu"] / size_gib,
                        e2e_gib_per_s=size_gib / res["e2e_seconds"],
                        zero_pages=res["zero_pages"], normal_pages=res["normal_pages"])
        tagged = c["tags"] != "none"
        images.remove(self.dst, self.dst_tags)
        if c["dest"] == "warm":  # exists, written, in page cache
            images.write_zeros(self.dst, self.size)
            if tagged:
                images.write_zeros(self.dst_tags, self.size // GRANULE)
        else:  # created by the receiver, in memory the host backs (images.prime)
            images.prime(self.dst, self.size)
        res = self.tagmig.pair(self.src, self.src_tags[c["tags"]] if tagged else None, self.dst,
                               self.dst_tags if tagged else None, c["channels"], c["io"],
                               self.creds if c["tls"] else None, self.timeout, link=self.link,
                               compress=c.get("compress"))
        images.remove(self.dst, self.dst_tags)
        if res.get("error"):
            return res
        s, r = res["send"], res["recv"]
        return dict(gib_per_s=s["gib_per_s"], seconds=s["seconds"],
                    wire_bytes=s["wire_bytes"], tag_bytes=s["tag_bytes"],
                    tag_pct_of_wire=s["tag_pct_of_wire"],
                    send_cpu_s_per_gib=s["cpu_s_per_gib"],
                    recv_cpu_s_per_gib=r["cpu_s_per_gib"],
                    send_proc_cpu_s_per_gib=res["send_proc_cpu"] / size_gib,
                    recv_proc_cpu_s_per_gib=res["recv_proc_cpu"] / size_gib,
                    e2e_gib_per_s=size_gib / res["e2e_seconds"],
                    io_backend_ran=s.get("io_backend"), send_stats=s, recv_stats=r)

    def run_group(self, data, jobs, progress):
        """Writes the data image, runs every job of the group repeat times round-robin, emits
        the median rows (ceilings and QEMU first: the tagmig rows' ratios need them)."""
        log(f"bench: writing the {data} image ({fmt_size(self.size)}) and its tag files")
        try:
            images.make_ram(self.src, self.size, data, self.guest_parts)
        except RuntimeError as e:  # no real guest image here: its rows say why
            log(f"bench: no {data} image: {e}")
            images.remove(self.src)
            for kind, c in jobs:
                m = {"error": f"no {data} image: {e}", "repeats": 0}
                if kind == "qemu":
                    m.update(tool="qemu", io="qemu", tls=c[3], tags="none", data=data, dest=c[1],
                             channels=c[2], compress=c[4])
                elif kind == "tagmig":
                    m.update(tool="tagmig", **c)
                else:
                    continue
                self.emit(m)
                progress.done += self.repeat
            return
        for k, path in self.src_tags.items():
            if any(j[0] == "tagmig" and j[1]["tags"] == k for j in jobs):
                images.make_tags(path, self.size, k)
        runs = [[] for _ in jobs]
        for rep in range(self.repeat):
            for i, (kind, c) in enumerate(jobs):
                if runs[i] and runs[i][-1].get("error"):
                    progress.done += 1  # failed once: not retried
                    continue
                progress.say(f"run {rep + 1}/{self.repeat}: {self.job_desc(kind, c)}")
                res = self.run_job(kind, c)
                runs[i].append(res)
                if res.get("error"):
                    log(f"    -> ERROR {res['error']}")
                else:
                    log(f"    -> {res['gib_per_s']:.2f} GiB/s")
                progress.done += 1
        for i, (kind, c) in enumerate(jobs):
            m = median_row(runs[i])
            if kind == "iperf3":
                m.update(tool="iperf3", channels=c, tls=False)
                self.ceilings[c] = m.get("gib_per_s")
            elif kind == "qemu":
                d, dest, ch, tls, comp = c
                m.update(tool="qemu", io="qemu", tls=tls, tags="none", data=d, dest=dest,
                         channels=ch, size_gib=self.size / GIB, tag_pct_of_wire=0.0,
                         compress=comp)
                self.qemu_rows[c] = m
            else:
                m.update(tool="tagmig", size_gib=self.size / GIB, **c)
            self.add_ratios(m)
            self.emit(m)
        for kind, c in jobs:
            if self.args.perf and kind == "tagmig" and c["io"] not in self.perf_done and \
                    c["data"] == "random" and c["tags"] == "none" and c["channels"] == 4 and \
                    not c["tls"] and c["dest"] == "warm":
                log(f"bench: perf record: {self.job_desc(kind, c)}")
                self.tagmig.perf_profile(self.outdir, self.src, self.dst, self.size, c)
                self.perf_done.add(c["io"])
        images.remove(self.src, *self.src_tags.values())

    def guest_parts(self, size):
        """The real guest's RAM images (bench/lib/guest.py) that, concatenated, make size bytes:
        one boot of size up to 1 GiB; above, boots of 1 GiB with seeds 1, 2, ... (each its own
        boot: own files, own kernel placement), the last one cut. Cached in
        build-bench/guest-cache; the first run boots them (TCG: minutes per GiB)."""
        q = self.qemu or qemubin.system("--no-qemu: Debian's own for the guest image")
        if q is None:
            raise RuntimeError("no QEMU to boot a guest with")
        base = max(96 * MIB, min(size, GIB))
        base -= base % MIB
        n = -(-size // base)
        parts = [guest.make(q, self.guest_cache, base // MIB, seed, log,
                            os.environ.get(accel_mod.VARIABLE)) for seed in range(1, n + 1)]
        self.guest_images = []
        for p in parts:  # how each was made, for results.json and the heading
            with open(p + ".json") as f:
                self.guest_images.append(dict(json.load(f), path=p))
        return parts

    def run(self):
        self.setup()
        groups = self.groups()
        # the live rows run once each in quick and full (--repeat in --live), never over --link
        live_cfgs = [] if self.link else live.live_configs(self.mode)
        live_repeat = self.repeat if self.mode == "live" else 1
        progress = Progress(sum(len(j) for j in groups.values()) * self.repeat +
                            (self.mode != "live") + 2 * len(live_cfgs) * live_repeat)
        self.guest_cache = os.path.join(self.top, "build-bench", "guest-cache")
        if self.mode == "live":
            rows, why = live.run_rows(self, progress, live_repeat)
            live.write(self, rows, live_goals(rows), why, self.outdir)
            return
        print(HEADER, flush=True)

        progress.say("openssl speed -evp aes-128-gcm -bytes 16384 (1 core, all cores)")
        secs = 2 if self.mode == "quick" else 3
        ossl1 = run_openssl_speed(1, secs)
        osslN = run_openssl_speed(self.machine["cores"], secs)
        self.crypto_ceiling = osslN.get("gib_per_s", 0) / 2 if osslN.get("gib_per_s") else None
        self.emit(dict(tool="openssl", channels=1, tls=True, gib_per_s=ossl1.get("gib_per_s"),
                       error=ossl1.get("error"), repeats=1))
        self.emit(dict(tool="openssl", channels=self.machine["cores"], tls=True,
                       gib_per_s=osslN.get("gib_per_s"), error=osslN.get("error"), repeats=1))
        progress.done += 1

        self.iperf_seconds = 5 if self.mode in ("full", "cross") else 2
        self.src = os.path.join(self.workdir, "src.img")
        self.dst = os.path.join(self.workdir, "dst.img")
        self.src_tags = {k: os.path.join(self.workdir, f"src-{k}.tags")
                         for k in ("uniform", "random")}
        self.dst_tags = os.path.join(self.workdir, "dst.tags")
        self.timeout = max(120, int(self.size / GIB * 60))
        self.perf_done = set()  # backends profiled
        for data, jobs in groups.items():
            self.run_group(data, jobs, progress)

        g = goals(self.rows, self.backends, self.default_io,
                  self.link.spec if self.link else None, self.compress_modes, self.mode)
        meta = dict(mode=self.mode, size=self.size, repeat=self.repeat, machine=self.machine,
                    accel=self.accel, qemu=self.qemu, link=self.link and self.link.spec,
                    tagmig=self.tagmig.binary, default_io=self.default_io,
                    notes=self.notes + [self.tls_note, self.compress_note], ossl1=ossl1,
                    osslN=osslN, guest_images=self.guest_images)
        write_results(self.rows, g, self.outdir, meta, progress.t_begin)
        if live_cfgs:
            rows, why = live.run_rows(self, progress, live_repeat)
            live.write(self, rows, live_goals(rows), why, self.outdir)
