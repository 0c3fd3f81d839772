/* SPDX-License-Identifier: MIT */
/*
 * Postcopy placement: the claim bitmap, the tag order by store kind, UFFDIO_COPY / ZEROPAGE /
 * WAKE through common/uffd.c, fault latency. See place.h for the contract.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>

#include "common/uffd-internal.h"
#include "session/histogram.h"
#include "session/place.h"
#include "tagmig/error.h"
#include "tagmig/wire.h"

/* Zero data for page-resident stores comes from here, in pieces of this size. */
#define ZERO_BUF_LEN (256u * 1024u)

typedef struct place_block {
	/* read-only after new */
	const char *name; /* the layout's */
	uint8_t *host;
	uint64_t npages;
	uint32_t page_size;
	/* shared by placers: one bit per page */
	_Atomic uint64_t *claimed;
	_Atomic uint64_t *present;
} place_block;

struct tm_placer {
	/* read-only after new */
	tm_tag_store *tags;
	int uffd;
	bool tags_first; /* side-array store */
	unsigned count;
	place_block *blocks;
	uint8_t *zero_buf; /* ZERO_BUF_LEN zero bytes, page-resident stores only */
	tm_place_atomic *atomic; /* place-atomic.c: NULL, placement by copy */
	tm_place_pause *pause;   /* place-pause.c: NULL, background copies never pause */
	char copy_reason[192];   /* why copy when atomic is NULL */
	/* statistics, relaxed atomics */
	_Atomic uint64_t placed, zeropage, duplicates, copied, nonatomic;
	tm_histogram faults;
};

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
static tm_place_hook test_hook;
static void *test_hook_opaque;

void tm_place_set_test_hook(tm_place_hook hook, void *opaque)
{
	test_hook_opaque = opaque;
	test_hook = hook;
}

#define HOOK(point, b, page, n)                                                             \
	do {                                                                                \
		if (test_hook)                                                              \
			test_hook(point, b, page, n, test_hook_opaque);                     \
	} while (0)
#else
#define HOOK(point, b, page, n) ((void)0)
#endif

int tm_placer_new(const tm_ram_layout *layout, tm_tag_store *tags, int uffd, tm_placer **ret,
		  GError **error)
{
	unsigned n = tm_ram_layout_block_count(layout);
	g_autofree place_block *blocks = g_new0(place_block, n);

	for (unsigned i = 0; i < n; i++) {
		tm_ram_block_info info;
		tm_ram_layout_block(layout, i, &info);
		if (!info.host) {
			for (unsigned j = 0; j < i; j++) {
				g_free(blocks[j].claimed);
				g_free(blocks[j].present);
			}
			g_set_error(error, TM_ERROR, EINVAL,
				    "placement: block %u '%s' has no host mapping", i, info.name);
			return -EINVAL;
		}
		place_block *b = &blocks[i];
		b->name = info.name;
		b->host = info.host;
		b->page_size = info.page_size;
		b->npages = info.length / info.page_size;
		size_t words = (size_t)((b->npages + 63) / 64);
		b->claimed = g_new0(_Atomic uint64_t, words);
		b->present = g_new0(_Atomic uint64_t, words);
	}
	tm_placer *p = g_new0(tm_placer, 1);
	const tm_tag_store_ops *ops = tags ? tm_tag_store_get_ops(tags) : NULL;
	p->tags = ops && ops->has_tags ? tags : NULL;
	/* Only stores known to keep tags beside the page may have them before the page exists. */
	p->tags_first = !p->tags || ops == &tm_tag_store_soft || ops == &tm_tag_store_none;
	if (!p->tags_first)
		p->zero_buf = g_malloc0(ZERO_BUF_LEN);
	g_strlcpy(p->copy_reason,
		  !p->tags ? "no tags: a page is complete once present"
		  : p->tags_first ? "the tag store sets tags before the page exists: copy is atomic"
				  : "atomic placement not probed: tags after the copy",
		  sizeof(p->copy_reason));
	p->uffd = uffd;
	p->count = n;
	p->blocks = g_steal_pointer(&blocks);
	*ret = p;
	return 0;
}

void tm_placer_free(tm_placer *p)
{
	if (!p)
		return;
	for (unsigned i = 0; i < p->count; i++) {
		g_free(p->blocks[i].claimed);
		g_free(p->blocks[i].present);
	}
	g_free(p->blocks);
	g_free(p->zero_buf);
	tm_place_atomic_free(p->atomic);
	tm_place_pause_free(p->pause);
	g_free(p);
}

