/* SPDX-License-Identifier: MIT */
/*
 * Statistics of a session: each channel's worker counts into its own tm_counters (relaxed
 * atomics); these functions sum them for the caller, at any time, from any thread.
 */
#include <string.h>

#include "session/session-internal.h"

void tm_counters_sum(const tm_counters *c, tm_stats *ret)
{
	ret->pages += __atomic_load_n(&c->pages, __ATOMIC_RELAXED);
	for (int k = 0; k < TM_PAGE_KIND_COUNT; k++)
		ret->pages_by_kind[k] += __atomic_load_n(&c->by_kind[k], __ATOMIC_RELAXED);
	for (int k = 0; k < TM_TAG_ENC_COUNT; k++)
		ret->pages_by_tag_enc[k] += __atomic_load_n(&c->by_enc[k], __ATOMIC_RELAXED);
	ret->packets += __atomic_load_n(&c->packets, __ATOMIC_RELAXED);
	ret->wire_bytes += __atomic_load_n(&c->wire_bytes, __ATOMIC_RELAXED);
	ret->data_bytes += __atomic_load_n(&c->data_bytes, __ATOMIC_RELAXED);
	ret->tag_bytes += __atomic_load_n(&c->tag_bytes, __ATOMIC_RELAXED);
}

void tm_counters_load(tm_counters *dst, const tm_counters *src)
{
	dst->pages = __atomic_load_n(&src->pages, __ATOMIC_RELAXED);
	for (int k = 0; k < TM_PAGE_KIND_COUNT; k++)
		dst->by_kind[k] = __atomic_load_n(&src->by_kind[k], __ATOMIC_RELAXED);
	for (int k = 0; k < TM_TAG_ENC_COUNT; k++)
		dst->by_enc[k] = __atomic_load_n(&src->by_enc[k], __ATOMIC_RELAXED);
	dst->packets = __atomic_load_n(&src->packets, __ATOMIC_RELAXED);
	dst->wire_bytes = __atomic_load_n(&src->wire_bytes, __ATOMIC_RELAXED);
	dst->data_bytes = __atomic_load_n(&src->data_bytes, __ATOMIC_RELAXED);
	dst->tag_bytes = __atomic_load_n(&src->tag_bytes, __ATOMIC_RELAXED);
}

void tm_sender_get_stats(tm_sender *s, tm_stats *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->syncs = __atomic_load_n(&s->next_sync, __ATOMIC_RELAXED);
	ret->channels = s->nch;
	g_strlcpy(ret->io_backend, s->io->name, sizeof(ret->io_backend));
	g_strlcpy(ret->io_note, s->io_note ? s->io_note : "", sizeof(ret->io_note));
	g_mutex_lock(&s->lock);
	/*
	 * Channels, their I/O handles and the TLS state are complete once the session started
	 * (t_start is set under the lock after attach); before, attach may still be opening,
	 * wrapping or (on failure) closing the handles, so nothing of them is read. After it, only
	 * tm_sender_free() closes them, which no caller runs beside this.
	 */
	if (s->t_start) {
		for (unsigned i = 0; i < s->nch; i++)
			tm_chan_sum(&s->chans[i].ch, ret);
		tm_tls_fill_stats(s->tls, s->chans[0].ch.io, ret);
		/* every connection counts in wire_bytes, the control connection too (up to its
		 * end, CTL_POS included: final once finish returned, though the close may still
		 * be sending it); the io_* counters stay those of the data channels' backend */
		tm_counters_sum(s->control.ended ? &s->control.at_end : &s->ctl.st, ret);
		ret->seconds = (double)((s->t_end ? s->t_end : tm_now_us()) - s->t_start) / 1e6;
	}
	g_mutex_unlock(&s->lock);
}

void tm_receiver_get_stats(tm_receiver *r, tm_stats *ret)
{
	memset(ret, 0, sizeof(*ret));
	g_strlcpy(ret->io_backend, r->io->name, sizeof(ret->io_backend));
	g_strlcpy(ret->io_note, r->io_note ? r->io_note : "", sizeof(ret->io_note));
	g_mutex_lock(&r->lock);
	/* The channels are complete once the workers run: t_start is set under the lock then;
	 * before, accept may still be building them. */
	if (r->t_start) {
		for (unsigned i = 0; i < r->nch; i++)
			tm_chan_sum(&r->chans[i].ch, ret);
		tm_counters_sum(&r->ctl.st, ret); /* wire bytes; io_* are the data channels' */
		ret->channels = r->nch;
		tm_tls_fill_stats(r->tls, r->chans[0].ch.io, ret);
		ret->seconds = (double)((r->t_end ? r->t_end : tm_now_us()) - r->t_start) / 1e6;
	}
	g_mutex_unlock(&r->lock);
}
