"""What a mode runs: the tagmig rows (the matrix) and the QEMU rows they are compared with."""


# QEMU's multifd-compression values the compression table compares with (issue 15).
QEMU_COMPRESSION = ("none", "zlib", "zstd")


def build_matrix(mode, backends, tls_ok, compress_modes=(None,)):
    """List of tagmig configurations (dicts); order groups rows by data image then tags.
    compress_modes: tagmig's --compress values for the compression table, or (None,) when
    tagmig has no --compress (then those rows run without it)."""
    rows = []
    tls_opts = [False, True] if tls_ok else [False]

    def add(data, tags, dest, ch, io, tls, compress=None):
        rows.append(dict(data=data, tags=tags, dest=dest, channels=ch, io=io, tls=tls,
                         compress=compress))

    if mode == "compress":
        # issue 15's table: each --compress mode on random, mixed and the real guest's RAM,
        # 4 channels, the first backend (best run with --link: compression is for slow links)
        for data in ("random", "mixed", "guest"):
            for c in compress_modes:
                add(data, "none", "warm", 4, backends[0], False, c)
    elif mode == "io":
        # issue 3's table: one random image, io_uring against sockets, 1-8 channels
        for io in backends:
            for ch in (1, 2, 4, 8):
                add("random", "none", "warm", ch, io, False)
    elif mode == "tls":
        # issue 4's table: TLS against plaintext, 1-4 channels, both backends
        for io in backends:
            for tls in tls_opts:
                for ch in (1, 2, 4):
                    add("random", "none", "warm", ch, io, tls)
    elif mode == "full":
        # Every value of every dimension, crossed where they interact: channels x backend x TLS x
        # destination on random data; tags and the other data images at 1-8 channels plain and at
        # 4 channels with TLS. About 90 rows (--cross runs the whole product, about 290).
        for io in backends:
            for tls in tls_opts:
                for dest in ("warm", "cold"):
                    for ch in (1, 2, 4, 8):
                        add("random", "none", dest, ch, io, tls)
            for tags in ("uniform", "random"):
                for ch in (1, 2, 4, 8):
                    add("random", tags, "warm", ch, io, False)
                if tls_ok:
                    add("random", tags, "warm", 4, io, True)
            for data in ("zero", "mixed"):
                for dest in ("warm", "cold"):
                    for ch in (1, 2, 4, 8):
                        add(data, "none", dest, ch, io, False)
                add(data, "random", "warm", 4, io, False)
                if tls_ok:
                    add(data, "none", "warm", 4, io, True)
            for ch in (1, 4):
                add("guest", "none", "warm", ch, io, False)
    elif mode == "live":
        pass  # the live rows only (live.py)
    elif mode == "cross":
        for data in ("random", "zero", "mixed"):
            for tags in ("none", "uniform", "random"):
                for io in backends:
                    for tls in tls_opts:
                        for dest in ("warm", "cold"):
                            for ch in (1, 2, 4, 8):
                                add(data, tags, dest, ch, io, tls)
    else:
        for io in backends:
            for ch in (1, 2, 4, 8):
                add("random", "none", "warm", ch, io, False)
            add("random", "none", "cold", 4, io, False)
            for tags in ("uniform", "random"):
                add("random", tags, "warm", 4, io, False)
            if tls_ok:
                for ch in (1, 2, 4):
                    add("random", "none", "warm", ch, io, True)
            for dest in ("warm", "cold"):
                add("zero", "none", dest, 2, io, False)
            add("mixed", "none", "warm", 4, io, False)
            add("guest", "none", "warm", 4, io, False)
    order = {"random": 0, "zero": 1, "mixed": 2, "guest": 3}
    torder = {"none": 0, "uniform": 1, "random": 2}
    rows.sort(key=lambda r: (order[r["data"]], torder[r["tags"]]))
    return rows


def qemu_configs(matrix, qemu_tls, mode=None):
    """The QEMU rows: (data, dest, channels, tls, multifd-compression) for each tagmig row's
    data, destination, channels and TLS; every QEMU_COMPRESSION in the compression table."""
    seen, out = set(), []
    comps = QEMU_COMPRESSION if mode == "compress" else ("none",)
    for r in matrix:
        for c in comps:
            k = (r["data"], r["dest"], r["channels"], r["tls"], c)
            if k not in seen:
                seen.add(k)
                out.append(k)
    if qemu_tls and mode != "compress" and not any(r["tls"] for r in matrix):
        # tagmig has no TLS yet: still measure QEMU's TLS baseline for the goals table.
        for ch in (1, 2, 4):
            k = ("random", "warm", ch, True, "none")
            if k not in seen:
                seen.add(k)
                out.append(k)
    return out
