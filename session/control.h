/* SPDX-License-Identifier: MIT */
/*
 * The control connection of a protocol 2 session, either side: its thread (control.c), its end
 * (control-end.c), its resume (resume-control.c) and the sender's watch of its data connections
 * (link-check.c). Not part of the API.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "codec/codec.h"
#include "tagmig/session.h"
#include "session/channel.h"

typedef struct tm_failure tm_failure; /* session-internal.h */

/* ---- control.c, control-end.c: the control connection's thread and its end (protocol 2) ---- */
/*
 * One per side, from the end of the handshake to the end of the session: it reads and writes the
 * control connection, but for the end, which another thread may send under io_lock (below). It sends a PING every ka_ms (docs/design/live-engine.md 3.5),
 * answers the peer's at once, and fails the session when nothing arrived for timeout_ms ("peer
 * unresponsive") or a data channel has had data unacknowledged by the peer's kernel that long.
 * It ends the session on the control connection (END / END_ACK), and after a failure tells the
 * peer why (ERROR) and looks for the peer's own explanation.
 */
typedef struct tm_control {
	/* read-only after tm_control_start */
	tm_chan *ch;
	bool sender;
	unsigned timeout_ms, ka_ms;
	int wake_fd;           /* eventfd: quit or END requested; owned (init to stop) */
	int end_fd;            /* eventfd, readable once committed or ended is set (for a poll);
				* owned likewise */
	int *data_fds;         /* the data channels' sockets (TCP_INFO), valid until free; -1
	                        * while a channel's connection is closed for a reconnect */
	uint32_t *data_epochs; /* the HELLO epoch of each data_fds[i]'s connection (LINK_CHECK) */
	tm_net_base *data_bases; /* each data_fds[i]'s stream base (LINK_CHECK), written under
	                          * *lock with data_fds[i] (tm_control_data_conn) */
	unsigned ndata;
	GThread *thread;
	void *owner;           /* tm_sender or tm_receiver */
	GMutex *lock;          /* the owner's lock, which protects the fields below and *quit */
	GCond *cond;           /* the owner's condition: broadcast on every change below */
	bool *quit;
	tm_failure *failure;
	/* records a failure and stops the owner's channels (tm_sender_fail, tm_receiver_fail) */
	void (*fail)(void *owner, GError *err, bool from_peer);
	/*
	 * receiver, never blocking: 1 once every data channel ended and the session is complete
	 * (every page arrived or waived: complete.c), 0 not yet, -errno with *error (incomplete,
	 * or the session quit). Its END_ACK waits for this; the thread is woken when a channel ends.
	 */
	int (*data_end)(void *owner, GError **error);
	/* sender, *lock held: every data channel's END_ACK was read and checked (each channel
	 * ended). The channels finish's thread took count only with claimed, and only while it
	 * awaits them: it checks them before it reads control's END_ACK itself, and can give up on
	 * them. CTL_POS or the close after control's END_ACK, which commit the receiver, wait for
	 * it (TM_URGENT_END_GRACE_MS at most). */
	bool (*data_ended_locked)(void *owner, bool claimed);
	/* receiver: sends READY before END_ACK (state.c); sender: takes the READY whose frame
	 * header f was read (body, mode, the downtime clock). 0 or -errno with *error. */
	int (*ready)(void *owner, const tm_frame *f, GError **error);
	/* receiver, optional (postcopy-recv.c): takes the POSTCOPY whose header f was read; and a
	 * turn of the loop, never blocking (READY(2) when due). 0 or -errno with *error. */
	int (*postcopy)(void *owner, const tm_frame *f, GError **error);
	int (*tick)(void *owner, GError **error);
	/* sender, optional (resume-send.c): the receiver's CONN_LOST for data channel conn (or
	 * TM_CONN_LOST_URGENT) of this epoch, checked against the session's channels. Never blocks. */
	void (*conn_lost_msg)(void *owner, uint32_t conn, uint32_t epoch);
	/* optional (resume-send.c, resume-recv.c): data channel chan's connection fd has had data
	 * its peer's kernel did not acknowledge for timeout_ms (a path that drops everything), or
	 * that connection (of that epoch) holds a gap (link-check.c).
	 * With resume agreed: shuts fd down if it is still the channel's and no reconnect is under
	 * way, so that the channel is resumed as after any break, and returns true (also when a
	 * reconnect is under way or fd is no longer the channel's); false: the session fails.
	 * Takes the owner's lock; never blocks. */
	bool (*link_dead)(void *owner, unsigned chan, int fd, uint32_t epoch);
	/* sender, optional (resume-send.c): data channel chan's connection fd (of that epoch) was
	 * closed or reset by the other end, seen at a tick while nothing may read it: its worker,
	 * if parked, resumes it now. Takes the owner's lock; never blocks. */
	void (*link_closed)(void *owner, unsigned chan, int fd, uint32_t epoch);
	/* CONN_LOST agreed (the HELLO_ACKs; before tm_control_start, read-only after) */
	bool conn_lost;
	/* LINK_CHECK agreed (likewise): the sender's watch of what its data connections delivered,
	 * the thread's own (link-check.c; allocated by tm_control_start) */
	bool link_check;
	struct tm_link_watch *lw;

	/* protected by *lock */
	bool started;          /* the thread runs (or ran) */
	bool end_requested;    /* sender: finish() asks for END */
	bool postcopy_requested; /* sender: start_postcopy() asks for POSTCOPY(postcopy_pages) */
	uint64_t postcopy_pages;
	/* receiver: per data channel (and the urgent connection last) 1 + the epoch of a
	 * connection that broke, for CONN_LOST (tm_control_conn_lost_locked), or 0 */
	uint64_t lost[TM_MAX_CHANNELS + 1];
	/* sender: the end is decided (tm_ctl_sender_close): every data channel's END_ACK was
	 * checked, or given up on, and the session had not failed; CTL_POS or the close, which
	 * commit the receiver, follow. A data channel's failure after it is not the session's
	 * (tm_sender_fail_data), so that both sides end alike. */
	bool committed;
	bool end_ack_in;       /* sender: control's END_ACK arrived (before the decision) */
	bool ended;            /* the end acknowledged: the sender has END_ACK and decided (its close
				* may go on), or the thread ended cleanly */
	tm_counters at_end;    /* the connection's counts when ended was set, the sender's CTL_POS
				* included: the statistics stop there (set_ended) */
	bool error_sent;       /* after a failure: our ERROR is out (or could not be sent) */
	bool exited;

	/*
	 * The connection's I/O: the thread holds io_lock whenever it reads or writes (all but its
	 * poll), and so does another thread that ends the session on it itself: the sender's
	 * migration thread (tm_control_send_end), the receiver's last data worker
	 * (tm_control_answer_end). Taken before *lock, never under it.
	 */
	GMutex io_lock;
	/* protected by io_lock */
	bool end_sent;         /* sender: END is out; only PONGs (and the close) may follow from us */
	bool end_seen;         /* receiver: END arrived; END_ACK goes once every data channel ended */
	bool ping_out;         /* our PING is unanswered: no other PING before its PONG, no END_ACK */
	uint64_t ping_nonce;   /* ... of our last PING */
	int64_t ping_t;        /* ... when it left (us) */
	int64_t last_rx;       /* when the last message arrived (us): the peer's silence */
	bool ready_seen;       /* sender: READY arrived; END_ACK may follow */
	bool end_ack_seen;     /* sender: END_ACK arrived; CTL_POS and the close follow (a reconnect
	                        * takes the end up there: resume-control.c) */
	bool end_ack_sent;     /* receiver: END_ACK is out; the sender's CTL_POS and the close follow */
	/*
	 * Sender: finish's thread reads the answers to END (READY, END_ACK) itself, from the poll
	 * it waits in for the data channels' (tm_control_direct_read); the thread polls without
	 * the connection meanwhile. Cleared when finish's thread ended the connection, its read
	 * broke, or it read something else: that frame's header is held for the thread. Written
	 * under io_lock, atomically: finish's thread reads it without the lock.
	 */
	bool direct_read;
	bool held;
	tm_frame held_frame;
	/* receiver: a data worker answered END (and closed); sender: finish's thread read END_ACK
	 * (and closed), or its read broke: end_result */
	bool end_answered;
	int end_result;        /* ... 1, or -errno with end_error, which the thread reports */
	GError *end_error;

	bool resume_agreed;    /* data channels resume (resume.h): a broken control says it does not */
	struct tm_ctl_resume *resume; /* RESUME_CONTROL agreed: the control connection resumes too
	                               * (resume-control.c), else NULL */

	/* relaxed atomics, for the statistics */
	uint64_t rtt_us;       /* smoothed PING round trip, 0 before the first PONG */
	uint64_t keepalives;   /* PINGs sent */
	uint64_t direct_ends;  /* sender: control ENDs sent by the migration thread; receiver:
	                        * END_ACKs sent by the last data worker (tests: one hand-over less) */
	uint64_t direct_reads; /* sender: END_ACKs read by the migration thread */
} tm_control;

