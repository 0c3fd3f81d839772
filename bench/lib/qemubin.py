"""Which QEMU the baseline runs. QEMU 10 (Debian's <codename>-backports, unpacked privately by
bench/fetch-qemu.sh, as tests/vm/aarch64 does for arm64) by preference: it is the multifd a
VMM would compare against today. Debian's own QEMU (7.2 on bookworm) when QEMU 10 cannot be had,
or when asked for (--qemu system); any binary with --qemu PATH. The tables say which one ran."""

import os
import re
import shutil
import subprocess


class Qemu:
    """A QEMU binary for the baseline: path, extra options (the unpacked one's data dir), version
    ("10.0.2"), and why it was chosen."""

    def __init__(self, path, extra, version, why):
        self.path = path
        self.extra = extra
        self.version = version
        self.why = why

    def argv(self):
        return [self.path] + self.extra

    @property
    def label(self):
        return f"QEMU {self.version}"


def version_of(path):
    try:
        r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    m = re.search(r"version (\d+\.\d+(?:\.\d+)?)", r.stdout)
    return m.group(1) if m else None


def system(why):
    path = shutil.which("qemu-system-x86_64")
    if not path:
        return None
    v = version_of(path)
    return Qemu(path, [], v or "?", why) if v else None


def choose(request, top, cachedir, log):
    """request: auto (QEMU 10, else the system's), 10 (QEMU 10 or none), system, or a path.
    Returns a Qemu or None (no QEMU rows), said on the log with the reason."""
    q = None
    if request not in ("auto", "10", "system"):
        v = version_of(request)
        if not v:
            raise SystemExit(f"bench: --qemu {request}: does not run ('--version' fails)")
        q = Qemu(os.path.abspath(request), [], v, f"--qemu {request}")
    elif request == "system":
        q = system("--qemu system")
    else:
        r = subprocess.run([os.path.join(top, "bench", "fetch-qemu.sh"), cachedir],
                           capture_output=True, text=True)
        path = r.stdout.strip()
        if r.returncode == 0 and path:
            share = os.path.join(cachedir, "qemu", "usr", "share", "qemu")
            v = version_of(path)
            if v:
                q = Qemu(path, ["-L", share], v,
                         "Debian backports, unpacked privately (bench/fetch-qemu.sh)")
        if q is None:
            why = (r.stderr.strip().splitlines() or ["fetch-qemu.sh failed"])[-1]
            if request == "10":
                raise SystemExit(f"bench: --qemu 10: {why}")
            q = system(f"QEMU 10 not available ({why}); Debian's own")
    log(f"bench: baseline {q.label} at {q.path} ({q.why})" if q else
        "bench: no QEMU for the baseline")
    return q
