/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "codec/codec.h"
#include "ram-internal.h"
#include "tagmig/error.h"
#include "tagmig/wire.h"

static void block_free(gpointer p)
{
	tm_ram_block *b = p;

	g_free(b->name);
	g_free(b);
}

int tm_ram_layout_new(tm_ram_layout **ret)
{
	tm_ram_layout *l = g_new0(tm_ram_layout, 1);

	l->blocks = g_ptr_array_new_with_free_func(block_free);
	*ret = l;
	return 0;
}

int tm_ram_layout_add_block(tm_ram_layout *layout, const char *name, void *host, uint64_t length,
			    uint32_t page_size, uint64_t guest_base, GError **error)
{
	size_t name_len = name ? strlen(name) : 0;

	g_return_val_if_fail(layout, -EINVAL);
	if (layout->frozen) {
		g_set_error(error, TM_ERROR, EBUSY, "RAM layout is in use by a session");
		return -EBUSY;
	}
	if (name_len == 0 || name_len > TM_MAX_BLOCK_NAME) {
		g_set_error(error, TM_ERROR, EINVAL, "RAM block name must be 1..%u bytes, not %zu",
			    TM_MAX_BLOCK_NAME, name_len);
		return -EINVAL;
	}
	if (!tm_page_size_valid(page_size)) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "RAM block '%s': page size %u is not 4096, 16384 or 65536", name,
			    page_size);
		return -EINVAL;
	}
	if (length == 0 || length % page_size || length / page_size > UINT32_MAX) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "RAM block '%s': length %" G_GUINT64_FORMAT
			    " is not a non-zero multiple of the page size %u with at most 2^32-1 pages",
			    name, length, page_size);
		return -EINVAL;
	}
	if (((uintptr_t)host % page_size) || guest_base % page_size) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "RAM block '%s': host address and guest base must be aligned to the page size %u",
			    name, page_size);
		return -EINVAL;
	}
	if (layout->blocks->len >= TM_MAX_BLOCKS) {
		g_set_error(error, TM_ERROR, EINVAL, "more than %u RAM blocks", TM_MAX_BLOCKS);
		return -EINVAL;
	}
	if (tm_ram_layout_find(layout, name) >= 0) {
		g_set_error(error, TM_ERROR, EINVAL, "RAM block '%s' exists already", name);
		return -EINVAL;
	}
	tm_ram_block *b = g_new0(tm_ram_block, 1);
	b->name = g_strdup(name);
	b->host = host;
	b->length = length;
	b->guest_base = guest_base;
	b->page_size = page_size;
	g_ptr_array_add(layout->blocks, b);
	return (int)layout->blocks->len - 1;
}

unsigned tm_ram_layout_block_count(const tm_ram_layout *layout)
{
	return layout ? layout->blocks->len : 0;
}

int tm_ram_layout_block(const tm_ram_layout *layout, unsigned index, tm_ram_block_info *ret)
{
	if (!layout || index >= layout->blocks->len)
		return -ERANGE;
	const tm_ram_block *b = g_ptr_array_index(layout->blocks, index);
	ret->name = b->name;
	ret->host = b->host;
	ret->length = b->length;
	ret->guest_base = b->guest_base;
	ret->page_size = b->page_size;
	return 0;
}

int tm_ram_layout_find(const tm_ram_layout *layout, const char *name)
{
	for (unsigned i = 0; layout && name && i < layout->blocks->len; i++) {
		const tm_ram_block *b = g_ptr_array_index(layout->blocks, i);
		if (strcmp(b->name, name) == 0)
			return (int)i;
	}
	return -ENOENT;
}

void tm_ram_layout_free(tm_ram_layout *layout)
{
	if (!layout)
		return;
	g_ptr_array_unref(layout->blocks);
	g_free(layout);
}
