/* SPDX-License-Identifier: MIT */
/*
 * The software tag store: one byte per 16-byte granule in a side array per block. It stands in
 * for KVM MTE on hosts without it and is what tests, the demo and the CLI's tag files use.
 * Concurrent get/set on disjoint ranges touch disjoint bytes, so no lock is needed.
 */
#include <errno.h>
#include <string.h>

#include "ram/ram-internal.h"
#include "tagmig/error.h"
#include "tagmig/wire.h"
#include "tagstore-internal.h"

typedef struct soft_priv {
	unsigned count;
	uint8_t **arrays;
	bool *owned;
} soft_priv;

static int soft_init(tm_tag_store *store, const tm_ram_layout *layout, void *arg, GError **error)
{
	soft_priv *p = tm_tag_store_priv(store);
	uint8_t **given = arg;

	p->count = layout->blocks->len;
	p->arrays = g_new0(uint8_t *, p->count);
	p->owned = g_new0(bool, p->count);
	for (unsigned i = 0; i < p->count; i++) {
		const tm_ram_block *b = tm_ram_layout_get(layout, i);
		if (given && given[i]) {
			p->arrays[i] = given[i];
		} else {
			p->arrays[i] = g_try_malloc0(b->length / TM_TAG_GRANULE);
			if (!p->arrays[i]) {
				g_set_error(error, TM_ERROR, ENOMEM,
					    "soft tag store: no memory for the tags of block '%s'",
					    b->name);
				for (unsigned j = 0; j < i; j++)
					if (p->owned[j])
						g_free(p->arrays[j]);
				g_free(p->arrays);
				g_free(p->owned);
				return -ENOMEM;
			}
			p->owned[i] = true;
		}
	}
	return 0;
}

static void soft_fini(tm_tag_store *store)
{
	soft_priv *p = tm_tag_store_priv(store);

	for (unsigned i = 0; i < p->count; i++)
		if (p->owned[i])
			g_free(p->arrays[i]);
	g_free(p->arrays);
	g_free(p->owned);
}

static int soft_get(tm_tag_store *store, unsigned block, uint64_t offset, uint64_t length,
		    uint8_t *buf)
{
	soft_priv *p = tm_tag_store_priv(store);
	/* Copied as is: the sender checks that every byte is a 4-bit tag and names the offset. */
	memcpy(buf, p->arrays[block] + offset / TM_TAG_GRANULE, length / TM_TAG_GRANULE);
	return 0;
}

static int soft_set(tm_tag_store *store, unsigned block, uint64_t offset, uint64_t length,
		    const uint8_t *buf)
{
	soft_priv *p = tm_tag_store_priv(store);

	memcpy(p->arrays[block] + offset / TM_TAG_GRANULE, buf, length / TM_TAG_GRANULE);
	return 0;
}

const tm_tag_store_ops tm_tag_store_soft = {
	.name = "soft",
	.priv_size = sizeof(soft_priv),
	.init = soft_init,
	.fini = soft_fini,
	.get = soft_get,
	.set = soft_set,
	.has_tags = 1,
};

uint8_t *tm_tag_store_soft_array(tm_tag_store *store, unsigned block)
{
	if (!store || store->ops != &tm_tag_store_soft)
		return NULL;
	soft_priv *p = tm_tag_store_priv(store);
	return block < p->count ? p->arrays[block] : NULL;
}
