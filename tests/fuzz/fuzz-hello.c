/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes tm_hello_decode() on a HELLO body. What it accepts must pass tm_hello_check(), encode
 * back to the same bytes, and be the same session as itself.
 */
#include <glib.h>

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	g_autoptr(GError) error = NULL;
	tm_hello h;

	if (tm_hello_decode(data, size, &h, &error) < 0) {
		g_assert_nonnull(error);
		return 0;
	}
	g_assert_cmpuint(tm_hello_body_len(&h), ==, size);
	g_autofree uint8_t *again = g_malloc(size);
	tm_hello_encode(&h, again);
	g_assert_cmpmem(again, size, data, size);

	g_assert_cmpint(tm_hello_check(&h, &error), ==, 0);
	g_assert_cmpint(tm_hello_same_session(&h, &h, &error), ==, 0);
	for (uint32_t i = 0; i < h.block_count; i++) {
		const tm_wire_block *b = &h.blocks[i];

		g_assert_cmpuint(b->npages * b->page_size, ==, b->length);
		g_assert_cmpuint(b->npages, <=, UINT32_MAX);
	}
	tm_hello_clear(&h);
	return 0;
}
