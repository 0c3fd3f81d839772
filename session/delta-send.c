/* SPDX-License-Identifier: MIT */
/*
 * The sender's side of delta encoding (delta.h): per channel the cache of the copies it sent
 * last (session/delta-cache.c, bounded by the VMM's delta_cache_bytes), the choice per page (a
 * delta when it takes at most TM_DELTA_MAX_SHARE of the page), DELTA packets that keep page order
 * with the channel's DATA, and the receiver's refusals (DELTA_NACK) heard between packets, before
 * a SYNC_ACK and at the barrier before RAM_END, their pages re-sent whole.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <time.h>

#include "codec/compress.h"
#include "codec/delta-wire.h"
#include "codec/delta.h"
#include "common/error-internal.h"
#include "session/compress.h"
#include "session/delta-cache.h"
#include "session/delta.h"
#include "session/resume.h"
#include "session/session-internal.h"
#include "tagmig/error.h"

typedef struct refused {
	uint32_t block, page;
} refused;

struct tm_dsend {
	/* read-only after setup */
	uint64_t cache_bytes;
	/* worker-local */
	tm_delta_cache *cache;
	tm_delta_pkt pkt;
	bool open;             /* pkt holds the packet being packed */
	uint8_t *copy;         /* a stable copy of the page being encoded (64 KiB) */
	uint8_t *nack_body;    /* a DELTA_NACK body as received */
	uint32_t *nack_pages;
	GArray *resend;        /* refused: re-sent whole at the next resend point */
	bool resending;
	bool resent;           /* pages re-sent since the last SYNC_ACK */
	uint64_t unanswered;   /* DELTAs on this connection since the last SYNC_ACK */
	uint32_t packet_size;
	tm_dpolicy pol;        /* deltas or whole pages, per window (delta-policy.c) */
	uint8_t *scratch;      /* a sample's delta encoded aside (64 KiB) */
	tm_zctx *z;            /* ZDELTA: NULL unless DELTA and ZSTD were agreed */
	uint8_t *zbuf;         /* the deltas' zstd frame */
	uint8_t zhead[TM_FRAME_HDR_LEN + TM_ZDELTA_HDR_LEN];
	struct iovec ziov[4];
	/* statistics: relaxed atomics (any thread reads) */
	uint64_t pages, page_bytes, wire_bytes, refused_pages;
	uint64_t windows_delta, windows_whole, skipped, zpackets;
	uint32_t reason;
};

uint32_t tm_dsend_offer(const tm_live_config *live, uint8_t wire)
{
	return wire == TM_WIRE_VERSION_2 && live->delta_cache_bytes && !live->postcopy
		       ? TM_FEATURE_DELTA
		       : 0;
}

tm_dsend *tm_dsend_new(uint64_t cache_bytes, uint32_t policy, bool zstd, uint32_t packet_size)
{
	tm_dsend *d = g_new0(tm_dsend, 1);

	/* packet_size was checked by the HELLO; out of memory for a context: plain DELTAs. */
	if (zstd && tm_zctx_new(packet_size, &d->z, NULL) == 0)
		d->zbuf = g_malloc(tm_zctx_bound(d->z));

	tm_dpolicy_init(&d->pol, policy);
	d->reason = d->pol.reason;
	d->scratch = g_malloc(65536);
	d->cache_bytes = cache_bytes;
	d->packet_size = packet_size;
	d->cache = tm_delta_cache_new(cache_bytes);
	tm_delta_pkt_init(&d->pkt, packet_size);
	d->copy = g_malloc(65536);
	d->nack_body = g_malloc(tm_delta_nack_max_body(packet_size));
	d->nack_pages = g_new(uint32_t, packet_size / 4096u);
	d->resend = g_array_new(FALSE, FALSE, sizeof(refused));
	return d;
}

void tm_dsend_free(tm_dsend *d)
{
	if (!d)
		return;
	tm_delta_cache_free(d->cache);
	tm_delta_pkt_fini(&d->pkt);
	g_free(d->copy);
	g_free(d->scratch);
	tm_zctx_free(d->z);
	g_free(d->zbuf);
	g_free(d->nack_body);
	g_free(d->nack_pages);
	g_array_unref(d->resend);
	g_free(d);
}

