/* SPDX-License-Identifier: MIT */
/*
 * The sender's channel worker: it takes the work its channel was handed (runs of pages, SYNC,
 * END) in order, packs pages and their tags into DATA packets through the codec's packet
 * builder, keeps up to ch.depth packets in flight, and stops at the receiver's first word.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>

#include "common/error-internal.h"
#include "ram/ram-internal.h"
#include "session/resume.h"
#include "session/delta.h"
#include "session/session-internal.h"
#include "tagmig/error.h"
#include "tagstore/tagstore-internal.h"

/* Pages packed and not sent: an open data packet, or an open DELTA packet (a data packet goes
 * before a run's first delta, so the run's last pages may all be in the DELTA one). */
static bool holds_pages(const send_chan *c)
{
	return c->pkt_open || tm_dsend_open(c);
}

int tm_send_flush(send_chan *c, GError **error)
{
	tm_packet *pkt = &c->pkts[c->cur];
	size_t len;

	int r = tm_dsend_flush(c, error); /* an open DELTA: pages in order (delta-send.c) */
	if (r < 0 || !c->pkt_open)
		return r;
	c->pkt_open = false;
	if (pkt->page_count == 0)
		return 0; /* opened, but every page went as a delta */
	unsigned n = tm_packet_finish(pkt, c->ch.tx_seq++, &len);
	struct iovec *iov = pkt->iov;
	/* ZDATA when it pays; r: the page data bytes on the wire */
	int64_t wire_data = tm_zsend_packet(c, pkt, &iov, &n, &len, error);
	if (wire_data < 0)
		return (int)wire_data;
	if ((r = tm_sender_throttle(c->s, c, len, error)) < 0)
		return r;
	if (r)
		c->cr.throttled = true;
	for (unsigned i = 1; i < n; i++) /* iov[0] is the header */
		tm_prefetch_run(iov[i].iov_base, iov[i].iov_len);
	r = tm_chan_submit(&c->ch, c->cur, iov, n, len, error);
	if (r < 0)
		return (int)r;
	/* Counted once submitted: it may be applied even if the channel breaks now (resume
	 * compares the receiver's position with these counts). */
	c->cur = (c->cur + 1) % c->ch.depth;
	c->pages_sent += pkt->page_count;
	c->packets_sent++;
	tm_count(&c->ch.st.pages, pkt->page_count);
	tm_count(&c->ch.st.packets, 1);
	tm_count(&c->ch.st.data_bytes, (uint64_t)wire_data);
	tm_count(&c->ch.st.tag_bytes, pkt->tag_len);
	/*
	 * The receiver never speaks between SYNCs unless it gives up: a readable channel means
	 * its ERROR (or its close) is here. One poll per packet lets the sender stop at once
	 * instead of streaming the rest of a round into a channel nobody applies.
	 */
	struct pollfd pfd = { .fd = c->ch.fd, .events = POLLIN };
	if (poll(&pfd, 1, 0) > 0 && (r = tm_dsend_readable(c, error)) < 0)
		return r; /* a DELTA_NACK is taken (delta-send.c), anything else ends here */
	return 0;
}

static int open_packet(send_chan *c, uint32_t block, uint32_t ps, GError **error)
{
	/* The slot's buffers may still be on their way out: wait until they are not. */
	int r = tm_chan_wait_slot(&c->ch, c->cur, error);
	if (r < 0)
		return r;
	tm_packet_begin(&c->pkts[c->cur], block, ps, c->s->hello.packet_size);
	c->pkt_open = true;
	return 0;
}

