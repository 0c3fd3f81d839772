/* SPDX-License-Identifier: MIT */
/*
 * The control thread of a protocol 2 session, either side (docs/design/live-engine.md 3.1, 3.5):
 * liveness without idle timers. Data channels wait as long as the session lives (a VMM may pause
 * between rounds, or read its state slowly); what tells a dead or frozen peer from a quiet one is
 * this thread: it PINGs every ka_ms and the peer's library answers whatever its VMM does, so
 * nothing received for timeout_ms means the peer is unresponsive (a SIGSTOPped process: its kernel
 * still acknowledges TCP, only an answer of the application tells). Every ka_ms it also asks
 * TCP_INFO whether a data channel has data the peer's kernel has not acknowledged for timeout_ms
 * (a dead path under load). It ends the session on control: the sender's END leaves with the
 * data channels' ENDs; the receiver answers READY and END_ACK once every data channel ended and
 * every page is there, keeping the keepalive going meanwhile; and when the session fails it
 * tells the peer why and listens for the peer's reason. The end may be sent by a thread that is
 * awake anyway instead (control-end.c: one wake-up less inside the downtime); io_lock keeps the
 * connection one thread's at a time.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "session/control-end.h"
#include "session/resume.h"
#include "session/session-internal.h"
#include "tagmig/error.h"

/* More PINGs than this in one second from the peer: -EPROTO (design 2.5: bounds what the
 * control connection carries backwards). Ours are at most 10 a second (ka >= 100 ms). */
#define PING_FLOOD 20u

unsigned tm_control_interval(unsigned timeout_ms)
{
	return CLAMP(timeout_ms / 4, 100u, 5000u);
}

int tm_control_init(tm_control *c, GError **error)
{
	g_mutex_init(&c->io_lock);
	c->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	c->end_fd = c->wake_fd < 0 ? -1 : eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (c->end_fd < 0) {
		int err = errno;
		g_set_error(error, TM_ERROR, err, "eventfd: %s", g_strerror(err));
		return -err;
	}
	return 0;
}

void tm_control_wake(tm_control *c)
{
	uint64_t one = 1;

	if (c->wake_fd >= 0)
		(void)!write(c->wake_fd, &one, sizeof(one));
}

void tm_control_conn_lost_locked(tm_control *c, uint32_t conn, uint32_t epoch)
{
	unsigned i = conn == TM_CONN_LOST_URGENT ? TM_MAX_CHANNELS : conn;

	if (!c->conn_lost || i > TM_MAX_CHANNELS)
		return;
	c->lost[i] = (uint64_t)epoch + 1;
	tm_control_wake(c);
}

/* Thread-local state of the loop. */
typedef struct loop {
	tm_control *c;
	int64_t next_tick; /* next PING / TCP_INFO check */
	int64_t flood_t;   /* start of the current second of the peer's PINGs */
	unsigned flood_n;
	bool postcopy_sent; /* sender: POSTCOPY is out */
	bool unresponsive; /* the failure is the peer's silence: no point waiting for its words */
	uint64_t lost_sent[TM_MAX_CHANNELS + 1]; /* receiver: c->lost as last sent on this connection */
} loop;

/* Our PING, io_lock held, none out. 0 or -errno. */
int tm_ctl_send_ping(tm_control *c, GError **error)
{
	int r = tm_chan_send_ctrl(c->ch, TM_MSG_PING, ++c->ping_nonce, 0, error);

	if (r < 0)
		return r;
	c->ping_out = true;
	c->ping_t = tm_now_us();
	__atomic_fetch_add(&c->keepalives, 1, __ATOMIC_RELAXED);
	return 0;
}

int tm_ctl_body(tm_chan *ch, const tm_frame *f, uint64_t v[TM_CTRL_MAX_FIELDS], GError **error)
{
	uint8_t body[8 * TM_CTRL_MAX_FIELDS];
	int r;

	if (f->body_len > sizeof(body)) {
		g_set_error(error, TM_ERROR, EBADMSG, "control: %s body of %u bytes",
			    tm_msg_name(f->type), f->body_len);
		return -EBADMSG;
	}
	if ((r = tm_chan_recv(ch, body, f->body_len, error)) < 0)
		return r;
	if ((r = tm_ctrl_decode_v(f->version, f->type, body, f->body_len, v, error)) < 0)
		tm_chan_prefix_error(ch, error);
	return r;
}

