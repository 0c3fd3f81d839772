/* SPDX-License-Identifier: MIT */
/*
 * Copying into memory nobody will read soon, without reading it first (issue 16). A plain copy
 * into a line that is not in the cache first reads that line from memory (read for ownership),
 * only to overwrite all of it: for isolated pages of guest RAM, the destination of a scattered
 * round, that is a second memory access per line, and a miss chain per page that the hardware
 * prefetchers do not cover. Non-temporal stores write whole lines without that read. Not part
 * of the API; thread-safe (no state).
 */
#pragma once

#include <stddef.h>

/*
 * Copies len bytes from src to dst (no overlap), by non-temporal stores where the CPU has them
 * (x86-64: SSE2, with dst and src 16-byte aligned and len a multiple of 64), else by memcpy.
 * The stores may still be in flight on return: call tm_stream_copy_fence() before anything
 * that publishes the bytes to another thread (a release store, a lock, a system call that
 * reports them done is fine on its own only after the fence).
 */
void tm_stream_copy(void *dst, const void *src, size_t len);

/* Orders every earlier tm_stream_copy() of this thread before the thread's later stores. */
void tm_stream_copy_fence(void);
