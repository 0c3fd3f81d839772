/* SPDX-License-Identifier: MIT */
/* What the codec tests share (test-codec.c: protocol 1, test-codec-v2.c: protocol 2). */
#pragma once

#include <errno.h>
#include <string.h>

#include <glib.h>

#include "codec/codec.h"
#include "tagmig/error.h"

/* Asserts r == -errnum and that *err is TM_ERROR/errnum with substr in its message; clears *err. */
static inline void check_err(int r, GError **err, int errnum, const char *substr)
{
	if (r != -errnum)
		g_error("expected -%d (%s), got %d; error: %s", errnum, g_strerror(errnum), r,
			*err ? (*err)->message : "(none)");
	g_assert_nonnull(*err);
	g_assert_error(*err, TM_ERROR, errnum);
	if (substr && !strstr((*err)->message, substr))
		g_error("error message \"%s\" does not mention \"%s\"", (*err)->message, substr);
	g_clear_error(err);
}

static inline void check_ok(int r, GError **err)
{
	if (r != 0)
		g_error("unexpected failure %d: %s", r, *err ? (*err)->message : "(no message)");
	g_assert_no_error(*err);
}

typedef struct blk_spec {
	const char *name;
	uint64_t length;
	uint32_t page_size;
	uint64_t guest_base;
} blk_spec;

static inline void make_session(tm_hello *h, uint32_t features, uint16_t channels, uint32_t packet_size,
			 uint64_t chunk_size, const blk_spec *blocks, uint32_t n)
{
	GError *err = NULL;

	memset(h, 0, sizeof(*h));
	for (unsigned i = 0; i < sizeof(h->session_id); i++)
		h->session_id[i] = (uint8_t)(0xa0 + i);
	h->channel_count = channels;
	h->features = features;
	h->packet_size = packet_size;
	h->chunk_size = chunk_size;
	h->block_count = n;
	h->blocks = g_new0(tm_wire_block, n);
	for (uint32_t i = 0; i < n; i++) {
		g_strlcpy(h->blocks[i].name, blocks[i].name, sizeof(h->blocks[i].name));
		h->blocks[i].length = blocks[i].length;
		h->blocks[i].page_size = blocks[i].page_size;
		h->blocks[i].guest_base = blocks[i].guest_base;
	}
	check_ok(tm_hello_check(h, &err), &err);
}

static const blk_spec hello_blocks[] = {
	{ "pc.ram", 1ull << 30, 4096, 0x40000000 },
	{ "rom", (2u << 20) + 4096, 4096, 0 },
	{ "vram", 16u << 20, 65536, 0x100000000ull },
};

/* A valid HELLO of three blocks on channel 2 of 4. */
static inline void make_hello(tm_hello *h)
{
	make_session(h, TM_FEATURE_TAGS_MTE4, 4, 512 * 1024, 2u << 20, hello_blocks,
		     G_N_ELEMENTS(hello_blocks));
	h->channel_id = 2;
}

static inline uint8_t *encode_hello(const tm_hello *h, size_t *ret_len)
{
	size_t len = tm_hello_body_len(h);
	uint8_t *buf = g_malloc(len);

	tm_hello_encode(h, buf);
	*ret_len = len;
	return buf;
}

static inline void assert_hello_equal(const tm_hello *a, const tm_hello *b)
{
	g_assert_cmpmem(a->session_id, 16, b->session_id, 16);
	g_assert_cmpuint(a->channel_id, ==, b->channel_id);
	g_assert_cmpuint(a->channel_count, ==, b->channel_count);
	g_assert_cmpuint(a->features, ==, b->features);
	g_assert_cmpuint(a->packet_size, ==, b->packet_size);
	g_assert_cmpuint(a->chunk_size, ==, b->chunk_size);
	g_assert_cmpuint(a->block_count, ==, b->block_count);
	for (uint32_t i = 0; i < a->block_count; i++) {
		g_assert_cmpstr(a->blocks[i].name, ==, b->blocks[i].name);
		g_assert_cmpuint(a->blocks[i].length, ==, b->blocks[i].length);
		g_assert_cmpuint(a->blocks[i].guest_base, ==, b->blocks[i].guest_base);
		g_assert_cmpuint(a->blocks[i].page_size, ==, b->blocks[i].page_size);
		g_assert_cmpuint(a->blocks[i].npages, ==, b->blocks[i].npages);
		g_assert_cmpuint(a->blocks[i].chunk_base, ==, b->blocks[i].chunk_base);
	}
}

typedef struct hello_mutation {
	size_t off;   /* byte offset in the body; block descriptors start at 48 */
	unsigned width;
	uint64_t value;
	int errnum;
	const char *substr;
} hello_mutation;

static inline void put_le(uint8_t *p, unsigned width, uint64_t v)
{
	for (unsigned i = 0; i < width; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