void tm_dsend_reconnected(send_chan *c)
{
	tm_dsend *d = c->ds;

	if (!d)
		return;
	/* What the receiver holds of the pages sent on the old connection is not known: the first
	 * copy of every page on the new one goes whole. Refused pages not yet re-sent stay. */
	tm_delta_cache_free(d->cache);
	d->cache = tm_delta_cache_new(d->cache_bytes);
	d->open = false;
	d->unanswered = 0;
}

bool tm_dsend_unanswered(const send_chan *c)
{
	return c->ds && c->ds->unanswered > 0;
}

bool tm_dsend_refused_waiting(const send_chan *c)
{
	return c->ds && c->ds->resend->len > 0;
}

/* A DELTA_NACK whose frame header f was read: its pages lose their copies and are re-sent. */
static int take_nack(send_chan *c, const tm_frame *f, GError **error)
{
	tm_dsend *d = c->ds;
	uint32_t block, count;
	int r = tm_chan_recv(&c->ch, d->nack_body, f->body_len, error);

	if (r < 0)
		return r;
	r = tm_delta_nack_decode(d->nack_body, f->body_len, &c->s->hello, c->ch.id,
				 d->nack_pages, &block, &count, error);
	if (r < 0) {
		tm_chan_prefix_error(&c->ch, error);
		return r;
	}
	if (d->unanswered == 0) {
		const tm_wire_block *b = &c->s->hello.blocks[block];
		return tm_error_at(error, EPROTO, c->ch.id, b->name,
				   (uint64_t)d->nack_pages[0] * b->page_size,
				   "DELTA_NACK answers no DELTA (%u page%s refused)", count,
				   count == 1 ? "" : "s");
	}
	d->unanswered--;
	for (uint32_t i = 0; i < count; i++) {
		tm_delta_cache_drop(d->cache, block, d->nack_pages[i]);
		refused p = { block, d->nack_pages[i] };
		g_array_append_val(d->resend, p);
	}
	tm_count(&d->refused_pages, count);
	return 0;
}

int tm_dsend_readable(send_chan *c, GError **error)
{
	tm_frame f;

	if (!c->ds)
		return tm_chan_recv_unsolicited(&c->ch, "receiver", error);
	g_autoptr(GError) local = NULL;
	int r = tm_chan_recv_frame(&c->ch, c->s->hello.packet_size, &f, &local);
	if (r == -ECONNRESET || r == -EPIPE) {
		g_set_error(error, TM_ERROR, ECONNRESET,
			    "%s: connection closed by the peer (the receiver)", c->ch.label);
		return -ECONNRESET;
	}
	if (r < 0) {
		g_propagate_error(error, g_steal_pointer(&local));
		return r;
	}
	if (f.type == TM_MSG_DELTA_NACK)
		return take_nack(c, &f, error);
	if (f.type == TM_MSG_ERROR)
		return tm_chan_recv_peer_error(&c->ch, &f, "receiver failed", error);
	g_set_error(error, TM_ERROR, EPROTO,
		    "%s: the receiver sent %s unsolicited: nothing this side sent asks for it",
		    c->ch.label, tm_msg_name(f.type));
	return -EPROTO;
}

/* Takes every DELTA_NACK already here, so the receiver never blocks on its answers. */
static int drain(send_chan *c, GError **error)
{
	struct pollfd pfd = { .fd = c->ch.fd, .events = POLLIN };

	while (poll(&pfd, 1, 0) > 0) {
		int r = tm_dsend_readable(c, error);
		if (r < 0)
			return r;
	}
	return 0;
}

int tm_dsend_recv_ctrl(send_chan *c, uint8_t type, uint64_t *ret_a, uint64_t *ret_b,
		       GError **error)
{
	if (!c->ds)
		return tm_chan_recv_ctrl(&c->ch, type, ret_a, ret_b, error);
	for (;;) {
		tm_frame f;
		uint8_t body[8 * TM_CTRL_MAX_FIELDS];
		uint64_t v[TM_CTRL_MAX_FIELDS];
		int r = tm_chan_recv_frame(&c->ch, c->s->hello.packet_size, &f, error);
		if (r < 0)
			return r;
		if (f.type == TM_MSG_DELTA_NACK) {
			if ((r = take_nack(c, &f, error)) < 0)
				return r;
			continue;
		}
		if (f.type == TM_MSG_ERROR)
			return tm_chan_recv_peer_error(&c->ch, &f, "receiver failed", error);
		if (f.type != type || f.body_len > sizeof(body)) {
			g_set_error(error, TM_ERROR, EPROTO, "%s: expected %s, received %s",
				    c->ch.label, tm_msg_name(type), tm_msg_name(f.type));
			return -EPROTO;
		}
		if ((r = tm_chan_recv(&c->ch, body, f.body_len, error)) < 0)
			return r;
		if ((r = tm_ctrl_decode_v(f.version, type, body, f.body_len, v, error)) < 0) {
			tm_chan_prefix_error(&c->ch, error);
			return r;
		}
		/* Every DELTA before it was answered (a DELTA_NACK comes right after its DELTA),
		 * every page re-sent before it applied. */
		c->ds->unanswered = 0;
		c->ds->resent = false;
		*ret_a = v[0];
		*ret_b = v[1];
		return 0;
	}
}

