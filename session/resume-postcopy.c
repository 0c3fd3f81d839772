/* SPDX-License-Identifier: MIT */
/*
 * Resume after the switch to postcopy (resume-postcopy.h; docs/wire-format.md, "Resume in
 * postcopy"). QEMU's postcopy recovery is the model, made automatic.
 *
 * A data channel. Its stream after the switch is: the precopy pages sent before it, DISCARD,
 * RAM_END(POSTCOPY), then background pages, STATE chunks and END. At the committed switch the
 * worker keeps the pages of its resume log (since the last acknowledged SYNC), the DISCARD
 * messages and its counts, and from then on logs every run of background pages, STATE chunk
 * and END before it sends it. A reconnect is resume-send.c's (HELLO with a new epoch, RESUME,
 * RESUME_ACK with what the receiver applied on the channel); the replay is ours. Without
 * RAM_END(POSTCOPY) (flag RAM_ENDED) the receiver lacks the precopy pages after its position,
 * sent again as they were, then DISCARD and RAM_END(POSTCOPY), and everything after them. With
 * it, it lacks what the log holds after its position. Lost background pages go back into
 * unsent, so the background (or a request) sends them again; a page the receiver placed
 * meanwhile through an URGENT is skipped by its placer and counted (duplicate_pages).
 *
 * The urgent connection. The sender's return thread reconnects it (HELLO role urgent with a
 * new epoch, RESUME, RESUME_ACK of zeros) and starts over: request ids from 1, no page answered
 * yet on this connection. The receiver's urgent thread waits for it while its vCPUs stay blocked
 * on their faults (nothing is placed without its data and tags), then asks again for every page
 * it had requested and not received, and for every fault it could not ask for on the old one.
 * Its end (REQ_END / END_ACK) survives a break without a hang: after REQ_END the receiver takes
 * a break as the end and answers a later reconnect with REQ_END at once; the sender stops
 * reconnecting once control's END_ACK came. A connection that breaks before the switch (its
 * HELLO_ACK lost at setup, or cut while idle in precopy) carries nothing until then: the
 * return thread waits for the committed switch and reconnects it then, the same way; the
 * receiver's accept thread keeps that reconnect for the urgent thread, which finds its first
 * connection broken when it starts at the registration barrier and answers it. A session that
 * ends in precopy never reconnects it.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include "session/postcopy-recv.h"
#include "session/resume-postcopy.h"
#include "tagmig/error.h"

#define U64(x) ((guint64)(x))

/* Socket buffers of an urgent connection, as urgent-send.c and urgent-recv.c set them. */
#define URGENT_SOCKBUF (64 << 10)

typedef struct pcr_chan {
	/* worker-local */
	GArray *pre;          /* of work: precopy runs sent after pre_pages, up to the switch */
	uint64_t pre_pages;   /* the channel's pages before pre[0] */
	uint64_t sw_pages;    /* pages sent before RAM_END(POSTCOPY) */
	uint64_t sw_chunks;   /* STATE chunks sent before it */
	GPtrArray *discards;  /* the switch's DISCARD messages (postcopy-send.c) */
	GArray *post;         /* of work: runs, STATE and END after RAM_END(POSTCOPY), in order */
	uint64_t post_pages;  /* the channel's counts before post[0] */
	uint64_t post_chunks;
	GArray *replay;       /* set while tm_pcresume_send reconnects: what q gets */
	bool ended;           /* the replay found the channel's END answered */
} pcr_chan;

/* ---- sender, data channels ---- */

void tm_pcresume_switch(send_chan *c, GPtrArray *msgs)
{
	const char *host, *port;
	uint64_t token, packets;
	unsigned deadline_ms;

	if (!tm_resume_send_target(c->s, &host, &port, &token, &deadline_ms) || c->pc.resume)
		return;
	pcr_chan *p = g_new0(pcr_chan, 1);
	p->pre = g_array_new(FALSE, FALSE, sizeof(work));
	p->post = g_array_new(FALSE, FALSE, sizeof(work));
	tm_resume_log_pages(c, p->pre, &p->pre_pages, &packets);
	p->sw_pages = c->pages_sent; /* the open packet was flushed */
	p->sw_chunks = c->state_chunks;
	/* The last run may have been cut by the switch: its rest is in unsent, not on the wire. */
	uint64_t left = p->sw_pages - p->pre_pages;
	guint i = 0;
	for (; i < p->pre->len && left; i++) {
		work *w = &g_array_index(p->pre, work, i);
		w->count = MIN(w->count, left);
		left -= w->count;
	}
	g_array_set_size(p->pre, i);
	p->post_pages = p->sw_pages;
	p->post_chunks = p->sw_chunks;
	p->discards = g_ptr_array_ref(msgs);
	c->pc.resume = p;
}