int tm_send_pages(send_chan *c, const work *w, GError **error)
{
	tm_sender *s = c->s;
	const tm_wire_block *b = &s->hello.blocks[w->block];
	const tm_ram_block *rb = tm_ram_layout_get(s->layout, w->block);
	uint32_t ps = b->page_size;
	uint64_t page = w->first, left = w->count;

	while (left) {
		tm_packet *pkt = &c->pkts[c->cur];
		if (c->pkt_open && (pkt->block != w->block || tm_packet_full(pkt) ||
				    !tm_packet_takes(pkt, (uint32_t)page))) {
			int r = tm_send_flush(c, error);
			if (r < 0)
				return r;
			pkt = &c->pkts[c->cur];
		}
		if (!c->pkt_open && tm_send_pc_switching(c)) {
			/* Postcopy: the rest of the run is for the background (postcopy-send.c). */
			tm_send_pc_unsent(c, w->block, page, left);
			return 1;
		}
		if (!c->pkt_open) {
			int r = open_packet(c, w->block, ps, error);
			if (r < 0)
				return r;
		}
		uint64_t n = MIN(left, (uint64_t)(pkt->max_pages - pkt->page_count));
		/* Map the pages in with one call rather than one fault per page in the zero scan
		 * (costly under virtualization). Before Linux 5.14: EINVAL, and pages fault as usual. */
		if (!s->no_populate && n * ps >= TM_POPULATE_MIN &&
		    madvise(rb->host + page * ps, n * ps, MADV_POPULATE_READ) < 0 && errno == EINVAL)
			__atomic_store_n(&s->no_populate, true, __ATOMIC_RELAXED);
		if (s->tags) {
			int r = tm_tag_store_get(s->tags, w->block, page * ps, n * ps, c->tagraw);
			if (r < 0)
				return tm_error_at(error, -r, c->ch.id, b->name, page * ps,
						   "reading tags failed: %s", g_strerror(-r));
			/* A tag is 4 bits: anything else cannot be reproduced on the receiver. */
			ssize_t bad = tm_tags_find_invalid(c->tagraw, n * ps / TM_TAG_GRANULE);
			if (bad >= 0)
				return tm_error_at(error, EINVAL, c->ch.id, b->name,
						   page * ps + (uint64_t)bad * TM_TAG_GRANULE,
						   "tag 0x%02x of that granule has its high nibble set",
						   c->tagraw[bad]);
		}
		for (uint64_t i = 0; i < n; i++) {
			const uint8_t *data = rb->host + (page + i) * ps;
			const uint8_t *tags = s->tags ? c->tagraw + i * (ps / TM_TAG_GRANULE) : NULL;
			tm_tag_enc enc;
			if (c->ds) {
				/* A delta when it pays (delta-send.c); else whole, in page order. */
				int r = tm_dsend_page(c, w->block, (uint32_t)(page + i), data, tags, error);
				if (r < 0)
					return r;
				if (r > 0)
					continue;
				if (!c->pkt_open && (r = open_packet(c, w->block, ps, error)) < 0)
					return r;
				pkt = &c->pkts[c->cur];
			}
			tm_page_kind kind = tm_packet_add(pkt, (uint32_t)(page + i), data,
							  tm_buffer_is_zero(data, ps), tags, &enc);
			tm_count(&c->ch.st.by_kind[kind], 1);
			tm_count(&c->ch.st.by_enc[enc], 1);
		}
		tm_send_pc_packed(c, w->block, page, n);
		page += n;
		left -= n;
	}
	return tm_dsend_resend(c, error); /* pages whose delta the receiver refused, whole */
}

/* The SYNC of item w (its id on the wire: w->count), its SYNC_ACK not awaited (sync_ack reads
 * it). */
static int sync_post(send_chan *c, const work *w, GError **error)
{
	int r = tm_send_flush(c, error);
	if (r >= 0)
		r = tm_chan_send_ctrl(&c->ch, TM_MSG_SYNC, w->count, 0, error);
	return r < 0 ? r : 0;
}

/* The SYNC_ACK of round's SYNC (id on the wire), checked; the channel's synced is round from
 * then on. */
static int sync_ack(send_chan *c, uint64_t round, uint64_t id, GError **error)
{
	uint64_t ack, applied;
	int r = tm_dsend_recv_ctrl(c, TM_MSG_SYNC_ACK, &ack, &applied, error); /* + DELTA_NACKs */
	if (r < 0)
		return r;
	if (ack != id || applied != c->pages_sent) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "channel %u: sync %" G_GUINT64_FORMAT " acknowledged as %" G_GUINT64_FORMAT
			    " with %" G_GUINT64_FORMAT " pages applied, %" G_GUINT64_FORMAT " sent",
			    c->ch.id, id, ack, applied, c->pages_sent);
		return -EPROTO;
	}
	/* Refused deltas: their pages whole, and the SYNC again (delta-send.c). */
	if ((r = tm_dsend_settle(c, round, id, error)) < 0)
		return r;
	tm_send_synced(c, round, id);
	return 0;
}

