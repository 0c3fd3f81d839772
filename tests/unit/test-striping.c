/* SPDX-License-Identifier: MIT */
/* The channel assignment rule of docs/wire-format.md, checked against the codec's view of it. */
#include <errno.h>
#include <string.h>

#include "codec/codec.h"
#include "tagmig/tagmig.h"

static void test_rule(void)
{
	/* chunk 2 MiB, 3 channels: chunk k of the first block goes to channel k % 3. */
	const uint64_t chunk = 2 << 20;
	for (uint64_t off = 0; off < 64ull << 20; off += 4096)
		g_assert_cmpuint(tm_channel_of(0, off, chunk, 3), ==, (off / chunk) % 3);
	/* A block whose chunks start at global number 5 continues the stripe. */
	g_assert_cmpuint(tm_channel_of(5, 0, chunk, 3), ==, 2);
	g_assert_cmpuint(tm_channel_of(5, chunk, chunk, 3), ==, 0);
	/* One channel: everything on 0. */
	g_assert_cmpuint(tm_channel_of(17, 123 * chunk, chunk, 1), ==, 0);
}

static void test_chunk_base_across_blocks(void)
{
	/* Blocks that are not a multiple of the chunk: the short last chunk still counts as one. */
	tm_wire_block blocks[3] = {
		{ .name = "a", .length = 5 * 1024 * 1024 + 4096, .page_size = 4096 },
		{ .name = "b", .length = 1 << 20, .page_size = 16384 },
		{ .name = "c", .length = 8 << 20, .page_size = 65536 },
	};
	tm_hello h = { .channel_count = 4, .packet_size = 512 * 1024, .chunk_size = 2 << 20,
		       .block_count = 3, .blocks = blocks };
	g_autoptr(GError) err = NULL;
	g_assert_cmpint(tm_hello_check(&h, &err), ==, 0);
	g_assert_no_error(err);
	g_assert_cmpuint(blocks[0].chunk_base, ==, 0);
	g_assert_cmpuint(blocks[1].chunk_base, ==, 3);
	g_assert_cmpuint(blocks[2].chunk_base, ==, 4);
	g_assert_cmpuint(blocks[0].npages, ==, 5 * 256 + 1);
	g_assert_cmpuint(blocks[2].npages, ==, 128);
	/* Block c's first chunk is global chunk 4 -> channel 0, its second channel 1. */
	g_assert_cmpuint(tm_channel_of(blocks[2].chunk_base, 0, h.chunk_size, 4), ==, 0);
	g_assert_cmpuint(tm_channel_of(blocks[2].chunk_base, 2 << 20, h.chunk_size, 4), ==, 1);
}

static void test_every_page_one_channel(void)
{
	/* Every page of every block maps to exactly one channel, and all channels get work. */
	for (unsigned n = 1; n <= 8; n *= 2) {
		unsigned per[8] = { 0 };
		for (uint64_t off = 0; off < 32ull << 20; off += 65536)
			per[tm_channel_of(0, off, 1 << 20, n)]++;
		for (unsigned c = 0; c < n; c++)
			g_assert_cmpuint(per[c], ==, (32u << 20) / 65536 / n);
	}
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/striping/rule", test_rule);
	g_test_add_func("/striping/chunk-base", test_chunk_base_across_blocks);
	g_test_add_func("/striping/balance", test_every_page_one_channel);
	return g_test_run();
}