void tm_pcresume_log(send_chan *c, const work *w)
{
	pcr_chan *p = c->pc.resume;

	if (!p)
		return;
	if (w->kind == WORK_PAGES && p->post->len) {
		work *last = &g_array_index(p->post, work, p->post->len - 1);
		if (last->kind == WORK_PAGES && last->block == w->block &&
		    last->first + last->count == w->first) {
			last->count += w->count; /* one item per stretch the background walks */
			return;
		}
	}
	g_array_append_vals(p->post, w, 1);
}

bool tm_pcresume_owns(send_chan *c)
{
	return c->pc.resume && c->pc.resume->replay;
}

/* A logged item after RAM_END(POSTCOPY) the receiver lacks: into the replay, or unsent again. */
static void lacks(send_chan *c, const work *w, GArray *out)
{
	tm_sender *s = c->s;

	if (w->kind != WORK_PAGES) {
		g_array_append_vals(out, w, 1);
		return;
	}
	/* Whoever clears its unsent bit sends it: the background, or the return thread. */
	tm_send_pc_unsent(c, w->block, w->first, w->count);
	/* Counted as background when they are sent again. */
	__atomic_sub_fetch(&s->pc.background_pages, w->count, __ATOMIC_RELAXED);
}

/*
 * What the channel sent and the receiver lacks, in log order (resent_bytes): up to the pages and
 * chunks the channel handed to the kernel past the receiver's position; what was only taken
 * (an open packet, the packet the kernel never took in full) goes for the first time.
 */
typedef struct lost {
	uint64_t pages, chunks, bytes;
} lost;

static void count_lost(send_chan *c, lost *l, const work *w)
{
	if (w->kind == WORK_PAGES) {
		uint64_t n = MIN(l->pages, w->count);
		l->bytes += n * c->s->hello.blocks[w->block].page_size;
		l->pages -= n;
	} else if (w->kind == WORK_STATE && l->chunks) {
		l->bytes += tm_state_chunk_bytes(c->s, w);
		l->chunks--;
	}
}

static int bad_pos(send_chan *c, const tm_resume_pos *pos, const char *why, GError **error)
{
	const pcr_chan *p = c->pc.resume;

	g_set_error(error, TM_ERROR, EPROTO,
		    "channel %u: RESUME_ACK after the switch to postcopy says %" G_GUINT64_FORMAT
		    " pages, %" G_GUINT64_FORMAT " state chunks applied%s: %s (the channel sent %"
		    G_GUINT64_FORMAT " pages and %" G_GUINT64_FORMAT " chunks, %" G_GUINT64_FORMAT
		    " pages before RAM_END(POSTCOPY), of which the log starts at %" G_GUINT64_FORMAT ")",
		    c->ch.id, U64(pos->pages_applied), U64(pos->state_chunks),
		    (pos->flags & TM_RESUME_RAM_ENDED) ? " and RAM_END" : "", why,
		    U64(c->pages_sent), U64(c->state_chunks), U64(p->sw_pages), U64(p->pre_pages));
	return -EPROTO;
}

