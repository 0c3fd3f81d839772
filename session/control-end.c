/* SPDX-License-Identifier: MIT */
/*
 * The end of the control connection (docs/design/live-engine.md 3.1, 3.5): END, READY and
 * END_ACK, and the clean close after them, either side; sent or read by the control thread
 * (control.c) or by a thread that is awake at the end anyway, the sender's migration thread
 * (tm_control_send_end, tm_control_direct_read) or the receiver's last data worker
 * (tm_control_answer_end): one wake-up less inside the guest's downtime each. io_lock keeps the
 * connection one thread's at a time.
 */
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "session/control-end.h"
#include "session/resume.h"
#include "session/session-internal.h"
#include "tagmig/error.h"

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
static bool test_ping_before_end;

void tm_control_test_ping_before_end(bool on)
{
	__atomic_store_n(&test_ping_before_end, on, __ATOMIC_RELAXED);
}

static unsigned test_answer_delay_ms;

void tm_control_test_answer_delay(unsigned ms)
{
	__atomic_store_n(&test_answer_delay_ms, ms, __ATOMIC_RELAXED);
}

static unsigned test_close_delay_ms;

void tm_control_test_close_delay(unsigned ms)
{
	__atomic_store_n(&test_close_delay_ms, ms, __ATOMIC_RELAXED);
}
#endif

/* direct_read is written under io_lock, and read there or atomically (tm_control_direct_fd). */
void tm_ctl_set_direct_read(tm_control *c, bool on)
{
	__atomic_store_n(&c->direct_read, on, __ATOMIC_RELEASE);
}

/* A clean TLS close both ways: a control stream cut short is an error, not an end. */
static int close_control(tm_control *c, GError **error)
{
	int r = tm_tls_shutdown(c->ch->io, error);

	return r < 0 ? r : 1;
}

/* How long the receiver waits for the sender's end of the control stream after END_ACK. */
#define CLOSE_WAIT_MS 5000

/* A LINK_Q that crossed our END_ACK: read and counted against the flood bound, never
 * answered (the session needs no answer any more). 0, or -errno. */
static int drop_crossed_question(tm_control *c, const tm_frame *f, GError **error)
{
	uint64_t v[TM_CTRL_MAX_FIELDS];
	int r;

	if ((r = tm_ctl_body(c->ch, f, v, error)) < 0)
		return r;
	return tm_link_watch_count(c, error);
}

/*
 * Receiver, without RESUME_CONTROL, with LINK_CHECK: the sender asks until END_ACK arrives, so
 * a LINK_Q may cross our END_ACK. Our end of the stream goes first (TLS: close_notify), then
 * we read up to the sender's (TLS: its close_notify; plaintext: its FIN, which sender_close
 * sends once END_ACK is in), dropping such questions (counted against the flood bound). Closed
 * with a question unread, or getting one after the close, our kernel would answer with a
 * reset: that discards END_ACK if it still waits to be sent, or to be sent again after a
 * loss, and a sender that meets the reset sending its next question fails before it reads
 * END_ACK. 1 (ended), or -errno: TLS without the sender's close_notify within CLOSE_WAIT_MS
 * (as tm_tls_shutdown), the sender's ERROR, anything but LINK_Q. A plaintext sender that keeps
 * its stream open that long is no failure: nothing is owed after END_ACK.
 */
static int receiver_close_reading(tm_control *c, GError **error)
{
	int64_t deadline = tm_now_us() + (int64_t)CLOSE_WAIT_MS * 1000;
	bool tls = tm_tls_active(c->ch->io);
	tm_frame f;
	int r;

	if ((r = tm_tls_close_notify(c->ch->io, error)) < 0)
		return r;
	for (;;) {
		struct pollfd p = { .fd = c->ch->fd, .events = POLLIN };
		int64_t now = tm_now_us();
		if (!tm_io_readable(c->ch->io) &&
		    (now >= deadline || poll(&p, 1, (int)((deadline - now + 999) / 1000)) <= 0)) {
			if (!tls)
				return 1;
			g_set_error(error, TM_ERROR, ETIMEDOUT,
				    "control: TLS close: no close_notify from the sender within "
				    "%.1f s of END_ACK", CLOSE_WAIT_MS / 1000.0);
			return -ETIMEDOUT;
		}
		g_autoptr(GError) local = NULL;
		if ((r = tm_chan_recv_frame(c->ch, 0, &f, &local)) < 0) {
			if (tm_io_peer_ended(c->ch->io, -r))
				return 1;
			g_propagate_error(error, g_steal_pointer(&local));
			return r;
		}
		if (f.type == TM_MSG_ERROR)
			return tm_chan_recv_peer_error(c->ch, &f, "sender gave up", error);
		if (f.type != TM_MSG_LINK_Q) {
			g_set_error(error, TM_ERROR, EPROTO,
				    "control: %s after END_ACK, where the sender's close must come",
				    tm_msg_name(f.type));
			return -EPROTO;
		}
		if ((r = drop_crossed_question(c, &f, error)) < 0)
			return r;
	}
}