/*
 * LINK_CHECK (link-check.c), the control thread's, io_lock held: a data connection whose path
 * acknowledged what it did not deliver (a middlebox holding the bytes: TCP_INFO's counts at
 * both ends differ and stay so). Sender: tm_link_watch_tick() every keepalive asks (LINK_Q)
 * about each quiet connection and, after timeout_ms of such a gap, hands the connection to
 * link_dead() (resumed) or fails with -ETIMEDOUT; tm_link_watch_answer() takes the LINK_A
 * whose fields were decoded. Receiver: tm_link_watch_query() answers a LINK_Q. All return 0 or
 * -errno with *error; reset() forgets questions that went with a broken control connection.
 */
void tm_link_watch_alloc(tm_control *c);
void tm_link_watch_free(tm_control *c);
void tm_link_watch_reset(tm_control *c);
int tm_link_watch_tick(tm_control *c, GError **error);
int tm_link_watch_answer(tm_control *c, const uint64_t v[TM_CTRL_MAX_FIELDS], GError **error);
int tm_link_watch_query(tm_control *c, const uint64_t v[TM_CTRL_MAX_FIELDS], GError **error);
/* Receiver: counts one more LINK_Q against the flood bound (also one it drops unanswered). */
int tm_link_watch_count(tm_control *c, GError **error);
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
/*
 * Test hooks (-Dtest_hooks=true). tm_link_watch_test_cross(true): senders with LINK_CHECK that
 * receive READY after their END (READY and END_ACK leave the receiver together) ask about data
 * channel 0 right then, a question that crosses END_ACK. Global. tm_link_watch_test_crossed():
 * how many such questions were sent so far. tm_link_watch_test_ready(): the control thread's,
 * at READY.
 */
