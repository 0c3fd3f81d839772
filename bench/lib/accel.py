"""Which accelerator the QEMU baseline runs with: KVM if /dev/kvm opens, else TCG."""

import os


class Accel:
    """An accelerator choice: name ("kvm" or "tcg")."""

    def __init__(self, name):
        self.name = name

    @property
    def label(self):
        """What the table and JSON say."""
        return self.name

    def argv(self):
        """QEMU options for this accelerator (TCG keeps its translation cache small)."""
        return ["-accel", "kvm" if self.name == "kvm" else "tcg,tb-size=64"]


def choose():
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
        return Accel("kvm")
    except OSError:
        return Accel("tcg")