static void set_ended_locked(tm_control *c, bool exited, uint64_t closing_bytes);

/* *lock held: the end decided (commit_end); waiters woken (cond, and end_fd for a poll). */
static void commit_locked(tm_control *c, uint64_t closing_bytes)
{
	uint64_t one = 1;

	c->committed = true;
	if (c->resume)
		set_ended_locked(c, false, closing_bytes);
	g_cond_broadcast(c->cond);
	(void)!write(c->end_fd, &one, sizeof(one));
}

/*
 * Sender, control's END_ACK in: the end is decided here, once, under the owner's lock, so that
 * no failure falls between the decision and what the receiver is told. CTL_POS or the close,
 * which commit the receiver, wait until every data channel's END_ACK was read and checked (by
 * its worker, or by finish's thread), for TM_URGENT_END_GRACE_MS at most; finish() waits for
 * this decision, not for the channels. A session that failed meanwhile (a count that does not
 * match, say) sends its ERROR instead: the END_ACK is then taken as not acknowledged, so that
 * the failure is reported and said, not turned into the end's success. Not after free()
 * without a failure: the end was finish()'s success, and the close goes. A data channel that
 * fails after the decision no longer fails the session (tm_sender_fail_data), nor does
 * anything with RESUME_CONTROL, where the end is then over for finish() (ended, the CTL_POS of
 * closing_bytes counted).
 * thread: the control thread, io_lock held: the channels finish's thread took are awaited
 * too (data_ended_locked), with io_lock let go meanwhile, which finish's thread may be about
 * to take to look at control. Else finish's thread, which checked them itself (direct_await).
 * 0 or -ECANCELED.
 */
static int commit_end(tm_control *c, uint64_t closing_bytes, bool thread, GError **error)
{
	int64_t until = g_get_monotonic_time() + (int64_t)TM_URGENT_END_GRACE_MS * 1000;
	bool unlocked = false;

	g_mutex_lock(c->lock);
	while (!c->committed && !*c->quit && c->data_ended_locked &&
	       !c->data_ended_locked(c->owner, thread)) {
		if (thread && !unlocked) {
			/* io_lock before *lock: let both go, take them again in that order. */
			g_mutex_unlock(c->lock);
			g_mutex_unlock(&c->io_lock);
			unlocked = true;
			g_mutex_lock(c->lock);
			continue;
		}
		if (!g_cond_wait_until(c->cond, c->lock, until))
			break;
	}
	if (unlocked) {
		g_mutex_unlock(c->lock);
		g_mutex_lock(&c->io_lock);
		g_mutex_lock(c->lock);
	}
	bool failed = !c->committed && *c->quit && c->failure->error;
	if (!failed && !c->committed)
		commit_locked(c, closing_bytes);
	g_mutex_unlock(c->lock);
	if (!failed)
		return 0;
	c->end_ack_seen = false;
	g_set_error(error, TM_ERROR, ECANCELED, "control: stopped before the end was acknowledged");
	return -ECANCELED;
}

bool tm_ctl_try_commit(tm_control *c)
{
	g_mutex_lock(c->lock);
	if (!c->committed && !*c->quit &&
	    (!c->data_ended_locked || c->data_ended_locked(c->owner, false)))
		commit_locked(c, TM_FRAME_HDR_LEN + TM_CTL_POS_LEN);
	bool committed = c->committed;
	g_mutex_unlock(c->lock);
	return committed;
}

/*
 * The end with RESUME_CONTROL: the sender acknowledges END_ACK with CTL_POS, the receiver waits
 * for it. That CTL_POS (TLS: authenticated) says the sender has its END_ACK, so a close that
 * fails afterwards costs nothing; a break before it is resumed like any other.
 */
