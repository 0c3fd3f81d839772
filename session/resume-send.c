/* SPDX-License-Identifier: MIT */
/*
 * Resume, the sender's side (resume.h; docs/wire-format.md, "Resume").
 *
 * Each channel keeps a log of the work it was handed since its last acknowledged SYNC (runs of
 * pages, SYNC, RAM_END, STATE, END): a SYNC_ACK says the receiver applied everything before it,
 * so the log starts over there. When the connection breaks, the worker reconnects (backoff
 * doubling from TM_RESUME_BACKOFF_FIRST_MS to TM_RESUME_BACKOFF_MAX_MS, all within
 * resume_deadline_ms), proves the session (HELLO with a new epoch, RESUME with the secret of the
 * HELLO_ACK), and the receiver's RESUME_ACK says how many pages, packets and state chunks it
 * applied on the channel and which SYNC it answered last. A channel is one ordered stream and
 * the worker sends pages in the order of its work, so "the first A pages of the channel" is a
 * position in the log: everything after it is sent again, pages re-read from guest RAM with
 * their tags (in precopy a page the guest changed since is queued again by the VMM anyway;
 * after guest_stopped nothing changes), chunks from the sections the sender keeps until free.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "session/delta.h"
#include "session/resume.h"
#include "session/resume-postcopy.h"
#include "tagmig/error.h"

typedef struct chan_log {
	GArray *items;         /* of work, in the order the worker took them */
	uint64_t base_pages;   /* the channel's counts before items[0] */
	uint64_t base_packets;
	uint64_t base_chunks;
} chan_log;

typedef struct tm_resume_tx tm_resume_tx;
struct tm_resume_tx {
	/* read-only after the handshake */
	char *host, *port;
	uint64_t token;        /* the receiver's secret; 0 until HELLO_ACK agreed RESUME */
	unsigned deadline_ms;
	/* worker-local: logs[i] belongs to channel i's worker */
	chan_log *logs;
	/* protected by s->lock */
	int *busy_fds;         /* per channel: the connection of an attempt under way, or -1 */
	/* atomics */
	uint32_t epoch;        /* the last epoch a reconnect used (the session's, increasing) */
	uint64_t reconnects;
	uint64_t resent_bytes;
};

bool tm_resume_broken(int code)
{
	switch (code) {
	case ECONNRESET:
	case EPIPE:
	case ECONNABORTED:
	case ENOTCONN:
	case ETIMEDOUT:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case ENETDOWN:
	case ENETRESET:
		return true;
	default:
		return false;
	}
}

void tm_resume_send_offer(tm_sender *s, const char *host, const char *port)
{
	if (s->wire != TM_WIRE_VERSION_2 || s->live.no_resume || s->resume)
		return;
	tm_resume_tx *rs = g_new0(tm_resume_tx, 1);
	rs->host = g_strdup(host);
	rs->port = g_strdup(port);
	rs->deadline_ms = s->live.resume_deadline_ms;
	rs->logs = g_new0(chan_log, s->nch);
	rs->busy_fds = g_new(int, s->nch);
	for (unsigned i = 0; i < s->nch; i++) {
		rs->logs[i].items = g_array_new(FALSE, FALSE, sizeof(work));
		rs->busy_fds[i] = -1;
	}
	s->resume = rs;
	/* ... and the receiver says when a connection broke that we may not see broken. */
	s->hello.features |= TM_FEATURE_RESUME | tm_ctl_resume_offer() | /* resume-control.c */
			     TM_FEATURE_CONN_LOST;
}

void tm_resume_send_agreed(tm_sender *s, const tm_hello_ack *ack)
{
	if (s->resume && (ack->features & TM_FEATURE_RESUME)) {
		s->resume->token = ack->resume_token;
		s->control.resume_agreed = true;
		s->control.conn_lost = (ack->features & TM_FEATURE_CONN_LOST) != 0;
		if (ack->features & TM_FEATURE_RESUME_CONTROL)
			tm_ctl_resume_enable(&s->control);
	}
}

/*
 * A parked worker has no I/O to fail: woken to look at its connection now (tm_send_worker), it
 * resumes it while the guest still runs, not in the next round, which may be the last. Not after
 * its END, nor once postcopy is switching (its own resume), nor while finish or sync's caller
 * holds the channel.
 */
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
static bool no_idle_wake;

