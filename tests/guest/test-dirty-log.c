/* SPDX-License-Identifier: MIT */
/*
 * The test guest's dirty log (dirty-log.h) against the kernel: exactly the pages written are
 * reported, once per interval; reads are not writes; under writer threads racing with the
 * collections no write is lost. Each method the kernel has runs; a missing one skips with the
 * kernel's reason.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <tagmig/error.h>

#include "dirty-log.h"

#define PAGES 16384 /* 64 MiB of 4 KiB pages */

typedef struct guest {
	uint8_t *mem;
	size_t page, len;
	uint64_t *truth; /* pages the writers wrote (atomic OR) */
	uint32_t *gen;   /* per page: collections finished before its last write began (atomic max) */
	atomic_uint done; /* collections finished */
	atomic_bool stop;
	unsigned seed;
} guest;

static guest *guest_new(void)
{
	guest *g = g_new0(guest, 1);
	g->page = (size_t)sysconf(_SC_PAGESIZE);
	g->len = PAGES * g->page;
	g->mem = mmap(NULL, g->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	g_assert_true(g->mem != MAP_FAILED);
	/* base pages: a write must mark one page, not a huge one */
	g_assert_cmpint(madvise(g->mem, g->len, MADV_NOHUGEPAGE), ==, 0);
	g->truth = g_new0(uint64_t, PAGES / 64);
	g->gen = g_new0(uint32_t, PAGES);
	return g;
}

static void guest_free(guest *g)
{
	munmap(g->mem, g->len);
	g_free(g->truth);
	g_free(g->gen);
	g_free(g);
}

static dirty_log *start(guest *g, dirty_log_method m)
{
	dirty_log *log = NULL;
	g_autoptr(GError) err = NULL;
	int r = dirty_log_new(g->mem, g->len, m, &log, &err);
	if (r == -EOPNOTSUPP) {
		g_test_skip(err->message);
		return NULL;
	}
	g_assert_no_error(err);
	g_assert_cmpint(r, ==, 0);
	g_test_message("method: %s", dirty_log_name(log));
	return log;
}

static int64_t collect(dirty_log *log, uint64_t *bitmap)
{
	g_autoptr(GError) err = NULL;
	memset(bitmap, 0, PAGES / 8);
	int64_t n = dirty_log_collect(log, bitmap, &err);
	g_assert_no_error(err);
	g_assert_cmpint(n, >=, 0);
	return n;
}

static void test_exact(gconstpointer data)
{
	dirty_log_method m = GPOINTER_TO_INT(data);
	guest *g = guest_new();
	/* some pages exist before tracking starts: their old writes must not count */
	memset(g->mem, 1, 64 * g->page);
	dirty_log *log = start(g, m);
	if (!log) {
		guest_free(g);
		return;
	}
	g_autofree uint64_t *bm = g_new0(uint64_t, PAGES / 64);

	g_assert_cmpint(collect(log, bm), ==, 0);

	static const unsigned written[] = { 0, 1, 63, 64, 100, 5000, PAGES - 1 };
	volatile uint8_t sink = 0;
	for (unsigned i = 0; i < 2000; i++) /* reads, of touched and untouched pages */
		sink ^= g->mem[(size_t)(i * 37 % PAGES) * g->page];
	(void)sink;
	for (unsigned i = 0; i < G_N_ELEMENTS(written); i++)
		g->mem[written[i] * g->page + 17] = (uint8_t)i;
	g_assert_cmpint(collect(log, bm), ==, G_N_ELEMENTS(written));
	for (unsigned i = 0; i < G_N_ELEMENTS(written); i++)
		g_assert_true(bm[written[i] / 64] & (1ull << (written[i] % 64)));

	/* the interval restarted: nothing new, then a page written again is reported again */
	g_assert_cmpint(collect(log, bm), ==, 0);
	g->mem[5000 * g->page] = 9;
	g_assert_cmpint(collect(log, bm), ==, 1);
	g_assert_true(bm[5000 / 64] & (1ull << (5000 % 64)));

	dirty_log_free(log);
	guest_free(g);
}

static gpointer writer(gpointer data)
{
	guest *g = data;
	unsigned s = __atomic_add_fetch(&g->seed, 7919, __ATOMIC_RELAXED);

	while (!atomic_load(&g->stop)) {
		s = s * 1103515245u + 12345u;
		unsigned pg = (s >> 8) % PAGES;
		/*
		 * The truth first: a page is never written without being in it. A write that begins
		 * after collection c finished must be reported by collection c + 1 or a later one.
		 */
		__atomic_fetch_or(&g->truth[pg / 64], 1ull << (pg % 64), __ATOMIC_SEQ_CST);
		uint32_t c = atomic_load(&g->done), old = __atomic_load_n(&g->gen[pg], __ATOMIC_SEQ_CST);
		while (old < c && !__atomic_compare_exchange_n(&g->gen[pg], &old, c, false,
							       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
			;
		__atomic_store_n(&g->mem[pg * g->page + (s & 0xff)], (uint8_t)s, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void test_racing_writers(gconstpointer data)
{
	dirty_log_method m = GPOINTER_TO_INT(data);
	guest *g = guest_new();
	dirty_log *log = start(g, m);
	if (!log) {
		guest_free(g);
		return;
	}
	g_autofree uint64_t *bm = g_new0(uint64_t, PAGES / 64);
	g_autofree uint64_t *seen = g_new0(uint64_t, PAGES / 64);
	GThread *w[2];
	for (unsigned i = 0; i < G_N_ELEMENTS(w); i++)
		w[i] = g_thread_new("writer", writer, g);

	/* last[pg]: the number of the last collection that reported the page (1-based), 0 never */
	g_autofree uint32_t *last = g_new0(uint32_t, PAGES);
	int64_t rounds = 0, reported = 0;
	for (gint64 end = g_get_monotonic_time() + 300 * 1000;; rounds++) {
		bool final = g_get_monotonic_time() >= end;
		if (final) {
			atomic_store(&g->stop, true);
			for (unsigned i = 0; i < G_N_ELEMENTS(w); i++)
				g_thread_join(w[i]);
		}
		reported += collect(log, bm);
		uint32_t number = atomic_fetch_add(&g->done, 1) + 1;
		for (unsigned pg = 0; pg < PAGES; pg++)
			if (bm[pg / 64] & (1ull << (pg % 64)))
				last[pg] = number;
		for (unsigned i = 0; i < PAGES / 64; i++)
			seen[i] |= bm[i];
		if (final)
			break;
		g_usleep(1000);
	}
	/* no write is lost: every page's last write was reported by a collection after it began */
	for (unsigned pg = 0; pg < PAGES; pg++)
		if (g->truth[pg / 64] & (1ull << (pg % 64)))
			g_assert_cmpuint(last[pg], >, g->gen[pg]);

	/* every page written was reported at least once, and only those */
	uint64_t lost = 0, extra = 0, total = 0;
	for (unsigned i = 0; i < PAGES / 64; i++) {
		lost += (uint64_t)__builtin_popcountll(g->truth[i] & ~seen[i]);
		extra += (uint64_t)__builtin_popcountll(seen[i] & ~g->truth[i]);
		total += (uint64_t)__builtin_popcountll(g->truth[i]);
	}
	g_test_message("%s: %" G_GINT64_FORMAT " collections, %" G_GUINT64_FORMAT " pages written, "
		       "%" G_GINT64_FORMAT " reports", dirty_log_name(log), rounds + 1, total, reported);
	g_assert_cmpuint(total, >, 1000);
	g_assert_cmpuint(lost, ==, 0);
	g_assert_cmpuint(extra, ==, 0);
	dirty_log_free(log);
	guest_free(g);
}

static void test_bad_range(void)
{
	dirty_log *log = NULL;
	g_autoptr(GError) err = NULL;
	static uint8_t unaligned[8192];
	g_assert_cmpint(dirty_log_new(unaligned + 1, 4096, DIRTY_LOG_AUTO, &log, &err), ==, -EINVAL);
	g_assert_error(err, TM_ERROR, EINVAL);
	g_assert_null(log);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_data_func("/dirty-log/uffd-wp-async/exact", GINT_TO_POINTER(DIRTY_LOG_UFFD_WP_ASYNC), test_exact);
	g_test_add_data_func("/dirty-log/uffd-wp-async/racing-writers",
			     GINT_TO_POINTER(DIRTY_LOG_UFFD_WP_ASYNC), test_racing_writers);
	g_test_add_data_func("/dirty-log/soft-dirty/exact", GINT_TO_POINTER(DIRTY_LOG_SOFT_DIRTY), test_exact);
	g_test_add_func("/dirty-log/bad-range", test_bad_range);
	return g_test_run();
}
