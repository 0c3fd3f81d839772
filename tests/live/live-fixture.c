/* SPDX-License-Identifier: MIT */
/* The live tests' shared fixture: live-fixture.h. */
#include <errno.h>
#include <string.h>

#include "live-fixture.h"

bool live_pair_runs(const char *what)
{
	if (strcmp(send_io, recv_io) != 0) {
		g_autofree char *why = g_strdup_printf("%s end to end runs on same-backend pairs (the "
						       "byte movers are covered pair by pair elsewhere)",
						       what);
		g_test_skip(why);
		return false;
	}
	return true;
}

bool live_guest_new(const test_guest_config *gc, test_guest **ret)
{
	g_autoptr(GError) err = NULL;

	if (test_guest_new(gc, ret, &err) < 0) {
		if (g_error_matches(err, TM_ERROR, EOPNOTSUPP)) {
			g_test_skip(err->message); /* no dirty-page tracking in this kernel */
			return false;
		}
		g_assert_no_error(err);
	}
	return true;
}

unsigned live_guest_blocks(test_guest *g, block_spec *spec, uint64_t *npages, uint64_t **bm)
{
	const tm_ram_layout *layout = test_guest_layout(g);
	unsigned nb = tm_ram_layout_block_count(layout);

	g_assert_cmpuint(nb, <=, LIVE_BLOCKS);
	for (unsigned b = 0; b < nb; b++) {
		tm_ram_block_info bi;
		g_assert_cmpint(tm_ram_layout_block(layout, b, &bi), ==, 0);
		spec[b] = (block_spec){ bi.name, bi.length, bi.page_size };
		if (!bm)
			continue;
		npages[b] = bi.length / bi.page_size;
		bm[b] = g_new0(uint64_t, (npages[b] + 63) / 64);
		for (uint64_t p = 0; p < npages[b]; p++)
			bm[b][p / 64] |= 1ull << (p % 64);
	}
	return nb;
}

uint64_t live_dirty_count(uint64_t **bm, const uint64_t *npages, unsigned n)
{
	uint64_t c = 0;

	for (unsigned b = 0; b < n; b++)
		for (uint64_t i = 0; i < (npages[b] + 63) / 64; i++)
			c += (uint64_t)__builtin_popcountll(bm[b][i]);
	return c;
}

void live_queue_dirty(tm_sender *s, uint64_t **bm, const uint64_t *npages, unsigned n)
{
	g_autoptr(GError) err = NULL;

	for (unsigned b = 0; b < n; b++) {
		g_assert_cmpint(tm_sender_queue_bitmap(s, b, bm[b], 0, npages[b], &err), ==, 0);
		memset(bm[b], 0, (npages[b] + 63) / 64 * sizeof(uint64_t));
	}
}