int tm_ctl_sender_close(tm_control *c, bool thread, GError **error)
{
	g_autoptr(GError) ignored = NULL;
	int r;

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	unsigned delay_ms = __atomic_load_n(&test_close_delay_ms, __ATOMIC_RELAXED);
	if (delay_ms)
		g_usleep(delay_ms * 1000ul);
#endif
	if ((r = commit_end(c, TM_FRAME_HDR_LEN + TM_CTL_POS_LEN, thread, error)) < 0)
		return r;
	if (!c->resume) {
		r = close_control(c, error);
		/* The receiver reads past the questions that crossed END_ACK up to our end of the
		 * stream (receiver_close_reading): plaintext has no close_notify to say it. */
		if (c->lw)
			shutdown(c->ch->fd, SHUT_WR);
		return r;
	}
	if ((r = tm_ctl_pos_send(c, error)) < 0)
		return r;
	(void)close_control(c, &ignored);
	return 1;
}

int tm_ctl_receiver_close(tm_control *c, GError **error)
{
	g_autoptr(GError) ignored = NULL;
	uint64_t n;
	tm_frame f;
	int r;

	if (!c->resume)
		return c->lw ? receiver_close_reading(c, error) : close_control(c, error);
	for (;;) {
		if ((r = tm_chan_recv_frame(c->ch, 0, &f, error)) < 0)
			return r;
		if (f.type != TM_MSG_LINK_Q || !c->lw)
			break;
		if ((r = drop_crossed_question(c, &f, error)) < 0)
			return r;
	}
	if (f.type == TM_MSG_ERROR)
		return tm_chan_recv_peer_error(c->ch, &f, "sender gave up", error);
	if ((r = tm_ctl_pos_recv(c, c->ch, &f, &n, error)) < 0)
		return r;
	(void)close_control(c, &ignored);
	return 1;
}

/*
 * c->ended: the end is acknowledged (sender: END_ACK is in; either side: the thread ended
 * cleanly); the connection's counts as they are now, with closing_bytes about to be sent (the
 * sender's CTL_POS), are its statistics from here on (at_end): final when finish() returns, and
 * equal to what the receiver counts. Broadcast, and end_fd for a thread in poll
 * (tm_send_direct_await).
 */
static void set_ended_locked(tm_control *c, bool exited, uint64_t closing_bytes)
{
	uint64_t one = 1;

	if (!c->ended) {
		tm_counters_load(&c->at_end, &c->ch->st);
		c->at_end.wire_bytes += closing_bytes;
	}
	c->ended = true;
	c->exited |= exited;
	g_cond_broadcast(c->cond);
	(void)!write(c->end_fd, &one, sizeof(one));
}

void tm_ctl_set_ended(tm_control *c, bool exited, uint64_t closing_bytes)
{
	g_mutex_lock(c->lock);
	set_ended_locked(c, exited, closing_bytes);
	g_mutex_unlock(c->lock);
}

/* END (receiver) or END_ACK (sender): the connection carries no pages nor state chunks. The
 * sender's close (tm_ctl_sender_close) is its caller's. 0 or -errno. */
int tm_ctl_peer_end(tm_control *c, const uint64_t v[TM_CTRL_MAX_FIELDS], GError **error)
{
	if (c->sender && (v[0] || v[1])) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "control: END_ACK counts %" G_GUINT64_FORMAT " pages and %" G_GUINT64_FORMAT
			    " state chunks, the control connection carries none",
			    (guint64)v[0], (guint64)v[1]);
		return -EPROTO;
	}
	if (!c->sender && (v[0] || v[1] || v[2])) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "control: END counts %" G_GUINT64_FORMAT " pages, %" G_GUINT64_FORMAT
			    " packets, %" G_GUINT64_FORMAT
			    " state chunks; the control connection carries none",
			    (guint64)v[0], (guint64)v[1], (guint64)v[2]);
		return -EPROTO;
	}
	if (c->sender) {
		if (!c->ready_seen) {
			g_set_error(error, TM_ERROR, EPROTO, "control: END_ACK before READY");
			return -EPROTO;
		}
		tm_ctl_resume_received(c);
		c->end_ack_seen = true;
		g_mutex_lock(c->lock);
		c->end_ack_in = true; /* the receiver's urgent connection ended (resume-postcopy.c) */
		g_cond_broadcast(c->cond);
		g_mutex_unlock(c->lock);
		/*
		 * The close follows (tm_ctl_sender_close). With RESUME_CONTROL the destination ends
		 * with success at our CTL_POS whatever becomes of the close after it (TLS
		 * close_notify each way, a round trip), so the end is over for finish() once that
		 * is decided (commit_end), not after the close. Without it the receiver insists on a
		 * clean close (TLS: our close_notify), so the end is the close's.
		 */
		return 0;
	}
	/* Receiver: END_ACK (after READY) once every data channel ended (design 2.4); the loop
	 * keeps answering and sending keepalives until then. */
	tm_ctl_resume_received(c);
	c->end_seen = true;
	return 0;
}