void tm_resume_test_no_idle_wake(bool on)
{
	__atomic_store_n(&no_idle_wake, on, __ATOMIC_RELAXED);
}

static bool idle_wake_off(void)
{
	return __atomic_load_n(&no_idle_wake, __ATOMIC_RELAXED);
}

static unsigned idle_wake_delay;

void tm_resume_test_idle_wake_delay(unsigned ms)
{
	__atomic_store_n(&idle_wake_delay, ms, __ATOMIC_RELAXED);
}

unsigned tm_resume_idle_wake_delay_ms(void)
{
	return __atomic_load_n(&idle_wake_delay, __ATOMIC_RELAXED);
}
#else
static bool idle_wake_off(void)
{
	return false;
}

unsigned tm_resume_idle_wake_delay_ms(void)
{
	return 0;
}
#endif

static void wake_parked_locked(send_chan *c)
{
	if (c->parked && !c->direct && !c->ended && !idle_wake_off() &&
	    !__atomic_load_n(&c->s->pc.switching, __ATOMIC_ACQUIRE)) {
		c->check_link = true;
		g_cond_signal(&c->wake);
	}
}

/*
 * s->lock held: ends channel chan's connection when it is still fd of epoch (not a new one
 * with a reused number) and no reconnect of it is under way, with a reset: our end's path may
 * be dead too, and zero-copy sends wait for the release of what it holds. The worker's next or
 * current I/O fails and it resumes the channel as after any break.
 */
static void end_conn_locked(tm_sender *s, unsigned chan, int fd, uint32_t epoch)
{
	send_chan *c = chan < s->nch ? &s->chans[chan] : NULL;

	if (c && s->resume && c->ch.fd >= 0 && c->ch.fd == fd &&
	    c->epoch == epoch && s->resume->busy_fds[chan] < 0) {
		tm_net_abort(fd);
		wake_parked_locked(c);
	}
}

void tm_resume_conn_lost(void *sender, uint32_t conn, uint32_t epoch)
{
	tm_sender *s = sender;

	if (conn == TM_CONN_LOST_URGENT) {
		tm_pcresume_urgent_lost(s, epoch);
		return;
	}
	/*
	 * A path dead on the receiver's side only (a middlebox that keeps ours open and reads no
	 * more) breaks nothing here: the worker would wait for an answer or a send for good. A
	 * stale epoch (reconnected already) or a reconnect under way: nothing to do.
	 */
	g_mutex_lock(&s->lock);
	if (conn < s->nch)
		end_conn_locked(s, conn, s->chans[conn].ch.fd, epoch);
	g_mutex_unlock(&s->lock);
}

bool tm_resume_link_dead(void *sender, unsigned chan, int fd, uint32_t epoch)
{
	tm_sender *s = sender;
	bool resumed = false;

	g_mutex_lock(&s->lock);
	if (s->resume && s->control.resume_agreed && chan < s->nch) {
		resumed = true;
		end_conn_locked(s, chan, fd, epoch);
	}
	g_mutex_unlock(&s->lock);
	return resumed;
}

void tm_resume_link_closed(void *sender, unsigned chan, int fd, uint32_t epoch)
{
	tm_sender *s = sender;
	send_chan *c = chan < s->nch ? &s->chans[chan] : NULL;

	g_mutex_lock(&s->lock);
	if (c && s->resume && s->control.resume_agreed && c->ch.fd >= 0 && c->ch.fd == fd &&
	    c->epoch == epoch && s->resume->busy_fds[chan] < 0)
		wake_parked_locked(c);
	g_mutex_unlock(&s->lock);
}

int tm_resume_send_dial(tm_sender *s, unsigned connection, unsigned timeout_ms, GError **error)
{
	tm_resume_tx *rs = s->resume;

	if (rs->host)
		return tm_net_connect(rs->host, rs->port, timeout_ms, s->events.cancel_fd, error);
	/* Attach mode: the VMM's hook connects (tm_live_config.reconnect). */
	int fd = s->live.reconnect(s->live.reconnect_opaque, connection, timeout_ms);
	if (fd < 0) {
		g_set_error(error, TM_ERROR, -fd, "the VMM's reconnect hook: %s", g_strerror(-fd));
		return fd;
	}
	return fd;
}

