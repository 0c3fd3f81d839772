"""The machine's ceilings: TCP over loopback (iperf3) and AES-128-GCM (openssl speed)."""

import json
import subprocess
import time

from .common import GIB
from .host import free_port


def listening(port, addr="127.0.0.1", netns=None):
    """Whether something listens on addr:port, read from /proc (connecting would use up the one
    test an 'iperf3 -s -1' serves); in network namespace netns (ip netns exec) if given."""
    want = "".join(f"{int(b):02X}" for b in reversed(addr.split("."))) + f":{port:04X}"
    lines = subprocess.run((["ip", "netns", "exec", netns] if netns else []) +
                           ["cat", "/proc/net/tcp"], capture_output=True,
                           text=True).stdout.splitlines()
    return any(l.split()[1] == want and l.split()[3] == "0A" for l in lines[1:])


def run_iperf3(streams, seconds, children, link=None):
    """iperf3 over 127.0.0.1, or across link (server in its host B, client in host A)."""
    err = ""
    addr = link.addr_b if link else "127.0.0.1"
    in_a, in_b = (link.in_a(), link.in_b()) if link else ([], [])
    for _ in range(5):
        port = free_port()
        srv = children.popen(in_b + ["iperf3", "-s", "-1", "-p", str(port), "-B", addr],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 5
            while (not listening(port, addr, link and link.ns_b) and srv.poll() is None
                   and time.monotonic() < deadline):
                time.sleep(0.01)
            r = subprocess.run(in_a + ["iperf3", "-c", addr, "-p", str(port), "-P", str(streams),
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
