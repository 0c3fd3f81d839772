# SPDX-License-Identifier: MIT
"""The tagmig wire framing (docs/wire-format.md) as the hostile test peers of tests/cli write
and read it: corrupt-client.py (a sender) and hostile-receiver.py (a receiver). Only what both
need: the frame header, reading whole frames, and the ERROR body.

A frame is a 16-byte header, little-endian: magic "TMIG", version (u8), type (u8), reserved (u16,
zero), body length (u32), sequence number (u32); then the body.
"""
import struct

MAGIC = b"TMIG"
HDR_LEN = 16
HELLO, HELLO_ACK, DATA, END, ERROR = 1, 2, 3, 6, 8
STATE, RAM_END = 9, 11
# Terminal controls, a line break and a bidi override: text a peer must never print raw.
NASTY = "\x1b[2J\x1b]0;owned\x07\r\nforged line\u202eevil"


def frame(version, msg_type, body, seq, magic=MAGIC):
    """One frame of protocol version `version` (a bad `magic` for the tests that want one)."""
    return magic + struct.pack("<BBHII", version, msg_type, 0, len(body), seq) + body


def body_len(hdr):
    """The body length a frame header announces."""
    return struct.unpack("<I", hdr[8:12])[0]


def recv_exact(sock, n):
    """n bytes from sock, or None if it closes first."""
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def recv_frame(sock):
    """(header, body) of the next frame, or (header or None, None) if sock closes first."""
    hdr = recv_exact(sock, HDR_LEN)
    if hdr is None:
        return None, None
    return hdr, recv_exact(sock, body_len(hdr))


def error_body(code, text):
    """An ERROR body: code (u32), message length (u16), reserved (u16), the UTF-8 message."""
    msg = text.encode("utf-8")
    return struct.pack("<IHH", code, len(msg), 0) + msg


def parse_error(buf):
    """(code, message) if buf starts with a whole ERROR frame, else None."""
    if len(buf) < HDR_LEN + 8 or buf[:4] != MAGIC or buf[5] != ERROR:
        return None
    code, mlen = struct.unpack("<IH", buf[HDR_LEN:HDR_LEN + 6])
    return code, buf[HDR_LEN + 8:HDR_LEN + 8 + mlen].decode(errors="replace")
