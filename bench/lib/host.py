"""The machine a run happens on: what it is, the packages bench needs (apt-get), a tagmig built
from this tree, free ports and memory, and the huge-page tmpfs the images live on."""

import os
import platform
import re
import shutil
import socket
import subprocess
import tempfile

from .common import GIB, log

PACKAGES = {  # program -> Debian package that provides it
    "gnuplot": "gnuplot-nox",
    "iperf3": "iperf3",
    "qemu-system-x86_64": "qemu-system-x86",
    "openssl": "openssl",
    "perf": "linux-perf",
}


def ensure_packages(want):
    missing = [p for p in want if shutil.which(p) is None]
    if not missing:
        return
    pkgs = sorted({PACKAGES[p] for p in missing})
    log(f"bench: installing {' '.join(pkgs)} (apt-get) for {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if os.geteuid() != 0:
        log("bench: not root, cannot apt-get; the baselines that need them are skipped")
        return
    subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + pkgs,
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode:
        log(f"bench: apt-get install failed: {r.stderr.strip()[-400:]}")


def build_tagmig(top, builddir):
    """Builds tagmig with scripts/build.sh; returns the binary's path (exits if the build fails)."""
    log(f"bench: building tagmig in {builddir} (scripts/build.sh {builddir} plain)")
    r = subprocess.run([os.path.join(top, "scripts", "build.sh"), builddir, "plain"],
                       stderr=subprocess.PIPE, text=True)
    if r.returncode:
        raise SystemExit(f"bench: build failed:\n{r.stderr[-3000:]}")
    return os.path.join(builddir, "tools", "tagmig")


def machine_info():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    return {
        "host": socket.gethostname(),
        "kernel": platform.release(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": round(mem / GIB, 1),
    }


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def remove_leftovers(shm):
    """Work directories of a run that was killed (SIGKILL skips the cleanup): its pid is gone."""
    for name in os.listdir(shm):
        m = re.fullmatch(r"tagmig-bench-(\d+)-.*", name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            log(f"bench: removing {shm}/{name}, left by an earlier run that was killed")
            shutil.rmtree(os.path.join(shm, name), ignore_errors=True)


class HugeTmpfs:
    """A tmpfs with huge=always for the images of this run; /dev/shm if it cannot be mounted.

    Guest RAM in 4 KiB pages costs a page-table fill on the first touch of every page by each
    process, which on virtual machines with shadow paging costs more than moving the data
    (bench/README.md); VMMs back guest RAM with huge pages, QEMU and tagmig alike here.
    """

    def __init__(self):
        self.mountpoint = None  # set while mounted

    def mount(self):
        """Returns the directory for the images: the new mount, or /dev/shm."""
        d = tempfile.mkdtemp(prefix=f"tagmig-bench-huge-{os.getpid()}-")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "huge=always,mode=0700", "tmpfs", d],
                           capture_output=True, text=True)
        if r.returncode != 0:
            os.rmdir(d)
            log(f"bench: WARNING: cannot mount a huge-page tmpfs ({r.stderr.strip()}); guest RAM "
                f"in 4 KiB pages on /dev/shm (slower on VMs; see bench/README.md)")
            return "/dev/shm"
        self.mountpoint = d
        return d

    def unmount(self):
        if self.mountpoint:
            subprocess.run(["umount", self.mountpoint], capture_output=True)
            try:
                os.rmdir(self.mountpoint)
            except OSError:
                pass
            self.mountpoint = None
