/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>

#include "tagmig/ram.h"

typedef struct tm_ram_block {
	char *name;
	uint8_t *host;
	uint64_t length;
	uint64_t guest_base;
	uint32_t page_size;
} tm_ram_block;

struct tm_ram_layout {
	GPtrArray *blocks; /* of tm_ram_block */
	bool frozen;       /* set by a session that uses the layout: no more blocks */
};

static inline const tm_ram_block *tm_ram_layout_get(const tm_ram_layout *l, unsigned i)
{
	return g_ptr_array_index(l->blocks, i);
}
