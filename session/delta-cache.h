/* SPDX-License-Identifier: MIT */
/*
 * The sender's cache for delta encoding of re-sent pages (issue 15; codec/delta.h): per channel,
 * the copy of each page as it was last sent, so that the next round can send the page as a delta
 * against it. Bounded in bytes (the VMM sets the budget), least recently used copies go first.
 * Worker-local: one thread at a time, no locking.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <glib.h>

G_BEGIN_DECLS

typedef struct tm_delta_cache tm_delta_cache;

/* A cache of at most max_bytes of page data (copies of 4..64 KiB pages). */
tm_delta_cache *tm_delta_cache_new(size_t max_bytes);
void tm_delta_cache_free(tm_delta_cache *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(tm_delta_cache, tm_delta_cache_free)

/*
 * The copy last stored for page of block, or NULL (never stored, evicted, dropped, or stored
 * with another page size); a hit makes it the most recently used. Valid until the next put or
 * drop on the cache.
 */
const uint8_t *tm_delta_cache_get(tm_delta_cache *c, uint32_t block, uint32_t page,
				  uint32_t page_size);

/*
 * Stores a copy of data (page_size bytes) as what was last sent of page of block, replacing an
 * earlier copy, and evicts the least recently used copies to stay within the budget. A page
 * larger than the whole budget is not stored (and an earlier copy of it is dropped).
 */
void tm_delta_cache_put(tm_delta_cache *c, uint32_t block, uint32_t page, const uint8_t *data,
			uint32_t page_size);

/* Forgets page of block (it went in a form that leaves no copy to diff against). */
void tm_delta_cache_drop(tm_delta_cache *c, uint32_t block, uint32_t page);

/* Bytes of page data held, and copies held. */
size_t tm_delta_cache_bytes(const tm_delta_cache *c);
unsigned tm_delta_cache_count(const tm_delta_cache *c);

G_END_DECLS
