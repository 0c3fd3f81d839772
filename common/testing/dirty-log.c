/* SPDX-License-Identifier: MIT */
/* Dirty-page tracking for the test guest (dirty-log.h): userfaultfd async write-protect, or soft-dirty. */
#include "dirty-log.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <linux/fs.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#include <tagmig/error.h>

/* Linux 6.7 UAPI that Debian 12's headers (6.1) lack; the kernel decides at run time. */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef PAGEMAP_SCAN
struct page_region {
	uint64_t start, end, categories;
};
struct pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PAGE_IS_WRITTEN (1 << 1)
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
#endif

#define PM_SOFT_DIRTY (1ull << 55)
#define REGIONS 512 /* page_region entries per PAGEMAP_SCAN call */

struct dirty_log {
	dirty_log_method method;
	uint8_t *base;
	size_t len, page;
	int uffd;        /* uffd-wp-async: the userfaultfd; else -1 */
	int pagemap;     /* /proc/self/pagemap */
	struct page_region *regions; /* uffd-wp-async: REGIONS entries */
	uint64_t *entries;           /* soft-dirty: one pagemap entry per page of a batch */
};

static int fail(GError **error, int e, const char *what)
{
	g_set_error(error, TM_ERROR, e, "dirty log: %s: %s", what, g_strerror(e));
	return -e;
}

static int start_uffd(dirty_log *log, GError **error)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd < 0) /* no userfaultfd in this kernel, or not allowed to this process */
		return fail(error, errno == ENOSYS || errno == EPERM ? EOPNOTSUPP : errno,
			    errno == ENOSYS ? "userfaultfd() (not in this kernel)"
					    : errno == EPERM ? "userfaultfd() (not permitted here)" : "userfaultfd()");
	log->uffd = fd;
	struct uffdio_api api = { .api = UFFD_API,
				  .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED };
	if (ioctl(fd, UFFDIO_API, &api) < 0)
		return fail(error, errno == EINVAL ? EOPNOTSUPP : errno,
			    "UFFDIO_API with WP_ASYNC and WP_UNPOPULATED (Linux 6.7+)");
	struct uffdio_register reg = { .range = { (uintptr_t)log->base, log->len },
				       .mode = UFFDIO_REGISTER_MODE_WP };
	if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0)
		return fail(error, errno, "UFFDIO_REGISTER (write-protect)");
	struct uffdio_writeprotect wp = { .range = { (uintptr_t)log->base, log->len },
					  .mode = UFFDIO_WRITEPROTECT_MODE_WP };
	if (ioctl(fd, UFFDIO_WRITEPROTECT, &wp) < 0)
		return fail(error, errno, "UFFDIO_WRITEPROTECT");
	log->regions = g_new(struct page_region, REGIONS);
	return 0;
}

static int clear_soft_dirty(GError **error)
{
	int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(error, errno, "open /proc/self/clear_refs");
	ssize_t n = write(fd, "4", 1);
	int e = errno;
	close(fd);
	return n == 1 ? 0 : fail(error, n < 0 ? e : EIO, "clearing soft-dirty bits");
}

int dirty_log_new(void *base, size_t len, dirty_log_method method, dirty_log **ret, GError **error)
{
	long page = sysconf(_SC_PAGESIZE);
	if (!base || !len || (uintptr_t)base % (size_t)page || len % (size_t)page)
		return fail(error, EINVAL, "the range must be page-aligned and not empty");
	g_autoptr(dirty_log) log = g_new0(dirty_log, 1);
	log->base = base;
	log->len = len;
	log->page = (size_t)page;
	log->uffd = -1;
	log->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (log->pagemap < 0)
		return fail(error, errno, "open /proc/self/pagemap");

	g_autoptr(GError) uffd_err = NULL;
	if (method != DIRTY_LOG_SOFT_DIRTY) {
		int r = start_uffd(log, &uffd_err);
		if (r == 0) {
			log->method = DIRTY_LOG_UFFD_WP_ASYNC;
			*ret = g_steal_pointer(&log);
			return 0;
		}
		if (method == DIRTY_LOG_UFFD_WP_ASYNC) {
			g_propagate_error(error, g_steal_pointer(&uffd_err));
			return r;
		}
		close(log->uffd);
		log->uffd = -1;
	}
	/* soft-dirty: the kernel must have it (pagemap bit 55 set after a write) */
	int r = clear_soft_dirty(error);
	if (r < 0)
		return r;
	volatile uint8_t *p = log->base;
	p[0] = p[0];
	uint64_t e = 0;
	if (pread(log->pagemap, &e, 8, (off_t)((uintptr_t)log->base / log->page * 8)) != 8 ||
	    !(e & PM_SOFT_DIRTY)) {
		g_set_error(error, TM_ERROR, EOPNOTSUPP,
			    "dirty log: neither uffd-wp-async (%s) nor soft-dirty (no pagemap bit 55 "
			    "after a write: CONFIG_MEM_SOFT_DIRTY?) works here",
			    uffd_err ? uffd_err->message : "not tried");
		return -EOPNOTSUPP;
	}
	log->method = DIRTY_LOG_SOFT_DIRTY;
	log->entries = g_new(uint64_t, REGIONS);
	/* the probe's own write is not the guest's */
	if ((r = clear_soft_dirty(error)) < 0)
		return r;
	*ret = g_steal_pointer(&log);
	return 0;
}

