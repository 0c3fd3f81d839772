#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A hostile tagmig receiver for the integration tests (docs/wire-format.md).

usage: hostile-receiver.py PORT_FILE MODE

Listens on 127.0.0.1 (a free port, written to PORT_FILE) and answers the HELLO of every
connection, in the protocol version of that HELLO's frame:
  error-escape   an ERROR whose message holds ESC, CR, LF, BEL and U+202E, then a close
Ends 3 s after the last connection (at most 30 s in all). Exit 0, or 1 on a local problem.
"""
import os
import socket
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from tmwire import ERROR, MAGIC, NASTY, error_body, frame, recv_frame  # noqa: E402


def main():
    if len(sys.argv) != 3 or sys.argv[2] != "error-escape":
        print(__doc__, file=sys.stderr)
        return 1
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write("%d\n" % lsock.getsockname()[1])
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    end = time.monotonic() + 30
    lsock.settimeout(3)
    while time.monotonic() < end:
        try:
            sock, _ = lsock.accept()
        except socket.timeout:
            break
        sock.settimeout(5)
        try:
            hdr, _ = recv_frame(sock)
            if hdr and hdr[:4] == MAGIC:
                sock.sendall(frame(hdr[4], ERROR, error_body(5, NASTY), 0))
        except OSError:
            pass
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
