#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A hostile tagmig sender for the integration tests (docs/wire-format.md, version 1).

usage: corrupt-client.py PORT MODE BLOCK_NAME BLOCK_LENGTH

Opens one channel to 127.0.0.1:PORT and sends:
  bad-magic        a HELLO frame whose magic is wrong
  page-range       a valid HELLO, then a DATA packet whose page index is past the block
  length-mismatch  a valid HELLO, then a DATA packet whose data_len disagrees with body_len
  bad-seq          a valid HELLO, then a DATA packet with a skipped sequence number
  bad-block        a valid HELLO, then a DATA packet for a block index that does not exist
  end-none         a valid HELLO, then END (0 pages, 0 packets): nothing of the layout arrived
  end-partial      a valid HELLO, 16 pages in one DATA packet, then a matching END (16, 1)
  end-packets      a valid HELLO, 16 pages in one DATA packet, then END (16 pages, 5 packets)
  error-escape     a valid HELLO, then an ERROR whose message holds ESC, CR, LF, BEL and U+202E
  name-escape      a HELLO whose block name holds ESC, CR, LF, BEL and U+202E (BLOCK_NAME unused)
  hello-only       a valid HELLO, nothing more (BLOCK_LENGTH may be huge: 16 TiB)
  state-section    protocol 2: channel 0 of 1 and the control connection, then on channel 0
                   RAM_END (no page sent) and one device-state section 'cpu0' of 10 bytes
Then it reads until the receiver closes the connection and prints what it got back.
Exit 0 when the receiver answered (ERROR or close), 1 on a local problem.
"""
import os
import socket
import struct
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import tmwire  # noqa: E402
from tmwire import (DATA, END, ERROR, HELLO, HELLO_ACK, NASTY, RAM_END, STATE,  # noqa: E402
                    error_body, parse_error, recv_frame)

PAGE = 4096


def frame(msg_type, body, seq, magic=tmwire.MAGIC):
    return tmwire.frame(1, msg_type, body, seq, magic)


def hello(name, length):
    name = name.encode("utf-8")
    body = os.urandom(16)                                    # session_id
    body += struct.pack("<HHII", 0, 1, 0, 512 * 1024)        # channel 0 of 1, no tags
    body += struct.pack("<I", 0)                             # reserved
    body += struct.pack("<Q", 2 * 1024 * 1024)               # chunk_size
    body += struct.pack("<II", 1, 0)                         # block_count, reserved
    body += struct.pack("<QQIHH", length, 0, PAGE, len(name), 0) + name
    return body


def frame2(msg_type, body, seq):
    return tmwire.frame(2, msg_type, body, seq)


def hello2(sid, role, name, length):
    """Protocol 2 HELLO: channel 0 of 1, role at 28, epoch 0 at 44."""
    name = name.encode("utf-8")
    body = sid + struct.pack("<HHII", 0, 1, 0, 512 * 1024) + struct.pack("<I", role)
    body += struct.pack("<Q", 2 * 1024 * 1024) + struct.pack("<II", 1, 0)
    body += struct.pack("<QQIHH", length, 0, PAGE, len(name), 0) + name
    return body


def state_section(sock, name, length):
    """Protocol 2: channel 0 and control connect; channel 0 sends RAM_END and one section."""
    sid = os.urandom(16)
    ctl = socket.create_connection(("127.0.0.1", sock.getpeername()[1]), timeout=30)
    sock.sendall(frame2(HELLO, hello2(sid, 0, name, length), 0))
    ctl.sendall(frame2(HELLO, hello2(sid, 1, name, length), 0))
    for s in (sock, ctl):
        hdr, _ = recv_frame(s)
        if hdr is None or hdr[5] != HELLO_ACK:
            print("corrupt-client: no HELLO_ACK (%r)" % (hdr,), file=sys.stderr)
            return None
    ram_end = struct.pack("<IIQQ", 1, 0, 0, 0)               # FINAL, 0 pages in 0 packets
    sec = b"cpu0"
    hdr = struct.pack("<IHHQQQII", 0, 3, len(sec), 0, 10, 0, 10, 0)  # FIRST|LAST, 10 bytes
    sock.sendall(frame2(RAM_END, ram_end, 1) + frame2(STATE, hdr + sec + b"\x42" * 10, 2))
    return ctl


def data(block, page, data_len=PAGE):
    body = struct.pack("<IIII", block, 1, data_len, 0)
    body += struct.pack("<IBBH", page, 0, 0, 0)              # NORMAL, TAGS_ZERO
    body += b"\xa5" * PAGE
    return body


def data_run(npages):
    """npages NORMAL pages from page 0 in one DATA packet."""
    body = struct.pack("<IIII", 0, npages, npages * PAGE, 0)
    for p in range(npages):
        body += struct.pack("<IBBH", p, 0, 0, 0)
    return body + b"\x5a" * (npages * PAGE)


def main():
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 1
    port, mode, name, length = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    npages = length // PAGE
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)

    if mode == "name-escape":
        name = "ram" + NASTY
    ctl = None
    if mode == "state-section":
        ctl = state_section(sock, name, length)
        if ctl is None:
            return 1
    elif mode == "bad-magic":
        sock.sendall(frame(HELLO, hello(name, length), 0, magic=b"XMIG"))
    elif mode in ("name-escape", "hello-only"):
        sock.sendall(frame(HELLO, hello(name, length), 0))
    else:
        sock.sendall(frame(HELLO, hello(name, length), 0))
        hdr, _ = recv_frame(sock)
        if hdr is None or hdr[5] != HELLO_ACK:
            print("corrupt-client: no HELLO_ACK (%r)" % (hdr,), file=sys.stderr)
            return 1
        if mode == "page-range":
            pkt = frame(DATA, data(0, npages + 5), 1)
        elif mode == "length-mismatch":
            body = data(0, 0, data_len=2 * PAGE)              # claims two pages, carries one
            pkt = frame(DATA, body, 1)
        elif mode == "bad-seq":
            pkt = frame(DATA, data(0, 0), 7)
        elif mode == "bad-block":
            pkt = frame(DATA, data(3, 0), 1)
        elif mode == "end-none":
            pkt = frame(END, struct.pack("<QQ", 0, 0), 1)
        elif mode == "end-partial":
            pkt = frame(DATA, data_run(16), 1) + frame(END, struct.pack("<QQ", 16, 1), 2)
        elif mode == "end-packets":
            pkt = frame(DATA, data_run(16), 1) + frame(END, struct.pack("<QQ", 16, 5), 2)
        elif mode == "error-escape":
            pkt = frame(ERROR, error_body(5, NASTY), 1)
        else:
            print("corrupt-client: unknown mode " + mode, file=sys.stderr)
            return 1
        sock.sendall(pkt)

    # Read what the receiver says until it closes.
    got = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    err = parse_error(got)
    if err:
        print("receiver ERROR %d: %s" % err)
    else:
        print("receiver closed (%d bytes back)" % len(got))
    return 0


if __name__ == "__main__":
    sys.exit(main())