void tm_placer_set_pause(tm_placer *p, int (*pause)(void *opaque), void (*resume)(void *opaque),
			 void *opaque)
{
	/* only where a copy exposes a page before its tags: a page-resident store with tags */
	if (pause && resume && p->tags && !p->tags_first && !p->pause)
		p->pause = tm_place_pause_new(pause, resume, opaque);
}

void tm_placer_probe_atomic(tm_placer *p, uint64_t uffd_features, unsigned threads)
{
	if (p->tags && !p->tags_first && !p->atomic)
		p->atomic = tm_place_atomic_new(p->tags, p->uffd, uffd_features, threads,
						p->copy_reason, sizeof(p->copy_reason));
}

bool tm_placer_tags_first(const tm_placer *p)
{
	return p->tags_first;
}

static void set_bits(_Atomic uint64_t *map, uint64_t first, uint64_t n, memory_order mo)
{
	for (uint64_t i = first; i < first + n; i++)
		atomic_fetch_or_explicit(&map[i / 64], 1ull << (i % 64), mo);
}

static bool test_bit(_Atomic uint64_t *map, uint64_t i)
{
	return atomic_load_explicit(&map[i / 64], memory_order_acquire) & (1ull << (i % 64));
}

void tm_placer_mark_present(tm_placer *p, unsigned block, uint64_t page, uint64_t npages)
{
	g_return_if_fail(block < p->count && page <= p->blocks[block].npages &&
			 npages <= p->blocks[block].npages - page);
	set_bits(p->blocks[block].claimed, page, npages, memory_order_relaxed);
	set_bits(p->blocks[block].present, page, npages, memory_order_release);
}

bool tm_placer_present(tm_placer *p, unsigned block, uint64_t page)
{
	g_return_val_if_fail(block < p->count && page < p->blocks[block].npages, false);
	return test_bit(p->blocks[block].present, page);
}

bool tm_placer_claimed(tm_placer *p, unsigned block, uint64_t page)
{
	g_return_val_if_fail(block < p->count && page < p->blocks[block].npages, false);
	return test_bit(p->blocks[block].claimed, page);
}

/* Sets the tags of pages [page, page + n) from tags (n pages' worth). */
static int set_tags(tm_placer *p, unsigned bi, uint64_t page, uint32_t n, const uint8_t *tags,
		    GError **error)
{
	const place_block *b = &p->blocks[bi];
	int r = tm_tag_store_set(p->tags, bi, page * b->page_size, (uint64_t)n * b->page_size, tags);
	if (r < 0)
		g_set_error(error, TM_ERROR, -r,
			    "place: block '%s', offset 0x%" PRIx64 ": setting tags of %u pages: %s%s",
			    b->name, page * b->page_size, n, g_strerror(-r),
			    p->tags_first ? "" : " (the range is present but not woken)");
	return r;
}

/* UFFDIO_COPY of zero data from the zero buffer, piece by piece (page-resident stores). */
static int copy_zero(tm_placer *p, uint8_t *dst, uint64_t len, uint64_t *ret_done,
		     GError **error)
{
	uint64_t done = 0;
	while (done < len) {
		uint64_t piece = MIN(len - done, ZERO_BUF_LEN), did = 0;
		int r = tm_uffd_copy(p->uffd, dst + done, p->zero_buf, piece, TM_UFFD_DONTWAKE, &did,
				     error);
		done += did;
		if (r < 0) {
			*ret_done = done;
			return r;
		}
	}
	*ret_done = done;
	return 0;
}

/* Wakes the threads blocked on pages [page, page + n) of block bi (their data and tags set). */
static int wake_sub(tm_placer *p, unsigned bi, uint64_t page, uint32_t n, GError **error)
{
	place_block *b = &p->blocks[bi];
	uint64_t off = page * b->page_size;
	int r = tm_uffd_wake(p->uffd, b->host + off, (uint64_t)n * b->page_size, error);
	if (r < 0) {
		g_prefix_error(error, "place: block '%s', offset 0x%" PRIx64 ": ", b->name, off);
		return r;
	}
	HOOK(TM_PLACE_WOKEN, bi, page, n);
	return 0;
}

/*
 * Places pages [page, page + n) of block bi, all claimed by this call, all zero or none, and
 * wakes their waiters unless !wake (the caller wakes them: after a pause's resume). exposed:
 * background pages a running vCPU may meet before their tags if placed by copy (statistics).
 */