static int peer_ping(loop *l, uint64_t nonce, GError **error)
{
	tm_control *c = l->c;
	int64_t now = tm_now_us();

	if (now - l->flood_t >= G_USEC_PER_SEC) {
		l->flood_t = now;
		l->flood_n = 0;
	}
	if (++l->flood_n > PING_FLOOD) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "control: PING flood: more than %u PINGs in one second from the %s",
			    PING_FLOOD, c->sender ? "receiver" : "sender");
		return -EPROTO;
	}
	/* Also after our END: the receiver keeps its keepalive while its data channels end. */
	return tm_chan_send_ctrl(c->ch, TM_MSG_PONG, nonce, 0, error);
}

static int peer_pong(tm_control *c, uint64_t nonce, GError **error)
{
	if (!c->ping_out || nonce != c->ping_nonce) {
		g_set_error(error, TM_ERROR, EPROTO, "control: PONG 0x%" G_GINT64_MODIFIER "x answers no PING",
			    (guint64)nonce);
		return -EPROTO;
	}
	c->ping_out = false;
	uint64_t sample = (uint64_t)(tm_now_us() - c->ping_t);
	uint64_t rtt = __atomic_load_n(&c->rtt_us, __ATOMIC_RELAXED);
	__atomic_store_n(&c->rtt_us, rtt ? (7 * rtt + sample) / 8 : MAX(sample, 1), __ATOMIC_RELAXED);
	return 0;
}

/*
 * After a clean end: the thread exits in tm_control_stop() (free: *quit set, then a wake), not
 * now, where its exit (tens of us of a CPU) would delay the threads that end the session, on a
 * host that has few.
 */
static void linger(tm_control *c)
{
	for (;;) {
		g_mutex_lock(c->lock);
		bool quit = *c->quit;
		g_mutex_unlock(c->lock);
		if (quit)
			return;
		struct pollfd p = { .fd = c->wake_fd, .events = POLLIN };
		uint64_t v;
		if (poll(&p, 1, -1) > 0)
			(void)!read(c->wake_fd, &v, sizeof(v));
	}
}

/* One message (its header read already when held is not NULL); returns 0, 1 when the
 * connection ended cleanly, or -errno. */
