/* SPDX-License-Identifier: MIT */
/*
 * What the live-migration tests (test-live-precopy.c, test-live-postcopy.c) share on top of the
 * session fixture: the same-backend rule, the running test guest made or skipped, its blocks and
 * dirty bitmaps, and the queueing of a dirty log.
 */
#pragma once

#include "guest.h"
#include "session-fixture.h"

G_BEGIN_DECLS

/* The live tests run end to end on same-backend pairs only; false: skipped, saying that `what`
 * (e.g. "precopy") runs there. */
bool live_pair_runs(const char *what);

/* The running test guest of gc in *ret; false: skipped (no dirty-page tracking in this kernel),
 * any other failure fails the test. */
bool live_guest_new(const test_guest_config *gc, test_guest **ret);

/* The guest's blocks (at most LIVE_BLOCKS) as guest_init() specs; with bm, npages and bm[] too:
 * a bitmap per block with every page set (the first round). Returns the block count. */
#define LIVE_BLOCKS 2u
unsigned live_guest_blocks(test_guest *g, block_spec *spec, uint64_t *npages, uint64_t **bm);

/* Set bits of the n bitmaps (npages[b] pages each). */
uint64_t live_dirty_count(uint64_t **bm, const uint64_t *npages, unsigned n);

/* Queues every set bit on s and clears the bitmaps (the pages now belong to the session). */
void live_queue_dirty(tm_sender *s, uint64_t **bm, const uint64_t *npages, unsigned n);

G_END_DECLS
