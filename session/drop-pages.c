/* SPDX-License-Identifier: MIT */
/* Batched MADV_DONTNEED for the switch to postcopy: drop-pages.h says why and what. */
#include <errno.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "session/drop-pages.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif

/* Counted in every build (a relaxed add per system call): the tests read them. */
static uint64_t test_syscalls, test_ranges;

uint64_t tm_drop_test_syscalls(void)
{
	return __atomic_load_n(&test_syscalls, __ATOMIC_RELAXED);
}

uint64_t tm_drop_test_ranges(void)
{
	return __atomic_load_n(&test_ranges, __ATOMIC_RELAXED);
}

#define COUNT_SYSCALL() __atomic_add_fetch(&test_syscalls, 1, __ATOMIC_RELAXED)
#define COUNT_RANGES(n) __atomic_add_fetch(&test_ranges, (n), __ATOMIC_RELAXED)

void tm_drop_init(tm_drop *d)
{
	d->pidfd = -1;
	d->single = false;
	d->n = 0;
}

int tm_drop_add(tm_drop *d, void *addr, size_t len, void **ret_bad)
{
	if (d->n) {
		struct iovec *last = &d->iov[d->n - 1];
		if ((char *)last->iov_base + last->iov_len == (char *)addr) {
			last->iov_len += len;
			return 0;
		}
	}
	if (d->n == TM_DROP_BATCH) {
		int r = tm_drop_flush(d, ret_bad);
		if (r < 0)
			return r;
	}
	d->iov[d->n++] = (struct iovec){ .iov_base = addr, .iov_len = len };
	return 0;
}

/* One madvise(2) per range from range i on: the old way, and where a batch stopped. */
static int one_by_one(tm_drop *d, unsigned i, void **ret_bad)
{
	for (; i < d->n; i++) {
		COUNT_SYSCALL();
		if (madvise(d->iov[i].iov_base, d->iov[i].iov_len, MADV_DONTNEED) < 0) {
			int err = errno;
			*ret_bad = d->iov[i].iov_base;
			d->n = 0;
			return -err;
		}
	}
	d->n = 0;
	return 0;
}

int tm_drop_flush(tm_drop *d, void **ret_bad)
{
	if (d->n == 0)
		return 0;
	COUNT_RANGES(d->n);
	if (d->n == 1 || d->single)
		return one_by_one(d, 0, ret_bad);
	if (d->pidfd < 0) {
		COUNT_SYSCALL();
		d->pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
		if (d->pidfd < 0) {
			d->single = true; /* before Linux 5.3, or seccomp */
			return one_by_one(d, 0, ret_bad);
		}
	}
	size_t total = 0;
	for (unsigned i = 0; i < d->n; i++)
		total += d->iov[i].iov_len;
	COUNT_SYSCALL();
	long done = syscall(SYS_process_madvise, d->pidfd, d->iov, (size_t)d->n, MADV_DONTNEED, 0u);
	if (done < 0) {
		/* EINVAL: MADV_DONTNEED refused (before 6.13) or a bad range, which madvise(2) names;
		 * ENOSYS, EPERM: no such call here. Redoing a dropped range is harmless. */
		d->single = true;
		return one_by_one(d, 0, ret_bad);
	}
	if ((size_t)done == total) {
		d->n = 0;
		return 0;
	}
	/* Stopped inside range i: madvise(2) from there on says why (or finishes the job). */
	unsigned i = 0;
	for (size_t at = 0; i < d->n && at + d->iov[i].iov_len <= (size_t)done; i++)
		at += d->iov[i].iov_len;
	return one_by_one(d, i, ret_bad);
}

void tm_drop_done(tm_drop *d)
{
	if (d->pidfd >= 0)
		close(d->pidfd);
	d->pidfd = -1;
	d->n = 0;
}
