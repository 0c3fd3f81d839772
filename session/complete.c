/* SPDX-License-Identifier: MIT */
/*
 * When a receiver may say "done": every page of every announced block applied at least once, or
 * waived by the VMM (tm_receiver_waive_pages). Matching END counts only prove that what was sent
 * arrived; a sender that sends nothing, or a part, must not end a session as complete.
 */
#include <errno.h>

#include "common/escape.h"
#include "session/postcopy-recv.h"
#include "session/session-internal.h"
#include "tagmig/error.h"

int tm_receiver_waive_pages(tm_receiver *r, unsigned block, uint64_t first, uint64_t count,
			    GError **error)
{
	if (r->state != R_RUNNING && r->state != R_ACCEPTED) {
		g_set_error(error, TM_ERROR, EBADFD,
			    "tm_receiver_waive_pages() needs an accepted, unfinished session");
		return -EBADFD;
	}
	if (block >= r->hello.block_count || first > r->hello.blocks[block].npages ||
	    count > r->hello.blocks[block].npages - first) {
		g_set_error(error, TM_ERROR, ERANGE,
			    "waive pages %" G_GUINT64_FORMAT "+%" G_GUINT64_FORMAT
			    " of block %u: outside the announced layout",
			    first, count, block);
		return -ERANGE;
	}
	g_mutex_lock(&r->lock);
	if (!r->waived)
		r->waived = g_new0(uint64_t *, r->hello.block_count);
	if (!r->waived[block])
		r->waived[block] = g_new0(uint64_t, (r->hello.blocks[block].npages + 63) / 64);
	for (uint64_t p = first; p < first + count; p++)
		r->waived[block][p / 64] |= 1ull << (p % 64);
	g_mutex_unlock(&r->lock);
	return 0;
}

int tm_receiver_check_complete(tm_receiver *r, GError **error)
{
	uint64_t missing = 0;
	unsigned first_block = 0;
	uint64_t first_page = 0;

	g_mutex_lock(&r->lock);
	for (unsigned b = 0; r->present && b < r->hello.block_count; b++) {
		const uint64_t *w = r->waived ? r->waived[b] : NULL;
		const uint64_t *zk = tm_pc_recv_zero_known(r, b); /* postcopy: known zero */
		uint64_t np = r->hello.blocks[b].npages;
		for (uint64_t i = 0; i < (np + 63) / 64; i++) {
			uint64_t want = i + 1 < (np + 63) / 64 || np % 64 == 0
						? ~0ull
						: (1ull << (np % 64)) - 1;
			uint64_t have = __atomic_load_n(&r->present[b][i], __ATOMIC_ACQUIRE) |
					(w ? w[i] : 0) | (zk ? zk[i] : 0);
			uint64_t lack = want & ~have;
			if (!lack)
				continue;
			if (!missing) {
				first_block = b;
				first_page = i * 64 + (uint64_t)__builtin_ctzll(lack);
			}
			missing += (uint64_t)__builtin_popcountll(lack);
		}
	}
	g_mutex_unlock(&r->lock);
	if (!missing)
		return 0;
	const tm_wire_block *b = &r->hello.blocks[first_block];
	g_autofree char *name = tm_escape_untrusted(b->name);
	g_set_error(error, TM_ERROR, EPROTO,
		    "incomplete migration: %" G_GUINT64_FORMAT
		    " pages never arrived, the first at block '%s', offset 0x%" G_GINT64_MODIFIER
		    "x (the sender ended every channel without them)",
		    missing, name, first_page * b->page_size);
	return -EPROTO;
}
