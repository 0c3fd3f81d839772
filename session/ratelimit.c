/* SPDX-License-Identifier: MIT */
/*
 * The rate limit (QEMU's max-bandwidth; docs/design/live-engine.md 3.6): one token bucket for all
 * data channels together, asked before each DATA packet is submitted. The bucket holds 10 ms of
 * the rate; a packet larger than that still goes when the bucket is not in debt, and the next one
 * waits the debt out, so over any interval at most rate x time + burst + one packet leave; at the
 * switch to postcopy, also the packets the channels had packed then (precopy's last: the switch
 * waits for them), charged. Unlimited (the default) costs two relaxed loads per packet and no lock.
 */
#include <errno.h>

#include "session/converge.h"
#include "session/session-internal.h"

bool tm_ratelimit_active(const tm_ratelimit *rl)
{
	return __atomic_load_n(&rl->rate, __ATOMIC_RELAXED) &&
	       !__atomic_load_n(&rl->lifted, __ATOMIC_RELAXED);
}

/* Refills the bucket up to now_us at rate (not 0). */
static void refill(tm_ratelimit *rl, uint64_t rate, int64_t now_us)
{
	double cap = (double)rate * TM_RATELIMIT_BURST_US / 1e6;
	if (!rl->last_us) {
		rl->tokens = cap;
		rl->last_us = now_us;
	} else if (now_us > rl->last_us) {
		rl->tokens += (double)(now_us - rl->last_us) * (double)rate / 1e6;
		if (rl->tokens > cap)
			rl->tokens = cap;
		rl->last_us = now_us;
	}
}

int64_t tm_ratelimit_debit(tm_ratelimit *rl, int64_t now_us, uint64_t bytes)
{
	uint64_t rate = __atomic_load_n(&rl->rate, __ATOMIC_RELAXED);
	if (!rate || __atomic_load_n(&rl->lifted, __ATOMIC_RELAXED))
		return 0;
	refill(rl, rate, now_us);
	if (rl->tokens >= 0) {
		rl->tokens -= (double)bytes;
		return 0;
	}
	double wait = -rl->tokens * 1e6 / (double)rate;
	return wait < 1 ? 1 : (int64_t)wait + 1;
}

void tm_ratelimit_charge(tm_ratelimit *rl, int64_t now_us, uint64_t bytes)
{
	uint64_t rate = __atomic_load_n(&rl->rate, __ATOMIC_RELAXED);
	if (!rate || __atomic_load_n(&rl->lifted, __ATOMIC_RELAXED))
		return;
	refill(rl, rate, now_us);
	rl->tokens -= (double)bytes;
}

void tm_ratelimit_set(tm_ratelimit *rl, uint64_t bytes_per_sec)
{
	/* From unlimited: a full bucket, not a debt left from before (time unlimited paid it). */
	if (!__atomic_exchange_n(&rl->rate, bytes_per_sec, __ATOMIC_RELAXED))
		rl->last_us = 0;
}

void tm_ratelimit_lift(tm_ratelimit *rl)
{
	__atomic_store_n(&rl->lifted, true, __ATOMIC_RELAXED);
}

uint64_t tm_ratelimit_rate(const tm_ratelimit *rl)
{
	return __atomic_load_n(&rl->lifted, __ATOMIC_RELAXED)
		       ? 0
		       : __atomic_load_n(&rl->rate, __ATOMIC_RELAXED);
}

int tm_sender_throttle(tm_sender *s, send_chan *c, uint64_t bytes, GError **error)
{
	bool waited = false;

	if (!tm_ratelimit_active(&s->rl))
		return 0;
	g_mutex_lock(&s->lock);
	while (!s->quit) {
		int64_t now = tm_now_us();
		/*
		 * The switch to postcopy under way and this channel not switched yet: the packet is
		 * precopy's last (no packet opens after it, send-pages.c), which the switch and the
		 * paused guest wait for. It goes now, charged; the background waits out the debt.
		 */
		if (tm_send_pc_switching(c)) {
			tm_ratelimit_charge(&s->rl, now, bytes);
			break;
		}
		int64_t wait = tm_ratelimit_debit(&s->rl, now, bytes);
		if (!wait)
			break;
		if (c->ch.cork_len) {
			/* Nothing waits behind a corked message (channel.h), nor behind the bucket:
			 * the small messages held back (device state, RAM_END, DISCARD) go now. */
			g_mutex_unlock(&s->lock);
			int r = tm_chan_flush(&c->ch, error);
			if (r < 0)
				return r;
			g_mutex_lock(&s->lock);
			continue;
		}
		waited = true;
		/* c->wake: a new rate, the guest stopping, a failure or free wake us early. */
		g_cond_wait_until(&c->wake, &s->lock, now + wait);
	}
	g_mutex_unlock(&s->lock);
	return waited;
}

/* Wakes the workers waiting on the bucket, so a new rate counts for their next packet; a
 * broadcast: a caller that claimed a channel (tm_send_direct_*) may wait there instead, next to
 * the channel's parked worker, and a signal could wake only the worker. */
static void rewake(tm_sender *s)
{
	for (unsigned i = 0; i < s->nch; i++)
		g_cond_broadcast(&s->chans[i].wake);
}

int tm_sender_set_rate_limit(tm_sender *s, uint64_t bytes_per_sec)
{
	g_mutex_lock(&s->lock);
	bool ended = s->quit || s->t_end;
	if (!ended) {
		tm_ratelimit_set(&s->rl, bytes_per_sec);
		rewake(s);
	}
	g_mutex_unlock(&s->lock);
	return ended ? -EBADFD : 0;
}

void tm_sender_lift_rate_limit(tm_sender *s)
{
	g_mutex_lock(&s->lock);
	tm_ratelimit_lift(&s->rl);
	rewake(s);
	g_mutex_unlock(&s->lock);
}