void tm_resume_send_ctl_target(tm_sender *s, const char **ret_host, const char **ret_port,
			   uint64_t *ret_token, uint32_t *ret_epoch)
{
	tm_resume_tx *rs = s->resume;

	*ret_host = rs->host;
	*ret_port = rs->port;
	*ret_token = rs->token;
	*ret_epoch = __atomic_add_fetch(&rs->epoch, 1, __ATOMIC_RELAXED);
}

void tm_resume_send_presize(tm_sender *s, guint items)
{
	for (unsigned i = 0; s->resume && i < s->nch; i++)
		tm_work_presize(s->resume->logs[i].items, items);
}

GArray *tm_resume_send_log(tm_sender *s, unsigned chan)
{
	return s->resume ? s->resume->logs[chan].items : NULL;
}

static bool agreed(const tm_sender *s)
{
	return s->resume && s->resume->token;
}

void tm_resume_log(send_chan *c, const work *w)
{
	tm_sender *s = c->s;

	if (!agreed(s))
		return;
	chan_log *l = &s->resume->logs[c->ch.id];
	if (l->items->len) {
		const work *last = &g_array_index(l->items, work, l->items->len - 1);
		/* Its SYNC_ACK said the receiver applied all this channel sent before it. c->synced
		 * is written by this worker only (under s->lock, for the readers). */
		if (last->kind == WORK_SYNC && c->synced >= last->first) {
			g_array_set_size(l->items, 0);
			l->base_pages = c->pages_sent;
			l->base_packets = c->packets_sent;
			l->base_chunks = c->state_chunks;
		}
	}
	g_array_append_vals(l->items, w, 1);
}

/* A HELLO of the session for channel id with epoch, then RESUME with the secret. */
static int send_resume(tm_sender *s, tm_chan *ch, uint32_t epoch, GError **error)
{
	tm_hello h = s->hello; /* shallow: the blocks are only read */
	h.version = TM_WIRE_VERSION_2;
	h.role = TM_ROLE_DATA;
	h.channel_id = (uint16_t)ch->id;
	h.epoch = epoch;
	size_t blen = tm_hello_body_len(&h);
	g_autofree uint8_t *buf = g_malloc(TM_FRAME_HDR_LEN + blen + TM_FRAME_HDR_LEN + TM_RESUME_LEN);
	tm_frame_encode_v(buf, TM_WIRE_VERSION_2, TM_MSG_HELLO, (uint32_t)blen, ch->tx_seq++);
	tm_hello_encode(&h, buf + TM_FRAME_HDR_LEN);
	size_t n = TM_FRAME_HDR_LEN + blen;
	n += tm_resume_encode(buf + n, ch->tx_seq++, s->resume->token);
	struct iovec v = { .iov_base = buf, .iov_len = n };
	return tm_chan_send(ch, &v, 1, n, error);
}


int tm_resume_attempt_open(tm_sender *s, unsigned connection, int64_t deadline, tm_chan *ch,
			   unsigned id, const tm_transport_ops *ops, const tm_io_config *ioc,
			   GError **error)
{
	int64_t left_ms = (deadline - tm_now_us()) / 1000;

	if (left_ms <= 0) {
		g_set_error_literal(error, TM_ERROR, ETIMEDOUT, "no time left");
		return -ETIMEDOUT;
	}
	int fd = tm_resume_send_dial(s, connection,
				     (unsigned)MIN(left_ms, (int64_t)s->cfg.timeout_ms), error);
	if (fd < 0)
		return fd;
	return tm_chan_open(ch, fd, id, ops, ioc, error);
}

int tm_resume_attempt_claim(tm_chan *ch, GMutex *lock, const bool *quit, int *busy, int value,
			    GError **error)
{
	g_mutex_lock(lock);
	bool stopped = *quit;
	if (!stopped)
		*busy = value;
	g_mutex_unlock(lock);
	if (stopped) {
		g_set_error_literal(error, TM_ERROR, ECANCELED, "stopped");
		tm_chan_close(ch);
		return -ECANCELED;
	}
	return 0;
}

int tm_resume_attempt_secure(tm_sender *s, tm_chan *ch, int64_t deadline, GError **error)
{
	/* Connection, TLS and the receiver's answer: one handshake deadline, within ours. */
	ch->setup_deadline_us = MIN(tm_handshake_deadline(s->cfg.timeout_ms), deadline);
	tm_io_set_deadline(ch->io, ch->setup_deadline_us);
	int r = s->tls ? tm_tls_wrap(s->tls, &ch->io, error) : 0;
	ch->version = TM_WIRE_VERSION_2;
	return r;
}

