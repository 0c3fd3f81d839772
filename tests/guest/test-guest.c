/* SPDX-License-Identifier: MIT */
/*
 * The test guest (guest.h) itself: its dirty log reports every page whose data or tags a writer
 * changed (none lost while writers race with the collections), nothing else beyond what a shared
 * tag-array page explains; the rate limit holds; test_guest_same finds a changed byte or tag; the
 * guard pages catch a stray write.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "guest.h"

static test_guest *guest(size_t ram, size_t vram, unsigned writers, uint64_t rate)
{
	test_guest_config cfg = { .ram_len = ram, .vram_len = vram, .writers = writers, .rate = rate,
				  .seed = 42 };
	test_guest *g = NULL;
	g_autoptr(GError) err = NULL;
	int r = test_guest_new(&cfg, &g, &err);
	if (r == -EOPNOTSUPP) {
		g_test_skip(err->message);
		return NULL;
	}
	g_assert_no_error(err);
	g_test_message("dirty log: %s", test_guest_dirty_method(g));
	return g;
}

static void test_dirty_complete(void)
{
	g_autoptr(test_guest) g = guest(8u << 20, 1u << 20, 2, 40u << 20);
	if (!g)
		return;
	const tm_ram_layout *l = test_guest_layout(g);
	unsigned nb = tm_ram_layout_block_count(l);
	uint64_t *union_bm[2] = { 0 }, npages[2] = { 0 };
	for (unsigned b = 0; b < nb; b++) {
		tm_ram_block_info bi;
		tm_ram_layout_block(l, b, &bi);
		npages[b] = bi.length / bi.page_size;
		union_bm[b] = g_new0(uint64_t, (npages[b] + 63) / 64);
	}
	g_autoptr(GError) err = NULL;
	/* Nothing written since tracking started. */
	g_assert_cmpint(test_guest_collect(g, union_bm, &err), ==, 0);

	test_guest_start(g);
	unsigned rounds = 0;
	for (gint64 end = g_get_monotonic_time() + 300000; g_get_monotonic_time() < end; rounds++) {
		g_assert_cmpint(test_guest_collect(g, union_bm, &err), >=, 0);
		g_usleep(10000);
	}
	test_guest_stop(g);
	g_assert_cmpint(test_guest_collect(g, union_bm, &err), >=, 0);
	g_assert_no_error(err);

	uint64_t written = 0, extra = 0;
	for (unsigned b = 0; b < nb; b++) {
		for (uint64_t p = 0; p < npages[b]; p++) {
			bool changed = test_guest_generation(g, b, p) > 1;
			bool seen = union_bm[b][p / 64] & (1ull << (p % 64));
			if (changed) {
				written++;
				if (!seen)
					g_error("block %u page %" G_GUINT64_FORMAT " was written (generation %u) "
						"but never reported", b, p, test_guest_generation(g, b, p));
			} else if (seen) {
				/* Only a tag-array page shared with a written page explains it: 16
				 * pc.ram pages share one; each vram page has its own. */
				bool explained = false;
				for (uint64_t q = p / 16 * 16; b == 0 && q < MIN(p / 16 * 16 + 16, npages[b]); q++)
					explained |= test_guest_generation(g, b, q) > 1;
				if (!explained)
					g_error("block %u page %" G_GUINT64_FORMAT " reported but not written", b, p);
				extra++;
			}
		}
	}
	g_test_message("%u collections, %" G_GUINT64_FORMAT " writes, %" G_GUINT64_FORMAT " pages "
		       "written, %" G_GUINT64_FORMAT " more reported through shared tag pages",
		       rounds + 1, test_guest_writes(g), written, extra);
	g_assert_cmpuint(written, >, 100);
	for (unsigned b = 0; b < nb; b++)
		g_free(union_bm[b]);
}

static void test_rate(void)
{
	/* 8 MB/s of 4 KiB pages (vram writes count 64 KiB each) for 0.5 s: at most ~1.3x that. */
	const uint64_t rate = 8u << 20;
	g_autoptr(test_guest) g = guest(4u << 20, 0, 2, rate);
	if (!g)
		return;
	gint64 t0 = g_get_monotonic_time();
	test_guest_start(g);
	g_usleep(500000);
	test_guest_stop(g);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	double bytes = (double)test_guest_writes(g) * 4096;
	g_test_message("%.0f bytes in %.3f s: %.2f MB/s for a limit of %.2f", bytes, secs,
		       bytes / secs / 1048576, (double)rate / 1048576);
	g_assert_cmpfloat(bytes / secs, <=, 1.3 * (double)rate);
	g_assert_cmpfloat(bytes, >, 0);
}

/* A copy of the guest's RAM and tags in fresh memory, as a destination would hold them. */
typedef struct copy {
	tm_ram_layout *layout;
	tm_tag_store *tags;
	uint8_t *ram[2];
} copy;

