"""tagmig itself: which --io backends and whether TLS work, and one migration as two processes
(`tagmig recv` and `tagmig send` over 127.0.0.1), optionally under perf."""

import json
import os
import shutil
import subprocess
import tempfile
import time

from .images import write_zeros
from .common import log
from .procs import cpu_of, last_line, wait_all


class Tagmig:
    """A tagmig binary, run in workdir; children records the processes it starts."""

    def __init__(self, binary, workdir, children):
        self.binary = binary
        self.workdir = workdir
        self.children = children

    def detect_backends(self):
        """Which --io names this tagmig accepts: a tiny demo with each; returns (list, notes,
        the default backend's name)."""
        found, notes, seen = [], [], {}
        for name in ("sockets", "io_uring", "uring"):
            r = subprocess.run([self.binary, "demo", "--size", "4M", "--channels", "2", "--io",
                                name, "--json"], capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                notes.append(f"--io {name}: skipped, {(r.stderr.strip() or 'exit ' + str(r.returncode)).splitlines()[-1]}")
                continue
            try:
                ran = json.loads(r.stdout).get("io_backend", name)
            except ValueError:
                ran = name
            if ran in seen:
                notes.append(f"--io {name}: same backend as --io {seen[ran]} ({ran}), not repeated")
                continue
            seen[ran] = name
            found.append(name)
        default = ""
        r = subprocess.run([self.binary, "demo", "--size", "4M", "--channels", "2", "--json"],
                           capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            default = json.loads(r.stdout).get("io_backend", "")
        return found, notes, default

    def detect_tls(self, creds):
        """TLS rows run when send and recv take --tls-creds and a tiny migration over TLS works.
        Returns (whether, why)."""
        helps = [subprocess.run([self.binary, c, "--help"], capture_output=True,
                                text=True).stdout for c in ("send", "recv")]
        if not all("--tls-creds" in h for h in helps):
            return False, "TLS rows skipped: 'tagmig send --help' / 'recv --help' have no --tls-creds yet"
        if creds is None:
            return False, "TLS rows skipped: no credentials (openssl missing?)"
        src = os.path.join(self.workdir, "tls-probe-src.img")
        dst = os.path.join(self.workdir, "tls-probe-dst.img")
        with open(src, "wb") as f:
            f.write(os.urandom(1 << 20))
        try:
            res = self.pair(src, None, dst, None, 2, None, creds, timeout=60)
        finally:
            for p in (src, dst):
                if os.path.exists(p):
                    os.unlink(p)
        if res.get("error"):
            return False, f"TLS rows skipped: a 1 MiB migration with --tls-creds failed: {res['error']}"
        return True, "TLS rows run (--tls-creds found and a probe migration worked)"

    def detect_compress(self):
        """The compression table's tagmig rows (issue 15): none, lz4, zstd and auto when
        `tagmig send --help` lists --compress, else one row without it. Returns (modes, why)."""
        h = subprocess.run([self.binary, "send", "--help"], capture_output=True, text=True).stdout
        if "--compress" not in h:
            return [None], ("compression rows: 'tagmig send --help' has no --compress: tagmig "
                            "rows run without it, its compression goals are not measured")
        return ["none", "lz4", "zstd", "auto"], "compression rows: tagmig --compress none/lz4/zstd/auto"

    def pair(self, src, src_tags, dst, dst_tags, channels, io, creds, timeout, perf_dir=None,
             link=None, compress=None):
        """One migration: recv and send as separate processes over 127.0.0.1, or across link
        (link.Link: recv in its host B, send in host A); compress: send's --compress, if any."""
        work = tempfile.mkdtemp(prefix="pair-", dir=self.workdir)
        portfile = os.path.join(work, "port")
        common = []
        if io:
            common += ["--io", io]
        if creds:
            common += ["--tls-creds", creds]
        addr = link.addr_b if link else "127.0.0.1"
        recv = [self.binary, "recv", "--listen", f"{addr}:0", "--port-file", portfile,
                "--ram", dst, "--json", "--timeout", "30"] + common
        if dst_tags:
            recv += ["--tags", dst_tags]
        wrap_r, wrap_s = (link.in_b(), link.in_a()) if link else ([], [])
        if perf_dir:
            wrap_r += ["perf", "record", "-q", "-F", "1999", "-g", "-o",
                       os.path.join(perf_dir, "recv.data"), "--"]
            wrap_s += ["perf", "record", "-q", "-F", "1999", "-g", "-o",
                       os.path.join(perf_dir, "send.data"), "--"]
        r = self.children.spawn(recv, os.path.join(work, "r.out"), os.path.join(work, "r.err"),
                                wrap_r)
        t_start = time.monotonic()
        while not os.path.exists(portfile):
            if r.poll() is not None or time.monotonic() - t_start > 20:
                r.kill()
                wait_all([r], 5)
                return {"error": "recv did not listen: " + last_line(os.path.join(work, "r.err"))}
            time.sleep(0.002)
        with open(portfile) as f:
            port = int(f.read())
        send = [self.binary, "send", "--connect", f"{addr}:{port}", "--ram", src,
                "--channels", str(channels), "--json", "--timeout", "30"] + common
        if src_tags:
            send += ["--tags", src_tags]
        if compress:
            send += ["--compress", compress]
        t0 = time.monotonic()
        s = self.children.spawn(send, os.path.join(work, "s.out"), os.path.join(work, "s.err"),
                                wrap_s)
        usage, timed_out = wait_all([s, r], timeout)
        e2e = time.monotonic() - t0
        res = {}
        if timed_out:
            res["error"] = f"timed out after {timeout} s"
        for name, p in (("send", s), ("recv", r)):
            if p.returncode != 0 and "error" not in res:
                res["error"] = f"{name} exit {p.returncode}: " + last_line(
                    os.path.join(work, name[0] + ".err"))
        if "error" not in res:
            try:
                with open(os.path.join(work, "s.out")) as f:
                    res["send"] = json.load(f)
                with open(os.path.join(work, "r.out")) as f:
                    res["recv"] = json.load(f)
            except ValueError as e:
                res["error"] = f"bad --json output: {e}"
        res["send_proc_cpu"] = cpu_of(usage[s.pid])
        res["recv_proc_cpu"] = cpu_of(usage[r.pid])
        res["e2e_seconds"] = e2e
        shutil.rmtree(work, ignore_errors=True)
        return res

    def perf_profile(self, outdir, src, dst, size, cfg):
        """perf record on both processes of one extra run; top symbols to perf-send/recv.txt."""
        if shutil.which("perf") is None:
            log("bench: perf not installed, no profile")
            return True
        log("bench: perf record on tagmig send and recv (4 ch, random, warm)")
        if os.path.exists(dst):
            os.unlink(dst)
        write_zeros(dst, size)
        pdir = os.path.join(outdir, f"perf-{cfg['io']}")
        os.makedirs(pdir, exist_ok=True)
        res = self.pair(src, None, dst, None, cfg["channels"], cfg["io"], None, 300,
                        perf_dir=pdir)
        os.unlink(dst)
        if res.get("error"):
            log(f"bench: perf run failed: {res['error']}")
            return True
        for side in ("send", "recv"):
            for sort, suffix in (("sym", ""), ("dso", "-dso")):
                r = subprocess.run(["perf", "report", "-i", os.path.join(pdir, f"{side}.data"),
                                    "--stdio", "--no-children", "--sort", sort, "--percent-limit",
                                    "0.5", "-g", "none"], capture_output=True, text=True)
                with open(os.path.join(pdir, f"perf-{side}{suffix}.txt"), "w") as f:
                    f.write(r.stdout)
        log(f"bench: perf reports in {pdir}/perf-{{send,recv}}{{,-dso}}.txt; that run: "
            f"{res['send']['gib_per_s']:.2f} GiB/s under perf")
        return True
