"""The machine's ceilings: TCP over loopback (iperf3) and AES-128-GCM (openssl speed)."""

import json
import subprocess
import time

from .common import GIB
from .host import free_port


def listening(port):
    """Whether something listens on 127.0.0.1:port, read from /proc (connecting would use up
    the one test an 'iperf3 -s -1' serves)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        return any(l.split()[1] == want and l.split()[3] == "0A" for l in f.readlines()[1:])


def run_iperf3(streams, seconds, children):
    err = ""
    for _ in range(5):
        port = free_port()
        srv = children.popen(["iperf3", "-s", "-1", "-p", str(port), "-B", "127.0.0.1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 5
            while not listening(port) and srv.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            r = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-P", str(streams),
                                "-t", str(seconds), "-J"], capture_output=True, text=True,
                               timeout=seconds + 30)
            try:
                j = json.loads(r.stdout)
                bps = j["end"]["sum_received"]["bits_per_second"]
            except (ValueError, KeyError):
                err = (r.stdout + r.stderr).strip()[-200:]
                continue
            cpu = j["end"].get("cpu_utilization_percent", {})
            return {"gib_per_s": bps / 8 / GIB, "host_cpu_pct": cpu.get("host_total"),
                    "remote_cpu_pct": cpu.get("remote_total")}
        finally:
            try:
                srv.wait(timeout=5)
            except subprocess.TimeoutExpired:
                srv.kill()
                srv.wait()
    return {"error": "iperf3 failed: " + err}


def run_openssl_speed(multi, seconds):
    argv = ["openssl", "speed", "-evp", "aes-128-gcm", "-bytes", "16384", "-seconds", str(seconds)]
    if multi > 1:
        argv += ["-multi", str(multi)]
    r = subprocess.run(argv, capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if line.lower().startswith("aes-128-gcm"):
            v = line.split()[-1]
            kbps = float(v.rstrip("k"))
            return {"gb_per_s": kbps * 1000 / 1e9, "gib_per_s": kbps * 1000 / GIB}
    return {"error": "no aes-128-gcm line in openssl speed output: " + r.stderr[-200:]}
