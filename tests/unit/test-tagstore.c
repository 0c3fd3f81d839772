/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "tagmig/tagmig.h"

typedef struct fixture {
	tm_ram_layout *layout;
	uint8_t *ram[2];
} fixture;

static void fixture_set_up(fixture *f, gconstpointer data)
{
	tm_ram_layout_new(&f->layout);
	f->ram[0] = g_aligned_alloc0(64, 4096, 65536);
	f->ram[1] = g_aligned_alloc0(8, 65536, 65536);
	g_assert_cmpint(tm_ram_layout_add_block(f->layout, "a", f->ram[0], 64 * 4096, 4096, 0, NULL),
			==, 0);
	g_assert_cmpint(tm_ram_layout_add_block(f->layout, "b", f->ram[1], 8 * 65536, 65536,
						1 << 30, NULL),
			==, 1);
}

static void fixture_tear_down(fixture *f, gconstpointer data)
{
	tm_ram_layout_free(f->layout);
	g_aligned_free(f->ram[0]);
	g_aligned_free(f->ram[1]);
}

static void test_layout_rules(fixture *f, gconstpointer data)
{
	g_autoptr(GError) err = NULL;
	uint8_t *p = f->ram[0];

	g_assert_cmpint(tm_ram_layout_add_block(f->layout, "a", p, 4096, 4096, 0, &err), ==,
			-EINVAL);
	g_assert_nonnull(strstr(err->message, "exists"));
	g_clear_error(&err);
	g_assert_cmpint(tm_ram_layout_add_block(f->layout, "c", p, 4096, 8192, 0, &err), ==,
			-EINVAL);
	g_assert_nonnull(strstr(err->message, "page size 8192"));
	g_clear_error(&err);
	g_assert_cmpint(tm_ram_layout_add_block(f->layout, "c", p, 4096 + 16, 4096, 0, &err), ==,
			-EINVAL);
	g_clear_error(&err);
	g_assert_cmpint(tm_ram_layout_add_block(f->layout, "c", p + 16, 4096, 4096, 0, &err), ==,
			-EINVAL);
	g_clear_error(&err);
	g_assert_cmpint(tm_ram_layout_add_block(f->layout, "", p, 4096, 4096, 0, &err), ==, -EINVAL);
	g_assert_cmpuint(tm_ram_layout_block_count(f->layout), ==, 2);
	g_assert_cmpint(tm_ram_layout_find(f->layout, "b"), ==, 1);
	g_assert_cmpint(tm_ram_layout_find(f->layout, "zz"), ==, -ENOENT);
	tm_ram_block_info bi;
	g_assert_cmpint(tm_ram_layout_block(f->layout, 1, &bi), ==, 0);
	g_assert_cmpstr(bi.name, ==, "b");
	g_assert_cmpuint(bi.page_size, ==, 65536);
	g_assert_cmpuint(bi.guest_base, ==, 1 << 30);
	g_assert_cmpint(tm_ram_layout_block(f->layout, 2, &bi), ==, -ERANGE);
}

static void test_soft_roundtrip(fixture *f, gconstpointer data)
{
	g_autoptr(tm_tag_store) st = NULL;
	g_assert_cmpint(tm_tag_store_new(&tm_tag_store_soft, f->layout, NULL, &st, NULL), ==, 0);

	/* Non-uniform per-granule pattern: uniform tags would hide granule mix-ups. */
	uint8_t in[8 * 4096 / 16], out[sizeof(in)];
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)((i * 7 + i / 5) & 0xf);
	g_assert_cmpint(tm_tag_store_set(st, 0, 4096 * 3, sizeof(in) * 16, in), ==, 0);
	memset(out, 0xaa, sizeof(out));
	g_assert_cmpint(tm_tag_store_get(st, 0, 4096 * 3, sizeof(out) * 16, out), ==, 0);
	g_assert_cmpmem(in, sizeof(in), out, sizeof(out));
	/* Neighbours untouched. */
	uint8_t *arr = tm_tag_store_soft_array(st, 0);
	g_assert_cmpuint(arr[3 * 256 - 1], ==, 0);
	g_assert_cmpuint(arr[11 * 256], ==, 0);
	g_assert_cmpuint(arr[3 * 256 + 1], ==, in[1]);

	/* 64K pages. */
	uint8_t big[65536 / 16];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(15 - i % 16);
	g_assert_cmpint(tm_tag_store_set(st, 1, 7 * 65536, 65536, big), ==, 0);
	g_assert_cmpmem(tm_tag_store_soft_array(st, 1) + 7 * 4096, 4096, big, 4096);
}