int tm_resume_attempt_ack(tm_chan *ch, const tm_frame *f, tm_resume_pos *pos, bool *final,
			  GError **error)
{
	uint8_t body[TM_RESUME_ACK_LEN];
	int r;

	if (f->type == TM_MSG_ERROR) {
		*final = true;
		return tm_chan_recv_peer_error(ch, f, "receiver refused the reconnect", error);
	}
	if (f->type != TM_MSG_RESUME_ACK) {
		*final = true;
		g_set_error(error, TM_ERROR, EPROTO, "%s: expected RESUME_ACK, received %s", ch->label,
			    tm_msg_name(f->type));
		return -EPROTO;
	}
	if ((r = tm_chan_recv(ch, body, f->body_len, error)) < 0)
		return r;
	if ((r = tm_resume_ack_decode(body, f->body_len, pos, error)) < 0) {
		*final = true;
		tm_chan_prefix_error(ch, error);
	}
	return r;
}

/*
 * One attempt: connect, TLS, HELLO + RESUME, RESUME_ACK into *pos. On failure ch is closed;
 * *final says the receiver refused (its ERROR, or an answer that no retry changes).
 */
static int attempt(send_chan *c, tm_chan *ch, int64_t deadline, tm_resume_pos *pos,
		   uint32_t *ret_epoch, bool *final, GError **error)
{
	tm_sender *s = c->s;
	tm_resume_tx *rs = s->resume;
	tm_io_config ioc = { .timeout_ms = s->cfg.timeout_ms, .depth = s->cfg.queue_depth,
			     .zerocopy = s->cfg.tuning.zerocopy };
	tm_frame f;
	int r;

	if ((r = tm_resume_attempt_open(s, c->ch.id, deadline, ch, c->ch.id, s->io, &ioc, error)) < 0 ||
	    (r = tm_resume_attempt_claim(ch, &s->lock, &s->quit, &rs->busy_fds[c->ch.id], ch->fd,
					 error)) < 0)
		return r; /* tm_resume_send_wake() shuts a claimed one down */
	if ((r = tm_resume_attempt_secure(s, ch, deadline, error)) < 0)
		goto out;
	uint32_t epoch = __atomic_add_fetch(&rs->epoch, 1, __ATOMIC_RELAXED);
	*ret_epoch = epoch;
	if ((r = send_resume(s, ch, epoch, error)) < 0 ||
	    (r = tm_chan_recv_frame(ch, 0, &f, error)) < 0 ||
	    (r = tm_resume_attempt_ack(ch, &f, pos, final, error)) < 0)
		goto out;
	if (ch->depth != c->ch.depth) { /* the packet slots were made for the first connection */
		*final = true;
		g_set_error(error, TM_ERROR, EIO, "%s: the new connection has %u packet slots, not %u",
			    ch->label, ch->depth, c->ch.depth);
		r = -EIO;
		goto out;
	}
	ch->setup_deadline_us = 0;
	tm_io_set_deadline(ch->io, 0);
	g_mutex_lock(&s->lock);
	rs->busy_fds[c->ch.id] = -1;
	g_mutex_unlock(&s->lock);
	return 0;
out:
	g_mutex_lock(&s->lock);
	rs->busy_fds[c->ch.id] = -1; /* before the close: never shut down a reused number */
	g_mutex_unlock(&s->lock);
	tm_chan_close(ch);
	return r;
}

/* Whether the log has another copy of SYNC id (on the wire) after item i. */
static bool repeated_later(const chan_log *l, guint i, uint64_t id)
{
	for (guint k = i + 1; k < l->items->len; k++) {
		const work *w = &g_array_index(l->items, work, k);
		if (w->kind == WORK_SYNC && w->count == id)
			return true;
	}
	return false;
}

/* Pages in the log's WORK_PAGES items right after item i (up to any other kind). */
static uint64_t pages_after(const chan_log *l, guint i)
{
	uint64_t n = 0;
	for (guint k = i + 1; k < l->items->len; k++) {
		const work *w = &g_array_index(l->items, work, k);
		if (w->kind != WORK_PAGES)
			break;
		n += w->count;
	}
	return n;
}

