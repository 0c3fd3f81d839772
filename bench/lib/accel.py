"""Which accelerator the QEMU baseline runs with, decided once per run by evidence.

That /dev/kvm opens proves little: a paravirtual KVM (kvm_pvm, in a VM without VT-x/SVM) opens
and runs a stopped guest, yet QEMU may abort at start with some CPU models (issue 10). What bench
needs from KVM is exactly what the probe checks: QEMU starts a stopped guest (-S) under
`-accel kvm`, as the QEMU rows do, and answers QMP with `query-kvm` saying enabled and present,
within a deadline. Otherwise the rows run under TCG, and the run says why.

TAGMIG_VM_ACCEL (project-wide, the VM test harnesses read it too) is the first choice:
  auto (or unset)   KVM if /dev/kvm opens and the probe passes, else TCG
  kvm, kvm:CPU      KVM (with -cpu CPU); still probed, and TCG if the probe fails
  tcg, tcg:CPU      TCG (with -cpu CPU), no probe
"""

import os
import shutil
import signal
import subprocess
import tempfile

from .procs import last_line
from .qmp import QMP

VARIABLE = "TAGMIG_VM_ACCEL"
PROBE_DEADLINE = 20  # seconds for QEMU to start and answer QMP


class Accel:
    """An accelerator choice: name ("kvm" or "tcg"), optional CPU model, and why it was made."""

    def __init__(self, name, cpu=None, why=""):
        self.name = name
        self.cpu = cpu
        self.why = why

    @property
    def label(self):
        """What tables, CSV and JSON say: "kvm", "tcg", or "kvm:CPU" / "tcg:CPU"."""
        return f"{self.name}:{self.cpu}" if self.cpu else self.name

    def argv(self):
        """QEMU options for this accelerator (TCG keeps its translation cache small)."""
        a = ["-accel", "kvm" if self.name == "kvm" else "tcg,tb-size=64"]
        if self.cpu:
            a += ["-cpu", self.cpu]
        return a


def parse(value):
    """TAGMIG_VM_ACCEL's value -> (mode, cpu) with mode auto, kvm or tcg; ValueError if bad."""
    value = (value or "").strip()
    if value in ("", "auto"):
        return "auto", None
    mode, _, cpu = value.partition(":")
    if mode not in ("kvm", "tcg") or (_ and not cpu):
        raise ValueError(f"{VARIABLE}='{value}' is not auto, kvm, tcg, kvm:CPU or tcg:CPU")
    return mode, cpu or None


def dev_kvm_error():
    """None if /dev/kvm opens read-write, else why not."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError as e:
        return f"/dev/kvm does not open ({e.strerror})"
    os.close(fd)
    return None


def probe_kvm(qemu, cpu, workdir, children, deadline=PROBE_DEADLINE):
    """Starts a stopped q35 guest under -accel kvm the way the QEMU rows do and asks QMP
    query-kvm. Returns None when KVM works for bench, else why not."""
    work = tempfile.mkdtemp(prefix="accel-", dir=workdir)
    qmp_path = os.path.join(work, "probe.qmp")
    argv = (qemu.argv() + ["-nodefaults", "-no-user-config", "-display", "none",
             "-serial", "none", "-monitor", "none", "-S", "-m", "64M", "-machine", "q35"] +
            Accel("kvm", cpu).argv() + ["-qmp", f"unix:{qmp_path},server=on,wait=off"])
    err_path = os.path.join(work, "probe.err")
    p = children.spawn(argv, os.path.join(work, "probe.out"), err_path)
    why = None
    q = None
    try:
        q = QMP(qmp_path, timeout=deadline, alive=lambda: p.poll() is None)
        kvm = q.cmd("query-kvm")
        if not (kvm.get("enabled") and kvm.get("present")):
            why = f"QEMU runs but query-kvm says {kvm}"
        else:
            q.cmd("quit")
    except Exception as e:  # any failure to start or to answer is evidence against KVM
        why = str(e)
        try:  # a QEMU that is going away closes QMP first: name its exit rather than the socket
            p.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        rc = p.poll()
        if rc is None:
            why = f"QEMU did not answer QMP within {deadline} s ({e})"
        elif rc < 0:
            why = f"QEMU died of {signal.Signals(-rc).name}"
        else:
            why = f"QEMU exited with status {rc}"
    finally:
        if q is not None:
            q.close()
        if why is None:  # asked to quit
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if p.poll() is None:
            p.kill()
            p.wait()
        line = last_line(err_path)
        shutil.rmtree(work, ignore_errors=True)
    if why and line:
        why += f": {line}"
    return why


def choose(env_value, qemu, workdir, children, log):
    """The accelerator for this run's QEMU rows (an Accel) with QEMU binary qemu (qemubin.Qemu),
    said on the log with its reason.
    Raises ValueError for a TAGMIG_VM_ACCEL that means nothing."""
    mode, cpu = parse(env_value)
    if mode == "tcg":
        a = Accel("tcg", cpu, f"{VARIABLE}={env_value}")
    else:
        asked = f"{VARIABLE}={env_value}" if mode == "kvm" else "auto"
        not_there = dev_kvm_error() if mode == "auto" else None
        if not_there:
            a = Accel("tcg", None, f"{asked}: {not_there}")
        else:
            failed = probe_kvm(qemu, cpu, workdir, children)
            if failed is None:
                a = Accel("kvm", cpu, f"{asked}: QEMU started a stopped guest under -accel kvm "
                          f"and query-kvm says enabled")
            else:
                a = Accel("tcg", None, f"{asked}: KVM probe failed, falling back to TCG: "
                          f"{failed}")
    log(f"bench: QEMU accel {a.label} ({a.why})")
    return a
