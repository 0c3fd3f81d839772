/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes tm_hello_decode() on a HELLO body, as protocol 1 and as protocol 2. What it accepts must
 * pass tm_hello_check(), encode back to the same bytes (protocol 2: less the feature bits this
 * build does not know, which the decoder declines), and be the same session as itself.
 */
#include <glib.h>

#include "fuzz.h"

static void one(const uint8_t *data, size_t size, uint8_t version)
{
	g_autoptr(GError) error = NULL;
	tm_hello h;

	if (tm_hello_decode(data, size, version, &h, &error) < 0) {
		g_assert_nonnull(error);
		return;
	}
	g_assert_cmpuint(h.version, ==, version);
	if (version == TM_WIRE_VERSION_1)
		g_assert_true(h.role == 0 && h.epoch == 0);
	else
		/* A non-zero epoch is a reconnect, with RESUME agreed: a data channel's, the urgent
		 * connection's (with POSTCOPY), or the control connection's with RESUME_CONTROL too (resume). */
		g_assert_true(h.role < TM_ROLE_COUNT &&
			      (h.epoch == 0 ||
			       (h.role == TM_ROLE_DATA && (h.features & TM_FEATURE_RESUME)) ||
			       (h.role == TM_ROLE_URGENT && (h.features & TM_FEATURE_POSTCOPY) &&
				(h.features & TM_FEATURE_RESUME)) ||
			       (h.role == TM_ROLE_CONTROL &&
				(h.features & TM_FEATURE_RESUME_CONTROL) &&
				(h.features & TM_FEATURE_RESUME))));
	g_assert_cmpuint(tm_hello_body_len(&h), ==, size);
	g_autofree uint8_t *again = g_malloc(size);
	g_autofree uint8_t *want = g_memdup2(data, size);
	tm_hello_encode(&h, again);
	if (version == TM_WIRE_VERSION_2) /* features: 4 bytes at 20, little-endian */
		for (unsigned i = 0; i < 4; i++)
			want[20 + i] &= (uint8_t)(TM_FEATURES_KNOWN_V2 >> (8 * i));
	g_assert_cmpmem(again, size, want, size);

	g_assert_cmpint(tm_hello_check(&h, &error), ==, 0);
	g_assert_cmpint(tm_hello_same_session(&h, &h, &error), ==, 0);
	for (uint32_t i = 0; i < h.block_count; i++) {
		const tm_wire_block *b = &h.blocks[i];

		g_assert_cmpuint(b->npages * b->page_size, ==, b->length);
		g_assert_cmpuint(b->npages, <=, UINT32_MAX);
	}
	tm_hello_clear(&h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	one(data, size, TM_WIRE_VERSION_1);
	one(data, size, TM_WIRE_VERSION_2);
	return 0;
}