void tm_link_watch_test_cross(bool on);
unsigned tm_link_watch_test_crossed(void);
int tm_link_watch_test_ready(tm_control *c, GError **error);
#endif
/* The owner, its lock held: data channel i's connection is now fd (-1: closed), of epoch,
 * its stream base *base (tm_chan.base; NULL with fd -1). */
void tm_control_data_conn(tm_control *c, unsigned i, int fd, uint32_t epoch,
			  const tm_net_base *base);

/* Keepalive interval of a session with this timeout: clamp(timeout / 4, 100 ms, 5 s). */
unsigned tm_control_interval(unsigned timeout_ms);
/* At the owner's new: the wake eventfd. Returns 0 or -errno with *error set. */
int tm_control_init(tm_control *c, GError **error);
/*
 * After the handshake: drops the per-I/O timeouts of the data channels, sets keepalive on every
 * connection (TCP_USER_TIMEOUT on control, which keeps its per-I/O timeout: a read of a frozen
 * peer's half message ends after timeout_ms) and starts the thread. c's owner fields are set by
 * the caller. Returns 0 or -errno with *error set.
 */
int tm_control_start(tm_control *c, tm_chan *ctl, tm_chan *const *data, unsigned ndata,
		     unsigned timeout_ms, GError **error);
/* Wakes the thread (after *quit was set, or end_requested). Any thread. */
void tm_control_wake(tm_control *c);
/* Receiver, *lock held: asks the thread to send CONN_LOST for data channel conn (or
 * TM_CONN_LOST_URGENT) of epoch. No-op unless agreed. */