bool tm_dsend_open(const send_chan *c)
{
	return c->ds && c->ds->open;
}

int tm_dsend_flush(send_chan *c, GError **error)
{
	tm_dsend *d = c->ds;
	size_t len;

	if (!d || !d->open)
		return 0;
	d->open = false;
	if (d->pkt.page_count == 0)
		return 0;
	uint32_t seq = c->ch.tx_seq++;
	unsigned n = tm_delta_pkt_finish(&d->pkt, c->ch.version, seq, &len);
	struct iovec *iov = d->pkt.iov;
	uint64_t data_wire = d->pkt.data_len;
	if (d->z && d->pkt.data_len >= TM_ZDELTA_MIN) {
		/* ZDELTA when zstd makes the deltas shorter (wire-format.md). */
		g_autoptr(GError) why = NULL;
		ssize_t zlen = tm_zcompress_buf(d->z, TM_ZDELTA_LEVEL, d->pkt.data, d->pkt.data_len,
						d->zbuf, tm_zctx_bound(d->z), &why);
		if (zlen < 0) {
			const tm_wire_block *b = &c->s->hello.blocks[d->pkt.block];
			return tm_error_at(error, (int)-zlen, c->ch.id, b->name,
					   (uint64_t)tm_get32(d->pkt.head + TM_FRAME_HDR_LEN +
							      TM_DELTA_HDR_LEN) * b->page_size,
					   "compressing the deltas failed: %s", why->message);
		}
		if (zlen > 0) {
			n = tm_zdelta_finish(&d->pkt, d->zhead, c->ch.version, seq, d->zbuf,
					     (uint32_t)zlen, d->ziov, &len);
			iov = d->ziov;
			data_wire = TM_ZDELTA_HDR_LEN + (uint64_t)zlen;
			tm_count(&d->zpackets, 1);
		}
	}
	int r = tm_sender_throttle(c->s, c, len, error);
	if (r < 0)
		return r;
	if (r)
		c->cr.throttled = true;
	if ((r = tm_chan_send(&c->ch, iov, n, len, error)) < 0)
		return r;
	uint32_t pages = d->pkt.page_count;
	c->pages_sent += pages;
	c->packets_sent++;
	d->unanswered++;
	tm_count(&c->ch.st.pages, pages);
	tm_count(&c->ch.st.packets, 1);
	tm_count(&c->ch.st.data_bytes, data_wire);
	tm_count(&c->ch.st.tag_bytes, d->pkt.tag_len);
	tm_count(&d->pages, pages);
	tm_count(&d->page_bytes, (uint64_t)pages * d->pkt.page_size);
	tm_count(&d->wire_bytes, data_wire + (uint64_t)pages * TM_DELTA_ENTRY_LEN);
	tm_zsend_other(c, len); /* the link is measured while deltas go too */
	return drain(c, error);
}

static int64_t thread_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void tm_dsend_window(send_chan *c, const tm_zpolicy *z)
{
	tm_dsend *d = c->ds;

	if (!d || d->pol.always)
		return;
	bool use = tm_dpolicy_decide(&d->pol, z, tm_zsend_ratio(c));
	tm_count(use ? &d->windows_delta : &d->windows_whole, 1);
	if (!d->pol.keep && tm_delta_cache_count(d->cache) > 0) {
		/* Copies not kept from now on would be stale bases: none at all. */
		tm_delta_cache_free(d->cache);
		d->cache = tm_delta_cache_new(d->cache_bytes);
	}
	__atomic_store_n(&d->reason, d->pol.reason, __ATOMIC_RELAXED);
}

