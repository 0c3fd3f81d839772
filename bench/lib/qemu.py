"""The QEMU baseline (10 by preference, qemubin.py): multifd from a stopped guest (-S) whose RAM
is the source image, to a second QEMU (-incoming defer), driven over QMP."""

import os
import shutil
import tempfile
import time

from . import images
from .common import MIB
from .host import free_port
from .procs import last_line, proc_cpu
from .qmp import QMP


def run_qemu_pair(qemu, src_img, size, channels, dest, creds, timeout, accel, workdir, children,
                  link=None, compression="none"):
    """One migration between two QEMUs (qemubin.Qemu) on 127.0.0.1 under accel (accel.Accel), or
    across link (link.Link: the destination in its host B, the source in host A). compression:
    multifd-compression on both sides (none, zlib, zstd; their levels are QEMU's defaults, 1)."""
    work = tempfile.mkdtemp(prefix="qemu-", dir=workdir)
    dst_img = os.path.join(work, "dst.img")
    mb = size // MIB
    base = qemu.argv() + ["-nodefaults", "-no-user-config", "-display", "none",
            "-serial", "none", "-monitor", "none", "-S", "-m", f"{mb}M"] + accel.argv()
    src_argv = base + ["-machine", "q35,memory-backend=mem", "-object",
                       f"memory-backend-file,id=mem,size={mb}M,mem-path={src_img},share=on",
                       "-qmp", f"unix:{work}/src.qmp,server=on,wait=off"]
    if dest == "warm":
        dmem = f"memory-backend-file,id=mem,size={mb}M,mem-path={dst_img},share=on,prealloc=on"
    else:
        dmem = f"memory-backend-file,id=mem,size={mb}M,mem-path={dst_img},share=on"
        images.prime(dst_img, size)  # as tagmig's cold destination (runner.py)
    dst_argv = base + ["-machine", "q35,memory-backend=mem", "-object", dmem,
                       "-qmp", f"unix:{work}/dst.qmp,server=on,wait=off", "-incoming", "defer"]
    if creds:
        src_argv += ["-object", f"tls-creds-x509,id=tls0,dir={creds},endpoint=client"]
        dst_argv += ["-object", f"tls-creds-x509,id=tls0,dir={creds},endpoint=server,verify-peer=on"]
    procs = []
    res = {}
    try:
        dq = children.spawn(dst_argv, os.path.join(work, "dst.out"), os.path.join(work, "dst.err"),
                            link.in_b() if link else None)
        procs.append(dq)
        sq = children.spawn(src_argv, os.path.join(work, "src.out"), os.path.join(work, "src.err"),
                            link.in_a() if link else None)
        procs.append(sq)
        qd = QMP(f"{work}/dst.qmp", timeout=60)  # prealloc of a warm destination takes a while
        qs = QMP(f"{work}/src.qmp", timeout=60)
        params = {"multifd-channels": channels}
        if compression != "none":
            params["multifd-compression"] = compression
        for q in (qs, qd):
            q.cmd("migrate-set-capabilities",
                  capabilities=[{"capability": "multifd", "state": True}])
            q.cmd("migrate-set-parameters", **params)
        qs.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40, "downtime-limit": 2000})
        if creds:
            qd.cmd("migrate-set-parameters", **{"tls-creds": "tls0"})
            qs.cmd("migrate-set-parameters", **{"tls-creds": "tls0", "tls-hostname": "localhost"})
        port = free_port()
        uri = f"tcp:{link.addr_b if link else '127.0.0.1'}:{port}"
        cd0, cs0 = proc_cpu(dq.pid), proc_cpu(sq.pid)
        qd.cmd("migrate-incoming", uri=uri)
        t0 = time.monotonic()
        qs.cmd("migrate", uri=uri)
        deadline = t0 + timeout
        info = {}
        src_done = None
        while True:
            info = qs.cmd("query-migrate")
            st = info.get("status")
            if st == "completed":
                if src_done is None:
                    src_done = time.monotonic()
                    cs1 = proc_cpu(sq.pid)
                # QEMU 7.2 says "completed" a moment before it sets total-time (0 until then):
                # ask again rather than divide by it.
                if info.get("total-time"):
                    break
            if st in ("failed", "cancelled"):
                raise RuntimeError(f"source migration {st}: {info.get('error-desc', '')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout} s ({st})")
            time.sleep(0.005)
        while True:
            dinfo = qd.cmd("query-migrate")
            st = dinfo.get("status")
            if st == "completed":
                cd1 = proc_cpu(dq.pid)
                break
            if st == "failed":
                raise RuntimeError("destination migration failed: " +
                                   last_line(os.path.join(work, "dst.err")))
            if time.monotonic() > deadline:
                raise RuntimeError(f"destination timed out after {timeout} s ({st})")
            time.sleep(0.005)
        e2e = time.monotonic() - t0
        ram = info.get("ram", {})
        res = {
            "seconds": info.get("total-time", 0) / 1000.0,
            "wire_bytes": ram.get("transferred", 0),
            "mbps": ram.get("mbps", 0),
            "zero_pages": ram.get("duplicate", 0),
            "normal_pages": ram.get("normal", 0),
            "send_cpu": cs1 - cs0,
            "recv_cpu": cd1 - cd0,
            "e2e_seconds": e2e,
            "src_seconds_harness": src_done - t0,
        }
        qs.close()
        qd.close()
    except Exception as e:  # one failed baseline row must not end the run
        err = str(e)
        for name in ("src", "dst"):
            line = last_line(os.path.join(work, f"{name}.err"))
            if line:
                err += f" [{name}: {line}]"
        res = {"error": err}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)
    return res
