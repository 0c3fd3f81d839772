/* SPDX-License-Identifier: MIT */
/*
 * Precopy rounds on the sender (docs/design/live-engine.md 1.2): round k ends at the k-th SYNC
 * barrier. The migration thread counts the pages it hands over and opens the round's record at
 * tm_sender_end_round(); each channel's worker adds what it sent when its SYNC is acknowledged,
 * and the last one closes the record and feeds the estimator (converge.c). Busy time is the time
 * at least one channel had work, kept by the hand-over (stage_commit) and the workers going idle.
 */
#include <errno.h>
#include <string.h>

#include "session/converge.h"
#include "session/session-internal.h"
#include "tagmig/error.h"

/* Busy time so far; s->lock held. */
static int64_t busy_now(const tm_sender *s, int64_t now)
{
	const tm_rounds *rd = &s->rounds;
	return rd->busy_us + (rd->active ? now - rd->busy_since : 0);
}

void tm_rounds_chan_busy(tm_sender *s, send_chan *c)
{
	if (c->cr.busy)
		return;
	c->cr.busy = true;
	if (s->rounds.active++ == 0)
		s->rounds.busy_since = tm_now_us();
}

void tm_rounds_chan_idle(tm_sender *s, send_chan *c)
{
	if (!c->cr.busy)
		return;
	c->cr.busy = false;
	if (--s->rounds.active == 0)
		s->rounds.busy_us += tm_now_us() - s->rounds.busy_since;
}

void tm_rounds_committed(tm_sender *s)
{
	uint64_t pages = 0, runs = 0;
	for (unsigned i = 0; i < s->nch; i++)
		for (guint k = 0; k < s->staging[i]->len; k++) {
			const work *w = &g_array_index(s->staging[i], work, k);
			if (w->kind == WORK_PAGES) {
				pages += w->count;
				runs++;
			}
		}
	s->rounds.queued_round += pages;
	s->rounds.runs_round += runs;
	__atomic_add_fetch(&s->rounds.queued_total, pages, __ATOMIC_RELAXED);
}

/* s->lock held: st's round is complete, now (the last channel's acknowledgement, or nothing to
 * send); its figures close and feed the estimator. */
static void round_complete(tm_sender *s, tm_round_stats *st, uint64_t runs)
{
	tm_rounds *rd = &s->rounds;
	int64_t now = tm_now_us(), busy = busy_now(s, now);

	st->seconds = (double)(now - (rd->done_us ? rd->done_us : s->t_start)) / 1e6;
	st->busy_seconds = (double)(busy - rd->busy_mark) / 1e6;
	rd->done_us = now;
	rd->busy_mark = busy;
	rd->complete = st->round;
	tm_estimator_round(&rd->est, st, runs);
	tm_events_raise(&s->events, TM_EVENT_ROUND);
}

void tm_rounds_chan_acked(tm_sender *s, send_chan *c, uint64_t round)
{
	tm_rounds *rd = &s->rounds;
	unsigned slot = round % TM_ROUND_HISTORY;
	tm_round_stats *st = &rd->ring[slot];
	uint64_t wire = __atomic_load_n(&c->ch.st.wire_bytes, __ATOMIC_RELAXED);

	/* What this channel did since its previous barrier belongs to this round. */
	uint64_t pages = c->pages_sent - c->cr.pages_mark, bytes = wire - c->cr.wire_mark;
	bool throttled = c->cr.throttled;
	c->cr.pages_mark = c->pages_sent;
	c->cr.wire_mark = wire;
	c->cr.throttled = false;
	if (st->round != round)
		return; /* cannot happen: end_round keeps at most TM_ROUND_HISTORY rounds open */
	st->pages_sent += pages;
	st->wire_bytes += bytes;
	st->throttled |= throttled;
	if (++rd->acks[slot] < s->nch)
		return;

	/* Every channel has it: rounds complete in order (each channel acknowledges in order). */
	round_complete(s, st, rd->runs[slot]); /* the last channel to acknowledge raises it */
}

/* s->lock held: a channel whose connection was seen to end and whose worker has not resumed it
 * yet (check_link; links_down counts it from the resume's start). */
static bool links_suspect(const tm_sender *s)
{
	for (unsigned i = 0; i < s->nch; i++)
		if (s->chans[i].check_link)
			return true;
	return false;
}

int tm_sender_end_round(tm_sender *s, uint64_t *ret_round, GError **error)
{
	/* The caller's misuse first: the same answer whatever the peer did meanwhile. */
	int r = tm_sender_check_ram_open(s, error);
	if (r < 0 || (r = tm_sender_check_open(s, error)) < 0)
		return r;
	uint64_t id = __atomic_load_n(&s->next_sync, __ATOMIC_RELAXED) + 1;
	g_mutex_lock(&s->lock);
	/* A record per open round: a VMM ending rounds far faster than the peer acknowledges
	 * them waits here rather than losing figures. */
	while (!s->quit && id - s->rounds.complete >= TM_ROUND_HISTORY)
		g_cond_wait(&s->cond, &s->lock);
	if (s->quit) {
		g_mutex_unlock(&s->lock);
		return tm_sender_check_open(s, error);
	}
	unsigned slot = id % TM_ROUND_HISTORY;
	s->rounds.ring[slot] = (tm_round_stats){ .round = id, .pages_queued = s->rounds.queued_round };
	s->rounds.acks[slot] = 0;
	s->rounds.runs[slot] = s->rounds.runs_round;
	/*
	 * Nothing handed over since the last round, which every channel acknowledged: every page
	 * queued before this barrier is at the destination already, so the round is complete now,
	 * without a SYNC (no network round trip: an idle guest's round costs nothing). Before
	 * postcopy only, and only pages can have been handed over since: RAM closes (no round
	 * after) before device state. Not while a connection is being resumed, or was seen to
	 * end and its worker has not resumed it yet (links_suspect): the destination may be
	 * gone, and a VMM told "complete" would go on to pause its guest for a switchover that
	 * cannot happen; the SYNC waits for the resume, or fails with it, in precopy.
	 */
	bool empty = s->rounds.queued_round == 0 && s->rounds.runs_round == 0 &&
		     s->rounds.complete == id - 1 && !s->pc.started &&
		     !__atomic_load_n(&s->links_down, __ATOMIC_ACQUIRE) && !links_suspect(s);
	/* Ended before it is complete: a thread woken by TM_EVENT_ROUND asks round_done(id). */
	__atomic_store_n(&s->next_sync, id, __ATOMIC_RELAXED);
	if (empty)
		round_complete(s, &s->rounds.ring[slot], 0);
	g_mutex_unlock(&s->lock);
	s->rounds.queued_round = 0;
	s->rounds.runs_round = 0;
	if (!empty) {
		uint64_t wire = __atomic_add_fetch(&s->wire_syncs, 1, __ATOMIC_RELAXED);
		tm_sender_stage_sync(s, id, wire);
	}
	if (ret_round)
		*ret_round = id;
	return 0;
}

