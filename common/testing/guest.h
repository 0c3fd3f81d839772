/* SPDX-License-Identifier: MIT */
/*
 * The test "guest" of the live-migration tests (docs/design/live-engine.md, 4.1): guest RAM in
 * two blocks with soft MTE tags, writer threads ("vCPUs") that dirty it at a set rate, and a dirty
 * log fed by the kernel (dirty-log.h), so that a test runs the loop a VMM runs with
 * KVM_GET_DIRTY_LOG.
 *
 * - Blocks "pc.ram" (4 KiB pages) and, if asked, "vram" (64 KiB pages): anonymous memory with
 *   MADV_NOHUGEPAGE and a PROT_NONE guard page on each side (a stray write crashes the test).
 *   Tags: one byte per 16-byte granule (tag in the low nibble) in a page-aligned array per block,
 *   the arrays of a tm_tag_store_soft store (test_guest_tags()).
 * - Writer t owns the pages p with p % writers == t of every block; each write gives the page
 *   a new generation g and a shape by (p + g) % 8: data and tags derived from (block, page, g);
 *   zero data with non-zero tags; zero data and zero tags; tags only (data kept); data only (tags
 *   kept). Data is written before tags.
 * - Dirty pages: one dirty log on each block's RAM and one on each tag array; in a written tag-array
 *   page, the guest pages whose tags differ from the last collection's copy (of 16 for "pc.ram", 1
 *   for "vram") are dirty.
 *
 * Threads: test_guest_start/stop/collect/free from one thread (the "VMM"); the writers run
 * between start and stop.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "tagmig/tagmig.h"

typedef struct test_guest test_guest;

typedef struct test_guest_config {
	size_t ram_len;   /* "pc.ram", a multiple of 4 KiB; 0 means 64 MiB */
	size_t vram_len;  /* "vram", a multiple of 64 KiB; 0: no such block */
	unsigned writers; /* writer threads; 0 means 2 */
	uint64_t rate;    /* bytes of pages written per second, all writers together; 0: no limit */
	uint64_t seed;
} test_guest_config;

/* Makes the guest: every page written once (generation 1) before tracking starts. */
int test_guest_new(const test_guest_config *cfg, test_guest **ret, GError **error);
void test_guest_free(test_guest *g);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(test_guest, test_guest_free)

const tm_ram_layout *test_guest_layout(test_guest *g);
tm_tag_store *test_guest_tags(test_guest *g);
/* The dirty log's method ("uffd-wp-async" or "soft-dirty"), for the TAP output. */
const char *test_guest_dirty_method(test_guest *g);

/* Writer threads run (again) / stop; stop returns once none writes any more. */
void test_guest_start(test_guest *g);
void test_guest_stop(test_guest *g);

/*
 * ORs into bitmaps[b] (one bit per page of block b, as tm_sender_queue_bitmap() takes them) every
 * page written since the previous collection, data or tags. Returns the number of bits newly set
 * or -errno (*error).
 */
int64_t test_guest_collect(test_guest *g, uint64_t **bitmaps, GError **error);

/* Pages written since test_guest_new (not counting the initial fill). */
uint64_t test_guest_writes(test_guest *g);

/* The generation of block b's page p: how often it was written (1 after test_guest_new). */
uint32_t test_guest_generation(test_guest *g, unsigned b, uint64_t p);

/*
 * Whether other (same block names, lengths and page sizes) holds the same data and tags as the
 * guest; else false with the first difference ("block 'pc.ram' page 17: tags differ") in *ret_why.
 */
bool test_guest_same(test_guest *g, const tm_ram_layout *other, tm_tag_store *other_tags,
		     char **ret_why);
