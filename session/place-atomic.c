/* SPDX-License-Identifier: MIT */
/*
 * Atomic postcopy placement (docs/design/postcopy-move.md): where the tag store offers
 * place_atomic (kvm-mte: stage + UFFDIO_MOVE) and the userfaultfd has UFFD_FEATURE_MOVE, a run
 * becomes present with its data and tags in one step, so a vCPU that RUNS (not blocked in a
 * fault) can no longer meet a background page before its tags (the copy path's window: data,
 * tags, wake). Probed once at the registration barrier; the first "not here" (-EINVAL,
 * -EOPNOTSUPP) turns it off for the session with the reason recorded. place.c calls it for
 * each claimed sub-run of a page-resident store and copies what it did not place.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <string.h>

#include "common/uffd-internal.h"
#include "session/place.h"
#include "tagmig/error.h"
#include "tagmig/wire.h"

/* Bytes per place_atomic call: the staging area of one placer thread. */
#define SLOT_LEN (256u * 1024u)

struct tm_place_atomic {
	/* read-only after new */
	tm_tag_store *store;
	const tm_tag_store_ops *ops;
	int uffd;
	unsigned nslots;
	void **slots;
	uint8_t *zero_data; /* SLOT_LEN zero bytes: the data of ZERO_TAGGED pages */
	/* protected by lock: the free staging areas, the reason once turned off */
	GMutex lock;
	GCond freed;
	unsigned nfree;
	void **free;
	char reason[192];
	/* mode (release when turned off, after the reason) and counters, relaxed */
	_Atomic bool on;
	_Atomic uint64_t moved, zeropage;
};

tm_place_atomic *tm_place_atomic_new(tm_tag_store *store, int uffd, uint64_t uffd_features,
				     unsigned threads, char *reason, size_t reason_len)
{
	const tm_tag_store_ops *ops = store ? tm_tag_store_get_ops(store) : NULL;
	if (!ops || !ops->place_atomic) {
		g_snprintf(reason, reason_len, "tag store '%s' has no atomic placement",
			   ops ? ops->name : "(none)");
		return NULL;
	}
	if (!(uffd_features & TM_UFFD_FEATURE_MOVE)) {
		g_snprintf(reason, reason_len,
			   "the userfaultfd has no UFFD_FEATURE_MOVE (Linux 6.8+; a borrowed one: "
			   "tm_live_config.uffd_features)");
		return NULL;
	}
	tm_place_atomic *a = g_new0(tm_place_atomic, 1);
	g_mutex_init(&a->lock);
	g_cond_init(&a->freed);
	a->store = store;
	a->ops = ops;
	a->uffd = uffd;
	a->nslots = threads ? threads : 1;
	a->slots = g_new0(void *, a->nslots);
	a->free = g_new0(void *, a->nslots);
	for (unsigned i = 0; i < a->nslots; i++) {
		g_autoptr(GError) err = NULL;
		a->slots[i] = ops->staging_new(store, SLOT_LEN, &err);
		if (!a->slots[i]) {
			g_snprintf(reason, reason_len, "staging area %u: %s", i,
				   err ? err->message : "no memory");
			tm_place_atomic_free(a);
			return NULL;
		}
		a->free[a->nfree++] = a->slots[i];
	}
	a->zero_data = g_malloc0(SLOT_LEN);
	g_snprintf(reason, reason_len, "UFFDIO_MOVE of staged pages: data and tags in one step");
	atomic_store_explicit(&a->on, true, memory_order_release);
	return a;
}

void tm_place_atomic_free(tm_place_atomic *a)
{
	if (!a)
		return;
	for (unsigned i = 0; i < a->nslots; i++)
		if (a->slots[i])
			a->ops->staging_free(a->store, a->slots[i], SLOT_LEN);
	g_free(a->slots);
	g_free(a->free);
	g_free(a->zero_data);
	g_mutex_clear(&a->lock);
	g_cond_clear(&a->freed);
	g_free(a);
}