static int place_sub(tm_placer *p, unsigned bi, uint64_t page, uint32_t n, const uint8_t *data,
		     bool zero, const uint8_t *tags, bool exposed, bool wake, GError **error)
{
	place_block *b = &p->blocks[bi];
	uint64_t off = page * b->page_size, len = (uint64_t)n * b->page_size, done = 0;
	uint8_t *dst = b->host + off;
	uint32_t moved = 0;
	int r;

	HOOK(TM_PLACE_CLAIMED, bi, page, n);
	/* Side-array store: the tags first; nobody can see the page before UFFDIO_COPY. */
	if (p->tags && tags && p->tags_first && (r = set_tags(p, bi, page, n, tags, error)) < 0)
		return r;
	if (!zero && !data)
		return -EINVAL; /* a caller's bug: place.h says data holds every non-zero page */
	/* Page-resident store: data and tags in one step where the store and kernel can. */
	if (p->atomic && (r = tm_place_atomic_sub(p->atomic, bi, b->host, page, n, b->page_size,
						  data, zero, tags, &moved, error)) < 0) {
		g_prefix_error(error, "place: block '%s', offset 0x%" PRIx64 ": ", b->name, off);
		return r;
	}
	/* The rest by copy (all of it unless atomic). */
	uint64_t cut = (uint64_t)moved * b->page_size;
	uint8_t *cdst = dst + cut;
	uint32_t cn = n - moved;
	const uint8_t *ctags = tags && moved ? tags + cut / TM_TAG_GRANULE : tags;
	if (!cn)
		r = 0;
	else if (!zero)
		r = tm_uffd_copy(p->uffd, cdst, data + cut, len - cut, TM_UFFD_DONTWAKE, &done, error);
	else if (p->tags_first)
		r = tm_uffd_zeropage(p->uffd, cdst, len - cut, TM_UFFD_DONTWAKE, &done, error);
	else
		r = copy_zero(p, cdst, len - cut, &done, error);
	done += cut;
	if (r < 0) {
		g_prefix_error(error, "place: block '%s', offset 0x%" PRIx64 ": ", b->name, off + done);
		if (r == -EEXIST && error && *error) {
			/* The page was claimed by this call: no placer wrote it. */
			char *m = g_strconcat((*error)->message,
					      ": a page no placer had placed was present; something "
					      "else wrote guest RAM",
					      NULL);
			g_free((*error)->message);
			(*error)->message = m;
		}
		return r;
	}
	if (zero && p->tags_first)
		atomic_fetch_add_explicit(&p->zeropage, n, memory_order_relaxed);
	if (cn) {
		atomic_fetch_add_explicit(&p->copied, cn, memory_order_relaxed);
		/* A running vCPU may meet these between the copy and the tags (the window). */
		if (exposed && p->tags && !p->tags_first)
			atomic_fetch_add_explicit(&p->nonatomic, cn, memory_order_relaxed);
	}
	HOOK(TM_PLACE_COPIED, bi, page, n);
	/* Page-resident store: the page is present now, so setting its tags cannot fault. */
	if (p->tags && ctags && cn && !p->tags_first &&
	    (r = set_tags(p, bi, page + moved, cn, ctags, error)) < 0)
		return r;
	set_bits(b->present, page, n, memory_order_release);
	atomic_fetch_add_explicit(&p->placed, n, memory_order_relaxed);
	HOOK(TM_PLACE_PRESENT, bi, page, n);
	/* Only now may a thread blocked on the range run: data and tags are both there. */
	return wake ? wake_sub(p, bi, page, n, error) : 0;
}

