/* SPDX-License-Identifier: MIT */
/* Mapped buffers for copies of guest memory (guest-buf.h). */
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include <glib.h>

#include "common/guest-buf.h"

/* Asked at each call: buffers are taken and freed at setup and teardown only. */
static size_t page_bytes(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

/* What the buffer takes before the upper guard page: len, to a whole cache line (aligned). */
static size_t span_of(size_t len)
{
	return (len + 63) & ~(size_t)63;
}

/* The bytes mapped for len: its span rounded up to pages, and a guard page each side. */
static size_t mapped_len(size_t len)
{
	size_t pg = page_bytes();

	return (span_of(len) + pg - 1) / pg * pg + 2 * pg;
}

void *tm_guest_buf_new(size_t len)
{
	size_t pg = page_bytes(), map_len = mapped_len(len);

	g_assert(len > 0 && len < SIZE_MAX / 2);
	uint8_t *m = mmap(NULL, map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		g_error("tagmig: mapping %zu bytes for a guest-memory buffer: %s", map_len,
			g_strerror(errno));
	if (mprotect(m + pg, map_len - 2 * pg, PROT_READ | PROT_WRITE) < 0)
		g_error("tagmig: a guest-memory buffer of %zu bytes: mprotect: %s", len,
			g_strerror(errno));
	/* Its span ends at the upper guard page. */
	return m + map_len - pg - span_of(len);
}

void *tm_guest_buf_new_resident(size_t len)
{
	size_t pg = page_bytes(), span = span_of(len);
	uint8_t *b = tm_guest_buf_new(len);
	uint8_t *lo = b - ((uintptr_t)b % pg); /* the span's first page: mapped, not a guard */

	/* EINVAL before Linux 5.14: the writes below fault the pages in instead. */
	(void)madvise(lo, (size_t)(b + span - lo), MADV_POPULATE_WRITE);
	for (uint8_t *p = lo; p < b + span; p += pg)
		*(volatile uint8_t *)(p < b ? b : p) = 0;
	return b;
}

void tm_guest_buf_free(void *buf, size_t len)
{
	if (!buf)
		return;
	size_t pg = page_bytes(), map_len = mapped_len(len);
	uint8_t *end = (uint8_t *)buf + span_of(len); /* the upper guard page */
	/* A wrong len would unmap someone else's memory: at least it must end on a page. */
	g_assert((uintptr_t)end % pg == 0);
	int r = munmap(end + pg - map_len, map_len);
	g_assert(r == 0);
}