/*
 * Receiver, after END, io_lock held (the control thread, or the last data worker to end):
 * READY and END_ACK once every data channel ended and all is there, then the close. 0 (not
 * yet), 1 (ended) or -errno.
 */
int tm_ctl_answer_end(tm_control *c, GError **error)
{
	int r = c->data_end(c->owner, error);

	if (r <= 0)
		return r;
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	unsigned delay_ms = __atomic_load_n(&test_answer_delay_ms, __ATOMIC_RELAXED);
	if (delay_ms)
		g_usleep(delay_ms * 1000ul);
#endif
	/* READY and END_ACK in one segment: the sender's control thread wakes once for both. */
	tm_chan_cork(c->ch);
	if ((r = c->ready(c->owner, NULL, error)) < 0)
		return r;
	/* Kept and counted as sent before the send: a break now is resumed (resume-control.c). */
	c->end_ack_sent = true;
	if ((r = tm_control_send_ordered(c, TM_MSG_END_ACK, 0, error)) < 0 ||
	    (r = tm_chan_uncork(c->ch, error)) < 0)
		return r;
	return tm_ctl_receiver_close(c, error);
}

/* Sender, io_lock held (the thread, or finish's: tm_control_direct_read): the READY whose
 * header f was read, after our END or POSTCOPY. 0 or -errno. */
int tm_ctl_take_ready(tm_control *c, const tm_frame *f, GError **error)
{
	int r;

	/* The destination has all RAM and every state section (state.c). */
	c->ready_seen = true;
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	if ((r = tm_link_watch_test_ready(c, error)) < 0)
		return r;
#endif
	if ((r = c->ready(c->owner, f, error)) == 0)
		tm_ctl_resume_received(c);
	return r;
}

void tm_control_request_end_locked(tm_control *c)
{
	c->end_requested = true;
	tm_control_wake(c);
}

void tm_control_send_end(tm_control *c, bool read)
{
	g_autoptr(GError) ignored = NULL;
	int r = 0;

	g_mutex_lock(&c->io_lock);
	g_mutex_lock(c->lock);
	/* After POSTCOPY, never before it: the thread orders those two (postcopy sessions). */
	bool go = c->started && !c->exited && !*c->quit && !c->postcopy_requested && !c->end_sent;
	c->end_requested = true;
	g_mutex_unlock(c->lock);
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	if (go && !c->ping_out && __atomic_load_n(&test_ping_before_end, __ATOMIC_RELAXED))
		r = tm_ctl_send_ping(c, &ignored);
#endif
	if (go && r >= 0) {
		c->end_sent = true; /* kept: a break now is resumed, as the thread's own END */
		r = tm_control_send_ordered(c, TM_MSG_END, 0, &ignored);
	}
	if (go && r >= 0) {
		__atomic_add_fetch(&c->direct_ends, 1, __ATOMIC_RELAXED);
		/*
		 * The answers come to this thread too: the control thread, woken now to poll
		 * without the connection (while END is on its way), is not the last hand-over
		 * at the end, where each costs a wake-up inside the guest's downtime.
		 */
		tm_ctl_set_direct_read(c, read);
	} else if (r < 0) { /* the thread's next read breaks too: it resumes or fails, with its words */
		shutdown(c->ch->fd, SHUT_RDWR);
	}
	g_mutex_unlock(&c->io_lock);
	if (r < 0 || (go && read))
		tm_control_wake(c);
}