static int one_message(loop *l, const tm_frame *held, GError **error)
{
	tm_control *c = l->c;
	uint64_t v[TM_CTRL_MAX_FIELDS] = { 0 };
	tm_frame f;
	int r;

	if (held)
		f = *held;
	else if ((r = tm_chan_recv_frame(c->ch, 0, &f, error)) < 0)
		return r;
	c->last_rx = tm_now_us();
	if (f.type == TM_MSG_ERROR)
		return tm_chan_recv_peer_error(c->ch, &f, c->sender ? "receiver failed" : "sender gave up",
					       error);
	uint8_t end = c->sender ? TM_MSG_END_ACK : TM_MSG_END;
	bool ready = c->sender && f.type == TM_MSG_READY;
	if (c->sender && c->conn_lost && f.type == TM_MSG_CONN_LOST) {
		/* Not ordered: it belongs to the connection of its epoch (a stale one is ignored
		 * there), and comes again after a control reconnect. */
		if ((r = tm_ctl_body(c->ch, &f, v, error)) < 0)
			return r;
		if (v[0] >= c->ndata && v[0] != TM_CONN_LOST_URGENT) {
			g_set_error(error, TM_ERROR, ERANGE,
				    "control: CONN_LOST for connection %" G_GUINT64_FORMAT
				    ", the session has %u data channels",
				    (guint64)v[0], c->ndata);
			return -ERANGE;
		}
		if (v[1] > UINT32_MAX) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "control: CONN_LOST epoch %" G_GUINT64_FORMAT " does not fit a HELLO's",
				    (guint64)v[1]);
			return -EBADMSG;
		}
		if (c->conn_lost_msg)
			c->conn_lost_msg(c->owner, (uint32_t)v[0], (uint32_t)v[1]);
		return 0;
	}
	if (c->lw && f.type == (c->sender ? TM_MSG_LINK_A : TM_MSG_LINK_Q)) {
		/* LINK_CHECK (link-check.c): not ordered, belongs to this connection. */
		if ((r = tm_ctl_body(c->ch, &f, v, error)) < 0)
			return r;
		return c->sender ? tm_link_watch_answer(c, v, error) : tm_link_watch_query(c, v, error);
	}
	if (!c->sender && f.type == TM_MSG_POSTCOPY && c->postcopy && !c->end_seen) {
		if ((r = c->postcopy(c->owner, &f, error)) == 0)
			tm_ctl_resume_received(c);
		return r;
	}
	/* Postcopy: READY comes once the destination may run, usually before our END. Asked for
	 * (not only sent): READY follows device state, which only follows start_postcopy. */
	g_mutex_lock(c->lock);
	bool pc = c->postcopy_requested;
	g_mutex_unlock(c->lock);
	if ((f.type != TM_MSG_PING && f.type != TM_MSG_PONG && f.type != end && !ready) ||
	    (f.type == TM_MSG_END_ACK && !c->end_sent) || (f.type == TM_MSG_END && c->end_seen) ||
	    (ready && ((!c->end_sent && !pc) || c->ready_seen))) {
		g_set_error(error, TM_ERROR, EPROTO, "control: unexpected %s", tm_msg_name(f.type));
		return -EPROTO;
	}
	if (ready)
		return tm_ctl_take_ready(c, &f, error);
	if ((r = tm_ctl_body(c->ch, &f, v, error)) < 0)
		return r;
	if (f.type == TM_MSG_PING)
		return peer_ping(l, v[0], error);
	if (f.type == TM_MSG_PONG)
		return peer_pong(c, v[0], error);
	if ((r = tm_ctl_peer_end(c, v, error)) != 0 || !c->sender)
		return r;
	return tm_ctl_sender_close(c, true, error);
}

/* Receiver: CONN_LOST for each connection in lost (c->lost) not said yet on this connection. */
static int send_lost(loop *l, const uint64_t lost[TM_MAX_CHANNELS + 1], GError **error)
{
	tm_control *c = l->c;

	for (unsigned i = 0; i <= TM_MAX_CHANNELS && !c->end_ack_sent; i++) {
		if (!lost[i] || lost[i] == l->lost_sent[i])
			continue;
		l->lost_sent[i] = lost[i];
		uint64_t conn = i == TM_MAX_CHANNELS ? TM_CONN_LOST_URGENT : i;
		int r = tm_chan_send_ctrl(c->ch, TM_MSG_CONN_LOST, conn, lost[i] - 1, error);
		if (r < 0)
			return r; /* the peer's ERROR, if one came, is looked for by peer_reason() */
	}
	return 0;
}

/*
 * After run() failed on a closed or reset connection: the peer's ERROR may have come just before
 * its close and still be unread (a PING, a PONG, a CONN_LOST sent between our last read and the
 * peer's close fails first; a reset does not discard what arrived). That ERROR, when there is one,
 * is the failure: a failing peer is not waited for to reconnect.
 */
static int peer_reason(tm_control *c, int r, GError **error)
{
	GError *why = NULL;

	if ((r != -EPIPE && r != -ECONNRESET) || c->ch->peer_error || !c->ch->io)
		return r;
	/* Its TLS close_notify came: nothing follows it (and the second would be spent waiting). */
	if (c->ch->io->ops->peer_ended && tm_io_peer_ended(c->ch->io, -r))
		return r;
	if (tm_chan_peer_error(c->ch, 0, c->sender ? "receiver failed" : "sender gave up", &why) < 0) {
		g_clear_error(error);
		*error = why;
		return -why->code;
	}
	return r;
}

