/* SPDX-License-Identifier: MIT */
/*
 * vCPUs paused around background placement by copy (tm_live_config.vcpu_pause,
 * docs/design/postcopy-move.md "Pause the vCPUs"): where placement is by copy into a
 * page-resident tag store (no UFFDIO_MOVE, Linux 6.1), a background page is present before its
 * tags, and a vCPU that runs may meet it so. place.c asks this file to pause around such a batch.
 *
 * Data channels place batches at once; the VMM's pause stops every vCPU, so one pause can cover
 * them all: batches in flight are counted, the first calls the VMM's pause, the last to end calls
 * its resume. A pause or resume under way holds every other begin and end back until it returned,
 * so the VMM's calls alternate and never overlap, and no batch places before the pause that
 * covers it returned. A failed pause covers nothing: the batches of that round place unpaused,
 * and no resume follows for it.
 *
 * Architecture-independent: nothing here knows what a vCPU is.
 */
#include <stdatomic.h>

#include "session/place.h"

struct tm_place_pause {
	/* read-only after new */
	int (*pause)(void *opaque);
	void (*resume)(void *opaque);
	void *opaque;
	/* protected by lock */
	GMutex lock;
	GCond cond;
	unsigned inflight; /* batches begun and not ended */
	bool busy;         /* a pause or resume call is under way (the lock is not held in it) */
	bool ok;           /* the pause covering the batches in flight returned 0 */
	int64_t t_pause;   /* g_get_monotonic_time() when that pause was called */
	uint64_t batches, us, failures;
};

tm_place_pause *tm_place_pause_new(int (*pause)(void *opaque), void (*resume)(void *opaque),
				   void *opaque)
{
	tm_place_pause *pp = g_new0(tm_place_pause, 1);
	pp->pause = pause;
	pp->resume = resume;
	pp->opaque = opaque;
	g_mutex_init(&pp->lock);
	g_cond_init(&pp->cond);
	return pp;
}

void tm_place_pause_free(tm_place_pause *pp)
{
	if (!pp)
		return;
	g_mutex_clear(&pp->lock);
	g_cond_clear(&pp->cond);
	g_free(pp);
}

bool tm_place_pause_begin(tm_place_pause *pp)
{
	g_mutex_lock(&pp->lock);
	while (pp->busy)
		g_cond_wait(&pp->cond, &pp->lock);
	if (pp->inflight++ == 0) {
		/* the first batch: the VMM pauses, without the lock (it may take a while) */
		pp->busy = true;
		g_mutex_unlock(&pp->lock);
		int64_t t = g_get_monotonic_time();
		int r = pp->pause(pp->opaque);
		g_mutex_lock(&pp->lock);
		pp->busy = false;
		pp->ok = r == 0;
		pp->t_pause = t;
		pp->failures += r != 0;
		g_cond_broadcast(&pp->cond);
	}
	bool ok = pp->ok;
	pp->batches += ok;
	g_mutex_unlock(&pp->lock);
	return ok;
}

void tm_place_pause_end(tm_place_pause *pp)
{
	g_mutex_lock(&pp->lock);
	while (pp->busy)
		g_cond_wait(&pp->cond, &pp->lock);
	g_assert(pp->inflight > 0);
	if (--pp->inflight == 0 && pp->ok) {
		/* the last batch: the VMM resumes; a begin meanwhile waits and pauses again */
		pp->busy = true;
		g_mutex_unlock(&pp->lock);
		pp->resume(pp->opaque);
		int64_t t = g_get_monotonic_time();
		g_mutex_lock(&pp->lock);
		pp->busy = false;
		pp->ok = false;
		pp->us += (uint64_t)MAX(t - pp->t_pause, 0);
		g_cond_broadcast(&pp->cond);
	}
	g_mutex_unlock(&pp->lock);
}

void tm_place_pause_stats(tm_place_pause *pp, uint64_t *ret_batches, uint64_t *ret_us,
			  uint64_t *ret_failures)
{
	*ret_batches = *ret_us = *ret_failures = 0;
	if (!pp)
		return;
	g_mutex_lock(&pp->lock);
	*ret_batches = pp->batches;
	*ret_us = pp->us;
	*ret_failures = pp->failures;
	g_mutex_unlock(&pp->lock);
}
