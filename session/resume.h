/* SPDX-License-Identifier: MIT */
/*
 * Resume (docs/wire-format.md, "Resume"; docs/api.md, "Resume"): a data channel of a protocol 2
 * session whose connection breaks is reconnected by the sender, proven to belong to the session
 * (session id and the secret the receiver gave in HELLO_ACK), told what the receiver applied on
 * it, and only the rest is sent again: pages re-read from guest RAM, tags from the store, state
 * chunks from the sections. The hot files call the hooks below; the logic is in resume-send.c and
 * resume-recv.c. Not part of the API.
 */
#pragma once

#include "session/session-internal.h"

/* How long the sender tries to bring a broken channel back, unless tm_live_config says. */
#define TM_RESUME_DEADLINE_DEFAULT_MS 30000u
/* Backoff between the sender's attempts: doubling from the first to the most. */
#define TM_RESUME_BACKOFF_FIRST_MS 50u
#define TM_RESUME_BACKOFF_MAX_MS 2000u

/*
 * Whether a failure with this errno is a broken connection (worth a reconnect) rather than
 * something the peer said or did wrong.
 */
bool tm_resume_broken(int code);

/* ---- sender (resume-send.c) ---- */
/*
 * tm_sender_connect(), before the HELLOs: protocol 2 without no_resume offers RESUME and keeps
 * where to reconnect. A sender given sockets (attach) offers it only with the VMM's reconnect
 * hook (tm_live_config.reconnect; host and port NULL).
 */
void tm_resume_send_offer(tm_sender *s, const char *host, const char *port);
/* The HELLO_ACKs agreed (handshake.c): with RESUME, their token is the session's secret. */
void tm_resume_send_agreed(tm_sender *s, const tm_hello_ack *ack);
/*
 * A new connection for connection (a data channel's index, TM_RECONNECT_CONTROL): to the host and
 * port of tm_sender_connect(), or from the VMM's hook in attach mode. Returns the socket or
 * -errno with *error.
 */
int tm_resume_send_dial(tm_sender *s, unsigned connection, unsigned timeout_ms, GError **error);
/*
 * The steps every reconnect attempt of the sender shares (a data channel's, control's, the
 * urgent connection's):
 * attempt_open: within deadline (monotonic us), a new connection for `connection` opened as ch
 * (channel id `id`, byte mover ops with ioc); -errno with *error, ch not open.
 * attempt_claim: unless *quit (read under lock), *busy := value so that a failure, cancel or free
 * shuts the connection down meanwhile; else ch is closed and -ECANCELED.
 * attempt_secure: the handshake deadline (within deadline), TLS when the session uses it,
 * protocol 2; -errno with *error (ch still open and claimed: the caller undoes both).
 * attempt_ack: the receiver's answer in f after the caller's HELLO + RESUME: RESUME_ACK decoded
 * into *pos, or -errno with *final set when no retry can change it (an ERROR, another message,
 * a malformed RESUME_ACK).
 */
int tm_resume_attempt_open(tm_sender *s, unsigned connection, int64_t deadline, tm_chan *ch,
			   unsigned id, const tm_transport_ops *ops, const tm_io_config *ioc,
			   GError **error);
int tm_resume_attempt_claim(tm_chan *ch, GMutex *lock, const bool *quit, int *busy, int value,
			    GError **error);
int tm_resume_attempt_secure(tm_sender *s, tm_chan *ch, int64_t deadline, GError **error);
int tm_resume_attempt_ack(tm_chan *ch, const tm_frame *f, tm_resume_pos *pos, bool *final,
			  GError **error);
/* The control connection's reconnect (resume-control.c): where to, the secret, the next epoch. */
void tm_resume_send_ctl_target(tm_sender *s, const char **ret_host, const char **ret_port,
			       uint64_t *ret_token, uint32_t *ret_epoch);
/* Worker c, before it handles w: keeps w until a SYNC acknowledgement covers it. */
void tm_resume_log(send_chan *c, const work *w);
/* On a broken connection, before it is closed: the pages of the packet its I/O handle never
 * handed to the kernel in full (tm_io_unsent_slot()), which resent_bytes does not count. */
uint64_t tm_resume_unsent_pages(const send_chan *c);
/* Control thread (tm_control.conn_lost_msg): the receiver's connection conn (a data channel, or
 * TM_CONN_LOST_URGENT) of epoch broke. If it is still ours, its socket is shut down: its owner
 * sees the break and reconnects (the urgent one: resume-postcopy.c). Never blocks. */
