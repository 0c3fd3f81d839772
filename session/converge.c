/* SPDX-License-Identifier: MIT */
/*
 * The convergence estimator (docs/design/live-engine.md 3.6): what a round's figures say about
 * the link, and what the switchover would cost. Pure arithmetic on the figures the caller gives
 * (rounds.c feeds it under the sender's lock; tests feed it by hand).
 */
#include "session/converge.h"

#define EWMA_ALPHA 0.5

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
	uint64_t r;
	return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static void ewma(double *bw, double sample)
{
	*bw = *bw > 0 ? EWMA_ALPHA * sample + (1 - EWMA_ALPHA) * *bw : sample;
}

void tm_estimator_round(tm_estimator *e, const tm_round_stats *rs, uint64_t runs)
{
	/*
	 * Busy time, not wall time: a VMM that reads its dirty log for a second between rounds
	 * has not made the link slower. Small or short rounds are timing noise (a SYNC's round
	 * trip dominates them) and would drag the estimate towards zero.
	 */
	if (rs->wire_bytes >= TM_EST_MIN_BYTES && rs->busy_seconds * 1e6 >= TM_EST_MIN_US) {
		double sample = (double)rs->wire_bytes / rs->busy_seconds;
		bool first = e->bw_free == 0;
		ewma(rs->throttled ? &e->bw_throttled : &e->bw_free, sample);
		if (!rs->throttled) {
			bool scattered = runs && rs->pages_queued < (uint64_t)TM_EST_DENSE_RUN * runs;
			if (scattered)
				ewma(&e->bw_scattered, sample);
			e->dense_only = (first || e->dense_only) && runs && !scattered;
		}
	}
	e->have_last = true;
	e->last_pages_queued = rs->pages_queued;
	e->last_seconds = rs->seconds;
	/* A round of barriers alone says nothing about what a page costs. */
	if (rs->pages_sent)
		e->bytes_per_page = MAX(1, rs->wire_bytes / rs->pages_sent);
}

uint64_t tm_estimator_bandwidth(const tm_estimator *e, uint64_t override)
{
	if (override)
		return override;
	/* A throttled round measures the limit, not the link: only when nothing else is known
	 * (and then it is the conservative figure). */
	double bw = e->bw_free > 0 ? e->bw_free : e->bw_throttled;
	return bw >= (double)UINT64_MAX ? UINT64_MAX : (uint64_t)(bw + 0.5);
}

uint64_t tm_estimator_switch_bandwidth(const tm_estimator *e, uint64_t override)
{
	if (override)
		return override;
	double bw = e->bw_scattered;
	if (bw <= 0 && e->dense_only)
		bw = e->bw_free * TM_EST_SCATTER_PRIOR;
	if (bw <= 0)
		return tm_estimator_bandwidth(e, 0);
	return bw >= (double)UINT64_MAX ? UINT64_MAX : (uint64_t)(bw + 0.5);
}

uint64_t tm_estimator_bytes_per_page(const tm_estimator *e, uint32_t page_size)
{
	/* Zero pages cost a few bytes on the wire, tagged ones a little more: the last round's
	 * average is what the next round's pages will most likely cost. */
	return e->bytes_per_page ? e->bytes_per_page : page_size;
}

uint64_t tm_transfer_us(uint64_t bytes, uint64_t bw)
{
	if (!bytes)
		return 0;
	if (!bw)
		return UINT64_MAX;
	double us = (double)bytes * 1e6 / (double)bw;
	if (us >= (double)UINT64_MAX)
		return UINT64_MAX;
	uint64_t r = (uint64_t)us;
	return r < us ? r + 1 : r; /* rounded up: a downtime is never underestimated by rounding */
}

void tm_estimator_advise(const tm_estimator *e, const tm_advise_in *in, tm_switch_advice *ret)
{
	uint64_t bw = tm_estimator_switch_bandwidth(e, in->switchover_bw);
	uint64_t bpp = tm_estimator_bytes_per_page(e, in->page_size);
	tm_switch_advice a = {
		.bandwidth = tm_estimator_bandwidth(e, in->switchover_bw),
		.pending_bytes = sat_mul(in->pending_pages, bpp),
		.dirty_bytes = sat_mul(in->dirty_pages, bpp),
		.max_downtime_us = in->max_downtime_us,
	};
	uint64_t total = sat_add(sat_add(a.pending_bytes, a.dirty_bytes), in->state_bytes);
	uint64_t us = tm_transfer_us(total, bw);
	a.expected_downtime_us = us == UINT64_MAX ? us : sat_add(us, sat_mul(2, in->rtt_us));
	a.switch_now = a.expected_downtime_us <= a.max_downtime_us;
	/* The guest dirtied the last round's pages in the round's time: if the link moves more
	 * than that per second, the rounds shrink. */
	if (e->have_last && e->last_seconds > 0 && bw) {
		double rate = (double)e->last_pages_queued * (double)bpp / e->last_seconds;
		a.converging = rate < (double)bw;
	}
	*ret = a;
}
