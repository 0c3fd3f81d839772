"""A small QMP client: one command at a time over QEMU's unix socket, events skipped."""

import json
import socket
import time


class QMP:
    def __init__(self, path, timeout=30, alive=None):
        """Connects (retrying until timeout s) and negotiates capabilities. alive, if given, is
        asked between attempts: a process that has already exited will never answer."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if alive is not None and not alive():
                    raise RuntimeError(f"QEMU exited before its QMP socket {path} came up")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"QMP socket {path} did not come up")
                time.sleep(0.02)
        self.sock.settimeout(timeout)
        self.buf = b""
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._read()
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise RuntimeError(f"QMP {name}: {r['error'].get('desc')}")
            # events are skipped

    def close(self):
        self.sock.close()