void tm_send_synced(send_chan *c, uint64_t round, uint64_t wire)
{
	g_mutex_lock(&c->s->lock);
	if (c->synced < round) { /* a SYNC asked again after a resume counts its round once */
		c->synced = round;
		c->synced_wire = wire;
		tm_rounds_chan_acked(c->s, c, round);
	}
	g_cond_broadcast(&c->s->cond);
	g_mutex_unlock(&c->s->lock);
}

static int send_sync(send_chan *c, const work *w, GError **error)
{
	int r = sync_post(c, w, error);
	return r < 0 ? r : sync_ack(c, w->first, w->count, error);
}

/* END (and the cork's content before it); protocol 1 also waits for its END_ACK here. */
static int end_post(send_chan *c, uint64_t *applied, GError **error)
{
	uint64_t unused;
	int r = tm_send_flush(c, error);
	*applied = c->pages_sent; /* the flushed packet's pages included */
	/* Protocol 2: END's three counts, END_ACK's two checked in state.c; TLS: our close_notify
	 * right behind END, so that the receiver's close waits for nothing. */
	if (r >= 0 && c->ch.version == TM_WIRE_VERSION_2)
		return tm_send_end_v2_post(c, error);
	if (r >= 0)
		r = tm_chan_send_ctrl(&c->ch, TM_MSG_END, c->pages_sent, c->packets_sent, error);
	if (r >= 0)
		r = tm_chan_flush(&c->ch, error);
	if (r >= 0)
		r = tm_tls_close_notify(c->ch.io, error);
	if (r >= 0)
		r = tm_chan_recv_ctrl(&c->ch, TM_MSG_END_ACK, applied, &unused, error);
	return r < 0 ? r : 0;
}

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
static unsigned test_end_ack_delay_ms;

void tm_send_test_end_ack_delay(unsigned ms)
{
	__atomic_store_n(&test_end_ack_delay_ms, ms, __ATOMIC_RELAXED);
}
#endif

/* After end_post: protocol 2's END_ACK, the counts checked, the close; the channel has ended. */
static int end_ack(send_chan *c, uint64_t applied, GError **error)
{
	int r = 0;

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	unsigned delay_ms = __atomic_load_n(&test_end_ack_delay_ms, __ATOMIC_RELAXED);
	if (delay_ms)
		g_usleep(delay_ms * 1000ul);
#endif
	if (c->ch.version == TM_WIRE_VERSION_2 && (r = tm_send_end_v2_ack(c, error)) < 0)
		return r;
	if (applied != c->pages_sent) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "channel %u: receiver applied %" G_GUINT64_FORMAT " pages, %" G_GUINT64_FORMAT
			    " were sent",
			    c->ch.id, applied, c->pages_sent);
		return -EPROTO;
	}
	if ((r = tm_tls_shutdown(c->ch.io, error)) < 0)
		return r;
	/* Every packet buffer released (zero-copy: the kernel's notification reaped), whichever
	 * thread ended the channel: nothing of guest RAM is still the kernel's when finish returns. */
	for (unsigned k = 0; k < c->ch.depth; k++)
		if ((r = tm_chan_wait_slot(&c->ch, k, error)) < 0)
			return r;
	g_mutex_lock(&c->s->lock);
	c->ended = true;
	g_cond_broadcast(&c->s->cond);
	g_mutex_unlock(&c->s->lock);
	return 0;
}

int tm_send_end(send_chan *c, GError **error)
{
	uint64_t applied;
	int r = end_post(c, &applied, error);

	return r < 0 ? r : end_ack(c, applied, error);
}

/* Who sends a batch, and what it leaves unanswered (send_batch). */
typedef enum {
	BATCH_WORKER,    /* the worker: every answer awaited in line */
	BATCH_END,       /* finish's caller: END's END_ACK (tm_send_direct_await reads it) */
	BATCH_SYNC,      /* sync's caller: the last item's SYNC_ACK, when it is a SYNC */
} batch_mode;