/*
 * The receiver's position against the log: what it lacks, in order, into *ret. Items it has
 * are dropped (a SYNC it answered is acknowledged here, an END it answered ends the channel).
 */
static int replay_list(send_chan *c, const tm_resume_pos *pos, uint64_t unsent, GArray *ret,
		       GError **error)
{
	tm_sender *s = c->s;
	chan_log *l = &s->resume->logs[c->ch.id];
	uint64_t skip_pages = pos->pages_applied - l->base_pages;
	uint64_t skip_chunks = pos->state_chunks - l->base_chunks;
	/* sent and lost: not the pages of a packet the kernel never took in full */
	uint64_t lost = c->pages_sent - pos->pages_applied;
	uint64_t resend_pages = lost - MIN(lost, unsent);
	uint64_t resend_chunks = c->state_chunks - pos->state_chunks;
	uint64_t resent = 0;
	bool keep = false, resync_due = false;
	work resync = { 0 };
	/*
	 * DELTAs unanswered at the break: a refusal may have gone with the connection, and the
	 * receiver counts refused pages as applied. So every page since the last acknowledged SYNC
	 * goes again (whole: the cache starts empty), and the SYNCs among them are asked again,
	 * so that a SYNC_ACK still means every page before it is there. No RAM_END is among them:
	 * one goes only once every DELTA was answered (tm_dsend_barrier).
	 */
	bool redo = tm_dsend_unanswered(c);

	for (guint i = 0; i < l->items->len; i++) {
		work w = g_array_index(l->items, work, i);
		if (!keep && redo && (w.kind == WORK_PAGES || w.kind == WORK_SYNC)) {
			/* Every page goes whole again: the last copy of a repeated SYNC is enough
			 * (a direct sync awaits one answer, the last SYNC's). */
			if (w.kind == WORK_SYNC && repeated_later(l, i, w.count))
				continue;
			if (w.kind == WORK_PAGES) {
				uint64_t n = MIN(skip_pages, w.count);
				skip_pages -= n;
				resend_pages += n; /* counted as re-sent too */
			}
			/* the receiver's count of applied pages covers them: from the log's start */
		} else if (!keep) {
			if (w.kind == WORK_PAGES && skip_pages >= w.count) {
				skip_pages -= w.count;
				continue;
			}
			/*
			 * The receiver reads in order: what it answered, it had all before. Pages
			 * after an unacknowledged SYNC in the log are those its settle re-sent
			 * whole (refused deltas, delta-send.c), with the SYNC repeated behind
			 * them under the same id: a later copy decides; without one (the break
			 * came first) the SYNC goes again behind the pages the receiver lacks,
			 * and so it does while refused pages still wait to be re-sent (its
			 * SYNC_ACK was lost with their NACKs read): its settle re-sends them.
			 */
			if (w.kind == WORK_SYNC && pos->syncs >= w.count) { /* its id on the wire */
				if (repeated_later(l, i, w.count))
					continue;
				if (skip_pages >= pages_after(l, i) && !tm_dsend_refused_waiting(c)) {
					tm_send_synced(c, w.first, w.count); /* ack lost */
				} else {
					resync = w;
					resync_due = true;
				}
				continue;
			}
			if (w.kind == WORK_RAM_END && (pos->flags & TM_RESUME_RAM_ENDED))
				continue;
			if (w.kind == WORK_STATE && skip_chunks) {
				skip_chunks--;
				continue;
			}
			if (w.kind == WORK_END && (pos->flags & TM_RESUME_ENDED)) {
				g_mutex_lock(&s->lock);
				c->ended = true;
				g_cond_broadcast(&s->cond);
				g_mutex_unlock(&s->lock);
				continue;
			}
			if (w.kind == WORK_PAGES) { /* the receiver has the first skip_pages of it */
				w.first += skip_pages;
				w.count -= skip_pages;
				skip_pages = 0;
			}
			/* Nothing of the channel after a message the receiver lacks can be there. */
			if (skip_pages || skip_chunks)
				break;
			keep = true;
		}
		if (resync_due && w.kind != WORK_PAGES) {
			g_array_append_val(ret, resync); /* behind the re-sent pages */
			resync_due = false;
		}
		if (w.kind == WORK_PAGES && resend_pages) {
			uint64_t n = MIN(resend_pages, w.count);
			resent += n * s->hello.blocks[w.block].page_size;
			resend_pages -= n;
		} else if (w.kind == WORK_STATE && resend_chunks) {
			resent += tm_state_chunk_bytes(s, &w);
			resend_chunks--;
		}
		g_array_append_val(ret, w);
	}
	if (resync_due)
		g_array_append_val(ret, resync);
	if (skip_pages || skip_chunks) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "channel %u: RESUME_ACK: %" G_GUINT64_FORMAT " pages, %" G_GUINT64_FORMAT
			    " state chunks, SYNC %" G_GUINT64_FORMAT
			    " do not match what the channel sent (from %" G_GUINT64_FORMAT " pages, %"
			    G_GUINT64_FORMAT " chunks)",
			    c->ch.id, (guint64)pos->pages_applied, (guint64)pos->state_chunks,
			    (guint64)pos->syncs, (guint64)l->base_pages, (guint64)l->base_chunks);
		return -EPROTO;
	}
	__atomic_add_fetch(&s->resume->resent_bytes, resent, __ATOMIC_RELAXED);
	return 0;
}