int tm_pcresume_replay(send_chan *c, const tm_resume_pos *pos, uint64_t unsent, GError **error)
{
	tm_sender *s = c->s;
	pcr_chan *p = c->pc.resume;
	GArray *out = p->replay;

	if (pos->pages_applied > c->pages_sent || pos->packets_applied > c->packets_sent ||
	    pos->state_chunks > c->state_chunks)
		return bad_pos(c, pos, "more than it sent", error);
	uint64_t gone = c->pages_sent - pos->pages_applied;
	lost lo = { .pages = gone - MIN(gone, unsent),
		    .chunks = c->state_chunks - pos->state_chunks };
	if (!(pos->flags & TM_RESUME_RAM_ENDED)) {
		/* Before RAM_END(POSTCOPY): the precopy pages after the position, the switch, and
		 * everything after it again. */
		if (pos->pages_applied < p->pre_pages || pos->pages_applied > p->sw_pages ||
		    pos->state_chunks != p->sw_chunks)
			return bad_pos(c, pos, "not within what preceded RAM_END", error);
		uint64_t skip = pos->pages_applied - p->pre_pages;
		GArray *pre = g_array_new(FALSE, FALSE, sizeof(work));
		for (guint i = 0; i < p->pre->len; i++) {
			work w = g_array_index(p->pre, work, i);
			if (skip >= w.count) {
				skip -= w.count;
				continue;
			}
			w.first += skip;
			w.count -= skip;
			skip = 0;
			g_array_append_val(pre, w);
			count_lost(c, &lo, &w);
		}
		g_array_append_vals(out, pre->data, pre->len);
		g_array_append_val(out, ((work){ .kind = WORK_SWITCH }));
		for (guint i = 0; i < p->post->len; i++) {
			count_lost(c, &lo, &g_array_index(p->post, work, i));
			lacks(c, &g_array_index(p->post, work, i), out);
		}
		g_array_unref(p->pre);
		p->pre = pre;
		p->pre_pages = pos->pages_applied;
		p->post_pages = p->sw_pages;
		p->post_chunks = p->sw_chunks;
	} else {
		if (pos->pages_applied < p->post_pages || pos->state_chunks < p->post_chunks)
			return bad_pos(c, pos, "less than was applied before", error);
		uint64_t skip_pages = pos->pages_applied - p->post_pages;
		uint64_t skip_chunks = pos->state_chunks - p->post_chunks;
		bool keep = false;
		for (guint i = 0; i < p->post->len; i++) {
			work w = g_array_index(p->post, work, i);
			if (!keep) {
				if (w.kind == WORK_PAGES && skip_pages >= w.count) {
					skip_pages -= w.count;
					continue;
				}
				if (w.kind == WORK_STATE && skip_chunks) {
					skip_chunks--;
					continue;
				}
				if (w.kind == WORK_END && (pos->flags & TM_RESUME_ENDED)) {
					p->ended = true;
					continue;
				}
				if (w.kind == WORK_PAGES) { /* the receiver has the first skip_pages */
					w.first += skip_pages;
					w.count -= skip_pages;
					skip_pages = 0;
				}
				/* Nothing after a message the receiver lacks can be there. */
				if (skip_pages || skip_chunks)
					break;
				keep = true;
			}
			count_lost(c, &lo, &w);
			lacks(c, &w, out);
		}
		if (skip_pages || skip_chunks)
			return bad_pos(c, pos, "not a position in what the channel sent", error);
		p->post_pages = pos->pages_applied;
		p->post_chunks = pos->state_chunks;
	}
	g_array_set_size(p->post, 0); /* logged again as it is sent again */
	/* From here the channel's counts are the receiver's; the packet being packed is gone. */
	__atomic_sub_fetch(&c->ch.st.pages, c->pages_sent - pos->pages_applied, __ATOMIC_RELAXED);
	__atomic_sub_fetch(&c->ch.st.packets, c->packets_sent - pos->packets_applied,
			   __ATOMIC_RELAXED);
	c->pages_sent = pos->pages_applied;
	c->packets_sent = pos->packets_applied;
	c->state_chunks = pos->state_chunks;
	c->pkt_open = false;
	tm_resume_send_count(s, 0, lo.bytes);
	if (p->ended) {
		g_mutex_lock(&s->lock);
		c->ended = true;
		g_cond_broadcast(&s->cond);
		g_mutex_unlock(&s->lock);
	}
	g_clear_error(error);
	return 0;
}

int tm_pcresume_send(send_chan *c, GArray *q, GError **error)
{
	pcr_chan *p = c->pc.resume;

	if (!p)
		return -(*error)->code;
	g_autoptr(GArray) replay = g_array_new(FALSE, FALSE, sizeof(work));
	p->replay = replay;
	/* The work list is empty after the switch: nothing of it is appended to a replay. */
	int r = tm_resume_send(c, c->work->len, error);
	p->replay = NULL;
	if (r < 0)
		return r;
	g_array_prepend_vals(q, replay->data, replay->len);
	return p->ended ? 1 : 0;
}

