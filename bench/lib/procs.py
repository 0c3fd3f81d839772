"""Child processes: started with their output in files, waited for with their own CPU time, and
all ended if the run is interrupted."""

import os
import subprocess
import time


class Children:
    """Every process a run starts, so that an interrupted run can end them (kill_all)."""

    def __init__(self):
        self.procs = []

    def spawn(self, argv, out_path, err_path, wrap=None):
        argv = (wrap or []) + argv
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            p = subprocess.Popen(argv, stdout=out, stderr=err)
        self.procs.append(p)
        return p

    def popen(self, argv, **kw):
        p = subprocess.Popen(argv, **kw)
        self.procs.append(p)
        return p

    def kill_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()


def cpu_of(ru):
    return ru.ru_utime + ru.ru_stime


def wait_all(procs, timeout):
    """Waits for every Popen with os.wait4 so each one's own rusage is known."""
    deadline = time.monotonic() + timeout
    left = {p.pid: p for p in procs}
    usage = {}
    while left:
        for pid in list(left):
            wpid, status, ru = os.wait4(pid, os.WNOHANG)
            if wpid:
                p = left.pop(pid)
                p.returncode = os.waitstatus_to_exitcode(status)
                usage[pid] = ru
        if left and time.monotonic() > deadline:
            for p in left.values():
                p.kill()
            for pid, p in list(left.items()):
                _, status, ru = os.wait4(pid, 0)
                p.returncode = os.waitstatus_to_exitcode(status)
                usage[pid] = ru
            return usage, True
        time.sleep(0.002)
    return usage, False


def last_line(path):
    try:
        with open(path, errors="replace") as f:
            lines = [l.strip() for l in f.read().splitlines() if l.strip()]
        return lines[-1] if lines else ""
    except OSError:
        return ""


def proc_cpu(pid):
    """User + system CPU seconds of a running process so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
