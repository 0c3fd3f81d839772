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
 * where to reconnect. A sender given sockets (attach) has nowhere to reconnect: no offer.
 */
void tm_resume_send_offer(tm_sender *s, const char *host, const char *port);
/* The HELLO_ACKs agreed (handshake.c): with RESUME, their token is the session's secret. */
void tm_resume_send_agreed(tm_sender *s, const tm_hello_ack *ack);
/* Worker c, before it handles w: keeps w until a SYNC acknowledgement covers it. */
void tm_resume_log(send_chan *c, const work *w);
/*
 * Worker c, after its connection failed with *error while handling c->work up to (not
 * including) item `next`: if the failure is a broken connection and resume was agreed,
 * reconnects and replaces c->work with what the receiver lacks followed by c->work[next..].
 * Returns 0 (resumed: *error cleared) or -errno with *error (unchanged when no resume applies,
 * else why resuming failed, naming the channel). c->ch is closed after a failed attempt.
 */
int tm_resume_send(send_chan *c, unsigned next, GError **error);
/* s->lock held, the session quit: an attempt under way stops now (its handshake included). */
void tm_resume_send_wake(tm_sender *s);
void tm_resume_send_stats(tm_sender *s, tm_live_stats *ret);
void tm_resume_send_free(tm_sender *s);
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
/* tm_receiver_accept() succeeded: keeps a duplicate of the listener for reconnects. */
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