/* Data connections the other end closed or reset: their owner is told (link_closed). */
static void check_closed(tm_control *c)
{
	struct pollfd p[TM_MAX_CHANNELS];
	uint32_t epochs[TM_MAX_CHANNELS];
	unsigned n = MIN(c->ndata, TM_MAX_CHANNELS);

	for (unsigned i = 0; i < n; i++) {
		epochs[i] = __atomic_load_n(&c->data_epochs[i], __ATOMIC_RELAXED);
		p[i] = (struct pollfd){ .fd = __atomic_load_n(&c->data_fds[i], __ATOMIC_RELAXED),
					.events = POLLRDHUP };
	}
	if (poll(p, n, 0) <= 0)
		return;
	for (unsigned i = 0; i < n; i++)
		if (p[i].fd >= 0 && (p[i].revents & (POLLRDHUP | POLLHUP | POLLERR)))
			c->link_closed(c->owner, i, p[i].fd, epochs[i]);
}

/* Every ka: a data channel whose peer's kernel acknowledged nothing for timeout_ms is dead:
 * resumed when resume was agreed, else the session fails. And those closed, above. */
static int check_links(loop *l, GError **error)
{
	tm_control *c = l->c;

	if (c->link_closed && c->ndata)
		check_closed(c);
	for (unsigned i = 0; i < c->ndata; i++) {
		uint32_t unacked, age;
		uint32_t epoch = __atomic_load_n(&c->data_epochs[i], __ATOMIC_RELAXED);
		int fd = __atomic_load_n(&c->data_fds[i], __ATOMIC_RELAXED);
		if (tm_net_ack_age(fd, &unacked, &age) == 0 && unacked > 0 &&
		    age > c->timeout_ms) {
			/* With resume that connection goes, not the session: its owner resumes it. */
			if (c->link_dead && c->link_dead(c->owner, i, fd, epoch))
				continue;
			g_set_error(error, TM_ERROR, ETIMEDOUT,
				    "channel %u: nothing acknowledged by the peer for %.1f s (timeout_ms)",
				    i, age / 1000.0);
			return -ETIMEDOUT;
		}
	}
	return 0;
}

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
static bool test_reset_armed;
static unsigned test_resets;

void tm_control_test_reset_before_held(bool on)
{
	__atomic_store_n(&test_reset_armed, on, __ATOMIC_RELAXED);
}

unsigned tm_control_test_resets_before_held(void)
{
	return __atomic_load_n(&test_resets, __ATOMIC_RELAXED);
}

static bool test_send_armed;

bool tm_control_test_send_before_read(bool on)
{
	return __atomic_exchange_n(&test_send_armed, on, __ATOMIC_RELAXED);
}

static int test_send_before_read(tm_control *c, GError **error)
{
	struct pollfd p = { .fd = c->ch->fd, .events = POLLRDHUP };

	/* Something came: its close, if it is the peer's last words, within a second. */
	if (c->sender || !__atomic_load_n(&test_send_armed, __ATOMIC_RELAXED) ||
	    !tm_io_readable(c->ch->io))
		return 0;
	if (poll(&p, 1, 1000) <= 0 || !__atomic_exchange_n(&test_send_armed, false, __ATOMIC_RELAXED))
		return 0;
	for (unsigned i = 0; i < 200; i++, g_usleep(1000)) {
		int r = tm_chan_send_ctrl(c->ch, TM_MSG_PING, ++c->ping_nonce, 0, error);
		if (r < 0)
			return r;
	}
	return 0;
}

/* The race it forces: another thread's broken connection recorded (the session quits) after
 * finish's thread handed a frame back and before this thread took it. */
static void test_reset_before_held(tm_control *c)
{
	if (!__atomic_load_n(&test_reset_armed, __ATOMIC_RELAXED) ||
	    c->held_frame.type != TM_MSG_ERROR)
		return;
	__atomic_add_fetch(&test_resets, 1, __ATOMIC_RELAXED);
	GError *reset = g_error_new(TM_ERROR, ECONNRESET, "test hook: reset before the held frame");
	c->fail(c->owner, reset, false);
}
#endif