int tm_dsend_page(send_chan *c, uint32_t block, uint32_t page, const uint8_t *data,
		  const uint8_t *tags, GError **error)
{
	tm_dsend *d = c->ds;
	uint32_t ps = c->s->hello.blocks[block].page_size;
	/* At most 3/4 of the page, and 10% less than the page is expected to compress to. */
	double share = MIN((double)TM_DELTA_MAX_SHARE_NUM / TM_DELTA_MAX_SHARE_DEN,
			   TM_DELTA_VS_COMPRESS * tm_zsend_ratio(c));
	uint32_t max = (uint32_t)(share * ps);
	int r;

	if (!d->pol.keep) /* the CPU bounds this channel: no copies, no deltas (delta.h) */
		return tm_dsend_flush(c, error);

	/* A zero page goes as DATA's 8-byte ZERO entry, cheaper than any delta. */
	if (c->pc.switched || max <= TM_DELTA_ENTRY_LEN ||
	    !tm_delta_cache_get(d->cache, block, page, ps) || tm_buffer_is_zero(data, ps))
		goto whole;
	max -= TM_DELTA_ENTRY_LEN;
	bool sample = tm_dpolicy_sample_due(&d->pol);
	int64_t t0 = 0;
	if (!d->pol.use) {
		/* Whole by the policy's choice: only a sample's delta is made, aside. */
		if (sample) {
			t0 = thread_ns();
			memcpy(d->copy, data, ps);
			ssize_t n = tm_delta_encode(d->copy, tm_delta_cache_get(d->cache, block, page, ps),
						    ps, d->scratch, max);
			bool first = !d->pol.known;
			tm_dpolicy_sample(&d->pol, ps, n >= 0 ? (uint64_t)n + TM_DELTA_ENTRY_LEN : ps,
					  thread_ns() - t0);
			/* The first sample: the link was measured in the windows before (round
			 * 1), so the choice need not wait for the next window's end. */
			if (first)
				tm_dsend_window(c, tm_zsend_policy(c));
			sample = false;
		}
		if (!d->pol.use) {
			tm_count(&d->skipped, 1);
			goto whole;
		}
	}
	/* Page order: the DATA being packed leaves first. Hearing a refusal there may drop the
	 * copy, so it is looked up again after. */
	if (c->pkt_open && c->pkts[c->cur].page_count > 0 && (r = tm_send_flush(c, error)) < 0)
		return r;
	if (d->open && (d->pkt.block != block || tm_delta_pkt_full(&d->pkt) ||
			page <= d->pkt.last_page) &&
	    (r = tm_dsend_flush(c, error)) < 0)
		return r;
	if (sample)
		t0 = thread_ns(); /* copying and encoding, not the flushes above */
	memcpy(d->copy, data, ps); /* the guest may write it while we encode */
	for (int attempt = 0; attempt < 2; attempt++) {
		const uint8_t *base = tm_delta_cache_get(d->cache, block, page, ps);
		if (!base)
			goto whole;
		if (!d->open) {
			tm_delta_pkt_begin(&d->pkt, block, ps);
			d->open = true;
		}
		ssize_t n = tm_delta_pkt_add(&d->pkt, page, d->copy, base, tags, max);
		if (sample && n != -ENOBUFS)
			tm_dpolicy_sample(&d->pol, ps, n >= 0 ? (uint64_t)n + TM_DELTA_ENTRY_LEN : ps,
					  thread_ns() - t0);
		if (n >= 0) {
			if (d->pol.keep)
				tm_delta_cache_put(d->cache, block, page, d->copy, ps);
			return 1;
		}
		if (n != -ENOBUFS)
			goto whole; /* -ENOSPC: the delta would not pay */
		if ((r = tm_dsend_flush(c, error)) < 0)
			return r;
		if (sample)
			t0 = thread_ns(); /* the sample is the encoding, not the flush */
	}
whole:
	if ((r = tm_dsend_flush(c, error)) < 0)
		return r;
	/* A window that ended in a flush above may have stopped the copies (delta-policy.c): a
	 * copy kept now would go stale, as none is updated while they are stopped. */
	if (d->pol.keep)
		tm_delta_cache_put(d->cache, block, page, data, ps);
	return 0;
}

