/* SPDX-License-Identifier: MIT */
/*
 * The sender's cache of last-sent page copies (delta-cache.h): a hash table from (block, page)
 * to the copy, and a queue in recency order whose tail is evicted first. Every operation is
 * O(1) apart from the evictions a put needs.
 */
#include <string.h>

#include "session/delta-cache.h"

typedef struct entry {
	uint64_t key;       /* block << 32 | page */
	uint32_t page_size;
	GList link;         /* in c->lru; link.data is the entry */
	uint8_t data[];
} entry;

struct tm_delta_cache {
	size_t max_bytes;
	size_t bytes;
	GHashTable *map;    /* &entry->key -> entry */
	GQueue lru;         /* most recently used at the head */
};

static uint64_t key_of(uint32_t block, uint32_t page)
{
	return (uint64_t)block << 32 | page;
}

tm_delta_cache *tm_delta_cache_new(size_t max_bytes)
{
	tm_delta_cache *c = g_new0(tm_delta_cache, 1);

	c->max_bytes = max_bytes;
	c->map = g_hash_table_new(g_int64_hash, g_int64_equal);
	g_queue_init(&c->lru);
	return c;
}

static void remove_entry(tm_delta_cache *c, entry *e)
{
	g_hash_table_remove(c->map, &e->key);
	g_queue_unlink(&c->lru, &e->link);
	c->bytes -= e->page_size;
	g_free(e);
}

void tm_delta_cache_free(tm_delta_cache *c)
{
	if (!c)
		return;
	while (c->lru.tail)
		remove_entry(c, c->lru.tail->data);
	g_hash_table_destroy(c->map);
	g_free(c);
}

const uint8_t *tm_delta_cache_get(tm_delta_cache *c, uint32_t block, uint32_t page,
				  uint32_t page_size)
{
	uint64_t k = key_of(block, page);
	entry *e = g_hash_table_lookup(c->map, &k);

	if (!e || e->page_size != page_size)
		return NULL;
	g_queue_unlink(&c->lru, &e->link);
	g_queue_push_head_link(&c->lru, &e->link);
	return e->data;
}

void tm_delta_cache_drop(tm_delta_cache *c, uint32_t block, uint32_t page)
{
	uint64_t k = key_of(block, page);
	entry *e = g_hash_table_lookup(c->map, &k);

	if (e)
		remove_entry(c, e);
}

void tm_delta_cache_put(tm_delta_cache *c, uint32_t block, uint32_t page, const uint8_t *data,
			uint32_t page_size)
{
	uint64_t k = key_of(block, page);
	entry *e = g_hash_table_lookup(c->map, &k);

	if (e && e->page_size == page_size) {
		/* The same page again: new content, most recently used, no change in size. */
		memcpy(e->data, data, page_size);
		g_queue_unlink(&c->lru, &e->link);
		g_queue_push_head_link(&c->lru, &e->link);
		return;
	}
	if (e)
		remove_entry(c, e);
	if (page_size > c->max_bytes)
		return;
	while (c->bytes + page_size > c->max_bytes)
		remove_entry(c, c->lru.tail->data);
	e = g_malloc(sizeof(*e) + page_size);
	e->key = k;
	e->page_size = page_size;
	e->link = (GList){ .data = e };
	memcpy(e->data, data, page_size);
	g_hash_table_insert(c->map, &e->key, e);
	g_queue_push_head_link(&c->lru, &e->link);
	c->bytes += page_size;
}

size_t tm_delta_cache_bytes(const tm_delta_cache *c)
{
	return c->bytes;
}

unsigned tm_delta_cache_count(const tm_delta_cache *c)
{
	return c->lru.length;
}