int tm_control_direct_fd(tm_control *c, bool *buffered, bool *ready)
{
	/* Not the lock once it is over: the control thread may hold it for a round trip then (the
	 * close after RESUME_CONTROL's END_ACK). */
	*buffered = *ready = false;
	if (!__atomic_load_n(&c->direct_read, __ATOMIC_ACQUIRE))
		return -1;
	g_mutex_lock(&c->io_lock);
	int fd = c->direct_read ? c->ch->fd : -1;
	*buffered = fd >= 0 && tm_io_readable(c->ch->io);
	*ready = fd >= 0 && c->ready_seen;
	g_mutex_unlock(&c->io_lock);
	return fd;
}

void tm_control_direct_read(tm_control *c)
{
	g_autoptr(GError) err = NULL;
	uint64_t v[TM_CTRL_MAX_FIELDS] = { 0 };
	bool hand_back = false;
	tm_frame f;
	int r;

	/* Not the lock once it is over: the control thread clears direct_read before a reconnect,
	 * which it does holding the lock (the shutdown that wakes our poll comes from it). */
	if (!__atomic_load_n(&c->direct_read, __ATOMIC_ACQUIRE))
		return;
	g_mutex_lock(&c->io_lock);
	if (!c->direct_read) { /* (a held frame clears it) */
		g_mutex_unlock(&c->io_lock);
		return;
	}
	if ((r = tm_chan_recv_frame(c->ch, 0, &f, &err)) >= 0) {
		c->last_rx = tm_now_us();
		if (f.type == TM_MSG_READY && !c->ready_seen) {
			r = tm_ctl_take_ready(c, &f, &err);
		} else if (f.type == TM_MSG_END_ACK && c->ready_seen) {
			if ((r = tm_ctl_body(c->ch, &f, v, &err)) >= 0 &&
			    (r = tm_ctl_peer_end(c, v, &err)) == 0 && !c->resume)
				r = tm_ctl_sender_close(c, false, &err); /* 1; waits only for busy workers' */
		} else { /* a PING, a PONG, LINK_A, CONN_LOST, ERROR, or what the thread refuses */
			hand_back = true;
		}
	}
	if (hand_back) {
		c->held = true;
		c->held_frame = f;
		tm_ctl_set_direct_read(c, false);
	} else if (r == 0 && c->end_ack_seen) {
		/* RESUME_CONTROL: the end is over for finish() if decided now (the usual case: the
		 * workers' END_ACKs came before control's), so no other thread is woken for it; its
		 * close is a round trip, the thread's, which else decides first (commit_end). */
		(void)tm_ctl_try_commit(c);
		tm_ctl_set_direct_read(c, false);
		hand_back = true;
		__atomic_add_fetch(&c->direct_reads, 1, __ATOMIC_RELAXED);
	} else if (r != 0) {
		/* Ended (the close done), or a break or refusal for the thread to resume or report
		 * as its own (run(): end_answered). */
		tm_ctl_set_direct_read(c, false);
		c->end_answered = true;
		c->end_result = r;
		c->end_error = g_steal_pointer(&err);
		if (r == 1) {
			tm_ctl_set_ended(c, false, 0);
			__atomic_add_fetch(&c->direct_reads, 1, __ATOMIC_RELAXED);
		}
	}
	g_mutex_unlock(&c->io_lock);
	/* Not after the end: the thread finds it at its next turn (it lingers till free anyway). */
	if (hand_back || r < 0)
		tm_control_wake(c);
}

void tm_control_answer_end(tm_control *c)
{
	g_autoptr(GError) err = NULL;

	g_mutex_lock(&c->io_lock);
	g_mutex_lock(c->lock);
	bool go = c->started && !c->exited && !*c->quit;
	g_mutex_unlock(c->lock);
	/* END in and no PING of ours out (its PONG would come where the close must): else the
	 * thread answers once both hold. */
	if (go && c->end_seen && !c->ping_out && !c->end_ack_sent && !c->end_answered) {
		int r = tm_ctl_answer_end(c, &err);
		if (r != 0) {
			c->end_answered = true;
			c->end_result = r;
			c->end_error = g_steal_pointer(&err);
			if (r == 1)
				__atomic_add_fetch(&c->direct_ends, 1, __ATOMIC_RELAXED);
		}
	}
	g_mutex_unlock(&c->io_lock);
	tm_control_wake(c); /* it ends, or answers itself */
}

int tm_control_await_end_locked(tm_control *c)
{
	while (!c->ended && !*c->quit)
		g_cond_wait(c->cond, c->lock);
	return c->ended ? 0 : -ECANCELED;
}