/*
 * Sends c->work from its first item on, corked, and empties it; a broken connection is resumed
 * and its replay sent. A SYNC left unanswered is c->sync_due. Returns 0 or -errno with *err.
 */
static int send_batch(send_chan *c, batch_mode mode, GError **err)
{
	bool defer_end = mode == BATCH_END; /* protocol 2 only */
	int r = 0;

	for (;;) {
		/* The small messages of one batch leave together (RAM_END, END_OF_STATE, END). */
		tm_chan_cork(&c->ch);
		for (guint i = 0; i < c->work->len && r >= 0; i++) {
			const work *w = &g_array_index(c->work, work, i);
			tm_send_prefetch(c, i + TM_PREFETCH_AHEAD);
			/* No refusal of a DELTA may come after RAM_END: the pages the barrier
			 * re-sends and its SYNCs go before it on the wire, so in the log too. */
			if (w->kind == WORK_RAM_END &&
			    ((r = tm_send_flush(c, err)) < 0 || (r = tm_dsend_barrier(c, err)) < 0)) {
				if (tm_resume_send(c, i, err) == 0) { /* RAM_END is in c->work still */
					r = 0;
					i = G_MAXUINT; /* ++ wraps to 0 */
				}
				continue;
			}
			tm_resume_log(c, w); /* kept until a SYNC_ACK covers it (resume.h) */
			if (w->kind == WORK_PAGES)
				r = tm_send_pages(c, w, err);
			else if (w->kind == WORK_SWITCH)
				r = 0; /* below */
			else if (w->kind == WORK_SYNC && mode == BATCH_SYNC && i + 1 == c->work->len) {
				c->sync_due = *w;
				r = sync_post(c, w, err);
			} else if (w->kind == WORK_SYNC)
				r = send_sync(c, w, err);
			else if (w->kind == WORK_END && defer_end)
				r = (r = tm_send_flush(c, err)) < 0 ? r : tm_send_end_v2_post(c, err);
			else if (w->kind == WORK_END)
				r = tm_send_end(c, err);
			else if (w->kind == WORK_RAM_END)
				r = tm_send_state_work(c, w, err); /* flushed and settled above */
			else if ((r = tm_send_flush(c, err)) >= 0)
				r = tm_send_state_work(c, w, err); /* STATE */
			if (r < 0 && tm_resume_send(c, i + 1, err) == 0) {
				/* Reconnected (a new, uncorked connection: what the old one held is
				 * in the replay): c->work starts with what to send again. */
				r = 0;
				i = G_MAXUINT; /* ++ wraps to 0 */
			}
			if (r >= 0 && tm_send_pc_switching(c)) {
				/* Postcopy from here on: the worker's rest is postcopy-send.c's. */
				r = tm_send_postcopy(c, i + 1, err);
				break;
			}
		}
		g_array_set_size(c->work, 0);
		if (r >= 0 && (r = tm_chan_uncork(&c->ch, err)) < 0 && tm_resume_send(c, 0, err) == 0) {
			r = 0; /* what the corked batch held is in the replay (c->work) */
			continue;
		}
		return r;
	}
}

/* The channel failed with err: the session fails, with the peer's words if it left some. */
static void chan_failed(send_chan *c, GError *err)
{
	bool from_peer = c->ch.peer_error;
	int code = err->code;

	g_mutex_lock(&c->s->lock);
	bool committed = c->s->control.committed;
	g_mutex_unlock(&c->s->lock);
	if (committed) { /* not the session's any more, nor to be said (tm_sender_fail_data) */
		g_error_free(err);
		return;
	}
	if (!from_peer && (code == EPIPE || code == ECONNRESET)) {
		/* The receiver went away: it may have said why before it closed. */
		GError *why = NULL;
		if (tm_chan_peer_error(&c->ch, c->s->hello.packet_size, "receiver failed",
				       &why) < 0) {
			g_clear_error(&err);
			err = why;
			from_peer = true;
		}
	} else if (!from_peer) {
		tm_chan_send_error(&c->ch, code, err->message);
	}
	tm_sender_fail_data(c->s, err, from_peer);
}

