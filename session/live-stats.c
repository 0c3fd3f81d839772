/* SPDX-License-Identifier: MIT */
/*
 * tm_live_stats (docs/design/live-engine.md 1.6): the size-prefixed statistics of protocol 2.
 * Filled whole here, then copied as far as the caller's struct reaches, so it can grow.
 */
#include <errno.h>
#include <string.h>

#include "session/converge.h"
#include "session/resume.h"
#include "session/postcopy-recv.h"
#include "session/session-internal.h"

#define LIVE_STATS_MIN_SIZE 8u

static int copy_out(const tm_live_stats *full, tm_live_stats *ret)
{
	uint32_t n = MIN(ret->size, (uint32_t)sizeof(*full));
	memcpy((uint8_t *)ret + sizeof(ret->size), (const uint8_t *)full + sizeof(full->size),
	       n - sizeof(ret->size));
	ret->size = n;
	return 0;
}

int tm_sender_get_live_stats(tm_sender *s, tm_live_stats *ret)
{
	tm_live_stats st = { .size = sizeof(st) };
	tm_switch_advice adv;

	if (!ret || ret->size < LIVE_STATS_MIN_SIZE)
		return -EINVAL;
	st.wire_version = __atomic_load_n(&s->wire_done, __ATOMIC_ACQUIRE);
	/* pending bytes and their downtime: the advice for nothing dirty and no state */
	tm_rounds_advise(s, 0, 0, &adv);
	st.bandwidth = adv.bandwidth;
	st.pending_bytes = adv.pending_bytes;
	st.expected_downtime_us = adv.expected_downtime_us;
	st.max_downtime_us = adv.max_downtime_us;
	st.rate_limit = tm_ratelimit_rate(&s->rl);
	g_mutex_lock(&s->lock);
	st.phase = tm_events_phase(&s->events);
	st.rtt_us = __atomic_load_n(&s->control.rtt_us, __ATOMIC_RELAXED);
	st.keepalives = __atomic_load_n(&s->control.keepalives, __ATOMIC_RELAXED);
	st.rounds = s->rounds.complete;
	/* Protocol 1: the destination has everything when finish's END handshakes are done. */
	if (s->rounds.stopped_us && s->t_end && !s->failure.error)
		st.downtime_us = (uint64_t)(s->t_end - s->rounds.stopped_us);
	/* Protocol 2: READY is that moment (state.c). */
	uint64_t ready = __atomic_load_n(&s->st.downtime_us, __ATOMIC_ACQUIRE);
	if (ready)
		st.downtime_us = ready;
	st.state_sections = s->st.sections->len;
	st.state_bytes = s->st.total;
	g_mutex_unlock(&s->lock);
	tm_sender_pc_stats(s, &st);
	tm_resume_send_stats(s, &st);
	return copy_out(&st, ret);
}

int tm_receiver_get_live_stats(tm_receiver *r, tm_live_stats *ret)
{
	tm_live_stats st = { .size = sizeof(st) };

	if (!ret || ret->size < LIVE_STATS_MIN_SIZE)
		return -EINVAL;
	st.wire_version = __atomic_load_n(&r->wire_done, __ATOMIC_ACQUIRE);
	g_mutex_lock(&r->lock);
	/* Rounds: SYNCs answered on every channel, by id (a repeat counts once). The channels
	 * exist once the workers run (t_start is set under the lock then). */
	if (r->t_start) {
		st.rounds = UINT64_MAX;
		for (unsigned i = 0; i < r->nch; i++)
			st.rounds = MIN(st.rounds, __atomic_load_n(&r->chans[i].last_sync,
								   __ATOMIC_RELAXED));
	}
	st.phase = tm_events_phase(&r->events);
	st.rtt_us = __atomic_load_n(&r->control.rtt_us, __ATOMIC_RELAXED);
	st.keepalives = __atomic_load_n(&r->control.keepalives, __ATOMIC_RELAXED);
	st.state_sections = r->st.order.sections; /* handed to the VMM in order */
	st.state_bytes = r->st.order.total;
	tm_resume_recv_stats(r, &st); /* r->resume goes at free only */
	g_mutex_unlock(&r->lock);
	tm_pc_recv_stats(r, &st);
	return copy_out(&st, ret);
}