static int run(loop *l, GError **error)
{
	tm_control *c = l->c;
	int r;

	if (c->end_answered && c->end_result == 1)
		return 1;
	if (c->end_ack_sent)
		return tm_ctl_receiver_close(c, error);
	for (;;) {
		if (c->end_answered) {
			/* The last data worker answered END and closed (tm_control_answer_end), or
			 * finish's thread read END_ACK and closed (tm_control_direct_read), or that
			 * broke: taken once, as the thread's own (a reconnect then goes on from
			 * end_ack_sent or end_ack_seen, above). */
			if (c->end_result == 1)
				return 1;
			c->end_answered = false;
			g_propagate_error(error, g_steal_pointer(&c->end_error));
			return c->end_result;
		}
		/* END_ACK in: the close, ours after finish's thread read it with RESUME_CONTROL
		 * (tm_control_direct_read), or after a reconnect where the end broke. */
		if (c->end_ack_seen)
			return tm_ctl_sender_close(c, true, error);
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
		if (c->held)
			test_reset_before_held(c);
#endif
		if (c->held) {
			/* What finish's thread read but leaves to us (tm_control_direct_read); before
			 * quit: it may be the peer's ERROR, whose words the failure must keep, and
			 * drain() must not read its body as a header. */
			c->held = false;
			if ((r = one_message(l, &c->held_frame, error)) != 0)
				return r;
			continue;
		}
		g_mutex_lock(c->lock);
		bool quit = *c->quit, want_end = c->end_requested;
		bool want_pc = c->postcopy_requested;
		uint64_t pc_pages = c->postcopy_pages;
		uint64_t lost[TM_MAX_CHANNELS + 1];
		memcpy(lost, c->lost, sizeof(lost));
		g_mutex_unlock(c->lock);
		if (quit)
			return 0;
		if (want_pc && !l->postcopy_sent) {
			/* Before the data channels' END: the switch precedes the end (design 2.4). */
			l->postcopy_sent = true; /* kept: a break now is resumed */
			if ((r = tm_control_send_ordered(c, TM_MSG_POSTCOPY, pc_pages, error)) < 0)
				return r;
		}
		if (want_end && !c->end_sent) {
			c->end_sent = true; /* kept: a break now is resumed */
			if ((r = tm_control_send_ordered(c, TM_MSG_END, 0, error)) < 0)
				return r;
		}
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
		if ((r = test_send_before_read(c, error)) < 0)
			return r;
#endif
		if (!c->direct_read && tm_io_readable(c->ch->io)) {
			if ((r = one_message(l, NULL, error)) != 0)
				return r;
			continue;
		}
		/* After what the peer said: a sender that paused or failed closes every connection
		 * (ours too) after its ERROR, which must not be lost to our send's failure. */
		if ((r = send_lost(l, lost, error)) < 0)
			return r;
		if (c->tick && (r = c->tick(c->owner, error)) < 0)
			return r;
		/* Not while our PING is out: its PONG after END_ACK would be data where the close
		 * must come. */
		if (c->end_seen && !c->ping_out && (r = tm_ctl_answer_end(c, error)) != 0)
			return r;
		int64_t now = tm_now_us();
		int64_t deadline = c->last_rx + (int64_t)c->timeout_ms * 1000;
		if (now >= deadline) {
			l->unresponsive = true;
			g_set_error(error, TM_ERROR, ETIMEDOUT,
				    "control: peer unresponsive: nothing from the %s for %.1f s "
				    "(timeout_ms)",
				    c->sender ? "receiver" : "sender", (now - c->last_rx) / 1e6);
			return -ETIMEDOUT;
		}
		if (now >= l->next_tick) {
			if (!c->end_sent && !c->ping_out && (r = tm_ctl_send_ping(c, error)) < 0)
				return r;
			if ((r = check_links(l, error)) < 0)
				return r;
			/* Until END_ACK: a data connection may be held after our END too (its
			 * channel's END). A question may then cross END_ACK: the receiver's close
			 * reads past it (tm_ctl_receiver_close). */
			if (c->sender && (r = tm_link_watch_tick(c, error)) < 0)
				return r;
			l->next_tick = now + (int64_t)c->ka_ms * 1000;
		}
		int64_t wake_at = MIN(deadline, l->next_tick);
		/* While finish's thread reads the connection, only a wake-up or a tick. */
		struct pollfd p[2] = { { .fd = c->direct_read ? -1 : c->ch->fd, .events = POLLIN },
				       { .fd = c->wake_fd, .events = POLLIN } };
		/* The connection is another thread's to end while this one sleeps (io_lock). */
		g_mutex_unlock(&c->io_lock);
		if (poll(p, 2, (int)((wake_at - now + 999) / 1000)) > 0 && p[1].revents) {
			uint64_t v;
			(void)!read(c->wake_fd, &v, sizeof(v));
		}
		g_mutex_lock(&c->io_lock);
	}
}