bool tm_send_direct_claim_locked(send_chan *c)
{
	/* Parked: the worker flushed its packet and sleeps; nothing it holds is unsent. Not one
	 * woken to resume its connection (check_link): the worker sends what comes, after that. */
	if (!c->parked || c->direct || c->check_link || c->pending->len || c->work->len ||
	    holds_pages(c))
		return false;
	c->direct = true;
	return true;
}

/* What was handed over to claimed channel c since the claim leaves, in mode; 0 or -errno, the
 * session failed. */
static int direct_post(send_chan *c, batch_mode mode)
{
	tm_sender *s = c->s;
	g_autoptr(GError) err = NULL;

	/* The worker sleeps (c->direct): its lists and packets are ours, as they were its own. */
	g_mutex_lock(&s->lock);
	GArray *t = c->work;
	c->work = c->pending;
	c->pending = t;
	g_mutex_unlock(&s->lock);
	int r = send_batch(c, mode, &err);
	if (r < 0)
		chan_failed(c, g_steal_pointer(&err));
	return r;
}

int tm_send_direct_post(send_chan *c)
{
	return direct_post(c, BATCH_END);
}

/*
 * Claimed channel c's answer is readable (or its connection broke): BATCH_END's END_ACK, the
 * channel ended, or BATCH_SYNC's SYNC_ACK (c->sync_due), read and checked; or the break resumed
 * as a worker would, the replay sent behind the new connection's RESUME_ACK with its END or
 * last SYNC again unanswered (what the receiver answered before the break, the replay itself
 * takes as answered). 0 (answered, or resumed and still awaited) or -errno, the session failed.
 * early: BATCH_END, woken for it while waiting for control's READY (tests count it).
 */
static int direct_answer(send_chan *c, batch_mode mode, bool early)
{
	g_autoptr(GError) err = NULL;

	if (early)
		__atomic_add_fetch(&c->s->early_end_acks, 1, __ATOMIC_RELAXED);
	int r = mode == BATCH_END ? end_ack(c, c->pages_sent, &err)
				  : sync_ack(c, c->sync_due.first, c->sync_due.count, &err);

	if (r < 0 && tm_resume_send(c, 0, &err) == 0)
		r = send_batch(c, mode, &err);
	if (r < 0)
		chan_failed(c, g_steal_pointer(&err));
	return r;
}

/*
 * The answers of every claimed channel direct[] names, read in whichever order they come, until
 * each is answered (BATCH_END: the channel ended; BATCH_SYNC: its synced is id) or the session
 * quit; BATCH_END also until control decided the end (tm_send_direct_await).
 */