void tm_resume_conn_lost(void *sender, uint32_t conn, uint32_t epoch);
/* Control thread (tm_control.link_dead): the sender's side. */
bool tm_resume_link_dead(void *sender, unsigned chan, int fd, uint32_t epoch);
/* Control thread (tm_control.link_closed): the sender's side. */
void tm_resume_link_closed(void *sender, unsigned chan, int fd, uint32_t epoch);
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
/* Tests: parked workers are not woken to resume (the next round finds the break), while on. */
void tm_resume_test_no_idle_wake(bool on);
/* Tests: a worker woken to look at its connection waits ms first (0: not). */
void tm_resume_test_idle_wake_delay(unsigned ms);
#endif
/* Worker: what tm_resume_test_idle_wake_delay() set (0 without test hooks). */
unsigned tm_resume_idle_wake_delay_ms(void);
/* Control thread (tm_control.link_dead): the receiver's side. */
bool tm_resume_recv_link_dead(void *receiver, unsigned chan, int fd, uint32_t epoch);
/*
 * Worker c, after its connection failed with *error while handling c->work up to (not
 * including) item `next`: if the failure is a broken connection and resume was agreed,
 * reconnects and replaces c->work with what the receiver lacks followed by c->work[next..].
 * Returns 0 (resumed: *error cleared) or -errno with *error (unchanged when no resume applies,
 * else why resuming failed, naming the channel). c->ch is closed after a failed attempt.
 */
int tm_resume_send(send_chan *c, unsigned next, GError **error);
/* Setup: each channel's log of what it sent (for a replay) takes items without growing. */
void tm_resume_send_presize(tm_sender *s, guint items);
/* Tests: channel chan's log (NULL without resume). */
GArray *tm_resume_send_log(tm_sender *s, unsigned chan);
/* s->lock held, the session quit: an attempt under way stops now (its handshake included). */
void tm_resume_send_wake(tm_sender *s);
void tm_resume_send_stats(tm_sender *s, tm_live_stats *ret);
void tm_resume_send_free(tm_sender *s);
/* Sender: whether resume was agreed (a broken connection is reconnected). */
bool tm_resume_send_on(const tm_sender *s);
/*
 * For resume-postcopy.c (the reconnects after the switch to postcopy): where to reconnect, the
 * secret and the deadline (false: resume not agreed); the next epoch of the session; counting
 * reconnects and re-sent bytes; the pages of channel c's log (sent since the last acknowledged
 * SYNC, the last run perhaps in part) appended to ret, and the channel's counts before them.
 */
bool tm_resume_send_target(tm_sender *s, const char **ret_host, const char **ret_port,
			   uint64_t *ret_token, unsigned *ret_deadline_ms);
uint32_t tm_resume_send_epoch(tm_sender *s);
void tm_resume_send_count(tm_sender *s, uint64_t reconnects, uint64_t resent_bytes);
void tm_resume_log_pages(send_chan *c, GArray *ret, uint64_t *ret_base_pages,
			 uint64_t *ret_base_packets);

/* ---- receiver (resume-recv.c) ---- */
/* tm_receiver_accept() succeeded: keeps a duplicate of the listener for reconnects. After
 * tm_receiver_attach() with the VMM's reconnect hook: listen_fd -1, the hook accepts. */
void tm_resume_recv_listen(tm_receiver *r, int listen_fd);
/*
 * start(), before the HELLO_ACKs: agrees RESUME (the sender offered it, the receiver has a
 * listener and no no_resume) by setting it in ack with a fresh secret, and starts the thread that
 * accepts reconnects; otherwise clears RESUME from ack. Returns 0 or -errno with *error.
 */
int tm_resume_recv_agree(tm_receiver *r, tm_hello_ack *ack, GError **error);
/*
 * Worker c, after its connection failed with *error: if it broke and resume was agreed, waits
 * (as long as the session lives) for the sender's reconnect of this channel, answers it with
 * RESUME_ACK and returns 0 with *error cleared: the worker reads on. Else -errno, *error kept.
 */
int tm_resume_recv(recv_chan *c, GError **error);
void tm_resume_recv_stats(tm_receiver *r, tm_live_stats *ret);
/* A reconnect of the urgent connection was taken (resume-postcopy.c): counted. */
void tm_resume_recv_count(tm_receiver *r);
/* At free, after quit was set: stops the accepting thread, closes the listener. Idempotent. */
void tm_resume_recv_free(tm_receiver *r);

