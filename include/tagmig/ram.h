/* SPDX-License-Identifier: MIT */
/*
 * Guest RAM layout: the named RAM blocks a VMM migrates. The layout only describes memory the VMM
 * owns; tagmig never allocates, maps or frees guest RAM.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

#include "export.h"

G_BEGIN_DECLS

typedef struct tm_ram_layout tm_ram_layout;

/* What one block looks like; returned by tm_ram_layout_block(). Pointers stay owned by the layout. */
typedef struct tm_ram_block_info {
	const char *name;    /* unique, 1..255 bytes */
	void *host;          /* host address of the first byte (may be NULL in announced layouts) */
	uint64_t length;     /* bytes, a multiple of page_size */
	uint64_t guest_base; /* guest-physical address of the first byte */
	uint32_t page_size;  /* 4096, 16384 or 65536 */
} tm_ram_block_info;

/* Returns 0 and a new empty layout in *ret. Free with tm_ram_layout_free(). */
TM_EXPORT int tm_ram_layout_new(tm_ram_layout **ret);

/*
 * Adds a block. name is copied. host must be page_size aligned, stay mapped and readable (sender)
 * or writable (receiver) until the session using the layout is freed. length must be a non-zero
 * multiple of page_size with at most 2^32-1 pages; page_size 4096, 16384 or 65536. Blocks may not be
 * added once a session uses the layout. Returns the block index (>= 0) or -EINVAL (bad argument,
 * duplicate name, too many blocks), with the reason in *error. Not thread-safe.
 */
TM_EXPORT int tm_ram_layout_add_block(tm_ram_layout *layout, const char *name, void *host,
				      uint64_t length, uint32_t page_size, uint64_t guest_base,
				      GError **error);

/* Number of blocks. */
TM_EXPORT unsigned tm_ram_layout_block_count(const tm_ram_layout *layout);

/* Fills *ret for block index; returns 0 or -ERANGE. */
TM_EXPORT int tm_ram_layout_block(const tm_ram_layout *layout, unsigned index,
				  tm_ram_block_info *ret);

/* Index of the block called name, or -ENOENT. */
TM_EXPORT int tm_ram_layout_find(const tm_ram_layout *layout, const char *name);

/* NULL is a no-op. */
TM_EXPORT void tm_ram_layout_free(tm_ram_layout *layout);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(tm_ram_layout, tm_ram_layout_free)

G_END_DECLS
