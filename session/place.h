/* SPDX-License-Identifier: MIT */
/*
 * Postcopy placement (docs/design/live-engine.md 3.3): how a received run of pages becomes
 * present in guest RAM registered with userfaultfd (MISSING), with its tags, so that
 *
 *     a thread woken from a userfault on page p finds p's data and tags set,
 *
 * and a page is placed at most once, whoever delivers it (the urgent thread with a requested
 * page, a data worker with a background page). Not part of the API; the session's postcopy code
 * (steps 14-16) calls it, tests/unit/test-place.c drives it alone.
 *
 * One tm_placer per receiving session, created at the registration barrier. It owns per-block
 * bitmaps `claimed` (a placer has taken the page: the one-placer rule) and `present` (data and
 * tags are in place), and the fault-latency histogram. It borrows the layout (host mappings of
 * the registered blocks), the tag store and the userfaultfd, which must outlive it.
 *
 * Threads: tm_placer_place() from any number of placer threads at once, for any ranges
 * (overlapping ones too: the claim decides); never from the thread that reads the userfaultfd
 * (a page-resident tag store's set on a missing page would raise a userfault only that thread
 * could serve). tm_placer_present()/claimed() and the stats from any thread. mark_present before
 * any placer runs (the barrier), free after every placer returned.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "tagmig/ram.h"
#include "tagmig/tagstore.h"

typedef struct tm_placer tm_placer;

/*
 * Creates a placer for layout (every block must have a host mapping, registered with uffd for
 * MISSING faults before the first placement) with tag store tags (NULL: no tags) and uffd
 * (borrowed). The tag order is chosen from the store once: side-array stores ("soft", "none")
 * get a run's tags BEFORE UFFDIO_COPY (the page is not present yet, so nobody can read it without
 * faulting, and once it is, its tags are there); any other store is taken as page-resident
 * (kvm-mte: tags live with the page, so it must be present first) and gets them after
 * UFFDIO_COPY and before UFFDIO_WAKE. Returns 0 or -EINVAL (a block without host mapping).
 */
int tm_placer_new(const tm_ram_layout *layout, tm_tag_store *tags, int uffd, tm_placer **ret,
		  GError **error);
void tm_placer_free(tm_placer *p);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(tm_placer, tm_placer_free)

/* Whether the placer sets tags before UFFDIO_COPY (side-array store). */
bool tm_placer_tags_first(const tm_placer *p);

/*
 * At the registration barrier (3.3: claimed := present): pages [page, page + npages) of block are
 * already in RAM from precopy. They count as claimed and present: no placer will copy them. The
 * caller has checked the range (the codec did).
 */
void tm_placer_mark_present(tm_placer *p, unsigned block, uint64_t page, uint64_t npages);

/* Bits of one page (acquire: a true present means its data and tags are visible). Any thread. */
bool tm_placer_present(tm_placer *p, unsigned block, uint64_t page);
bool tm_placer_claimed(tm_placer *p, unsigned block, uint64_t page);

/* A run of received pages of one block, in the placer's bounce buffer, validated. */
typedef struct tm_place_run {
	unsigned block;
	uint64_t first_page;
	uint32_t npages;
	/* npages * page_size bytes; a ZERO page's slot is not read (NULL if every page is zero). */
	const uint8_t *data;
	/* npages flags, non-zero: the page's data is zero (ZERO / ZERO_TAGGED); NULL: none is. */
	const uint8_t *zero;
	/* npages * page_size / 16 bytes, one per granule; NULL: the session carries no tags. */
	const uint8_t *tags;
	/* g_get_monotonic_time() of the first fault waiting on the run; 0: none (background). */
	int64_t t_fault_us;
	/* Placed for a page request (urgent connection): not a background page (statistics). */
	bool requested;
} tm_place_run;

/*
 * Places run: for each page, claims it (atomic test-and-set; a page already claimed is skipped
 * and counted as a duplicate, splitting the run), then for each sub-run of pages this call
 * claimed, alike in being zero or not:
 *   side-array store: tags -> UFFDIO_COPY (UFFDIO_ZEROPAGE for zero data), both DONTWAKE;
 *   page-resident store: UFFDIO_COPY (zero data from a zero buffer: the shared zero page cannot
 *   hold tags) DONTWAKE -> tags;
 *   page-resident store in move mode (tm_placer_probe_atomic): the store's place_atomic (data
 *   and tags present in one step), zero pages without tags UFFDIO_ZEROPAGE; what it could not
 *   place (turned off by a refusal) as above;
 * then the present bits (release) and UFFDIO_WAKE. With run->t_fault_us the time from it to the
 * wake goes into the fault-latency histogram, once per call that placed at least one page.
 *
 * Returns 0 with *ret_placed (may be NULL) the pages this call placed, or -errno with *error
 * naming block and offset: -EEXIST when a page this call claimed was already present (something
 * other than a placer filled guest RAM: the session must fail), the errno of an ioctl or of the
 * store's set otherwise. After a failure the failed sub-run's pages stay claimed, not present and
 * not woken: the session fails (guest threads on them stay blocked, 3.4).
 */
int tm_placer_place(tm_placer *p, const tm_place_run *run, uint32_t *ret_placed,
		    GError **error);

/*
 * At the registration barrier, after tm_placer_new(): whether placement can be atomic for
 * running threads too (docs/design/postcopy-move.md): the tag store offers place_atomic and
 * uffd_features (what UFFDIO_API granted) has UFFD_FEATURE_MOVE. Then one staging area per
 * placer thread (threads: how many call tm_placer_place() at once) is allocated now, and every
 * sub-run with tags is placed through the store's place_atomic, zero pages without tags by
 * UFFDIO_ZEROPAGE; the first "not here" (-EINVAL, -EOPNOTSUPP) turns it off for the session.
 * Otherwise, or without this call, placement is by copy; the stats say which and why. Call
 * once, before any placer runs.
 */