uint64_t tm_resume_unsent_pages(const send_chan *c)
{
	int slot = tm_io_unsent_slot(c->ch.io);

	/* The slot past the packets is the backend's own (synchronous sends): no pages. */
	return slot >= 0 && (unsigned)slot < c->ch.depth ? c->pkts[slot].page_count : 0;
}

/*
 * The position is within what the log covers: base <= applied <= sent; and the last SYNC
 * answered is at least the last one acknowledged (its SYNC_ACK read, or a replay took it as
 * answered), at most the last one staged (every channel gets every SYNC; one re-sent after a
 * reconnect may be in no log).
 */
static int check_pos(send_chan *c, const tm_resume_pos *pos, GError **error)
{
	const chan_log *l = &c->s->resume->logs[c->ch.id];
	uint64_t sync_sent = __atomic_load_n(&c->s->wire_syncs, __ATOMIC_RELAXED);

	g_mutex_lock(&c->s->lock);
	uint64_t synced = c->synced_wire;
	g_mutex_unlock(&c->s->lock);
	if (pos->pages_applied >= l->base_pages && pos->pages_applied <= c->pages_sent &&
	    pos->packets_applied >= l->base_packets && pos->packets_applied <= c->packets_sent &&
	    pos->state_chunks >= l->base_chunks && pos->state_chunks <= c->state_chunks &&
	    pos->syncs >= synced && pos->syncs <= sync_sent)
		return 0;
	g_set_error(error, TM_ERROR, EPROTO,
		    "channel %u: RESUME_ACK says %" G_GUINT64_FORMAT " pages in %" G_GUINT64_FORMAT
		    " packets and %" G_GUINT64_FORMAT " state chunks applied, SYNC %" G_GUINT64_FORMAT
		    " answered; the channel sent %" G_GUINT64_FORMAT " in %" G_GUINT64_FORMAT
		    " and %" G_GUINT64_FORMAT ", of which %" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT
		    " and %" G_GUINT64_FORMAT " were acknowledged, and SYNCs up to %" G_GUINT64_FORMAT
		    ", up to %" G_GUINT64_FORMAT " acknowledged",
		    c->ch.id, (guint64)pos->pages_applied, (guint64)pos->packets_applied,
		    (guint64)pos->state_chunks, (guint64)pos->syncs, (guint64)c->pages_sent,
		    (guint64)c->packets_sent, (guint64)c->state_chunks, (guint64)l->base_pages,
		    (guint64)l->base_packets, (guint64)l->base_chunks, (guint64)sync_sent,
		    (guint64)synced);
	return -EPROTO;
}

/* Waits ms or until the session quits (s->lock held). Returns whether it quit. */
static bool backoff_wait(tm_sender *s, unsigned ms)
{
	int64_t end = g_get_monotonic_time() + (int64_t)ms * 1000;
	while (!s->quit)
		if (!g_cond_wait_until(&s->cond, &s->lock, end))
			break;
	return s->quit;
}

