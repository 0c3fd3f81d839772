/* SPDX-License-Identifier: MIT */
/*
 * The resume tests' rig of test-session-resume.c, test-resume-delta.c and test-resume-hijack.c:
 * a source guest of one 16 MiB block "pc.ram", filled; a receiver into a second guest in its own
 * thread (session-fixture.h's peer); and cut-proxy.c between them, its cuts by bytes exact. The
 * sender has packets of 64 KiB, so that a cut loses some in flight. Every test runs for each
 * backend pair, plaintext and TLS (session-fixture.c).
 */
#pragma once

#include <stdint.h>

#include "cut-proxy.h"
#include "session-fixture.h"

#define CUT_RAM (16u << 20)
extern const block_spec cut_spec[1]; /* "pc.ram", CUT_RAM, 4 KiB pages */

/* Both sides' timeout_ms (20000, and 0 for the receiver's default); a frozen path's test lowers
 * them and puts them back. */
extern unsigned cut_send_timeout_ms, cut_recv_timeout_ms;

/* The proxy's accept index of data channel ch (data 0, control, data 1..). */
int conn_of(unsigned ch);

/* One migration through the proxy: the guests, the receiver and the proxy between them. */
typedef struct rig {
	guest src, dst;
	peer p;
	cut_proxy px;
	char *port, *pport; /* the receiver's, the proxy's (the sender connects there) */
} rig;

/*
 * The source filled, the receiver (handing each device-state section to fn, if set) and the
 * proxy, its cuts by bytes exact: a cut n bytes into a channel falls there, not a read later.
 */
void rig_start(rig *t, peer_state_fn fn, void *opaque);
/* Frees the sender s (may be NULL), then the rig. */
void rig_free(rig *t, tm_sender *s);

/* A sender of src with channels and lc (NULL: no live settings), packets of 64 KiB. */
tm_sender *sender_new(guest *src, unsigned channels, const tm_live_config *lc);
/* Queues every page of the block, one bitmap. */
void queue_all(tm_sender *s);

/*
 * Both sides completed, the copy is exact, each counted the reconnect (at least min_reconnects,
 * at most one), and only what the receiver lacked was sent again: it applied each queued page
 * exactly once (queued pages in all rounds). assert_resumed(): min_reconnects 1.
 */
void assert_resumed_n(tm_sender *s, peer *p, guest *src, guest *dst, int r, GError *err,
		      uint64_t queued, uint64_t min_reconnects);
void assert_resumed(tm_sender *s, peer *p, guest *src, guest *dst, int r, GError *err,
		    uint64_t queued);

/*
 * The rig started, a sender of 3 channels connected and round 1 acknowledged; from then on the
 * receiver's RESUME_ACKs say skew more SYNCs (a test hook; 0: the truth); then data channel 1
 * is cut while nobody sends, its parked worker not woken for it (test hook; idle_wake_on()
 * after). Returns the sender.
 */
tm_sender *cut_after_round_one(rig *t, int64_t skew);
/* One more round of the pages set in bm (the whole block's bitmap), its sync, finish, the
 * receiver joined: the sender's result, its error in *error. */
int round_then_finish(rig *t, tm_sender *s, const uint64_t *bm, GError **error);
/* Parked workers resume a broken connection at once again (after cut_after_round_one). */
void idle_wake_on(void);