int tm_pcresume_send_item(send_chan *c, const work *w, GError **error)
{
	int r;

	if (w->kind == WORK_PAGES)
		return (r = tm_send_pages(c, w, error)) < 0 ? r : 0;
	if ((r = tm_send_flush(c, error)) < 0)
		return r;
	return tm_send_pc_announce(c, c->pc.resume->discards, error);
}

void tm_pcresume_send_free(tm_sender *s)
{
	for (unsigned i = 0; s->chans && i < s->nch; i++) {
		pcr_chan *p = s->chans[i].pc.resume;
		if (!p)
			continue;
		g_array_unref(p->pre);
		g_array_unref(p->post);
		g_ptr_array_unref(p->discards);
		g_free(p);
		s->chans[i].pc.resume = NULL;
	}
}

/* ---- sender, the urgent connection ---- */

/* HELLO (role urgent, epoch) and RESUME with the secret. */
static int send_resume(tm_sender *s, tm_chan *ch, uint32_t epoch, uint64_t token, GError **error)
{
	tm_hello h = s->hello; /* shallow: the blocks are only read */
	h.version = TM_WIRE_VERSION_2;
	h.role = TM_ROLE_URGENT;
	h.channel_id = 0;
	h.epoch = epoch;
	size_t blen = tm_hello_body_len(&h);
	g_autofree uint8_t *buf = g_malloc(TM_FRAME_HDR_LEN + blen + TM_FRAME_HDR_LEN + TM_RESUME_LEN);
	tm_frame_encode_v(buf, TM_WIRE_VERSION_2, TM_MSG_HELLO, (uint32_t)blen, ch->tx_seq++);
	tm_hello_encode(&h, buf + TM_FRAME_HDR_LEN);
	size_t n = TM_FRAME_HDR_LEN + blen;
	n += tm_resume_encode(buf + n, ch->tx_seq++, token);
	struct iovec v = { .iov_base = buf, .iov_len = n };
	return tm_chan_send(ch, &v, 1, n, error);
}

static void set_busy(tm_sender *s, int fd)
{
	g_mutex_lock(&s->lock);
	s->pc.urg_busy = fd + 1;
	g_mutex_unlock(&s->lock);
}


/* s->lock held: control's END_ACK is in, so the receiver's urgent connection ended (its
 * END_ACK comes after that), whether or not the end is decided yet (control-end.c). */
static bool end_acked_locked(const tm_sender *s)
{
	return s->control.end_ack_in || s->control.ended;
}
/* One attempt into ch; *final: the receiver refused (no retry changes that). */
static int urgent_attempt(tm_sender *s, tm_chan *ch, int64_t deadline, uint32_t *ret_epoch,
			  bool *final, GError **error)
{
	const char *host, *port;
	uint64_t token;
	unsigned deadline_ms;
	/* As open_connection(): latency-bound, always the sockets byte mover. */
	tm_io_config ioc = { .timeout_ms = s->cfg.timeout_ms, .depth = 1, .zerocopy = -1 };
	tm_resume_pos pos;
	tm_frame f;
	int r;

	(void)tm_resume_send_target(s, &host, &port, &token, &deadline_ms);
	/* To tm_sender_connect()'s address, or through the VMM's hook in attach mode. */
	if ((r = tm_resume_attempt_open(s, TM_RECONNECT_URGENT, deadline, ch, 0,
					&tm_transport_socket, &ioc, error)) < 0)
		return r;
	tm_chan_set_control(ch, "urgent");
	/* A failure or cancel shuts it down (urg_busy is the fd + 1). */
	if ((r = tm_resume_attempt_claim(ch, &s->lock, &s->quit, &s->pc.urg_busy, ch->fd + 1,
					 error)) < 0)
		return r;
	if ((r = tm_resume_attempt_secure(s, ch, deadline, error)) < 0 ||
	    (r = send_resume(s, ch, *ret_epoch = tm_resume_send_epoch(s), token, error)) < 0 ||
	    (r = tm_chan_recv_frame(ch, 0, &f, error)) < 0 ||
	    (r = tm_resume_attempt_ack(ch, &f, &pos, final, error)) < 0)
		goto out;
	ch->setup_deadline_us = 0;
	tm_io_set_deadline(ch->io, 0);
	set_busy(s, -1);
	return 0;
out:
	set_busy(s, -1); /* before the close: never shut down a reused number */
	tm_chan_close(ch);
	return r;
}

