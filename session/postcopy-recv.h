/* SPDX-License-Identifier: MIT */
/*
 * The destination side of postcopy (docs/design/live-engine.md 3.3; wire: docs/wire-format.md
 * "Postcopy messages"). Not part of the API. The receiver's files call these hooks:
 *
 *   receiver.c   set_live (userfaultfd), start (HELLO_ACK accepts), wait, live stats, free
 *   handshake.c  whether a POSTCOPY offer is accepted; the urgent connection
 *   recv-pages.c DISCARD, background DATA after RAM_END(POSTCOPY), ram_zeroed's skipped pages
 *   state.c      RAM_END(POSTCOPY) and its registration barrier, READY(2), wait() == 1 once
 *   control.c    POSTCOPY on control
 *
 * States (3.3): agreed at start; SWITCHING on the first of POSTCOPY, DISCARD or
 * RAM_END(POSTCOPY); POSTCOPY once every data channel reached the registration barrier (the
 * last one registers guest RAM with userfaultfd); complete when every page is present, every
 * data channel ended and the urgent connection ended (REQ_END / END_ACK).
 *
 * Threads: postcopy-recv.c is called by data workers, the control thread and the migration
 * thread; fault.c's fault thread reads the userfaultfd; urgent-recv.c's urgent thread owns the
 * urgent connection and places requested and locally-known zero pages.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "codec/codec.h"
#include "tagmig/session.h"

typedef struct tm_receiver tm_receiver;
typedef struct recv_chan recv_chan;
typedef struct tm_pc_recv tm_pc_recv;

/* set_live with cfg->postcopy: opens (or borrows) the userfaultfd and checks it; r->pc. */
int tm_pc_recv_setup(tm_receiver *r, const tm_live_config *cfg, GError **error);
/* Whether this receiver accepts the sender's POSTCOPY offer (set_live asked for it). */
bool tm_pc_recv_accepts(const tm_receiver *r);
/* Why it declines one: TM_PC_DECLINE_* for HELLO_ACK (not configured, or set_live's failure). */
uint8_t tm_pc_recv_decline_reason(const tm_receiver *r);
/* start(): the offer was accepted (HELLO_ACK goes out with POSTCOPY). Allocates bitmaps. */
void tm_pc_recv_start(tm_receiver *r);
/* Whether postcopy was agreed in this session. Any thread. */
bool tm_pc_recv_agreed(const tm_receiver *r);

/* Worker: ram_zeroed skipped writing zero page `page` of block (it may never have been mapped). */
void tm_pc_recv_zero_skipped(tm_receiver *r, unsigned block, uint64_t page, bool skipped);
/* Worker: a DISCARD frame on channel c (before its RAM_END). 0 or -errno. */
int tm_pc_recv_discard(recv_chan *c, const tm_frame *f, GError **error);
/* Worker: RAM_END of mode on channel c, counts checked: SWITCHING, and for POSTCOPY the
 * registration barrier (returns once guest RAM is registered). 0 or -errno. */
int tm_pc_recv_ram_end(recv_chan *c, uint32_t mode, GError **error);
/* Worker: a background DATA frame after RAM_END(POSTCOPY): through the placer. 0 or -errno. */
int tm_pc_recv_data(recv_chan *c, const tm_frame *f, GError **error);
/* Control thread: the POSTCOPY message whose header f was read. 0 or -errno. */
int tm_pc_recv_postcopy_msg(void *owner, const tm_frame *f, GError **error);
/* Control thread, receiver, each turn: sends READY(2) when due. 0 or -errno. */
int tm_pc_recv_control_tick(tm_receiver *r, GError **error);
/* Control thread's data_end in postcopy: 1 complete (RAM unregistered), 0 not yet, -errno. */
int tm_pc_recv_data_end(tm_receiver *r, bool channels_ended, GError **error);
/* Under r->lock: READY(2) was sent already (the END_ACK path must not send another). */
bool tm_pc_recv_ready_sent_locked(tm_receiver *r);
/* Under r->lock, wait(): returns true once when the end of device state was reached in
 * postcopy (the VMM may start its guest). */
bool tm_pc_recv_wait_one_locked(tm_receiver *r);
/* State progress (end of state reached, a chunk read): READY(2) may be due. Any thread. */
void tm_pc_recv_state_progress(tm_receiver *r);
/* A completeness bitmap of block b: pages known to be zero at the barrier (or NULL). */
const uint64_t *tm_pc_recv_zero_known(tm_receiver *r, unsigned block);
/* Postcopy fields of the live statistics. */
void tm_pc_recv_stats(tm_receiver *r, tm_live_stats *st);
/*
 * Under r->lock, after a failure was recorded: whether it pauses postcopy (3.4) instead of
 * failing the session: guest RAM is registered and not yet complete, and it was no cancel.
 * Nothing is lost then: threads on missing pages stay blocked, the userfaultfd stays open.
 */
bool tm_pc_recv_pauses_locked(tm_receiver *r);
/* Under r->lock, paused: -ENOTCONN with the cause in *error (may be NULL). */
int tm_pc_recv_paused_error_locked(tm_receiver *r, GError **error);
/* The session failed: wakes the postcopy threads (never blocks). Any thread. */
void tm_pc_recv_quit(tm_receiver *r);
/* After the session stopped (quit set): joins the postcopy threads. Idempotent. */
void tm_pc_recv_stop(tm_receiver *r);
/* Frees r->pc (closes an owned userfaultfd). */
void tm_pc_recv_free(tm_receiver *r);