/*
 * After this side failed: up to a second of what the peer still sends, for its ERROR (the
 * best explanation when both sides fail at once). Ends at the end of the stream.
 */
static void drain(tm_control *c)
{
	int64_t deadline = tm_now_us() + G_USEC_PER_SEC;
	tm_frame f;

	if (!c->ch->io) /* closed for a reconnect that did not come (resume-control.c) */
		return;
	tm_chan_set_timeout(c->ch, 250);
	for (int64_t now; (now = tm_now_us()) < deadline;) {
		g_autoptr(GError) local = NULL;
		struct pollfd p = { .fd = c->ch->fd, .events = POLLIN };
		if (!tm_io_readable(c->ch->io) && poll(&p, 1, (int)((deadline - now) / 1000) + 1) <= 0)
			return;
		if (tm_chan_recv_frame(c->ch, 0, &f, &local) < 0)
			return;
		if (f.type == TM_MSG_ERROR) {
			GError *why = NULL;
			if (tm_chan_recv_peer_error(c->ch, &f, c->sender ? "receiver failed"
									 : "sender gave up",
						    &why) < 0)
				c->fail(c->owner, why, true);
			return;
		}
		uint8_t skip[64];
		if (f.body_len > sizeof(skip) || tm_chan_recv(c->ch, skip, f.body_len, &local) < 0)
			return;
	}
}