/* ---- the control connection (resume-control.c; "Resume of the control connection") ---- */
/* The feature bit a sender offers with RESUME (0 under the test hook below). */
uint32_t tm_ctl_resume_offer(void);
/* Whether a receiver accepts RESUME_CONTROL from these offered features. */
bool tm_ctl_resume_accepts(uint32_t offered);
/* RESUME_CONTROL was agreed (the HELLO_ACKs, either side): c keeps what it sends. Before
 * tm_control_start. Idempotent. */
void tm_ctl_resume_enable(tm_control *c);
/* At the owner's free, after the control thread was joined. */
void tm_ctl_resume_free(tm_control *c);
uint64_t tm_ctl_resume_reconnects(const tm_control *c);
/*
 * Control thread: sends an ordered control message (END, END_ACK, READY with mode value,
 * POSTCOPY with pages_missing value) on c->ch and, with RESUME_CONTROL, keeps it for a replay.
 * Returns 0 or -errno with *error.
 */
int tm_control_send_ordered(tm_control *c, uint8_t type, uint64_t value, GError **error);
/* Control thread: an ordered message from the peer was taken in full. */
void tm_ctl_resume_received(tm_control *c);
/* Ordered messages received so far (0 without RESUME_CONTROL). */
uint64_t tm_ctl_resume_count(const tm_control *c);
/* Whether the control thread's failure err is worth a reconnect (agreed, not the peer's
 * ERROR): a break, or the peer's silence (unresponsive), which may be a dead path. */
bool tm_ctl_resume_wanted(const tm_control *c, const GError *err, bool unresponsive);
/* After timeout_ms of silence: how long a new control connection may take to be answered. */
unsigned tm_ctl_resume_answer_ms(unsigned timeout_ms);
/*
 * Control thread, after such a failure: the sender reconnects (backoff within
 * resume_deadline_ms), the receiver waits for that (timeout_ms + resume_deadline_ms: the
 * sender may only see the break as silence); then both exchange counts and send again what the
 * peer lacks. After the peer's silence (silent): the sender gives up when a new connection is
 * not answered within tm_ctl_resume_answer_ms() (a frozen peer, not a dead path), the receiver
 * waits one keepalive interval longer than that. Returns 0 (c->ch is the new connection),
 * -ECANCELED when the session quit meanwhile (*error untouched), or -errno with *error (naming
 * control; after a silence, words to add to the silence's error).
 */
int tm_ctl_resume_reconnect(tm_control *c, bool silent, GError **error);
/* CTL_POS with our count on c->ch (the sender's last message after END_ACK). */
int tm_ctl_pos_send(tm_control *c, GError **error);
/* Reads the body of the CTL_POS whose header f came on ch, checked against what c sent. */
int tm_ctl_pos_recv(tm_control *c, tm_chan *ch, const tm_frame *f, uint64_t *ret_received,
		    GError **error);
/* The control thread ends: later reconnects are refused. */
void tm_ctl_resume_exited(tm_control *c);
/* Sender, s->lock held, the session quit: an attempt under way stops now. */
void tm_ctl_resume_send_wake(tm_sender *s);
/* Receiver's accepting thread: reads a control reconnect's CTL_RESUME (after its HELLO) and
 * checks the secret: 0 with the sender's count, or -errno with *error (words for the peer). */
int tm_ctl_resume_recv_check(tm_receiver *r, tm_chan *ch, uint64_t token, uint64_t *ret_received,
			     GError **error);
/* ... and hands the proven connection (taken on success) to the control thread: 0, or -errno
 * with *error (the session is over, an old epoch): the caller refuses ch. */
int tm_ctl_resume_recv_take(tm_receiver *r, tm_chan *ch, uint32_t epoch, uint64_t received,
			    GError **error);
/* The pseudo channel id check_reconnect() gives a control reconnect. */
#define TM_CTL_RESUME_ID ((int)TM_MAX_CHANNELS)

/* ---- cuts during setup (resume-setup.c; docs/wire-format.md, "Setup") ---- */
/*
 * Receiver, placing a connection during accept: whether HELLO h (frame f) is the sender's
 * redial of a connection placed already (same session, epoch 0, RESUME offered and not
 * refused here, accepting on a listener); if so the old connection is closed and its role free
 * (1), unless it was accepted after ch (the connection of h): then ch is the stale one
 * (-ESTALE). 0: not such a redial.
 */