int tm_sender_round_done(tm_sender *s, uint64_t round, GError **error)
{
	if (round == 0 || round > __atomic_load_n(&s->next_sync, __ATOMIC_RELAXED)) {
		g_set_error(error, TM_ERROR, EINVAL, "round %" G_GUINT64_FORMAT " was never ended",
			    round);
		return -EINVAL;
	}
	g_mutex_lock(&s->lock);
	int r = s->rounds.complete >= round ? 1 : 0;
	if (!r && s->quit) {
		int code = s->failure.error ? s->failure.error->code : EIO;
		if (error)
			*error = s->failure.error ? g_error_copy(s->failure.error)
						  : g_error_new(TM_ERROR, EIO, "migration aborted");
		r = -code;
	}
	g_mutex_unlock(&s->lock);
	return r;
}

int tm_sender_get_round(tm_sender *s, uint64_t round, tm_round_stats *ret)
{
	g_mutex_lock(&s->lock);
	const tm_round_stats *st = &s->rounds.ring[round % TM_ROUND_HISTORY];
	bool ok = round && st->round == round && s->rounds.complete >= round;
	if (ok)
		*ret = *st;
	g_mutex_unlock(&s->lock);
	return ok ? 0 : -ENOENT;
}

/* s->lock held (s->live). */
static uint64_t max_downtime(tm_sender *s)
{
	uint64_t v = __atomic_load_n(&s->rounds.max_downtime_us, __ATOMIC_RELAXED);
	return v ? v : s->live.max_downtime_us;
}

int tm_sender_set_max_downtime(tm_sender *s, uint64_t max_downtime_us)
{
	g_mutex_lock(&s->lock);
	bool ended = s->quit || s->t_end;
	g_mutex_unlock(&s->lock);
	if (ended)
		return -EBADFD;
	__atomic_store_n(&s->rounds.max_downtime_us, max_downtime_us, __ATOMIC_RELAXED);
	return 0;
}

/* Pages queued and not yet sent (sent read first: queued only grows past it). */
static uint64_t pending_pages(tm_sender *s)
{
	uint64_t sent = 0;
	for (unsigned i = 0; i < s->nch; i++)
		sent += __atomic_load_n(&s->chans[i].ch.st.pages, __ATOMIC_RELAXED);
	uint64_t queued = __atomic_load_n(&s->rounds.queued_total, __ATOMIC_RELAXED);
	return queued > sent ? queued - sent : 0;
}

void tm_rounds_advise(tm_sender *s, uint64_t dirty_pages, uint64_t state_bytes,
		      tm_switch_advice *ret)
{
	tm_advise_in in = {
		.pending_pages = pending_pages(s),
		.dirty_pages = dirty_pages,
		.state_bytes = state_bytes,
		.page_size = s->hello.blocks[0].page_size,
		.rtt_us = 0, /* the control thread's PING round trip, once it measures one */
	};
	g_mutex_lock(&s->lock);
	/* s->live may be replaced by set_live (under the lock) while a monitor asks */
	in.switchover_bw = s->live.switchover_bandwidth;
	in.max_downtime_us = max_downtime(s);
	tm_estimator_advise(&s->rounds.est, &in, ret);
	g_mutex_unlock(&s->lock);
}

int tm_sender_advise(tm_sender *s, uint64_t dirty_pages, uint64_t state_bytes,
		     tm_switch_advice *ret)
{
	if (!__atomic_load_n(&s->wire_done, __ATOMIC_ACQUIRE))
		return -EBADFD;
	tm_rounds_advise(s, dirty_pages, state_bytes, ret);
	return 0;
}

int tm_rounds_stop(tm_sender *s, bool lift, GError **error)
{
	int r = tm_sender_check_open(s, error);
	if (r < 0)
		return r;
	g_mutex_lock(&s->lock);
	bool twice = s->rounds.stopped_us != 0;
	if (!twice)
		s->rounds.stopped_us = tm_now_us();
	g_mutex_unlock(&s->lock);
	if (twice && lift) {
		g_set_error(error, TM_ERROR, EBADFD, "tm_sender_guest_stopped() called twice");
		return -EBADFD;
	}
	if (twice)
		return 0;
	/* What is left of precopy goes at full speed: it is downtime now. */
	if (lift)
		tm_sender_lift_rate_limit(s);
	tm_events_set_phase(&s->events, TM_PHASE_STOPPED);
	return 0;
}

int tm_sender_guest_stopped(tm_sender *s, GError **error)
{
	return tm_rounds_stop(s, true, error);
}
