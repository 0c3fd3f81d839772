/* SPDX-License-Identifier: MIT */
/*
 * Dropping guest pages at the switch to postcopy (MADV_DONTNEED) in batches: the DISCARD list
 * and the missing pages before UFFDIO_REGISTER (postcopy-recv.c). One madvise(2) per range cost
 * 1-8 us each with the zap's TLB flush; a switch with 50,000 missing runs spent most of the
 * downtime there. A batch coalesces touching ranges and hands up to TM_DROP_BATCH of them to one
 * process_madvise(2) on the calling process (MADV_DONTNEED allowed since Linux 6.13, its TLB
 * flushes batched since 6.16); where the kernel refuses that, each range gets its own madvise(2)
 * as before. Either way every range is dropped (absent, reads fault or see zero) when
 * tm_drop_flush() returns 0.
 *
 * Not thread-safe: one batch per thread, on the stack (about 8 KiB).
 */
#ifndef TAGMIG_SESSION_DROP_PAGES_H
#define TAGMIG_SESSION_DROP_PAGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define TM_DROP_BATCH 512u /* ranges per process_madvise(2); IOV_MAX is 1024 */

typedef struct tm_drop {
	int pidfd;   /* this process, for process_madvise(2); -1 before the first flush */
	bool single; /* process_madvise(2) refused: one madvise(2) per range */
	unsigned n;
	struct iovec iov[TM_DROP_BATCH];
} tm_drop;

void tm_drop_init(tm_drop *d);

/*
 * Adds [addr, addr + len) (page-aligned) to the batch, joined to the last range when they touch;
 * flushes first when the batch is full. Returns tm_drop_flush()'s result (0 when nothing was
 * flushed).
 */
int tm_drop_add(tm_drop *d, void *addr, size_t len, void **ret_bad);

/*
 * Drops every range of the batch and empties it. Returns 0, or -errno of the madvise(2) that
 * failed with the start of its range in *ret_bad (the ranges before it are dropped, the ones
 * after it may not be).
 */
int tm_drop_flush(tm_drop *d, void **ret_bad);

/* Closes what tm_drop_init() and the flushes opened; the batch must be flushed (or abandoned). */
void tm_drop_done(tm_drop *d);

/*
 * For tests (internal, every build): the system calls made so far by every batch (madvise(2), process_madvise(2),
 * pidfd_open(2): the cost of a switch in calls, not in time) and the ranges flushed (after
 * coalescing).
 */
uint64_t tm_drop_test_syscalls(void);
uint64_t tm_drop_test_ranges(void);

#endif
