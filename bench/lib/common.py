"""Units, sizes and the log line every module writes to stderr."""

import argparse
import re
import sys

GIB = 1 << 30
MIB = 1 << 20
PAGE = 4096
GRANULE = 16  # bytes of guest RAM per tag (one tag byte per granule in a tag file)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def parse_size(text):
    m = re.fullmatch(r"(\d+)([KMGkmg]?)(i?[Bb])?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size like 512M or 4G")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


def fmt_size(n):
    return f"{n / GIB:g}G" if n % GIB == 0 else f"{n // MIB}M"