/* ---- shared by postcopy-recv.c, fault.c and urgent-recv.c ---- */
#include "session/channel.h"
#include "session/place.h"

/* A page a thread faulted on, waiting for its placement (fault.c -> urgent-recv.c). */
typedef struct pc_fault {
	unsigned block;
	uint64_t page;
} pc_fault;

struct tm_pc_recv {
	/* read-only after set_live / start */
	int uffd;
	bool uffd_owned;
	bool poison;               /* the fd has UFFD_FEATURE_POISON: free poisons missing pages */
	uint64_t uffd_features;    /* what UFFDIO_API granted (borrowed: as the VMM says) */
	bool agreed;               /* HELLO_ACK accepted POSTCOPY */
	uint32_t max_outstanding;
	unsigned nblocks;
	int stop_fd;               /* eventfd: readable for good once the postcopy threads must end */
	int req_fd;                /* eventfd: the fault thread queued pages for the urgent thread */
	/* per block bitmaps, atomic bit operations */
	uint64_t **zero_skipped;   /* ram_zeroed: a ZERO page applied without a write */
	uint64_t **zero_known;     /* at the barrier: zero_skipped pages still present */
	uint64_t **requested;      /* a fault on the page is open (a record in ->open) */
	uint64_t **dropped;        /* a DISCARD dropped it: absent until registered (drop-pages.h) */
	/* set at the barrier (under r->lock), read-only after */
	tm_placer *placer;
	/* protected by r->lock */
	bool switching;            /* POSTCOPY, DISCARD or RAM_END(POSTCOPY) seen */
	bool postcopy_msg;         /* control's POSTCOPY arrived */
	bool final_seen;           /* a channel sent RAM_END(FINAL) */
	unsigned arrived;          /* channels at the registration barrier */
	bool registered;           /* guest RAM registered: phase POSTCOPY */
	bool ready_sent;           /* READY(2) */
	bool wait_told;            /* wait() returned 1 for the end of device state */
	bool unregistered;         /* complete: UFFDIO_UNREGISTER done */
	bool urgent_done;          /* REQ_END / END_ACK on urgent done (or no urgent connection) */
	bool unused_ack_due;       /* REQ_END(0) went on the unused urgent connection, its END_ACK
	                            * is read at the end (tm_pc_urgent_close_unused) */
	/* protected by qlock */
	GMutex qlock;
	GArray *queue;             /* of pc_fault: for the urgent thread */
	GHashTable *open;          /* (block << 48 | page) -> fault time (us): open fault records */
	/* relaxed atomics: statistics and progress */
	uint64_t missing;          /* pages neither present nor zero_known since the barrier */
	uint64_t postcopy_pages, discarded, background, urgent_pages, requests, faults;
	int64_t faults_event_us;   /* when TM_EVENT_FAULTS was last raised */
	/* threads */
	GThread *fault_thread, *urgent_thread;
	/* protected by r->lock: an urgent reconnect for the urgent thread (resume-postcopy.c) */
	tm_chan urg_pending;
	bool urg_ready;
	uint32_t urg_epoch;        /* the highest epoch accepted for it */
};

/* postcopy-recv.c: a placed run's pages become the session's present pages (on_present, the
 * missing count, fault records closed). placed: the placer's count for the run. */
void tm_pc_recv_placed(tm_receiver *r, unsigned ch, unsigned block, uint64_t first,
		       uint32_t npages);
/* postcopy-recv.c: a DATA body (after its frame header, or after an URGENT's req_id) of body_len
 * bytes on ch, checked (channel: the data channel, or TM_CHANNEL_ANY with req for an URGENT)
 * and placed. *ret_pages: its page count. 0 or -errno. */
typedef struct pc_bounce pc_bounce;
pc_bounce *tm_pc_bounce_new(uint32_t packet_size);
void tm_pc_bounce_free(pc_bounce *b);
int tm_pc_recv_body(tm_receiver *r, tm_chan *ch, pc_bounce *b, uint32_t body_len,
		    unsigned channel, uint64_t req_id, const tm_page_req *req,
		    uint32_t *ret_pages, GError **error);

/* fault.c */
int tm_pc_fault_start(tm_receiver *r, GError **error);
/* urgent-recv.c */
int tm_pc_urgent_start(tm_receiver *r, GError **error);
/*
 * A session that agreed to postcopy and completed in precopy: REQ_END(0) on urgent (control
 * thread, the urgent thread never ran), and the sender's answer judged if it is already there.
 * Never waits for the peer: a dead path on the unused connection must not hold control's
 * END_ACK. 0 or -errno.
 */
int tm_pc_urgent_end_unused(tm_receiver *r, GError **error);
/*
 * After control ended (tm_receiver_wait): END_ACK for that REQ_END(0), waited for up to
 * TM_URGENT_END_GRACE_MS; a break or no answer in time ends the connection as END_ACK
 * would (the sender takes the same break as the end). 0 or -errno (a message that is not
 * END_ACK, the sender's ERROR).
 */
int tm_pc_urgent_close_unused(tm_receiver *r, GError **error);
/* Wakes the urgent thread (a queued fault, progress towards completion). */
void tm_pc_urgent_wake(tm_pc_recv *pc);
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
/*
 * Test hook (-Dtest_hooks=true; global, for the next urgent threads): with late, an urgent
 * thread begins only once a reconnect of its connection is kept and a fault is queued (or the
 * session stops; at most 10 s), as one scheduled late under load: its first PAGE_REQ then goes
 * to the old connection, which the reconnect shut down.
 */
void tm_pc_test_urgent_late(bool late);
#endif