static void test_soft_ranges(fixture *f, gconstpointer data)
{
	g_autoptr(tm_tag_store) st = NULL;
	uint8_t buf[65536 / 16];
	g_assert_cmpint(tm_tag_store_new(&tm_tag_store_soft, f->layout, NULL, &st, NULL), ==, 0);
	g_assert_cmpint(tm_tag_store_get(st, 2, 0, 4096, buf), ==, -ERANGE);
	g_assert_cmpint(tm_tag_store_get(st, 0, 64 * 4096, 4096, buf), ==, -ERANGE);
	g_assert_cmpint(tm_tag_store_get(st, 0, 63 * 4096, 2 * 4096, buf), ==, -ERANGE);
	g_assert_cmpint(tm_tag_store_get(st, 0, 100, 4096, buf), ==, -ERANGE);
	g_assert_cmpint(tm_tag_store_get(st, 1, 0, 4096, buf), ==, -ERANGE);
	g_assert_cmpint(tm_tag_store_set(st, 0, UINT64_MAX - 4095, 4096, buf), ==, -ERANGE);
	g_assert_cmpint(tm_tag_store_get(st, 0, 0, 0, buf), ==, -ERANGE);
}

static void test_soft_caller_arrays(fixture *f, gconstpointer data)
{
	g_autofree uint8_t *a0 = g_malloc0(64 * 4096 / 16);
	uint8_t *arrays[2] = { a0, NULL };
	g_autoptr(tm_tag_store) st = NULL;
	uint8_t buf[256];

	a0[5] = 0x3;
	g_assert_cmpint(tm_tag_store_new(&tm_tag_store_soft, f->layout, arrays, &st, NULL), ==, 0);
	g_assert_true(tm_tag_store_soft_array(st, 0) == a0);
	g_assert_cmpint(tm_tag_store_get(st, 0, 0, 4096, buf), ==, 0);
	g_assert_cmpuint(buf[5], ==, 3);
	/* The store is a view of the caller's array, in both directions. */
	buf[7] = 0xc;
	g_assert_cmpint(tm_tag_store_set(st, 0, 4096, 4096, buf), ==, 0);
	g_assert_cmpuint(a0[256 + 7], ==, 0xc);
}

static void test_lookup(void)
{
	const tm_tag_store_ops *ops;
	g_autoptr(GError) err = NULL;

	g_assert_cmpint(tm_tag_store_lookup("soft", &ops, NULL), ==, 0);
	g_assert_true(ops == &tm_tag_store_soft);
	g_assert_cmpint(tm_tag_store_lookup("none", &ops, NULL), ==, 0);
	g_assert_false(ops->has_tags);
	g_assert_cmpint(tm_tag_store_lookup("nope", &ops, &err), ==, -ENOENT);
	g_clear_error(&err);
#if !defined(__aarch64__)
	g_assert_cmpint(tm_tag_store_lookup("kvm-mte", &ops, &err), ==, -EOPNOTSUPP);
	g_assert_nonnull(strstr(err->message, "arm64"));
#endif
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add("/ram/layout-rules", fixture, NULL, fixture_set_up, test_layout_rules,
		   fixture_tear_down);
	g_test_add("/tagstore/soft-roundtrip", fixture, NULL, fixture_set_up, test_soft_roundtrip,
		   fixture_tear_down);
	g_test_add("/tagstore/soft-ranges", fixture, NULL, fixture_set_up, test_soft_ranges,
		   fixture_tear_down);
	g_test_add("/tagstore/soft-caller-arrays", fixture, NULL, fixture_set_up,
		   test_soft_caller_arrays, fixture_tear_down);
	g_test_add_func("/tagstore/lookup", test_lookup);
	return g_test_run();
}