bool tm_place_atomic_on(tm_place_atomic *a, char *reason, size_t reason_len)
{
	if (!a)
		return false;
	if (atomic_load_explicit(&a->on, memory_order_acquire))
		return true;
	if (reason) {
		g_mutex_lock(&a->lock);
		g_strlcpy(reason, a->reason, reason_len);
		g_mutex_unlock(&a->lock);
	}
	return false;
}

void tm_place_atomic_counts(tm_place_atomic *a, uint64_t *ret_moved, uint64_t *ret_zeropage)
{
	*ret_moved = a ? atomic_load_explicit(&a->moved, memory_order_relaxed) : 0;
	*ret_zeropage = a ? atomic_load_explicit(&a->zeropage, memory_order_relaxed) : 0;
}

/* A staging area for this thread's call: one per placer thread, so waiting is the exception. */
static void *slot_take(tm_place_atomic *a)
{
	g_mutex_lock(&a->lock);
	while (!a->nfree)
		g_cond_wait(&a->freed, &a->lock);
	void *s = a->free[--a->nfree];
	g_mutex_unlock(&a->lock);
	return s;
}

static void slot_put(tm_place_atomic *a, void *s)
{
	g_mutex_lock(&a->lock);
	a->free[a->nfree++] = s;
	g_cond_signal(&a->freed);
	g_mutex_unlock(&a->lock);
}

static void turn_off(tm_place_atomic *a, const char *why)
{
	g_mutex_lock(&a->lock);
	if (atomic_load_explicit(&a->on, memory_order_relaxed)) {
		g_snprintf(a->reason, sizeof(a->reason), "UFFDIO_MOVE refused, copy from then on: %s",
			   why);
		atomic_store_explicit(&a->on, false, memory_order_release);
	}
	g_mutex_unlock(&a->lock);
}

static bool tags_zero(const uint8_t *tags, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (tags[i])
			return false;
	return true;
}

int tm_place_atomic_sub(tm_place_atomic *a, unsigned bi, uint8_t *host, uint64_t page,
			uint32_t n, uint32_t ps, const uint8_t *data, bool zero, const uint8_t *tags,
			uint32_t *ret_done, GError **error)
{
	const size_t granules = ps / TM_TAG_GRANULE;
	const uint32_t per_slot = SLOT_LEN / ps ? SLOT_LEN / ps : 1;
	uint32_t done = 0;
	int r = 0;

	*ret_done = 0;
	/* A page bigger than a staging area, or no tags to keep: copy (atomic enough without
	 * tags: a page present without them has the zero tags it should have). */
	if (!tm_place_atomic_on(a, NULL, 0) || !tags || ps > SLOT_LEN)
		return 0;
	while (done < n) {
		uint32_t k = MIN(n - done, per_slot);
		const uint8_t *t = tags + (size_t)done * granules;
		uint64_t off = (page + done) * ps;
		if (zero) {
			/* Zero data without tags: the zero page (zero tags too) is atomic already. */
			bool none = tags_zero(t, granules);
			k = 1;
			while (done + k < n && k < per_slot &&
			       tags_zero(t + (size_t)k * granules, granules) == none)
				k++;
			if (none) {
				uint64_t did = 0;
				r = tm_uffd_zeropage(a->uffd, host + off, (uint64_t)k * ps,
						     TM_UFFD_DONTWAKE, &did, error);
				if (r < 0)
					break;
				atomic_fetch_add_explicit(&a->zeropage, k, memory_order_relaxed);
				done += k;
				continue;
			}
		}
		void *s = slot_take(a);
		r = a->ops->place_atomic(a->store, a->uffd, bi, off, (uint64_t)k * ps,
					 zero ? a->zero_data : data + (size_t)done * ps, t, s, error);
		slot_put(a, s);
		if (r == -EINVAL || r == -EOPNOTSUPP) {
			turn_off(a, error && *error ? (*error)->message : g_strerror(-r));
			g_clear_error(error);
			r = 0;
			break; /* the contract: nothing of this call's range was placed */
		}
		if (r < 0)
			break;
		atomic_fetch_add_explicit(&a->moved, k, memory_order_relaxed);
		done += k;
	}
	*ret_done = done;
	return r;
}
