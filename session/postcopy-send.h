/* SPDX-License-Identifier: MIT */
/*
 * The source side of postcopy (docs/design/live-engine.md 3.2, steps 14 and 16): what the sender
 * keeps for it. postcopy-send.c has the switch and the background pages of a data worker,
 * urgent-send.c the urgent connection's return thread. Not part of the API.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "session/channel.h"
#include "session/histogram.h"

typedef struct send_postcopy {
	/* read-only after the handshake */
	bool offered;              /* tm_live_config.postcopy: POSTCOPY in HELLO, urgent connection */
	bool agreed;               /* the receiver's HELLO_ACK accepted it */
	uint32_t max_outstanding;  /* agreed in HELLO_ACK */
	uint8_t decline;           /* declined: the receiver's TM_PC_DECLINE_* reason */
	uint64_t **ever_sent;      /* per block bitmap (agreed only): a copy left at pack time */
	uint64_t **unsent;         /* per block bitmap (agreed only): the destination lacks it */
	uint64_t **answered;       /* per block bitmap (agreed only): an URGENT carried it */

	/* migration thread */
	bool started;              /* tm_sender_start_postcopy() succeeded */

	/* atomic */
	bool switching;            /* workers switch at their next packet boundary */

	/* protected by s->lock */
	unsigned switched;         /* workers whose stripes are in unsent */
	uint64_t missing;          /* their pages the destination lacks at the switch */

	/* relaxed atomics, for tm_live_stats */
	uint64_t postcopy_pages, background_pages, urgent_pages, requests;
	uint64_t end_count_mismatches; /* END_ACKs after the switch that counted other than sent */
	char end_mismatch[128];    /* protected by s->lock: the first of them, "" if none */
	tm_histogram service;      /* PAGE_REQ read -> URGENT sent */
	tm_histogram inline_wait;  /* what the reply would have waited on its data channel */

	/* the urgent connection (role 2) and its return thread (urgent-send.c) */
	tm_chan urg;               /* fd -1 without */
	GThread *thread;
	int wake_fd;               /* eventfd: quit; owned */
	bool urg_ended;            /* protected by s->lock: REQ_END answered, closed cleanly */
	bool urg_exited;           /* protected by s->lock */
	uint32_t urg_epoch;        /* protected by s->lock: the HELLO epoch of the urgent
				    * connection (0: the first; a reconnect's after) */
	bool urg_end_over;         /* protected by s->lock: control ended and the receiver's
				    * REQ_END did not come in time: the return thread ends as if it
				    * had (TM_URGENT_END_GRACE_MS) */
	int urg_busy;              /* protected by s->lock: fd + 1 of an urgent reconnect under way
				    * (a failure shuts it down: resume-postcopy.c), 0: none */
	GError *urg_lost;          /* protected by s->lock: why the connection broke before the
				    * switch when nothing reconnects it (no resume), or NULL */
} send_postcopy;

/*
 * Per data channel: the worker's postcopy part, read and written by the worker only (not under
 * s->lock) unless said. The caller's thread (finish, sync) claims a parked channel only in
 * sessions without postcopy (sender.c: claim_parked), so no second thread touches it.
 */
typedef struct send_chan_pc {
	bool switched;             /* its stripes are in unsent: DISCARD, RAM_END(POSTCOPY) follow */
	bool end_wanted;           /* END was handed over: sent once the stripes have no unsent page */
	uint32_t cur_block;        /* background cursor */
	uint64_t cur_page;
	uint64_t hint;             /* atomic: return thread's hint, (block << 40 | page) + 1, 0: none */
	struct pcr_chan *resume;   /* what a reconnect replays after the switch (resume-postcopy.c) */
} send_chan_pc;

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
/*
 * Test hooks (-Dtest_hooks=true). tm_send_pc_test_break_at_switch(true): the next worker to
 * switch to postcopy finds its connection broken (shut down, -ECONNRESET) as it flushes
 * precopy's last packet, before the switch is committed. Global, once.
 * tm_send_pc_test_broken_at_switch(): how many times that was done.
 * tm_send_pc_test_switch_delay(ms): tm_sender_start_postcopy() waits ms after it marked the
 * guest stopped, before the switch (0: not).
 */
void tm_send_pc_test_break_at_switch(bool on);
unsigned tm_send_pc_test_broken_at_switch(void);
void tm_send_pc_test_switch_delay(unsigned ms);
#endif