static gpointer control_thread(gpointer data)
{
	tm_control *c = data;
	loop l = { .c = c, .next_tick = tm_now_us(), .flood_t = tm_now_us() };
	g_autoptr(GError) err = NULL;

	int r;
	/* Held but in run()'s poll: a reconnect replaces the connection under it. */
	g_mutex_lock(&c->io_lock);
	c->last_rx = tm_now_us();
	while ((r = run(&l, &err)) < 0 && (r = peer_reason(c, r, &err)) < 0 &&
	       tm_ctl_resume_wanted(c, err, l.unresponsive)) {
		/* Finish's thread stops reading the connection; it waits for the end (end_fd). */
		tm_ctl_set_direct_read(c, false);
		/* RESUME_CONTROL: the sender reconnects, the receiver waits (resume-control.c). */
		/* After a silence too: the peer may be frozen, or only this connection's path dead
		 * (cut at one end, the other left open): a new connection tells them apart. */
		g_autoptr(GError) why = NULL;
		int rr = tm_ctl_resume_reconnect(c, l.unresponsive, &why);
		if (rr == -ECANCELED && !why)
			break; /* the session failed meanwhile: that failure explains it */
		if (rr < 0 && (c->end_ack_seen || c->end_ack_sent)) {
			/* END_ACK was sent after everything was applied; the sender, which may lack
			 * it, is the one that fails. */
			r = 1;
			break;
		}
		if (rr < 0 && l.unresponsive) {
			g_autofree char *m = err->message;
			err->message = g_strdup_printf("%s; %s", m, why ? why->message : "stopped");
			break;
		}
		g_clear_error(&err);
		if (rr < 0) {
			err = g_steal_pointer(&why);
			r = rr;
			break;
		}
		l.unresponsive = false;
		int64_t now = tm_now_us();
		c->last_rx = l.next_tick = l.flood_t = now;
		c->ping_out = false; /* its PONG went with the old connection */
		tm_link_watch_reset(c); /* so did the LINK_As */
		memset(l.lost_sent, 0, sizeof(l.lost_sent)); /* said again: it may have gone with it */
		l.flood_n = 0;
	}
	if (r < 0 && c->resume_agreed && !c->resume && !c->ch->peer_error &&
	    (err->code == ECONNRESET || err->code == EPIPE || err->code == ECONNABORTED)) {
		g_autofree char *m = err->message;
		err->message = g_strdup_printf("%s (the control connection is not resumed: "
					       "RESUME_CONTROL was not agreed)", m);
	}
	/*
	 * The sender with END_ACK in and RESUME_CONTROL: the end was acknowledged and finish() may
	 * have returned already; the receiver ends with success without our CTL_POS (after its
	 * wait), so a close that fails now (a cancel or free() during a reconnect that was to say
	 * it again) loses nothing.
	 */
	if (r < 0 && c->end_ack_seen && c->resume) {
		g_clear_error(&err);
		r = 1;
	}
	tm_ctl_set_direct_read(c, false);
	tm_ctl_resume_exited(c);
	if (r == 1) {
		tm_ctl_set_ended(c, true, 0);
		g_mutex_unlock(&c->io_lock);
		linger(c);
		return NULL;
	}
	bool told = false;
	if (r < 0) {
		/*
		 * Our own reason, when it is the session's first, goes to the peer before the failure
		 * closes the data channels: their ends must not reach it first and be taken for the
		 * cause (a path that passes a half-close on as a close, as some proxies do, would
		 * lose an ERROR sent after the peer's reply to them). io_lock is held: no other
		 * thread sends on the connection.
		 */
		g_mutex_lock(c->lock);
		bool first = !*c->quit;
		g_mutex_unlock(c->lock);
		/* Not to a peer that stopped reading: the send could wait out the channel's timeout
		 * on a full buffer, with the data channels still open; it goes after them, below. */
		if (first && !c->ch->peer_error && !l.unresponsive) {
			tm_chan_send_error(c->ch, err->code, err->message);
			told = true;
		}
		c->fail(c->owner, g_steal_pointer(&err), c->ch->peer_error);
	}
	/* *quit is set: no other thread sends on the connection from here on. */
	g_mutex_unlock(&c->io_lock);

	/* The session stopped: the peer learns why here even if a data channel could not say. */
	g_mutex_lock(c->lock);
	bool from_peer = c->failure->from_peer;
	int code = c->failure->error ? c->failure->error->code : EIO;
	g_autofree char *msg = g_strdup(c->failure->error ? c->failure->error->message
							  : "migration aborted");
	g_mutex_unlock(c->lock);
	if (!from_peer && !told)
		tm_chan_send_error(c->ch, code, msg);
	g_mutex_lock(c->lock);
	c->error_sent = true;
	g_cond_broadcast(c->cond);
	g_mutex_unlock(c->lock);
	/* No more from us: the peer's drain ends at once instead of after its second. */
	shutdown(c->ch->fd, SHUT_WR);
	/*
	 * Only a connection that broke may hide the peer's reason: after any other failure of ours
	 * (a cancel, a refused message, a silent peer) what the peer says is an echo of it.
	 */
	if (!from_peer && !l.unresponsive && (code == ECONNRESET || code == EPIPE))
		drain(c);
	g_mutex_lock(c->lock);
	c->exited = true;
	g_cond_broadcast(c->cond);
	g_mutex_unlock(c->lock);
	return NULL;
}