static void direct_await(tm_sender *s, const bool *direct, batch_mode mode, uint64_t id)
{
	struct pollfd p[TM_MAX_CHANNELS + 3];
	unsigned idx[TM_MAX_CHANNELS];
	bool end = mode == BATCH_END;
	int64_t grace_end = 0;

	for (;;) {
		unsigned n = 0;
		g_mutex_lock(&s->lock);
		/* Decided (control-end.c): what is not answered now was given up on. */
		bool quit = s->quit, decided = end && s->control.committed;
		bool ctl_ended = end && s->control.ended;
		for (unsigned i = 0; i < s->nch; i++) {
			/* Answered: read, or a replay found it answered before the break. */
			const send_chan *c = &s->chans[i];
			if (direct[i] && (end ? !c->ended : c->synced < id))
				idx[n++] = i;
		}
		g_mutex_unlock(&s->lock);
		/* BATCH_END: control's READY and END_ACK too, while this thread reads them. */
		bool ctl_buffered = false, ctl_ready = false;
		int ctl_fd = end ? tm_control_direct_fd(&s->control, &ctl_buffered, &ctl_ready) : -1;
		if (quit || decided || (n == 0 && ctl_fd < 0))
			break; /* the caller reports the failure, or the decision */
		int64_t now = g_get_monotonic_time();
		/*
		 * BATCH_END while this thread reads control. The receiver sends READY and END_ACK
		 * there only after every data channel's END_ACK (design 2.4), so until READY comes a
		 * data channel wakes this thread only when its connection ends or breaks: one
		 * wake-up, where there was one per answer, inside the downtime and on the CPUs the
		 * receiver's threads need. After READY the data channels' END_ACKs are read (from
		 * their sockets' buffers, normally) before control's END_ACK, whose acknowledgement
		 * (CTL_POS, or the close) commits the receiver: a count that does not match fails the
		 * session first. Nothing but END_ACK follows READY on control. The data channels'
		 * END_ACKs are awaited so for TM_URGENT_END_GRACE_MS from READY (one lost where we
		 * cannot see it: free() stops the rest), as the control thread awaits them after
		 * END_ACK when it reads control (commit_end).
		 */
		bool ctl_first = end && ctl_fd >= 0 && !ctl_ready;
		if (ctl_ready && n > 0 && !grace_end)
			grace_end = now + (int64_t)TM_URGENT_END_GRACE_MS * 1000;
		bool hold = ctl_ready && n > 0 && now < grace_end;
		if (hold) {
			ctl_fd = -1, ctl_buffered = false;
		} else if (ctl_ready && n > 0) {
			/* Given up on: if the control thread decides (we hand END_ACK back, workers'
			 * channels still open), it does not wait for them a second time. */
			g_mutex_lock(&s->lock);
			s->end_claims_open = false;
			g_mutex_unlock(&s->lock);
		}
		/* What a TLS layer holds already is read without a poll. */
		bool took = ctl_buffered;
		if (ctl_buffered)
			tm_control_direct_read(&s->control);
		for (unsigned k = 0; k < n && !took && !ctl_first; k++) {
			send_chan *c = &s->chans[idx[k]];
			if (tm_io_readable(c->ch.io)) {
				took = true;
				if (direct_answer(c, mode, false) < 0)
					return;
			}
		}
		if (took)
			continue;
		/*
		 * Every channel at once: the receiver holds a channel's END_ACK until device state is
		 * complete, and the chunk it lacks may be on another channel whose connection broke;
		 * that break must be seen (and resumed) here, nobody else touches the channel. A
		 * CONN_LOST for one of them shuts it down (tm_resume_conn_lost), and so does a
		 * session that fails: readable too.
		 */
		short ev = ctl_first ? POLLRDHUP : POLLIN;
		for (unsigned k = 0; k < n; k++)
			p[k] = (struct pollfd){ .fd = s->chans[idx[k]].ch.fd, .events = ev };
		p[n] = (struct pollfd){ .fd = s->events.cancel_fd, .events = POLLIN };
		p[n + 1] = (struct pollfd){ .fd = end && !ctl_ended ? s->control.end_fd : -1,
					    .events = POLLIN };
		/* Its fd may be closed by a reconnect of the control thread meanwhile: end_fd or
		 * cancel_fd still tells how the end went. */
		p[n + 2] = (struct pollfd){ .fd = ctl_fd, .events = POLLIN };
		int wait = hold ? (int)((grace_end - now + 999) / 1000) : -1;
		if (poll(p, n + 3, wait) <= 0)
			continue;
		for (unsigned k = 0; k < n; k++)
			if (p[k].revents && direct_answer(&s->chans[idx[k]], mode, ctl_first) < 0)
				return;
		if (p[n + 2].revents)
			tm_control_direct_read(&s->control);
	}
}

void tm_send_direct_await(tm_sender *s, const bool *direct)
{
	direct_await(s, direct, BATCH_END, 0);
	/* The channels' part in the round is over, answered or not. */
	g_mutex_lock(&s->lock);
	for (unsigned i = 0; i < s->nch; i++)
		if (direct[i])
			tm_rounds_chan_idle(s, &s->chans[i]);
	s->end_claims_open = false; /* control's decision no longer waits for them */
	g_cond_broadcast(&s->cond);
	g_mutex_unlock(&s->lock);
}

int tm_send_direct_sync_post(send_chan *c)
{
	return direct_post(c, BATCH_SYNC);
}

