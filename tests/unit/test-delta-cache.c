/* SPDX-License-Identifier: MIT */
/*
 * The sender's cache of last-sent page copies for delta encoding (session/delta-cache.c): what
 * was put comes back byte for byte, the least recently used copy goes first, a get or a put
 * makes a copy recent, the budget in bytes always holds (mixed page sizes, a page larger than
 * the budget), and a random run agrees with a plain reference model.
 */
#include <string.h>

#include <glib.h>

#include "session/delta-cache.h"

static void page_of(uint8_t *p, uint32_t ps, uint32_t seed)
{
	for (uint32_t i = 0; i < ps; i++)
		p[i] = (uint8_t)(seed * 31 + i * 7 + (i >> 8));
}

static void test_put_get_lru(void)
{
	g_autoptr(tm_delta_cache) c = tm_delta_cache_new(3 * 4096);
	uint8_t p[4096], q[4096];

	for (uint32_t i = 0; i < 3; i++) {
		page_of(p, 4096, i);
		tm_delta_cache_put(c, 0, i, p, 4096);
	}
	g_assert_cmpuint(tm_delta_cache_count(c), ==, 3);
	g_assert_cmpuint(tm_delta_cache_bytes(c), ==, 3 * 4096);
	page_of(q, 4096, 1);
	g_assert_true(memcmp(tm_delta_cache_get(c, 0, 1, 4096), q, 4096) == 0);
	g_assert_null(tm_delta_cache_get(c, 0, 1, 16384)); /* another page size: no base */
	g_assert_null(tm_delta_cache_get(c, 1, 1, 4096));  /* another block */
	/* Page 0 is now the least recently used (1 was read, 2 was put after 0): it goes first. */
	page_of(p, 4096, 3);
	tm_delta_cache_put(c, 0, 3, p, 4096);
	g_assert_null(tm_delta_cache_get(c, 0, 0, 4096));
	g_assert_nonnull(tm_delta_cache_get(c, 0, 1, 4096));
	g_assert_nonnull(tm_delta_cache_get(c, 0, 2, 4096));
	g_assert_cmpuint(tm_delta_cache_bytes(c), ==, 3 * 4096);
	/* A put of a page held replaces its copy, no new bytes. */
	page_of(p, 4096, 9);
	tm_delta_cache_put(c, 0, 3, p, 4096);
	g_assert_true(memcmp(tm_delta_cache_get(c, 0, 3, 4096), p, 4096) == 0);
	g_assert_cmpuint(tm_delta_cache_bytes(c), ==, 3 * 4096);
	tm_delta_cache_drop(c, 0, 3);
	tm_delta_cache_drop(c, 0, 3);
	g_assert_null(tm_delta_cache_get(c, 0, 3, 4096));
	g_assert_cmpuint(tm_delta_cache_count(c), ==, 2);
	g_assert_cmpuint(tm_delta_cache_bytes(c), ==, 2 * 4096);
}

static void test_sizes_and_budget(void)
{
	g_autoptr(tm_delta_cache) c = tm_delta_cache_new(40000);
	g_autofree uint8_t *big = g_malloc(65536);
	uint8_t p[16384];

	page_of(p, 16384, 1);
	tm_delta_cache_put(c, 2, 7, p, 16384);
	tm_delta_cache_put(c, 2, 8, p, 16384);
	g_assert_cmpuint(tm_delta_cache_bytes(c), ==, 32768);
	/* A third 16 KiB copy does not fit: the oldest goes. */
	tm_delta_cache_put(c, 2, 9, p, 16384);
	g_assert_cmpuint(tm_delta_cache_bytes(c), ==, 32768);
	g_assert_null(tm_delta_cache_get(c, 2, 7, 16384));
	/* A page larger than the whole budget: not stored, and its old copy is gone. */
	page_of(big, 65536, 2);
	tm_delta_cache_put(c, 2, 9, big, 65536);
	g_assert_null(tm_delta_cache_get(c, 2, 9, 16384));
	g_assert_null(tm_delta_cache_get(c, 2, 9, 65536));
	g_assert_cmpuint(tm_delta_cache_bytes(c), ==, 16384);
	/* The same page with another page size replaces the copy. */
	tm_delta_cache_put(c, 2, 8, p, 4096);
	g_assert_null(tm_delta_cache_get(c, 2, 8, 16384));
	g_assert_nonnull(tm_delta_cache_get(c, 2, 8, 4096));
	g_assert_cmpuint(tm_delta_cache_bytes(c), ==, 4096);
	g_autoptr(tm_delta_cache) none = tm_delta_cache_new(0);
	tm_delta_cache_put(none, 0, 0, p, 4096);
	g_assert_cmpuint(tm_delta_cache_count(none), ==, 0);
}

/* Random puts, gets and drops against a reference: a list in recency order and a budget. */
static void test_model(void)
{
	const size_t budget = 20 * 4096;
	g_autoptr(tm_delta_cache) c = tm_delta_cache_new(budget);
	g_autoptr(GArray) ref = g_array_new(FALSE, FALSE, sizeof(uint64_t)); /* key<<8 | seed, MRU last */
	uint8_t p[4096];
	GRand *r = g_rand_new_with_seed(15);

	for (unsigned step = 0; step < 20000; step++) {
		uint32_t page = (uint32_t)g_rand_int_range(r, 0, 40);
		uint32_t op = (uint32_t)g_rand_int_range(r, 0, 10);
		guint at = G_MAXUINT;
		for (guint i = 0; i < ref->len; i++)
			if ((g_array_index(ref, uint64_t, i) >> 8) == page)
				at = i;
		if (op < 5) { /* put */
			uint32_t seed = (uint32_t)g_rand_int_range(r, 0, 256);
			page_of(p, 4096, seed);
			tm_delta_cache_put(c, 0, page, p, 4096);
			if (at != G_MAXUINT)
				g_array_remove_index(ref, at);
			else if (ref->len * 4096 + 4096 > budget)
				g_array_remove_index(ref, 0);
			uint64_t v = (uint64_t)page << 8 | seed;
			g_array_append_val(ref, v);
		} else if (op < 9) { /* get */
			const uint8_t *got = tm_delta_cache_get(c, 0, page, 4096);
			g_assert_true((got != NULL) == (at != G_MAXUINT));
			if (got) {
				uint64_t v = g_array_index(ref, uint64_t, at);
				page_of(p, 4096, (uint32_t)(v & 0xff));
				g_assert_true(memcmp(got, p, 4096) == 0);
				g_array_remove_index(ref, at);
				g_array_append_val(ref, v);
			}
		} else { /* drop */
			tm_delta_cache_drop(c, 0, page);
			if (at != G_MAXUINT)
				g_array_remove_index(ref, at);
		}
		g_assert_cmpuint(tm_delta_cache_count(c), ==, ref->len);
		g_assert_cmpuint(tm_delta_cache_bytes(c), ==, (size_t)ref->len * 4096);
		g_assert_cmpuint(tm_delta_cache_bytes(c), <=, budget);
	}
	g_rand_free(r);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/delta-cache/put-get-lru", test_put_get_lru);
	g_test_add_func("/delta-cache/sizes-and-budget", test_sizes_and_budget);
	g_test_add_func("/delta-cache/model", test_model);
	return g_test_run();
}