int tm_control_start(tm_control *c, tm_chan *ctl, tm_chan *const *data, unsigned ndata,
		     unsigned timeout_ms, GError **error)
{
	c->ch = ctl;
	c->timeout_ms = timeout_ms;
	c->ka_ms = tm_control_interval(timeout_ms);
	c->ndata = ndata;
	c->data_fds = g_new(int, MAX(ndata, 1));
	c->data_epochs = g_new0(uint32_t, MAX(ndata, 1));
	c->data_bases = g_new0(tm_net_base, MAX(ndata, 1));
	tm_link_watch_alloc(c);
	/*
	 * No idle timer on data channels: a blocked read or write there waits as long as the
	 * session lives. Keepalive finds a dead peer of an idle connection. Best effort: a socket
	 * the VMM attached that is not TCP has no keepalive, and the PINGs still apply.
	 */
	for (unsigned i = 0; i < ndata; i++) {
		c->data_fds[i] = data[i]->fd;
		c->data_bases[i] = data[i]->base;
		tm_chan_set_timeout(data[i], 0);
		(void)tm_net_keepalive(data[i]->fd, c->ka_ms, 0);
	}
	(void)tm_net_keepalive(ctl->fd, c->ka_ms, timeout_ms);
	g_mutex_lock(c->lock);
	c->started = true;
	g_mutex_unlock(c->lock);
	c->thread = g_thread_try_new(c->sender ? "tm-send-ctl" : "tm-recv-ctl", control_thread, c,
				     error);
	if (!c->thread) {
		g_mutex_lock(c->lock);
		c->started = false;
		g_mutex_unlock(c->lock);
		return -EAGAIN;
	}
	return 0;
}

void tm_control_await_error_locked(tm_control *c, unsigned ms)
{
	int64_t end = g_get_monotonic_time() + (int64_t)ms * 1000;

	while (c->started && !c->error_sent && !c->exited)
		if (!g_cond_wait_until(c->cond, c->lock, end))
			return;
}

void tm_control_await_exit_locked(tm_control *c)
{
	while (c->started && !c->exited)
		g_cond_wait(c->cond, c->lock);
}

void tm_control_stop(tm_control *c)
{
	if (c->thread) {
		tm_control_wake(c);
		g_thread_join(c->thread);
		c->thread = NULL;
	}
	if (c->wake_fd >= 0)
		close(c->wake_fd);
	if (c->end_fd >= 0)
		close(c->end_fd);
	c->wake_fd = c->end_fd = -1;
	/* Under the owner's lock, which tm_control_data_conn() is called with. */
	if (c->lock)
		g_mutex_lock(c->lock);
	g_clear_pointer(&c->data_fds, g_free);
	g_clear_pointer(&c->data_epochs, g_free);
	g_clear_pointer(&c->data_bases, g_free);
	if (c->lock)
		g_mutex_unlock(c->lock);
	tm_link_watch_free(c);
}

void tm_control_clear(tm_control *c)
{
	g_clear_error(&c->end_error);
	g_mutex_clear(&c->io_lock);
}

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
void tm_sender_test_direct_ends(tm_sender *s, unsigned *ret_data, unsigned *ret_control)
{
	*ret_data = (unsigned)__atomic_load_n(&s->direct_ends, __ATOMIC_RELAXED);
	*ret_control = (unsigned)__atomic_load_n(&s->control.direct_ends, __ATOMIC_RELAXED);
}

unsigned tm_sender_test_direct_read(tm_sender *s)
{
	return (unsigned)__atomic_load_n(&s->control.direct_reads, __ATOMIC_RELAXED);
}

uint64_t tm_sender_test_direct_syncs(tm_sender *s)
{
	return __atomic_load_n(&s->direct_syncs, __ATOMIC_RELAXED);
}

uint64_t tm_sender_test_early_end_acks(tm_sender *s)
{
	return __atomic_load_n(&s->early_end_acks, __ATOMIC_RELAXED);
}

unsigned tm_sender_test_parked(tm_sender *s)
{
	unsigned n = 0;

	g_mutex_lock(&s->lock);
	for (unsigned i = 0; i < s->nch; i++)
		n += s->chans[i].parked && !s->chans[i].pending->len;
	g_mutex_unlock(&s->lock);
	return n;
}

unsigned tm_receiver_test_direct_end(tm_receiver *r)
{
	return (unsigned)__atomic_load_n(&r->control.direct_ends, __ATOMIC_RELAXED);
}
#endif