int tm_pcresume_urgent_send(tm_sender *s, tm_req_window *win, GError **error)
{
	const char *host, *port;
	uint64_t token;
	unsigned deadline_ms;
	int code = (*error)->code;

	if (s->pc.urg.peer_error || !tm_resume_broken(code) ||
	    !tm_resume_send_target(s, &host, &port, &token, &deadline_ms))
		return -code;
	g_autofree char *cause = g_strdup((*error)->message);

	/* The broken connection goes, under the lock: a cancel shuts down what it sees there. */
	g_mutex_lock(&s->lock);
	if (s->quit) {
		g_mutex_unlock(&s->lock);
		return -code;
	}
	tm_counters st = s->pc.urg.st;
	shutdown(s->pc.urg.fd, SHUT_RDWR);
	tm_chan_close(&s->pc.urg);
	tm_io_counters io_closed = s->pc.urg.io_closed;
	/*
	 * Broken before the switch (in setup after the HELLO_ACKs, or idle in precopy): nothing is
	 * asked before it, so the reconnect waits for the switch (tm_sender_start_postcopy()
	 * broadcasts it), and never comes when the session ends in precopy (the receiver takes
	 * the idle connection's break as its end: urgent-recv.c). The deadline runs from then.
	 */
	while (!s->quit && !end_acked_locked(s) &&
	       !__atomic_load_n(&s->pc.started, __ATOMIC_ACQUIRE))
		g_cond_wait(&s->cond, &s->lock);
	bool quit = s->quit;
	bool ended = end_acked_locked(s); /* see the loop */
	g_mutex_unlock(&s->lock);
	if (quit)
		return -code;
	if (ended) {
		g_clear_error(error);
		return 1;
	}
	int64_t t0 = tm_now_us(), deadline = t0 + (int64_t)deadline_ms * 1000;

	g_autoptr(GError) last = NULL;
	tm_chan ch = { .fd = -1 };
	unsigned attempts = 0, backoff = TM_RESUME_BACKOFF_FIRST_MS;
	bool final = false, done = false;
	for (;;) {
		g_clear_error(&last);
		attempts++;
		uint32_t epoch = 0;
		int r = urgent_attempt(s, &ch, deadline, &epoch, &final, &last);
		g_mutex_lock(&s->lock);
		quit = s->quit;
		/* The receiver's control END_ACK says its urgent connection ended: it saw REQ_END
		 * go and asks nothing more (the REQ_END we missed). */
		ended = end_acked_locked(s);
		if (r == 0 && !quit && !ended) {
			s->pc.urg = ch; /* the session's urgent connection, with its counters */
			s->pc.urg_epoch = epoch;
			s->pc.urg.st = st;
			s->pc.urg.io_closed = io_closed;
			done = true;
		} else if (r == 0) {
			tm_chan_close(&ch);
		}
		if (done || quit || ended || final ||
		    tm_now_us() + (int64_t)backoff * 1000 >= deadline) {
			g_mutex_unlock(&s->lock);
			break;
		}
		int64_t end = g_get_monotonic_time() + (int64_t)backoff * 1000;
		while (!s->quit && !end_acked_locked(s) && g_cond_wait_until(&s->cond, &s->lock, end))
			;
		quit = s->quit;
		ended = end_acked_locked(s);
		g_mutex_unlock(&s->lock);
		if (quit || ended)
			break;
		backoff = MIN(backoff * 2, TM_RESUME_BACKOFF_MAX_MS);
	}
	if (quit)
		return -code; /* another failure or a cancel explains the end */
	if (ended) {
		g_clear_error(error);
		return 1;
	}
	if (!done) {
		int lcode = last ? last->code : ETIMEDOUT;
		g_clear_error(error);
		if (final) {
			g_propagate_error(error, g_steal_pointer(&last));
			g_prefix_error(error, "urgent: resume: ");
			s->pc.urg.peer_error = ch.peer_error;
			return -lcode;
		}
		g_set_error(error, TM_ERROR, ETIMEDOUT,
			    "urgent: could not resume within %.1f s (resume_deadline_ms; %u attempt%s, "
			    "the last: %s) after: %s",
			    (double)(tm_now_us() - t0) / 1e6, attempts, attempts == 1 ? "" : "s",
			    last ? last->message : "none", cause);
		return -ETIMEDOUT;
	}
	int sz = URGENT_SOCKBUF;
	(void)setsockopt(s->pc.urg.fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	(void)setsockopt(s->pc.urg.fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	(void)tm_net_keepalive(s->pc.urg.fd, tm_control_interval(s->cfg.timeout_ms), 0);
	/* A new connection, a new sequence of requests: each page once on it (urgent-send.c). */
	win->next_id = 1;
	win->outstanding = 0;
	for (unsigned b = 0; b < s->hello.block_count; b++)
		for (uint64_t w = 0; w < (s->hello.blocks[b].npages + 63) / 64; w++)
			__atomic_store_n(&s->pc.answered[b][w], 0, __ATOMIC_RELAXED);
	tm_resume_send_count(s, 1, 0);
	g_clear_error(error);
	return 0;
}

void tm_pcresume_urgent_lost(tm_sender *s, uint32_t epoch)
{
	/* A path dead on the receiver's side only (a middlebox that keeps ours open) breaks
	 * nothing here: nothing else would ever tell the return thread. A stale epoch (we
	 * reconnected already) or a reconnect under way: nothing to do. */
	g_mutex_lock(&s->lock);
	if (s->pc.thread && !s->pc.urg_exited && s->pc.urg.fd >= 0 && s->pc.urg_busy == 0 &&
	    s->pc.urg_epoch == epoch)
		shutdown(s->pc.urg.fd, SHUT_RDWR);
	g_mutex_unlock(&s->lock);
}

void tm_pcresume_urgent_wake(tm_sender *s)
{
	if (s->pc.urg_busy > 0)
		shutdown(s->pc.urg_busy - 1, SHUT_RDWR);
}

/* ---- receiver ---- */

bool tm_pcresume_recv_urgent_ok(tm_receiver *r)
{
	return tm_pc_recv_agreed(r) && r->control.resume_agreed;
}

int tm_pcresume_recv_take_urgent(tm_receiver *r, tm_chan *ch, uint32_t epoch)
{
	tm_pc_recv *pc = r->pc;
	const char *why = NULL;
	int code = 0;

	ch->setup_deadline_us = 0;
	tm_io_set_deadline(ch->io, 0);
	tm_chan_set_control(ch, "urgent");
	ch->version = TM_WIRE_VERSION_2;
	g_mutex_lock(&r->lock);
	if (r->quit) {
		code = ECANCELED;
		why = "reconnect: the session failed";
	} else if (epoch <= pc->urg_epoch) {
		code = EPROTO;
		why = "reconnect: epoch not newer than the urgent connection's last";
	} else {
		pc->urg_epoch = epoch;
		if (pc->urg_ready)
			tm_chan_close(&pc->urg_pending); /* an older reconnect nobody took */
		pc->urg_pending = *ch;
		pc->urg_ready = true;
		/* An urgent thread still reading the old connection: it is dead to the sender. */
		if (r->urg.fd >= 0)
			shutdown(r->urg.fd, SHUT_RDWR);
		g_cond_broadcast(&r->cond);
	}
	g_mutex_unlock(&r->lock);
	if (why) {
		tm_chan_send_error(ch, code, why);
		tm_chan_close(ch);
		return -code;
	}
	tm_pc_urgent_wake(pc);
	return 0;
}

/* Under r->lock: whether the session stops (quit, or the postcopy threads must end). */
static bool stopping(tm_receiver *r)
{
	struct pollfd p = { .fd = r->pc->stop_fd, .events = POLLIN };
	return r->quit || poll(&p, 1, 0) > 0;
}

/*
 * r->lock held, pc->urg_ready: the reconnect becomes r->urg (with the counters st, io_closed of
 * the connections before it) and is answered RESUME_ACK. Returns with r->lock released: 0, or
 * -errno when that one broke too (closed again, its counters back in *st, *io_closed).
 */
static int take_pending(tm_receiver *r, tm_counters *st, tm_io_counters *io_closed)
{
	tm_pc_recv *pc = r->pc;

	r->urg = pc->urg_pending;
	r->urg.st = *st;
	r->urg.io_closed = *io_closed;
	pc->urg_ready = false;
	g_mutex_unlock(&r->lock);

	tm_resume_pos pos = { 0 }; /* the urgent connection applies nothing in order */
	uint8_t buf[TM_FRAME_HDR_LEN + TM_RESUME_ACK_LEN];
	size_t n = tm_resume_ack_encode(buf, r->urg.tx_seq++, &pos);
	struct iovec v = { .iov_base = buf, .iov_len = n };
	g_autoptr(GError) local = NULL;
	int ret = tm_chan_send(&r->urg, &v, 1, n, &local);
	if (ret < 0) {
		g_mutex_lock(&r->lock);
		*st = r->urg.st;
		tm_chan_close(&r->urg);
		*io_closed = r->urg.io_closed;
		g_mutex_unlock(&r->lock);
		return ret;
	}
	tm_chan_set_timeout(&r->urg, 0); /* as tm_pc_urgent_start: only messages are timed */
	int sz = URGENT_SOCKBUF;
	(void)setsockopt(r->urg.fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	(void)setsockopt(r->urg.fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	(void)tm_net_keepalive(r->urg.fd, r->control.ka_ms ? r->control.ka_ms : 5000, 0);
	tm_resume_recv_count(r);
	return 0;
}

int tm_pcresume_recv_urgent(tm_receiver *r, GError **error)
{
	tm_pc_recv *pc = r->pc;
	int code = (*error)->code;

	if (!tm_pcresume_recv_urgent_ok(r) || r->urg.peer_error || !tm_resume_broken(code))
		return -code;
	g_mutex_lock(&r->lock);
	if (stopping(r)) {
		g_mutex_unlock(&r->lock);
		return -code;
	}
	tm_counters st = r->urg.st;
	shutdown(r->urg.fd, SHUT_RDWR);
	tm_chan_close(&r->urg);
	tm_io_counters io_closed = r->urg.io_closed;
	/* The sender may not see this break (its end of the path still open): it learns it on
	 * control, unless a newer connection is here already. */
	if (!pc->urg_ready)
		tm_control_conn_lost_locked(&r->control, TM_CONN_LOST_URGENT, pc->urg_epoch);
	for (;;) {
		/* As long as the session lives: the sender's deadline bounds its attempts, and
		 * its failure comes on control. */
		while (!pc->urg_ready && !stopping(r))
			g_cond_wait_until(&r->cond, &r->lock, g_get_monotonic_time() + 100000);
		if (!pc->urg_ready) {
			g_mutex_unlock(&r->lock);
			return -code;
		}
		if (take_pending(r, &st, &io_closed) == 0)
			break;
		g_mutex_lock(&r->lock); /* that one broke too: wait for the next */
	}
	g_clear_error(error);
	return 0;
}

bool tm_pcresume_recv_urgent_ends(tm_receiver *r, const GError *error)
{
	return tm_pcresume_recv_urgent_ok(r) && !r->urg.peer_error &&
	       tm_resume_broken(error->code);
}

bool tm_pcresume_recv_urgent_late(tm_receiver *r)
{
	tm_pc_recv *pc = r->pc;

	g_mutex_lock(&r->lock);
	if (!pc->urg_ready || stopping(r)) {
		g_mutex_unlock(&r->lock);
		return false;
	}
	tm_counters st = r->urg.st;
	if (r->urg.fd >= 0)
		shutdown(r->urg.fd, SHUT_RDWR);
	tm_chan_close(&r->urg);
	tm_io_counters io_closed = r->urg.io_closed;
	if (take_pending(r, &st, &io_closed) == 0)
		return true;
	/* Broke before RESUME_ACK went: the sender tries again (or its control END_ACK ends it);
	 * r->urg stays closed meanwhile, nothing is read from it. */
	return false;
}

void tm_pcresume_recv_free(tm_receiver *r)
{
	if (r->pc && r->pc->urg_ready) {
		tm_chan_close(&r->pc->urg_pending);
		r->pc->urg_ready = false;
	}
}
