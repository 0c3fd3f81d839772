/* SPDX-License-Identifier: MIT */
/*
 * What bench/rounds.c and bench/delta.c share: a guest's RAM as one block ("ram0", 4 KiB
 * pages) in anonymous memory, and a session over loopback in one process, the receiver in a
 * thread, through the public API only. Failures end the program with the message (these are
 * benchmarks, not the library).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tagmig/tagmig.h"

#define BENCH_PAGE 4096u

/* The program's name in failure messages ("rounds", "delta"); main sets it. */
extern const char *bench_prog;

/* Prints "PROG: what: why" (error's message, else errno's) and exits 1. */
G_NORETURN void bench_die(const char *what, GError *error);

/* Deterministic data (splitmix64), one stream per program. */
uint64_t bench_rnd(void);

typedef struct bench_side {
	tm_ram_layout *layout;
	uint8_t *ram;
	size_t len;
} bench_side;

/* len bytes of zeroed RAM (MADV_HUGEPAGE when huge) as block "ram0" of a new layout. */
void bench_side_init(bench_side *s, size_t len, bool huge);
void bench_side_fini(bench_side *s);

typedef struct bench_recv {
	bench_side *dst;
	const char *io;
	unsigned timeout_ms;
	int listen_fd;
	int ret;
	GError *error;
	GThread *th;
	tm_receiver *r;
} bench_recv;

/*
 * A connected session: a receiver thread into dst (cfg's io_backend and timeout_ms) and a
 * sender of src with cfg, and live set when not NULL. Returns the sender.
 */
tm_sender *bench_session_open(bench_recv *t, bench_side *src, bench_side *dst,
			      const tm_sender_config *cfg, const tm_live_config *live);
/* After tm_sender_finish(): joins the receiver (its failure ends the program), frees both. */
void bench_session_close(bench_recv *t, tm_sender *s);