int tm_setup_replace(tm_receiver *r, const tm_chan *ch, const tm_frame *f, const tm_hello *h);
/* Receiver, accepting: whether a setup redial may still replace a placed connection (a
 * listener's accept, RESUME offered by the session's first HELLO and not refused here). */
bool tm_setup_redial_possible(const tm_receiver *r);
/* Sender: whether a setup failure with this errno is dialled again (RESUME offered, broken:
 * a handshake past its deadline too). */
bool tm_setup_redial_wanted(const tm_sender *s, int code);
/* Sender: starts the setup's one budget for redials (resume_deadline_ms) at its first break;
 * later calls keep it. */
void tm_setup_budget_start(tm_sender *s);
/* Sender: when a connection's setup handshake (TLS) starting now must be done: min(timeout_ms
 * / 2, TM_HANDSHAKE_DEADLINE_MS), half the receiver's, and within the budget once it started. */
int64_t tm_setup_handshake_deadline(const tm_sender *s);
/*
 * Sender, setup: connection idx (data i, control nch, urgent nch + 1) failed with *error: closes
 * it and dials it again (the same HELLO, epoch 0) with the resume backoff, all redials of the setup
 * within resume_deadline_ms of the first. 0: open again, *error cleared, counted as a reconnect;
 * -errno with *error naming the connection and the first cause.
 */
int tm_setup_redial(tm_sender *s, unsigned idx, GError **error);
/* Sender, after opening the others: tm_setup_redial() of every connection idx < n with a
 * cause in broke[idx] (each freed; all freed, nothing dialled, when error is NULL). A redial
 * refused while channel 0 has an answer (a receiver that gave up the session) leaves that
 * connection closed: 0, and tm_sender_await_acks() reads channel 0's answer first. */
int tm_setup_redial_all(tm_sender *s, GError **broke, unsigned n, GError **error);
/* Sender: connection idx (data i, control nch, urgent nch + 1). */
tm_chan *tm_setup_chan(tm_sender *s, unsigned idx);
/*
 * Sender, before any HELLO_ACK came: waits (at most timeout_ms) until connection i has
 * something to read, and meanwhile dials again any later connection (i + 1 .. n - 1) that
 * breaks without a HELLO_ACK (its HELLO may be lost, and the receiver wait for it), marking it
 * in redialled[]; without resume such a break fails the setup at once. With resume, when no
 * connection answered for timeout_ms (doubled after each round), every one of
 * i .. n - 1 is dialled again (a HELLO lost on a connection cut on the receiver's side only),
 * until the receiver answers or the redials' deadline passes. 0, or -errno with *error when
 * such a redial failed or was not allowed.
 */
int tm_setup_watch(tm_sender *s, unsigned i, unsigned n, bool *redialled, GError **error);
/* Sender: a connection whose HELLO_ACK was lost after another agreed resume: shut down, so its
 * first I/O breaks and resumes it at position 0. */
void tm_setup_lost(tm_chan *ch);

/*
 * Receiver, start(): connection i (data i < nch, control nch, urgent nch + 1) before its
 * HELLO_ACK is sent: under the test hook below it is shut down first, so that the send fails
 * as into a dead socket; nothing otherwise.
 */
void tm_setup_test_ack_hook(const tm_receiver *r, unsigned i, tm_chan *ch);
#define TM_SETUP_TEST_ACK_CONTROL 1 /* the receiver's HELLO_ACK send on control fails */
#define TM_SETUP_TEST_ACK_URGENT 2  /* ... on the urgent connection */
#define TM_SETUP_TEST_ACK_DATA 3    /* ... on the last data channel */
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
/* Test hook (-Dtest_hooks=true): 0, or the connection (the values above) whose HELLO_ACK send
 * fails in the next receivers' start(). Global. */
void tm_setup_test_fail_ack(int which);
#endif

#define TM_CTL_RESUME_TEST_NO_OFFER 1  /* senders do not offer RESUME_CONTROL */
#define TM_CTL_RESUME_TEST_NO_ACCEPT 2 /* receivers do not accept it */
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
/* Test hook (-Dtest_hooks=true): 0, or a peer of an earlier version (the values above). Global. */
void tm_ctl_resume_test_without(int which);
#endif