const char *dirty_log_name(const dirty_log *log)
{
	return log->method == DIRTY_LOG_UFFD_WP_ASYNC ? "uffd-wp-async" : "soft-dirty";
}

static void set_pages(dirty_log *log, uint64_t *bitmap, uint64_t start, uint64_t end, int64_t *count)
{
	for (uint64_t pg = (start - (uintptr_t)log->base) / log->page,
		      last = (end - (uintptr_t)log->base) / log->page; pg < last; pg++) {
		bitmap[pg / 64] |= 1ull << (pg % 64);
		(*count)++;
	}
}

static int64_t collect_uffd(dirty_log *log, uint64_t *bitmap, GError **error)
{
	uint64_t start = (uintptr_t)log->base, end = start + log->len;
	int64_t count = 0;

	while (start < end) {
		struct pm_scan_arg arg = {
			.size = sizeof(arg),
			.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
			.start = start,
			.end = end,
			.vec = (uintptr_t)log->regions,
			.vec_len = REGIONS,
			.category_mask = PAGE_IS_WRITTEN,
			.return_mask = PAGE_IS_WRITTEN,
		};
		int n = ioctl(log->pagemap, PAGEMAP_SCAN, &arg);
		if (n < 0)
			return fail(error, errno, "PAGEMAP_SCAN");
		for (int i = 0; i < n; i++) {
			/* the kernel reports inside [start, end): checked all the same */
			if (log->regions[i].start < start || log->regions[i].end > end ||
			    log->regions[i].start >= log->regions[i].end)
				return fail(error, EPROTO, "PAGEMAP_SCAN returned a region outside the range");
			set_pages(log, bitmap, log->regions[i].start, log->regions[i].end, &count);
		}
		if (arg.walk_end <= start)
			return fail(error, EPROTO, "PAGEMAP_SCAN made no progress");
		start = arg.walk_end;
	}
	return count;
}

static int64_t collect_soft_dirty(dirty_log *log, uint64_t *bitmap, GError **error)
{
	uint64_t npages = log->len / log->page, first = (uintptr_t)log->base / log->page;
	int64_t count = 0;

	for (uint64_t pg = 0; pg < npages; pg += REGIONS) {
		size_t n = MIN(REGIONS, npages - pg);
		ssize_t got = pread(log->pagemap, log->entries, n * 8, (off_t)((first + pg) * 8));
		if (got != (ssize_t)(n * 8))
			return fail(error, got < 0 ? errno : EIO, "reading /proc/self/pagemap");
		for (size_t i = 0; i < n; i++)
			if (log->entries[i] & PM_SOFT_DIRTY) {
				bitmap[(pg + i) / 64] |= 1ull << ((pg + i) % 64);
				count++;
			}
	}
	int r = clear_soft_dirty(error);
	return r < 0 ? r : count;
}

int64_t dirty_log_collect(dirty_log *log, uint64_t *bitmap, GError **error)
{
	return log->method == DIRTY_LOG_UFFD_WP_ASYNC ? collect_uffd(log, bitmap, error)
						      : collect_soft_dirty(log, bitmap, error);
}

void dirty_log_free(dirty_log *log)
{
	if (!log)
		return;
	if (log->uffd >= 0) {
		struct uffdio_range range = { (uintptr_t)log->base, log->len };
		ioctl(log->uffd, UFFDIO_UNREGISTER, &range);
		close(log->uffd);
	}
	if (log->pagemap >= 0)
		close(log->pagemap);
	g_free(log->regions);
	g_free(log->entries);
	g_free(log);
}