void tm_placer_probe_atomic(tm_placer *p, uint64_t uffd_features, unsigned threads);

/*
 * At the registration barrier, optional: tm_live_config.vcpu_pause / vcpu_resume (opaque) around
 * background placement by copy into a page-resident store (docs/design/postcopy-move.md): a
 * tm_placer_place() of a background run (neither requested nor with t_fault_us) that places by
 * copy calls pause first (place-pause.c: counted across placer threads), sets data and tags,
 * calls resume, and only then wakes the run's waiters. Runs placed by move, requested runs, and
 * side-array or tag-less placers never pause. Call once, before any placer runs.
 */
void tm_placer_set_pause(tm_placer *p, int (*pause)(void *opaque), void (*resume)(void *opaque),
			 void *opaque);

/* Records a fault latency closed elsewhere (e.g. by the fault thread's present -> WAKE path). */
void tm_placer_record_latency(tm_placer *p, uint64_t us);

typedef struct tm_place_stats {
	uint64_t placed_pages;    /* pages made present by placers */
	uint64_t zeropage_pages;  /* of those, through UFFDIO_ZEROPAGE */
	uint64_t duplicate_pages; /* pages skipped because another placer had claimed them */
	uint64_t faults;          /* latency samples */
	uint64_t fault_p50_us, fault_p99_us, fault_max_us;
	bool move;                /* placing by place_atomic (UFFDIO_MOVE) now; else by copy */
	char reason[192];         /* why that mode */
	uint64_t moved_pages;     /* placed by place_atomic */
	uint64_t copied_pages;    /* placed by UFFDIO_COPY (or ZEROPAGE in copy mode) */
	uint64_t background_nonatomic_pages; /* of those, background pages of a page-resident
	                                      * store: present before their tags while vCPUs run */
	uint64_t paused_batches;  /* background runs placed by copy with the vCPUs paused */
	uint64_t pause_us;        /* pause called -> resume returned, summed */
	uint64_t pause_failures;  /* pause calls that failed (their runs placed unpaused) */
} tm_place_stats;

/* A snapshot of the counters. Any thread. */
void tm_placer_get_stats(tm_placer *p, tm_place_stats *ret);

/*
 * Test hooks (-Dtest_hooks=true only): a function called at named points of every placement, to
 * delay or observe; it may not call the placer. Global, set before placers run; NULL removes it.
 */
typedef enum tm_place_point {
	TM_PLACE_CLAIMED,   /* a sub-run is claimed, nothing done yet */
	TM_PLACE_COPIED,    /* UFFDIO_COPY/ZEROPAGE (or place_atomic) done (side-array store or
	                     * move mode: tags already set) */
	TM_PLACE_PRESENT,   /* tags set and present bits set, not woken yet */
	TM_PLACE_WOKEN,     /* UFFDIO_WAKE done */
} tm_place_point;

/* place-atomic.c, for place.c: the atomic mode's state; NULL when placement is by copy. */
typedef struct tm_place_atomic tm_place_atomic;
tm_place_atomic *tm_place_atomic_new(tm_tag_store *store, int uffd, uint64_t uffd_features,
				     unsigned threads, char *reason, size_t reason_len);
void tm_place_atomic_free(tm_place_atomic *a);
/* true while on; false (NULL too) with the reason it was turned off copied to reason. */
bool tm_place_atomic_on(tm_place_atomic *a, char *reason, size_t reason_len);
void tm_place_atomic_counts(tm_place_atomic *a, uint64_t *ret_moved, uint64_t *ret_zeropage);
/*
 * Places the first *ret_done pages of the claimed sub-run [page, page + n) of block bi (host:
 * the block's mapping) atomically and returns 0; the caller copies the rest (all of it when the
 * mode is off, the run has no tags, or a "not here" just turned it off). -errno with *error
 * (no block name) when a placement failed: the session fails.
 */
int tm_place_atomic_sub(tm_place_atomic *a, unsigned bi, uint8_t *host, uint64_t page,
			uint32_t n, uint32_t ps, const uint8_t *data, bool zero, const uint8_t *tags,
			uint32_t *ret_done, GError **error);

/* place-pause.c, for place.c: the refcounted pause around background batches. */
typedef struct tm_place_pause tm_place_pause;
tm_place_pause *tm_place_pause_new(int (*pause)(void *opaque), void (*resume)(void *opaque),
				   void *opaque);
void tm_place_pause_free(tm_place_pause *pp);
/* A batch begins: the first of those in flight calls pause (others wait until it returned).
 * true: the vCPUs are paused for it; false: that pause failed, place it unpaused. Then always
 * tm_place_pause_end(). Any placer thread. */
bool tm_place_pause_begin(tm_place_pause *pp);
/* The batch ended (its data and tags set, its waiters not woken yet): the last of those in
 * flight calls resume, if its pause succeeded. */
void tm_place_pause_end(tm_place_pause *pp);
void tm_place_pause_stats(tm_place_pause *pp, uint64_t *ret_batches, uint64_t *ret_us,
			  uint64_t *ret_failures);

typedef void (*tm_place_hook)(tm_place_point point, unsigned block, uint64_t page,
			      uint32_t npages, void *opaque);

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
void tm_place_set_test_hook(tm_place_hook hook, void *opaque);
#endif
