/* SPDX-License-Identifier: MIT */
/*
 * RAM and tag files as the tool sees them: sized, created, and mapped at addresses aligned for
 * huge pages (guest RAM in 2 MiB pages, as a VMM backs it; bench/README.md says why it matters).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

G_BEGIN_DECLS

typedef struct cli_map {
	char *path;
	void *addr;     /* NULL for an empty file */
	uint64_t size;
	bool writable;
} cli_map;

/*
 * Maps path MAP_SHARED, read-only or read-write, at an address aligned to 2 MiB (every page size,
 * and huge pages). Returns 0 or -errno with a message naming the file in *error. Free with
 * cli_map_free() (unmaps).
 */
int cli_map_open(const char *path, bool writable, cli_map **ret, GError **error);

/* Size of path in bytes: 0 and *ret, -ENOENT when it does not exist, or another -errno (*error). */
int cli_file_size(const char *path, uint64_t *ret, GError **error);

/* Creates path (which must not exist) with size bytes of zeros. Returns 0 or -errno (*error). */
int cli_file_create(const char *path, uint64_t size, GError **error);

/*
 * Maps size bytes of anonymous zeroed memory, 2 MiB aligned (path "(anonymous)"); populate faults
 * it in now, so that a later measurement does not pay for it. Returns 0 or -errno (*error).
 */
int cli_map_anon(uint64_t size, bool populate, cli_map **ret, GError **error);

/* msync()s the mapping. Returns 0 or -errno (*error). */
int cli_map_sync(cli_map *map, GError **error);

/* Unmaps and frees; NULL is a no-op. */
void cli_map_free(cli_map *map);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(cli_map, cli_map_free)

G_END_DECLS
