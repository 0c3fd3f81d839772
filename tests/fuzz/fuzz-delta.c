/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes tm_delta_apply (codec/delta.c), the receiver's side of a delta from the peer: input
 * byte 0 picks the page size (4, 16 or 64 KiB), the rest is the delta stream, applied to an
 * exact-size page (ASan sees any stray byte). A refused stream must leave the page as it was;
 * an accepted one must re-encode against the base to a stream that gives the same page.
 */
#include <glib.h>

#include "codec/delta.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint32_t sizes[] = { 4096, 16384, 65536 };

	if (size < 1)
		return 0;
	uint32_t ps = sizes[data[0] % 3];
	g_autofree uint8_t *base = g_malloc(ps);
	for (uint32_t i = 0; i < ps; i++)
		base[i] = (uint8_t)(i * 7 + (i >> 9));
	g_autofree uint8_t *page = g_memdup2(base, ps);
	/* Exact-size copy of the stream: the decoder must never read past it. */
	g_autofree uint8_t *in = g_memdup2(data + 1, size - 1);

	if (tm_delta_apply(page, ps, in, size - 1, NULL) < 0) {
		g_assert_true(memcmp(page, base, ps) == 0);
		return 0;
	}
	size_t cap = (size_t)ps * 2 + 64;
	g_autofree uint8_t *enc = g_malloc(cap);
	ssize_t n = tm_delta_encode(page, base, ps, enc, cap);
	g_assert_cmpint(n, >=, 0);
	g_autofree uint8_t *again = g_memdup2(base, ps);
	g_assert_cmpint(tm_delta_apply(again, ps, enc, (size_t)n, NULL), ==, 0);
	g_assert_true(memcmp(again, page, ps) == 0);
	return 0;
}