int tm_resume_send(send_chan *c, unsigned next, GError **error)
{
	tm_sender *s = c->s;
	tm_resume_tx *rs = s->resume;
	int code = (*error)->code;

	if (!agreed(s) || c->ch.peer_error || !tm_resume_broken(code))
		return -code;
	/* A receiver that gave up said why before it closed: no reconnect then (send-pages.c). */
	GError *why = NULL;
	if ((code == EPIPE || code == ECONNRESET) &&
	    tm_chan_peer_error(&c->ch, c->s->hello.packet_size, "receiver failed", &why) < 0) {
		g_clear_error(error);
		*error = why;
		c->ch.peer_error = true;
		return -why->code;
	}
	int64_t t0 = tm_now_us(), deadline = t0 + (int64_t)rs->deadline_ms * 1000;
	g_autofree char *cause = g_strdup((*error)->message);

	/* The broken connection goes: under the lock, as a cancel shuts down what it sees. */
	g_mutex_lock(&s->lock);
	if (s->quit) {
		g_mutex_unlock(&s->lock);
		return -code;
	}
	__atomic_add_fetch(&s->links_down, 1, __ATOMIC_RELEASE); /* until the loop below ends */
	tm_counters st = c->ch.st;
	uint64_t unsent = tm_resume_unsent_pages(c);
	shutdown(c->ch.fd, SHUT_RDWR);
	tm_control_data_conn(&s->control, c->ch.id, -1, c->epoch, NULL); /* its number may be reused */
	tm_chan_close(&c->ch);
	tm_io_counters io_closed = c->ch.io_closed;
	g_mutex_unlock(&s->lock);

	g_autoptr(GError) last = NULL;
	tm_resume_pos pos;
	tm_chan ch = { .fd = -1 };
	unsigned attempts = 0, backoff = TM_RESUME_BACKOFF_FIRST_MS;
	bool final = false, quit = false;
	for (;;) {
		g_clear_error(&last);
		attempts++;
		uint32_t epoch = 0;
		int r = attempt(c, &ch, deadline, &pos, &epoch, &final, &last);
		g_mutex_lock(&s->lock);
		quit = s->quit;
		if (r == 0 && !quit) {
			/* The new connection is the channel's, with its counters. */
			c->ch = ch;
			c->epoch = epoch;
			c->ch.st = st;
			c->ch.io_closed = io_closed;
			/* control's TCP_INFO watch (control.c, link-check.c) */
			tm_control_data_conn(&s->control, c->ch.id, c->ch.fd, epoch, &c->ch.base);
			g_mutex_unlock(&s->lock);
			break;
		}
		if (r == 0) /* quit meanwhile: nobody will use it */
			tm_chan_close(&ch);
		if (quit || final || tm_now_us() + (int64_t)backoff * 1000 >= deadline ||
		    backoff_wait(s, backoff)) {
			quit = s->quit;
			g_mutex_unlock(&s->lock);
			break;
		}
		g_mutex_unlock(&s->lock);
		backoff = MIN(backoff * 2, TM_RESUME_BACKOFF_MAX_MS);
	}
	__atomic_sub_fetch(&s->links_down, 1, __ATOMIC_RELEASE);
	if (quit) /* another failure or a cancel explains the end: keep the break as ours */
		return -code;
	if (c->ch.io == NULL) {
		int lcode = last ? last->code : ETIMEDOUT;
		g_clear_error(error);
		if (final) {
			g_propagate_error(error, g_steal_pointer(&last));
			g_prefix_error(error, "channel %u: resume: ", c->ch.id);
			c->ch.peer_error = ch.peer_error; /* the receiver's ERROR: its words */
			return -lcode;
		}
		g_set_error(error, TM_ERROR, ETIMEDOUT,
			    "channel %u: could not resume within %.1f s (resume_deadline_ms; %u attempt%s, "
			    "the last: %s) after: %s",
			    c->ch.id, (double)(tm_now_us() - t0) / 1e6, attempts, attempts == 1 ? "" : "s",
			    last ? last->message : "none", cause);
		return -ETIMEDOUT;
	}
	/* Counted before the replay: it may end the channel, and finish() return at once. */
	__atomic_add_fetch(&rs->reconnects, 1, __ATOMIC_RELAXED);
	tm_chan_set_timeout(&c->ch, 0); /* as tm_control_start left the data channels */
	(void)tm_net_keepalive(c->ch.fd, s->control.ka_ms ? s->control.ka_ms : 5000, 0);
	if (tm_pcresume_owns(c)) /* after the switch to postcopy: resume-postcopy.c replays */
		return tm_pcresume_replay(c, &pos, unsent, error);

	g_autoptr(GArray) replay = g_array_new(FALSE, FALSE, sizeof(work));
	g_clear_error(error); /* the break is over: what follows reports its own failure */
	int r = check_pos(c, &pos, error);
	if (r == 0)
		r = replay_list(c, &pos, unsent, replay, error);
	if (r < 0) {
		g_prefix_error(error, "after a reconnect: ");
		return r;
	}
	/* From here the channel's counts are the receiver's; the packet being packed is gone. */
	__atomic_sub_fetch(&c->ch.st.pages, c->pages_sent - pos.pages_applied, __ATOMIC_RELAXED);
	__atomic_sub_fetch(&c->ch.st.packets, c->packets_sent - pos.packets_applied,
			   __ATOMIC_RELAXED);
	c->pages_sent = pos.pages_applied;
	c->packets_sent = pos.packets_applied;
	c->state_chunks = pos.state_chunks;
	c->pkt_open = false;
	tm_dsend_reconnected(c); /* its cache starts empty (delta-send.c) */
	chan_log *l = &rs->logs[c->ch.id];
	g_array_set_size(l->items, 0);
	l->base_pages = pos.pages_applied;
	l->base_packets = pos.packets_applied;
	l->base_chunks = pos.state_chunks;
	if (next < c->work->len)
		g_array_append_vals(replay, &g_array_index(c->work, work, next), c->work->len - next);
	g_array_set_size(c->work, 0);
	g_array_append_vals(c->work, replay->data, replay->len);
	g_clear_error(error);
	return 0;
}