void tm_control_conn_lost_locked(tm_control *c, uint32_t conn, uint32_t epoch);
/* Sender, migration thread, *lock held: asks the thread for END on control (without waiting). */
void tm_control_request_end_locked(tm_control *c);
/*
 * Sender, migration thread, no lock held: END on control from this thread (no wake-up of the
 * control thread on the way out), unless the thread sent it or the session quit. A failed send
 * breaks the connection for the thread to resume or report. end_requested is set either way.
 * With read, and END sent: this thread reads the answers too (direct_read), and the control
 * thread is woken to poll without the connection.
 */
void tm_control_send_end(tm_control *c, bool read);
/*
 * Sender, migration thread, no lock held, after tm_control_send_end(c, true): the control
 * connection's fd while this thread reads it (*buffered: a message is readable without a poll;
 * *ready: READY was taken, END_ACK comes next), else -1 (it ended, or went back to the control
 * thread). tm_control_direct_read(), when it is
 * readable: one message; READY and END_ACK are taken (END_ACK: the close too, then ended is
 * set), anything else and a break go back to the control thread, which reports or resumes it.
 */
int tm_control_direct_fd(tm_control *c, bool *buffered, bool *ready);
void tm_control_direct_read(tm_control *c);
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
/* Test hook (-Dtest_hooks=true), global: senders send a PING just before their control END,
 * so that its PONG comes where finish's thread reads (and hands it back). */
void tm_control_test_ping_before_end(bool on);
/* Test hook (-Dtest_hooks=true), global: receivers wait ms before READY and END_ACK, every data
 * channel's END_ACK already sent (0: not). */
void tm_control_test_answer_delay(unsigned ms);
/* Test hook (-Dtest_hooks=true), global: senders wait ms after control's END_ACK before they
 * decide the end (tm_ctl_sender_close), as a control thread preempted there would (0: not). */
void tm_control_test_close_delay(unsigned ms);
/* Test hook (-Dtest_hooks=true), global: when the control thread finds the peer's ERROR, read and
 * handed back by finish's thread, it first records a failure of its own (ECONNRESET, not the
 * peer's: the session quits), as a data channel's reset on another thread could (other held
 * frames, a PONG, are left alone). tm_control_test_resets_before_held(): how many so far. */
void tm_control_test_reset_before_held(bool on);
unsigned tm_control_test_resets_before_held(void);
/* Test hook (-Dtest_hooks=true), global, once: the next receiver control thread that finds
 * something to read and the sender's close behind it (POLLRDHUP within a second) sends PINGs,
 * before it reads what came, until a send fails (at most 200, 1 ms apart): the race of a tick's
 * PING with the peer's ERROR and close. Returns whether it was armed. */
bool tm_control_test_send_before_read(bool on);
#endif
/*
 * Receiver, the last data worker to end (after its END_ACK): READY and END_ACK on control from
 * this thread if END is in and nothing forbids it yet (a PING of ours out, or data_end() says
 * not yet); else the thread does it. Wakes the thread either way. No lock held.
 */
void tm_control_answer_end(tm_control *c);
/* Sender: waits until END_ACK arrived (after READY) and control closed cleanly: 0, or -ECANCELED
 * when the session quit. Called with *lock held. */
int tm_control_await_end_locked(tm_control *c);
/* Under *lock: waits at most ms for the thread to send its ERROR after a quit. */
void tm_control_await_error_locked(tm_control *c, unsigned ms);
/* Under *lock: waits until the thread exited (no-op before start). */
void tm_control_await_exit_locked(tm_control *c);
/*
 * At the owner's free, after *quit was set: joins the thread and closes wake_fd; the connection
 * itself is the owner's. Idempotent.
 */
void tm_control_stop(tm_control *c);
/* At the owner's free, once every thread that may end the session on it (tm_control_send_end,
 * tm_control_answer_end) was joined: frees what tm_control_init made besides wake_fd. */
void tm_control_clear(tm_control *c);
