/* SPDX-License-Identifier: MIT */
/*
 * The end tests' session (test-session-finish.c, test-session-end.c): a guest of GUEST bytes in
 * one block "pc.ram" sent over CHANNELS channels striped in CHUNK chunks to a receiver peer
 * (session-fixture.h), and the library's test hooks those tests read or set. In a library built
 * without test hooks the hooks do nothing and read 0, and have_hooks() skips the test.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "session-fixture.h"

#define PAGE 4096u
#define CHANNELS 4u
#define CHUNK (64u * 1024u) /* striping chunk: 16 pages, channel = chunk % CHANNELS */
#define GUEST (32u << 20)

/* Which thread ended what (tm_*_test_* hooks of the library). */
unsigned parked(tm_sender *s);
void sender_ends(tm_sender *s, unsigned *data, unsigned *control);
unsigned sender_read_end(tm_sender *s);
unsigned receiver_end(tm_receiver *r);
uint64_t direct_syncs(tm_sender *s);
uint64_t early_end_acks(tm_sender *s);
/* What the hooks change: a PING before END, a reset before the held frame, the receiver's
 * answer to END held, a channel's END_ACK that lies (-1: none, -2: every channel), the sender's
 * reads of END_ACK, its close and its report of the decision held. */
void ping_before_end(bool on);
unsigned reset_before_held(bool on);
void answer_delay(unsigned ms);
void end_ack_lie(int channel);
void end_ack_delay(unsigned ms);
void close_delay(unsigned ms);
void decided_delay(unsigned ms);
/* false (the test skipped) in a library built without its test hooks */
bool have_hooks(void);

tm_sender *source(guest *g, const char *port);
/* The source filled, the destination empty. */
void guests_init(guest *src, guest *dst);
/* Every page, then a SYNC: each channel's worker parks once it has the SYNC_ACK. */
void full_round(tm_sender *s);
/* The sync returns on the last SYNC_ACK, a moment before the workers park: wait for them. */
void await_parked(tm_sender *s, unsigned n);
/* Every page of the channels in busy[] dirtied and queued, nothing synced. */
uint64_t dirty_channels(guest *g, tm_sender *s, const bool busy[CHANNELS]);
/* How the session ended: data channels and the control END of the sender, and the receiver;
 * returns whether finish's thread read the control END_ACK itself. */
unsigned ends(tm_sender *s, peer *p, unsigned *data, unsigned *control, unsigned *answered);
/* The pages both sides counted: sent, applied, and what the test queued. */
void assert_counts(tm_sender *s, peer *p, uint64_t queued);
/* A session through its first full round, every worker parked. */
tm_sender *parked_after_round(guest *src, guest *dst, peer *p);
/* finish succeeds, the receiver completes, and the destination is the source bit for bit. */
void finish_checked(tm_sender *s, peer *p, guest *src, guest *dst, uint64_t pages);
void teardown(tm_sender *s, peer *p, guest *src, guest *dst);
void finish_complete(tm_sender *s, peer *p, guest *src, guest *dst, uint64_t pages);
