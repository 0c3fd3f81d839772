"""A link between two hosts on this machine for the --link rows: tests/net/netns.sh makes two
network namespaces joined by tm-wire (rate, one-way delay, jitter, loss; the kernels here have no
netem, tests/net/README.md). Receivers (tagmig recv, the destination QEMU, the iperf3 server) run
in host B at 198.18.0.2, senders in host A. One link per bench run."""

import os
import subprocess

from .common import log

HOLD = r'''
. "$1"
tm_link_up "$2" || exit 1
echo "$TM_LINK_A $TM_LINK_B $TM_ADDR_A $TM_ADDR_B"
read -r _
tm_link_down
tm_link_stats
'''


class Link:
    def __init__(self, spec, top, workdir):
        self.spec = spec
        self.top = top
        wire = os.path.join(workdir, "tm-wire")
        r = subprocess.run(["cc", "-O2", "-D_GNU_SOURCE", "-o", wire, os.path.join(top, "tests", "net", "wire.c")],
                           capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"bench: --link: building tm-wire failed: {r.stderr[-500:]}")
        env = dict(os.environ, TM_WIRE=wire)
        self.proc = subprocess.Popen(["bash", "-c", HOLD, "link",
                                      os.path.join(top, "tests", "net", "netns.sh"), spec],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline().split()
        if len(line) != 4:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self.down()
            raise SystemExit(f"bench: --link {spec}: the link did not come up: {err.strip()}")
        self.ns_a, self.ns_b, self.addr_a, self.addr_b = line
        self.stats = ""
        log(f"bench: link {spec}: {self.ns_a} ({self.addr_a}) -> {self.ns_b} ({self.addr_b})")

    def in_a(self):
        return ["ip", "netns", "exec", self.ns_a]

    def in_b(self):
        return ["ip", "netns", "exec", self.ns_b]

    def down(self):
        """Removes the namespaces; returns the wire's counters (one line per direction)."""
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.stdin.write("\n")
                self.proc.stdin.flush()
                self.stats = self.proc.stdout.read().strip()
            except (BrokenPipeError, OSError):
                pass
            self.proc.wait(timeout=30)
        self.proc = None
        return self.stats