void tm_resume_send_wake(tm_sender *s)
{
	tm_ctl_resume_send_wake(s);
	for (unsigned i = 0; s->resume && i < s->nch; i++)
		if (s->resume->busy_fds[i] >= 0)
			shutdown(s->resume->busy_fds[i], SHUT_RDWR);
}

void tm_resume_send_stats(tm_sender *s, tm_live_stats *ret)
{
	if (!s->resume)
		return;
	ret->reconnects = __atomic_load_n(&s->resume->reconnects, __ATOMIC_RELAXED) +
			  tm_ctl_resume_reconnects(&s->control);
	ret->resent_bytes = __atomic_load_n(&s->resume->resent_bytes, __ATOMIC_RELAXED);
}

void tm_resume_send_free(tm_sender *s)
{
	tm_resume_tx *rs = s->resume;

	tm_ctl_resume_free(&s->control);
	if (!rs)
		return;
	for (unsigned i = 0; i < s->nch; i++)
		g_array_unref(rs->logs[i].items);
	g_free(rs->logs);
	g_free(rs->busy_fds);
	g_free(rs->host);
	g_free(rs->port);
	g_free(rs);
	s->resume = NULL;
}

/* ---- for the resume after the switch to postcopy (resume-postcopy.c) ---- */

bool tm_resume_send_on(const tm_sender *s)
{
	return agreed(s);
}

bool tm_resume_send_target(tm_sender *s, const char **ret_host, const char **ret_port,
			   uint64_t *ret_token, unsigned *ret_deadline_ms)
{
	if (!agreed(s))
		return false;
	*ret_host = s->resume->host;
	*ret_port = s->resume->port;
	*ret_token = s->resume->token;
	*ret_deadline_ms = s->resume->deadline_ms;
	return true;
}

uint32_t tm_resume_send_epoch(tm_sender *s)
{
	return __atomic_add_fetch(&s->resume->epoch, 1, __ATOMIC_RELAXED);
}

void tm_resume_send_count(tm_sender *s, uint64_t reconnects, uint64_t resent_bytes)
{
	__atomic_add_fetch(&s->resume->reconnects, reconnects, __ATOMIC_RELAXED);
	__atomic_add_fetch(&s->resume->resent_bytes, resent_bytes, __ATOMIC_RELAXED);
}

void tm_resume_log_pages(send_chan *c, GArray *ret, uint64_t *ret_base_pages,
			 uint64_t *ret_base_packets)
{
	const chan_log *l = &c->s->resume->logs[c->ch.id];

	for (guint i = 0; i < l->items->len; i++) {
		const work *w = &g_array_index(l->items, work, i);
		if (w->kind == WORK_PAGES)
			g_array_append_vals(ret, w, 1);
	}
	*ret_base_pages = l->base_pages;
	*ret_base_packets = l->base_packets;
}