int tm_placer_place(tm_placer *p, const tm_place_run *run, uint32_t *ret_placed,
		    GError **error)
{
	g_return_val_if_fail(run->block < p->count, -EINVAL);
	place_block *b = &p->blocks[run->block];
	g_return_val_if_fail(run->first_page <= b->npages &&
			     run->npages <= b->npages - run->first_page, -EINVAL);
	size_t granules = b->page_size / TM_TAG_GRANULE;
	uint32_t placed = 0;

	/*
	 * Claim every page of the run first; a page someone else claimed is theirs to place (or
	 * was placed in precopy). This, not UFFDIO_COPY's EEXIST, keeps placed pages from being
	 * overwritten.
	 */
	g_autofree uint8_t *mine = g_malloc(run->npages);
	uint32_t dups = 0;
	for (uint32_t i = 0; i < run->npages; i++) {
		uint64_t pg = run->first_page + i;
		uint64_t bit = 1ull << (pg % 64);
		uint64_t old = atomic_fetch_or_explicit(&b->claimed[pg / 64], bit,
							memory_order_acq_rel);
		mine[i] = !(old & bit);
		dups += !mine[i];
	}
	if (dups)
		atomic_fetch_add_explicit(&p->duplicates, dups, memory_order_relaxed);

	/*
	 * A background run placed by copy into a page-resident store is present before its tags:
	 * with the VMM's pause hook the vCPUs stay out for the whole run, and its waiters are woken
	 * only after the resume (a woken vCPU could otherwise run into a page of the run that has
	 * no tags yet). Never for a run a vCPU waits on by request: its own page must not wait for
	 * a pause, which may be waiting for that very vCPU.
	 */
	bool background = !run->requested && run->t_fault_us == 0;
	bool pausing = background && p->pause && run->tags && dups < run->npages &&
		       !tm_place_atomic_on(p->atomic, NULL, 0);
	bool paused = pausing && tm_place_pause_begin(p->pause);
	g_autofree uint32_t *woken = paused ? g_new(uint32_t, 2 * (size_t)run->npages) : NULL;
	uint32_t nsubs = 0;
	int ret = 0;

	for (uint32_t i = 0; i < run->npages;) {
		if (!mine[i]) {
			i++;
			continue;
		}
		bool zero = run->zero && run->zero[i];
		uint32_t j = i + 1;
		while (j < run->npages && mine[j] && (run->zero && run->zero[j]) == zero)
			j++;
		ret = place_sub(p, run->block, run->first_page + i, j - i,
				run->data + (size_t)i * b->page_size, zero,
				run->tags ? run->tags + (size_t)i * granules : NULL,
				background && !paused, !paused, error);
		if (ret < 0)
			break;
		if (paused) {
			woken[2 * nsubs] = i;
			woken[2 * nsubs++ + 1] = j - i;
		}
		placed += j - i;
		i = j;
	}
	if (pausing)
		tm_place_pause_end(p->pause);
	/* After the resume: the sub-runs placed (also when a later one failed: they are whole). */
	for (uint32_t k = 0; k < nsubs; k++) {
		int w = wake_sub(p, run->block, run->first_page + woken[2 * k], woken[2 * k + 1],
				 ret < 0 ? NULL : error);
		if (w < 0 && ret == 0)
			ret = w;
	}
	if (ret < 0)
		return ret;
	/* The fault is closed by the call that placed pages of it, not by one that found them taken. */
	if (run->t_fault_us > 0 && placed > 0) {
		int64_t dt = g_get_monotonic_time() - run->t_fault_us;
		tm_histogram_record(&p->faults, dt > 0 ? (uint64_t)dt : 0);
	}
	if (ret_placed)
		*ret_placed = placed;
	return 0;
}

void tm_placer_record_latency(tm_placer *p, uint64_t us)
{
	tm_histogram_record(&p->faults, us);
}

void tm_placer_get_stats(tm_placer *p, tm_place_stats *ret)
{
	*ret = (tm_place_stats){
		.placed_pages = atomic_load_explicit(&p->placed, memory_order_relaxed),
		.zeropage_pages = atomic_load_explicit(&p->zeropage, memory_order_relaxed),
		.duplicate_pages = atomic_load_explicit(&p->duplicates, memory_order_relaxed),
		.faults = tm_histogram_total(&p->faults),
		.fault_p50_us = tm_histogram_percentile(&p->faults, 0.5),
		.fault_p99_us = tm_histogram_percentile(&p->faults, 0.99),
		.fault_max_us = tm_histogram_max(&p->faults),
		.copied_pages = atomic_load_explicit(&p->copied, memory_order_relaxed),
		.background_nonatomic_pages = atomic_load_explicit(&p->nonatomic,
								   memory_order_relaxed),
	};
	tm_place_pause_stats(p->pause, &ret->paused_batches, &ret->pause_us,
			     &ret->pause_failures);
	uint64_t zp;
	tm_place_atomic_counts(p->atomic, &ret->moved_pages, &zp);
	ret->zeropage_pages += zp;
	ret->move = tm_place_atomic_on(p->atomic, ret->reason, sizeof(ret->reason));
	if (!p->atomic)
		g_strlcpy(ret->reason, p->copy_reason, sizeof(ret->reason));
	else if (ret->move)
		g_strlcpy(ret->reason, "UFFDIO_MOVE of staged pages: data and tags in one step",
			  sizeof(ret->reason));
}