static void copy_of(test_guest *g, copy *c)
{
	const tm_ram_layout *l = test_guest_layout(g);
	g_assert_cmpint(tm_ram_layout_new(&c->layout), ==, 0);
	for (unsigned b = 0; b < tm_ram_layout_block_count(l); b++) {
		tm_ram_block_info bi;
		tm_ram_layout_block(l, b, &bi);
		c->ram[b] = g_aligned_alloc(bi.length, 1, 65536);
		memcpy(c->ram[b], bi.host, bi.length);
		g_assert_cmpint(tm_ram_layout_add_block(c->layout, bi.name, c->ram[b], bi.length,
							bi.page_size, bi.guest_base, NULL), >=, 0);
	}
	g_assert_cmpint(tm_tag_store_new(&tm_tag_store_soft, c->layout, NULL, &c->tags, NULL), ==, 0);
	for (unsigned b = 0; b < tm_ram_layout_block_count(l); b++) {
		tm_ram_block_info bi;
		tm_ram_layout_block(l, b, &bi);
		memcpy(tm_tag_store_soft_array(c->tags, b), tm_tag_store_soft_array(test_guest_tags(g), b),
		       bi.length / TM_TAG_GRANULE);
	}
}

static void copy_free(copy *c)
{
	tm_tag_store_free(c->tags);
	tm_ram_layout_free(c->layout);
	g_aligned_free(c->ram[0]);
	g_aligned_free(c->ram[1]);
}

static void test_same(void)
{
	g_autoptr(test_guest) g = guest(1u << 20, 1u << 20, 1, 0);
	if (!g)
		return;
	copy c = { 0 };
	copy_of(g, &c);
	g_autofree char *why = NULL;
	g_assert_true(test_guest_same(g, c.layout, c.tags, &why));

	/* a tag of vram page 3 */
	uint8_t *t = tm_tag_store_soft_array(c.tags, 1) + 3 * 4096 + 7;
	*t ^= 1;
	g_assert_false(test_guest_same(g, c.layout, c.tags, &why));
	g_assert_cmpstr(why, ==, "block 'vram' page 3 (generation 1): tags differ");
	*t ^= 1;
	g_clear_pointer(&why, g_free);
	/* a data byte of pc.ram page 200 */
	c.ram[0][200 * 4096 + 5] ^= 0x80;
	g_assert_false(test_guest_same(g, c.layout, c.tags, &why));
	g_assert_cmpstr(why, ==, "block 'pc.ram' page 200 (generation 1): data differ");
	copy_free(&c);

	/* The shapes: zero data with tags, and zero data without, both exist after the fill. */
	const tm_ram_layout *l = test_guest_layout(g);
	tm_ram_block_info bi;
	tm_ram_layout_block(l, 0, &bi);
	const uint8_t *tags = tm_tag_store_soft_array(test_guest_tags(g), 0);
	static const uint8_t zero[4096];
	unsigned zero_tagged = 0, zero_untagged = 0;
	for (uint64_t p = 0; p < bi.length / 4096; p++) {
		if (memcmp((uint8_t *)bi.host + p * 4096, zero, 4096))
			continue;
		bool any = false;
		for (unsigned i = 0; i < 256; i++)
			any |= tags[p * 256 + i] != 0;
		any ? zero_tagged++ : zero_untagged++;
	}
	g_assert_cmpuint(zero_tagged, >, 0);
	g_assert_cmpuint(zero_untagged, >, 0);
}

/*
 * The writers' data is random to a compressor: no 16-byte piece of a data page repeats in the
 * guest's first 4 MiB (an LZ match needs a repeat), so the compression paths and the bench see
 * incompressible pages, however cheaply the writers make them (guest.c: pool pages and keys).
 */
static void test_random_data(void)
{
	g_autoptr(test_guest) g = guest(4u << 20, 0, 1, 0);
	tm_ram_block_info bi;
	tm_ram_layout_block(test_guest_layout(g), 0, &bi);
	g_autoptr(GHashTable) seen = g_hash_table_new(g_int64_hash, g_int64_equal);
	g_autofree uint64_t *keys = g_new(uint64_t, bi.length / 16);
	static const uint8_t zero[4096];
	unsigned pieces = 0, repeats = 0;
	for (uint64_t p = 0; p < bi.length / 4096; p++) {
		const uint8_t *page = (const uint8_t *)bi.host + p * 4096;
		if (!memcmp(page, zero, 4096))
			continue;
		for (unsigned o = 0; o < 4096; o += 16) {
			uint64_t a, b;
			memcpy(&a, page + o, 8);
			memcpy(&b, page + o + 8, 8);
			keys[pieces] = a ^ (b * 0x9e3779b97f4a7c15ull);
			repeats += !g_hash_table_add(seen, &keys[pieces]);
			pieces++;
		}
	}
	g_test_message("%u pieces of 16 bytes, %u repeated", pieces, repeats);
	g_assert_cmpuint(pieces, >, 100000);
	g_assert_cmpuint(repeats, ==, 0);
}

static void test_guard(void)
{
	if (g_test_subprocess()) {
		g_autoptr(test_guest) g = guest(1u << 20, 0, 1, 0);
		if (!g)
			exit(0);
		tm_ram_block_info bi;
		tm_ram_layout_block(test_guest_layout(g), 0, &bi);
		((volatile uint8_t *)bi.host)[bi.length] = 1; /* one byte past the end */
		exit(0);
	}
	g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
	g_test_trap_assert_failed();
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/guest/dirty-complete", test_dirty_complete);
	g_test_add_func("/guest/rate", test_rate);
	g_test_add_func("/guest/same", test_same);
	g_test_add_func("/guest/random-data", test_random_data);
	g_test_add_func("/guest/guard", test_guard);
	return g_test_run();
}