int tm_dsend_resend(send_chan *c, GError **error)
{
	tm_dsend *d = c->ds;
	int r = 0;

	if (!d || d->resending || d->resend->len == 0)
		return 0;
	d->resending = true; /* tm_send_pages ends with this hook */
	guint i;
	for (i = 0; i < d->resend->len && r >= 0; i++) {
		refused p = g_array_index(d->resend, refused, i);
		work w = { .kind = WORK_PAGES, .block = p.block, .first = p.page, .count = 1 };
		tm_resume_log(c, &w); /* in the wire's order, as any work */
		r = tm_send_pages(c, &w, error);
	}
	g_array_remove_range(d->resend, 0, i);
	d->resending = false;
	d->resent = true;
	return r < 0 ? r : 0;
}

int tm_dsend_settle(send_chan *c, uint64_t round, uint64_t id, GError **error)
{
	tm_dsend *d = c->ds;
	int r;

	if (!d)
		return 0;
	for (;;) {
		if ((r = tm_dsend_resend(c, error)) < 0 || (r = tm_send_flush(c, error)) < 0)
			return r;
		/* Settled: every DELTA answered and every re-sent page covered by a SYNC_ACK. */
		if (d->unanswered == 0 && d->resend->len == 0 && !d->resent)
			return 0;
		uint64_t ack, applied;
		/* Logged as any SYNC: a resume must not take the first copy's answer for this
		 * one's, which covers the pages re-sent after it (resume-send.c). */
		tm_resume_log(c, &(work){ .kind = WORK_SYNC, .first = round, .count = id });
		if ((r = tm_chan_send_ctrl(&c->ch, TM_MSG_SYNC, id, 0, error)) < 0 ||
		    (r = tm_dsend_recv_ctrl(c, TM_MSG_SYNC_ACK, &ack, &applied, error)) < 0)
			return r;
		if (ack != id || applied != c->pages_sent) {
			g_set_error(error, TM_ERROR, EPROTO,
				    "channel %u: sync %" G_GUINT64_FORMAT
				    " (repeated for refused deltas) acknowledged as %" G_GUINT64_FORMAT
				    " with %" G_GUINT64_FORMAT " pages applied, %" G_GUINT64_FORMAT
				    " sent",
				    c->ch.id, id, ack, applied, c->pages_sent);
			return -EPROTO;
		}
	}
}

int tm_dsend_barrier(send_chan *c, GError **error)
{
	/* The last SYNC acknowledged, by its id on the wire (empty rounds send none). */
	g_mutex_lock(&c->s->lock);
	uint64_t round = c->synced, id = c->synced_wire;
	g_mutex_unlock(&c->s->lock);
	return tm_dsend_settle(c, round, id, error);
}

int tm_sender_get_delta_stats(tm_sender *s, unsigned channel, tm_delta_stats *ret)
{
	if (ret->size < 8)
		return -EINVAL;
	if (!tm_sender_wire_version(s))
		return -EBADFD;
	if (channel >= s->nch)
		return -ERANGE;
	tm_delta_stats full = { .size = sizeof(full) };
	const tm_dsend *d = __atomic_load_n(&s->chans[channel].ds, __ATOMIC_ACQUIRE);
	if (d) {
		full.agreed = 1;
		full.cache_bytes = d->cache_bytes;
		full.pages = __atomic_load_n(&d->pages, __ATOMIC_RELAXED);
		full.page_bytes = __atomic_load_n(&d->page_bytes, __ATOMIC_RELAXED);
		full.wire_bytes = __atomic_load_n(&d->wire_bytes, __ATOMIC_RELAXED);
		full.refused = __atomic_load_n(&d->refused_pages, __ATOMIC_RELAXED);
		full.windows_delta = __atomic_load_n(&d->windows_delta, __ATOMIC_RELAXED);
		full.windows_whole = __atomic_load_n(&d->windows_whole, __ATOMIC_RELAXED);
		full.skipped = __atomic_load_n(&d->skipped, __ATOMIC_RELAXED);
		full.policy = d->pol.always ? TM_DELTA_ALWAYS : TM_DELTA_AUTO;
		full.reason = __atomic_load_n(&d->reason, __ATOMIC_RELAXED);
		full.zdelta_packets = __atomic_load_n(&d->zpackets, __ATOMIC_RELAXED);
	}
	uint32_t n = MIN(ret->size, (uint32_t)sizeof(full));
	memcpy(ret, &full, n);
	ret->size = n;
	return 0;
}