void tm_send_direct_sync_await(tm_sender *s, const bool *direct, uint64_t id)
{
	direct_await(s, direct, BATCH_SYNC, id);
	tm_send_direct_release(s, direct);
}

void tm_send_direct_release(tm_sender *s, const bool *direct)
{
	/* The channels go back to their workers, idle, or woken for what came meanwhile. */
	g_mutex_lock(&s->lock);
	for (unsigned i = 0; i < s->nch; i++) {
		send_chan *c = &s->chans[i];
		if (!direct[i])
			continue;
		c->direct = false;
		if (c->pending->len || c->work->len) {
			g_cond_signal(&c->wake);
		} else {
			tm_rounds_chan_idle(s, c);
			tm_zsend_idle(c);
		}
	}
	g_mutex_unlock(&s->lock);
}

/*
 * A parked worker's look at its connection: the receiver says nothing between SYNCs but a
 * DELTA_NACK or its ERROR, so anything readable is one of those or the connection's end. 0 while
 * it is fine (a tick finds it again if not), else the error that resumes it (or ends the
 * session).
 */
static int check_link(send_chan *c, GError **error)
{
	/* DELTA_NACKs may come before the end: up to 16 frames, as tm_chan_peer_error() reads. */
	for (unsigned i = 0; i < 16; i++) {
		struct pollfd pfd = { .fd = c->ch.fd, .events = POLLIN | POLLRDHUP };
		if (poll(&pfd, 1, 0) <= 0)
			return 0;
		int r = tm_dsend_readable(c, error);
		if (r < 0)
			return r;
	}
	return 0;
}

gpointer tm_send_worker(gpointer data)
{
	send_chan *c = data;
	tm_sender *s = c->s;
	g_autoptr(GError) err = NULL;
	int r = 0;

	c->cr.wire_mark = __atomic_load_n(&c->ch.st.wire_bytes, __ATOMIC_RELAXED); /* not the HELLO */
	for (;;) {
		g_mutex_lock(&s->lock);
		/* A channel finish took (c->direct) is not ours any more: sleep until the end. */
		while (!s->quit && (c->direct || (c->pending->len == 0 && c->work->len == 0))) {
			if (!c->direct && holds_pages(c)) {
				/* Nothing more to pack for now: do not hold pages back. */
				g_mutex_unlock(&s->lock);
				r = tm_send_flush(c, &err);
				if (r < 0 && tm_resume_send(c, 0, &err) == 0)
					r = 0; /* reconnected: c->work has what to send again */
				g_mutex_lock(&s->lock);
				if (r < 0)
					break;
				continue;
			}
			if (c->check_link && !c->direct) {
				/* The control thread saw the connection end (resume-send.c); a
				 * channel finish or sync's caller holds sees it there itself. The
				 * flag stays up until the resume is done: an empty round meanwhile
				 * goes to the network (rounds.c). */
				g_mutex_unlock(&s->lock);
				unsigned delay = tm_resume_idle_wake_delay_ms();
				if (delay)
					g_usleep((gulong)delay * 1000);
				r = check_link(c, &err);
				if (r < 0 && tm_resume_send(c, 0, &err) == 0)
					r = 0; /* reconnected while idle */
				g_mutex_lock(&s->lock);
				c->check_link = false;
				if (r < 0)
					break;
				continue;
			}
			if (!c->direct) {
				tm_rounds_chan_idle(s, c);
				tm_zsend_idle(c);
			}
			c->parked = true;
			g_cond_wait(&c->wake, &s->lock);
			c->parked = false;
		}
		if (r < 0 || s->quit) {
			g_mutex_unlock(&s->lock);
			break;
		}
		if (c->work->len == 0) { /* else a reconnect's replay comes first */
			GArray *t = c->work;
			c->work = c->pending;
			c->pending = t;
		}
		g_mutex_unlock(&s->lock);

		if ((r = send_batch(c, BATCH_WORKER, &err)) < 0)
			break;
	}

	if (r < 0)
		chan_failed(c, g_steal_pointer(&err));
	g_mutex_lock(&s->lock);
	c->exited = true;
	g_cond_broadcast(&s->cond);
	g_mutex_unlock(&s->lock);
	return NULL;
}
