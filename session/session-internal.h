/* SPDX-License-Identifier: MIT */
/*
 * What the files of the session module share: the sender's and the receiver's state, and the
 * entry points one file of the module offers another. Not part of the API.
 *
 *   sender.c / receiver.c   life cycle: new, connect/accept, queue, sync, finish, wait, free
 *   handshake.c             HELLO and HELLO_ACK on both sides, the receiver's layout check
 *   accept.c                the receiver's listener: handshake deadlines, strangers dropped
 *   complete.c              whether every announced page arrived (or was waived)
 *   send-pages.c            the sender's channel worker: DATA packets, SYNC, END
 *   recv-pages.c            the receiver's channel worker: DATA applied to guest RAM, SYNC, END
 *   channel.c               the protocol channel: framing, sequence numbers, control messages
 *   failure.c, stats.c      the first failure that explains the most; counters summed
 *   rounds.c                the sender's rounds: their figures, advise, guest_stopped
 *   ratelimit.c, converge.c the rate limit's token bucket; the convergence estimator
 *   live-stats.c            tm_live_stats
 *   state.c                 device state: put_state, RAM_END, STATE, READY, next/read_state
 *   control.c               protocol 2: the control thread (keepalive, liveness, END, ERROR)
 *   control-end.c           ... the control connection's end (END, READY, END_ACK, the close),
 *                           from whichever thread is awake at the end (control.h)
 *   cancel.c, events.c      cancel from any thread; phase, event bits and their eventfd
 *   postcopy-send.c         the sender's switch to postcopy, DISCARD, background pages
 *   urgent-send.c           the sender's urgent connection: PAGE_REQ answered by URGENT
 *   resume-send.c/-recv.c   a broken data channel reconnects (resume.h)
 *   resume-postcopy.c       ... and the urgent connection, after the switch (resume-postcopy.h)
 *   resume-control.c        ... and a broken control connection (RESUME_CONTROL)
 *   postcopy-recv.c, fault.c, urgent-recv.c  postcopy at the destination (postcopy-recv.h)
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "codec/codec.h"
#include "tagmig/session.h"
#include "session/channel.h"
#include "session/control.h"
#include "session/compress.h"
#include "session/converge.h"
#include "session/postcopy-send.h"
#include "transport/tls/tls.h"

/* WORK_RAM_END, WORK_STATE: protocol 2 device state (state.c); a STATE work item has the
 * section index in block (TM_STATE_EOS_ITEM: END_OF_STATE), chunk g in first, offset in count.
 * WORK_SWITCH: wakes a worker for the switch to postcopy (postcopy-send.c). */
enum work_kind { WORK_PAGES, WORK_SYNC, WORK_END, WORK_RAM_END, WORK_STATE, WORK_SWITCH };
#define TM_STATE_EOS_ITEM UINT32_MAX

/* A device-state section of the sender (state.c): referenced, or copied with TM_STATE_COPY. */
typedef struct state_section {
	char *name;
	const uint8_t *data;
	uint64_t len;
	uint8_t *owned; /* the copy, or NULL */
} state_section;

/* The sender's device state (state.c). */
typedef struct send_state {
	/* migration thread (the guest stopped: rounds.stopped_us) */
	bool ram_closed;     /* RAM_END handed to every channel: queue_* and sync refuse */
	bool ended;          /* END_OF_STATE handed over (atomic: postcopy workers read it) */
	uint64_t next_chunk; /* g of the next chunk */
	uint64_t total;      /* bytes of every section put */
	uint64_t max_section, max_total; /* the receiver's limits (its HELLO_ACK) */
	/* protected by s->lock (workers look sections up by index) */
	GPtrArray *sections; /* of state_section */
	/* atomic */
	uint64_t downtime_us; /* guest_stopped -> READY; 0 before (tm_live_stats) */
} send_state;

/*
 * Runs of guest RAM shorter than this are not populated with madvise(MADV_POPULATE_*) before
 * they are read or written: for a few scattered pages the system call costs more than the page
 * faults it saves (issue 16: a round of 5% random pages).
 */
#define TM_POPULATE_MIN (64u << 10)
/* Asks the CPU for the cache lines of a run shorter than TM_POPULATE_MIN (prefetch.c). */
void tm_prefetch_run(const void *p, size_t len);

/* Failure bookkeeping shared by sender and receiver. */
typedef struct tm_failure {
	GError *error;
	bool from_peer; /* an ERROR message of the peer: the most useful explanation */
	bool cancelled; /* tm_*_cancel(): explains everything after it, nothing replaces it */
} tm_failure;

/*
 * Records err (taking ownership) if it explains more than what is recorded: the first failure
 * wins, except that a peer's own ERROR replaces a local one (not a cancel, and not with a mere
 * "connection closed": ECONNRESET, EPIPE). Returns true if recorded.
 */
bool tm_failure_record(tm_failure *f, GError *err, bool from_peer);

/* ---- events.c: phase, event bits and their eventfd (tm_*_phase, tm_*_take_events) ---- */
typedef struct tm_events {
	int fd;         /* eventfd, EFD_NONBLOCK; owned */
	uint32_t bits;  /* atomic: raised, not yet taken */
	int phase;      /* atomic tm_phase */
	int cancel_fd;  /* eventfd, readable for good once the session stops (wakes connect/accept) */
} tm_events;

/* Makes both eventfds; phase SETUP. Returns 0 or -errno with *error set. */
int tm_events_init(tm_events *e, GError **error);
void tm_events_fini(tm_events *e);
/* Sets bits, then writes the eventfd: a taker that read the eventfd finds them. Any thread. */
void tm_events_raise(tm_events *e, uint32_t bits);
/* Reads the eventfd, then takes the bits. Any thread. */
uint32_t tm_events_take(tm_events *e);
/* Moves to phase p and raises its event (FAILED, COMPLETE); COMPLETE and FAILED are final. */
void tm_events_set_phase(tm_events *e, tm_phase p);
tm_phase tm_events_phase(tm_events *e);
/* Makes cancel_fd readable for good: a blocked connect or accept returns -ECANCELED. */
void tm_events_stop(tm_events *e);

typedef struct work {
	uint32_t kind;
	uint32_t block;
	uint64_t first; /* first page; the round for WORK_SYNC */
	uint64_t count; /* pages; for WORK_SYNC its SYNC's id on the wire (tm_sender.wire_syncs) */
} work;

/* A channel's part in the current round (rounds.c). */
typedef struct tm_chan_round {
	/* worker-local */
	uint64_t pages_mark; /* pages_sent at the last acknowledged SYNC */
	uint64_t wire_mark;  /* ch.st.wire_bytes then */
	bool throttled;      /* the rate limit held a packet back since */
	/* protected by s->lock */
	bool busy;           /* has work (pending or being sent) */
} tm_chan_round;

typedef struct send_chan {
	tm_chan ch;
	tm_sender *s;
	GThread *thread;
	GCond wake;

	/* protected by s->lock */
	GArray *pending;  /* of work, handed to the worker by swapping with ->work */
	uint64_t synced;  /* highest round whose SYNC the receiver acknowledged */
	uint64_t synced_wire; /* that SYNC's id on the wire (0: none yet) */
	uint32_t epoch;   /* the HELLO epoch of the channel's connection (0: the first) */
	bool ended;       /* END acknowledged */
	bool exited;
	bool parked;      /* the worker waits for work with nothing queued, open or unsent */
	bool check_link;  /* parked: its connection broke or was closed; resume it now, before
	                   * any work needs it (resume-send.c, tm_resume_link_closed) */
	/* finish's caller sends this channel's end itself (tm_send_direct_*): from then on the
	 * channel, its work list and packets are the caller's, and the worker sleeps until quit;
	 * sync's caller its SYNC, until tm_send_direct_release() */
	bool direct;
	work sync_due; /* the WORK_SYNC whose SYNC_ACK direct sync's caller awaits */

	/* worker-local */
	GArray *work;
	tm_packet *pkts;  /* ch.depth slots; the backend may still send from the others */
	unsigned cur;     /* slot being filled */
	bool pkt_open;
	uint8_t *tagraw;  /* tags of the pages being added, one byte per granule */
	uint64_t pages_sent;
	uint64_t packets_sent;
	tm_chan_round cr;
	uint64_t state_chunks; /* STATE messages sent */
	send_chan_pc pc;       /* postcopy (postcopy-send.c) */
	tm_zsend *z;           /* compression (compress-send.c); set before the worker starts */
	struct tm_dsend *ds;   /* DELTA (delta-send.c): NULL unless agreed; set with z */
} send_chan;

/* Room for items in a list of work, written once now (at setup): a round's appends do not
 * fault it in (sender.c). */
void tm_work_presize(GArray *a, guint items);

/* The sender worker asks for the pages of its work item this far ahead (prefetch.c). */
#define TM_PREFETCH_AHEAD 8u
/* Prefetches the pages of c->work item i if it is a short run (no-op past the end). */
void tm_send_prefetch(send_chan *c, guint i);

/* Rounds and their figures (rounds.c). */
#define TM_ROUND_HISTORY 1024u
typedef struct tm_rounds {
	/* migration-thread local */
	uint64_t queued_round;     /* pages handed to the workers since the last end_round */
	uint64_t runs_round;       /* ... in so many runs (work items) */
	/* relaxed atomics */
	uint64_t queued_total;     /* pages handed to the workers in all */
	uint64_t max_downtime_us;  /* tm_sender_set_max_downtime(); 0: the live config's */
	/* protected by s->lock */
	tm_round_stats ring[TM_ROUND_HISTORY]; /* round k in slot k % TM_ROUND_HISTORY */
	unsigned acks[TM_ROUND_HISTORY];       /* channels that acknowledged the slot's round */
	uint64_t runs[TM_ROUND_HISTORY];       /* the slot's round's runs (runs_round) */
	uint64_t complete;         /* the last round complete: acknowledged on every channel, or
	                            * with nothing to send (rounds complete in order) */
	int64_t done_us;           /* when it was (0: none yet) */
	unsigned active;           /* channels with work */
	int64_t busy_since;        /* since when active > 0 */
	int64_t busy_us;           /* busy time up to busy_since */
	int64_t busy_mark;         /* busy time when the last round completed */
	tm_estimator est;
	int64_t stopped_us;        /* tm_sender_guest_stopped(); 0 before */
} tm_rounds;

enum sender_state { S_NEW, S_OPEN, S_DONE };

struct tm_sender {
	/* read-only after setup */
	const tm_ram_layout *layout;
	tm_tag_store *tags; /* NULL: no tags */
	tm_sender_config cfg;
	const tm_transport_ops *io;
	char *io_note; /* why the default backend was not used, or NULL */
	char *tls_creds_dir; /* owned copies of the configuration's TLS strings */
	char *tls_hostname;
	tm_tls_ctx *tls; /* created at connect/attach, NULL without TLS */
	bool no_populate; /* the kernel lacks MADV_POPULATE_READ (written once, racy is fine) */
	tm_hello hello;
	uint32_t zagreed;      /* compression codecs the HELLO_ACKs accepted */
	bool dagreed;          /* DELTA accepted (delta-send.c) */
	unsigned nch;
	send_chan *chans;
	tm_live_config live;   /* defaults filled in (tm_live_config_load) */
	bool live_set;         /* tm_sender_set_live() was called */
	uint8_t wire;          /* protocol spoken: 2 unless set_live said 1 or attach got N sockets */
	tm_chan ctl;           /* protocol 2: the control connection (fd -1 without) */
	unsigned wire_done;    /* wire once the handshake completed, else 0 (atomic) */
	tm_events events;      /* phase, event bits, eventfds (any thread) */
	tm_control control;    /* protocol 2: the control thread */
	struct tm_resume_tx *resume;  /* NULL: broken channels are not resumed (resume-send.c) */

	/* migration-thread local */
	enum sender_state state;
	struct {
		int64_t deadline_us; /* 0 until the first redial */
		unsigned attempts;
		unsigned backoff_ms;
		double quiet_s;      /* > 0: no connection answered for this long (a round) */
	} setup_redial; /* cuts during setup (resume-setup.c) */
	GArray **staging; /* per channel, work being split before hand-over */
	uint64_t next_sync;  /* the last round ended (tm_sender_end_round) */
	/* The last SYNC id staged (written by end_round's caller, read by a resume: relaxed
	 * atomic). Rounds with nothing to send complete without a SYNC (rounds.c), so a round and
	 * its SYNC's id differ; the wire's ids count from 1 without a gap. */
	uint64_t wire_syncs;
	/* Connections being resumed now, control's included (atomic): while one is, a round with
	 * nothing to send still goes to the network (rounds.c), so the VMM's round waits for the
	 * resume, or fails with it, instead of completing at once on a link that may be gone. */
	unsigned links_down;
	send_state st;

	/* protected by lock */
	GMutex lock;
	GCond cond; /* workers -> migration thread: ack, end, failure */
	tm_failure failure;
	bool quit;
	int64_t t_start, t_end; /* also read by get_stats */
	tm_rounds rounds;
	tm_ratelimit rl;        /* rate and lifted are atomics; the bucket is under lock */
	send_postcopy pc;       /* postcopy-send.c, urgent-send.c (its own rules inside) */
	/* finish's thread awaits the END_ACKs of the channels it took (tm_send_direct_await):
	 * control's decision waits for those too when the control thread reads its END_ACK */
	bool end_claims_open;

	/* relaxed atomic */
	uint64_t direct_ends;   /* data channels finish ended from its own thread (tests) */
	uint64_t direct_syncs;  /* SYNCs sync sent and had answered in its own thread (tests) */
	uint64_t early_end_acks; /* data END_ACKs finish's thread woke for before READY (tests) */
};

typedef struct recv_chan {
	tm_chan ch;
	tm_receiver *r;
	GThread *thread;
	bool used;   /* slot taken by a channel during accept */
	bool ended;  /* protected by r->lock */
	bool exited; /* protected by r->lock */

	/* worker-local, allocated once in start() */
	tm_recv_plan plan;        /* the DATA packet being received */
	tm_zrecv *z;              /* compression (compress-recv.c); set in start() */
	struct tm_drecv *dr;      /* DELTA (delta-recv.c): NULL unless agreed; set in start() */
	uint64_t pages_applied;
	uint64_t packets_applied;
	uint64_t last_sync;       /* the highest SYNC id answered: a repeated SYNC (refused
	                           * deltas, RAM_END's barrier) names an earlier one, so this
	                           * is no count (relaxed atomic: live stats, RESUME_ACK) */
	/* device state (state.c), worker-local unless said */
	bool ram_ended;           /* RAM_END(FINAL) received */
	uint64_t state_chunks;    /* STATE messages received */
	uint64_t next_chunk;      /* the chunk this channel must carry next (id, then + N) */
	uint8_t *state_buf;       /* the chunk's data (packet_size), read by the VMM in place */
	tm_state_hdr state_hdr;   /* of the chunk held; read by the VMM under r->lock */
	char state_name[TM_MAX_STATE_NAME + 1];
	/* postcopy (postcopy-recv.c), worker-local */
	bool postcopy;                    /* RAM_END(POSTCOPY) received: DATA is background */
	struct pc_bounce *pc_bounce;      /* background pages before placement */
} recv_chan;

/* The receiver's device-state hand-over (state.c); protected by r->lock. */
typedef struct recv_state {
	char **names;             /* state_names, copied (NULL: any) */
	unsigned ram_ended;       /* channels past RAM_END(FINAL): state flows once all are */
	tm_state_order order;     /* chunks delivered so far */
	recv_chan *held;          /* the channel whose chunk the VMM reads now, or NULL */
	uint64_t consumed;        /* bytes of held's chunk read */
	bool open;                /* a section returned by next_state and not read to its end */
	uint64_t left;            /* its bytes not yet read */
	uint32_t index;           /* its index */
	bool eos;                 /* END_OF_STATE delivered (every section before it handed over) */
	uint64_t cut;             /* lowest chunk due on a channel that ended (UINT64_MAX: none) */
} recv_state;

enum receiver_state { R_NEW, R_ACCEPTED, R_RUNNING, R_DONE };

/* Connections whose handshake (TLS, HELLO) the receiver's accept runs at once (accept.c): a
 * silent one holds one of them until its deadline, not the others; each costs O(1). */
#define TM_HANDSHAKES_AT_ONCE 8u
/* The most connections a session has: its data channels, control, urgent. */
#define TM_MAX_CONNECTIONS (TM_MAX_CHANNELS + 2u)
/* Handshake slots: a VMM's attached sockets all at once (tm_receiver_attach() takes at most
 * TM_MAX_CONNECTIONS; the sender sets its connections up one at a time in its own order, so
 * none may wait for a slot), and TM_HANDSHAKES_AT_ONCE others (a listener's, the hook's). */
#define TM_HS_SLOTS (TM_HANDSHAKES_AT_ONCE + TM_MAX_CONNECTIONS)

struct tm_receiver {
	/* read-only after setup */
	tm_receiver_config cfg;
	const tm_transport_ops *io;
	char *io_note;             /* why the default backend was not used, or NULL */
	tm_tls_ctx *tls;           /* NULL: plaintext channels */
	tm_hello hello;            /* the session as announced (channel_id of the first HELLO) */
	tm_ram_layout *announced;
	const tm_ram_layout *layout;
	tm_tag_store *tags;        /* NULL: no tags */
	unsigned nch;
	recv_chan *chans;
	tm_live_config live;       /* defaults filled in (tm_live_config_load) */
	uint8_t wire;              /* the first HELLO's protocol; 0 before */
	unsigned wire_done;        /* wire once accepted, else 0 (atomic) */
	tm_chan ctl;               /* protocol 2: the control connection (fd -1 without) */
	bool ctl_used;             /* placed during accept */
	bool setup_redial_ok;      /* accepting on a listener: a redial may replace (resume.h) */
	bool setup_redial_hook;    /* attach with the reconnect hook: likewise, through the hook */
	tm_events events;          /* phase, event bits, eventfds (any thread) */
	tm_control control;        /* protocol 2: the control thread */
	struct tm_resume_rx *resume;  /* NULL: broken channels are not resumed (resume-recv.c) */
	tm_chan urg;               /* postcopy offered: the urgent connection (fd -1 without) */
	bool urg_used;             /* placed during accept */
	struct tm_pc_recv *pc;     /* postcopy accepted in set_live (postcopy-recv.h), or NULL */
	int pc_refused;            /* the errno of set_live's failed userfaultfd, or 0 */
	int setup_fds[TM_HS_SLOTS]; /* protected by lock: those accept reads, or -1 */
	uint64_t **present;        /* per block bitmap, atomic bit ops */
	uint64_t **waived;         /* per block bitmap or NULL, protected by lock (complete.c) */
	bool no_populate;          /* the kernel lacks MADV_POPULATE_WRITE */
	recv_state st;             /* device state */

	enum receiver_state state; /* migration-thread local */

	/* protected by lock */
	GMutex lock;
	GCond cond;
	GCond stop; /* free() -> a data worker that ended cleanly and waits for quit to exit */
	tm_failure failure;
	bool quit;
	unsigned ended;
	int64_t t_start, t_end;
};

/* ---- live.c ---- */
/*
 * Copies min(in->size, sizeof) bytes of a caller's tm_live_config (missing fields zero), checks
 * it for the side named and fills in the defaults. Returns 0 or -EINVAL / -EOPNOTSUPP with the
 * field named in *error.
 */
int tm_live_config_load(const tm_live_config *in, bool sender, tm_live_config *ret,
			GError **error);
/* Connections a protocol 2 session has beyond its data channels (the control connection; the
 * urgent connection comes on top when postcopy is offered). */
#define TM_V2_EXTRA_CONNECTIONS 1u

/*
 * How long, once control ended, the sender waits for the receiver's REQ_END on the urgent
 * connection, and the receiver of a session that never switched for the sender's END_ACK of
 * REQ_END(0). Control's END_ACK said everything arrived and came after the receiver's urgent
 * connection ended: that exchange only closes it cleanly, and a path dead where one side cannot
 * see it costs this long, never the session.
 */
#define TM_URGENT_END_GRACE_MS 1000u

/* ---- sender.c ---- */
/* Records a failure and stops every channel: blocked sends and receives return at once. */
void tm_sender_fail(tm_sender *s, GError *err, bool from_peer);
/* The same for a data channel's failure, which is dropped (err freed) once the end is decided
 * (control.committed): a channel whose END_ACK finish gave up on fails after the receiver was
 * told the end's outcome, and must not turn finish()'s result against it. With RESUME_CONTROL
 * tm_sender_fail drops every failure after the decision, for the same reason. */
void tm_sender_fail_data(tm_sender *s, GError *err, bool from_peer);
/* Under s->lock, after s->quit was set: wakes every waiter (workers, migration thread, control
 * thread, a blocked connect). */
void tm_sender_wake_all(tm_sender *s);

/* The open-session check of the queue calls: 0, -EBADFD, or the session's failure. */
int tm_sender_check_open(tm_sender *s, GError **error);
/* Hands round's SYNC barrier, id wire on the wire, to every channel (behind what is queued). */
void tm_sender_stage_sync(tm_sender *s, uint64_t round, uint64_t wire);

/* ---- rounds.c ---- */
/* s->lock held: channel c got work (stage_commit) / has none left (its worker waits). */
void tm_rounds_chan_busy(tm_sender *s, send_chan *c);
void tm_rounds_chan_idle(tm_sender *s, send_chan *c);
/* Migration thread, before the staged work is handed over: counts its pages. */
void tm_rounds_committed(tm_sender *s);
/* s->lock held, in c's worker: c's SYNC of round was acknowledged (c->synced already set). */
void tm_rounds_chan_acked(tm_sender *s, send_chan *c, uint64_t round);
/* tm_sender_advise() without the handshake check. */
void tm_rounds_advise(tm_sender *s, uint64_t dirty_pages, uint64_t state_bytes,
		      tm_switch_advice *ret);
/*
 * The guest is paused: starts the downtime clock (phase STOPPED). lift: what is left of precopy
 * goes at full speed (tm_sender_guest_stopped()); not for the switch to postcopy, whose
 * background keeps the limit, with no moment of full speed before it. 0, or -EBADFD if the
 * session is not open, or if lift and the guest was stopped already (the switch to postcopy
 * after tm_sender_guest_stopped() keeps that clock).
 */
int tm_rounds_stop(tm_sender *s, bool lift, GError **error);

/* ---- ratelimit.c ---- */
/*
 * Worker c, before submitting a packet of bytes: waits for the bucket, after sending what its
 * channel holds corked. 1 if it had to wait, 0 if not, -errno (*error) if that send failed.
 */
int tm_sender_throttle(tm_sender *s, send_chan *c, uint64_t bytes, GError **error);
/* The guest stopped: no rate limit from now on; waiting workers go at once. */
void tm_sender_lift_rate_limit(tm_sender *s);

/* ---- send-pages.c ---- */
/* The worker thread of one sender channel (data: its send_chan). */
gpointer tm_send_worker(gpointer data);
/* Worker: sends the open DATA packet, if any. */
int tm_send_flush(send_chan *c, GError **error);
/* Worker: packs a run of pages; 1 when a switch to postcopy took the rest of it (unsent). */
int tm_send_pages(send_chan *c, const work *w, GError **error);
/* Worker: END / END_ACK; the channel has ended. */
int tm_send_end(send_chan *c, GError **error);
/* Round's SYNC (wire: its id on the wire) is answered on c: its SYNC_ACK was read, or a resume
 * found it answered before the break. Once per round; waiters on s->cond wake. */
void tm_send_synced(send_chan *c, uint64_t round, uint64_t wire);
/*
 * The end of a channel whose worker is parked, sent by finish's caller in its own thread (one
 * hand-over less per channel on the path that is the guest's downtime; wire unchanged):
 * - claim, s->lock held: true when the worker is parked with nothing queued; the channel is the
 *   caller's from then on (c->direct), and hand-overs to it no longer wake the worker.
 * - post: what was handed over since (RAM_END, STATE, END) leaves in one corked batch, END's
 *   END_ACK not awaited, so that every connection's END is out before any answer is read.
 *   0 or -errno.
 * - await: the END_ACKs of every channel direct[] names, read in whichever order they come
 *   (one poll on all of them, the session's cancel_fd and control's end_fd), and control's
 *   READY and END_ACK while this thread reads them (tm_control_direct_fd), until each such
 *   channel ended, the session quit, or control decided the end (control.committed; from
 *   READY, these channels are awaited TM_URGENT_END_GRACE_MS at most before control's END_ACK
 *   is read, and the control thread awaits them as long). The receiver holds a channel's
 *   END_ACK until device state is complete, and the chunk it lacks may be on another of these
 *   channels: a channel whose connection breaks meanwhile (or that CONN_LOST shuts down) is
 *   resumed at once, its replay sent, its END_ACK awaited with the others.
 * A broken connection is resumed as the worker would (resume.h). On failure the session has
 * failed (tm_sender_fail) and the caller reports it.
 */
bool tm_send_direct_claim_locked(send_chan *c);
int tm_send_direct_post(send_chan *c);
void tm_send_direct_await(tm_sender *s, const bool *direct);
/*
 * A SYNC on channels whose workers are parked, sent and answered in sync's caller's thread
 * (claimed as above, protocol 2 before postcopy): the round's end costs the network round trip
 * and no hand-over to a worker and back. Wire unchanged.
 * - post: what was handed over since (the SYNC) leaves, its SYNC_ACK not awaited, so that
 *   every connection's SYNC is out before any answer is read. 0 or -errno.
 * - await: the SYNC_ACKs of every channel direct[] names, read in whichever order they come
 *   (one poll on all of them and the session's cancel_fd) until each channel's synced is id or
 *   the session quit; a broken connection is resumed as the worker would (resume.h), its
 *   replay sent. Then the channels are released.
 * - release: the channels go back to their workers (woken if work came meanwhile).
 * On failure the session has failed (tm_sender_fail) and the caller reports it.
 */
int tm_send_direct_sync_post(send_chan *c);
void tm_send_direct_sync_await(tm_sender *s, const bool *direct, uint64_t id);
void tm_send_direct_release(tm_sender *s, const bool *direct);

/* ---- postcopy-send.c ---- */
/* After the HELLO_ACKs: whether the receiver accepted postcopy; its bitmaps if it did. */
void tm_sender_pc_agree(tm_sender *s, const tm_hello_ack *ack);
/* Worker: whether it must switch to postcopy now (at a packet boundary). */
bool tm_send_pc_switching(send_chan *c);
/* Worker, at the switch: pages [first, first + n) of block are for the background. */
void tm_send_pc_unsent(send_chan *c, uint32_t block, uint64_t first, uint64_t n);
/* Worker: pages [first, first + n) of block were packed (ever_sent). */
void tm_send_pc_packed(send_chan *c, uint32_t block, uint64_t first, uint64_t n);
/*
 * Worker: the switch (the rest of c->work from index `from` and its pending list into unsent,
 * DISCARD, RAM_END(POSTCOPY)), then STATE and background pages until END. 0 or -errno.
 */
int tm_send_postcopy(send_chan *c, guint from, GError **error);
/* Postcopy's part of tm_sender_finish(), s->lock held: waits for REQ_END/END_ACK on urgent
 * (postcopy agreed, switched or not). */
int tm_sender_pc_await_end_locked(tm_sender *s);
void tm_sender_pc_free(tm_sender *s);
/*
 * Step 17 (design 3.4), s->lock held, after a failure was recorded: whether the session is
 * paused rather than failed (switched to postcopy, not cancelled).
 */
bool tm_sender_pc_paused_locked(tm_sender *s);
/* Phase POSTCOPY_PAUSED and TM_EVENT_PAUSED; every connection shut down. */
void tm_sender_pc_pause(tm_sender *s);
/* s->lock held: the paused session's error: -ENOTCONN "postcopy paused: <cause>; ...". */
int tm_sender_pc_paused_error(tm_sender *s, GError **error);
/* The sender's postcopy fields of tm_live_stats. Any thread. */
void tm_sender_pc_stats(tm_sender *s, tm_live_stats *st);

/* ---- urgent-send.c ---- */
/* Starts the return thread on the urgent connection (postcopy agreed). 0 or -errno. */
int tm_urgent_start(tm_sender *s, GError **error);
/* After a failure or at free (s->quit set): wakes the return thread; with shut, also shuts
 * its connection down so a blocked send returns. Any thread. */
void tm_urgent_wake(tm_sender *s, bool shut);
/* s->lock held, after a failure: waits until the return thread (if any) exited. */
void tm_urgent_await_exit_locked(tm_sender *s);
/* At free or a failed setup (s->quit set): shuts the connection down, joins the return
 * thread, closes. */
void tm_urgent_stop(tm_sender *s);
/*
 * tm_sender_start_postcopy(), before the switch: 0 when the urgent connection can serve
 * postcopy (open, or broken and reconnected by the return thread once the switch is committed,
 * with resume); -ENOTCONN with *error naming it when it broke before and nothing reconnects it
 * (no resume): the session goes on in precopy.
 */
int tm_urgent_switch_check(tm_sender *s, GError **error);

/* ---- receiver.c ---- */
/* Records a failure of channel c (or of the VMM) and wakes the other channels' workers. */
void tm_receiver_fail(tm_receiver *r, recv_chan *c, GError *err, bool from_peer);
/* Closes a connection being set up (accept's), so that a cancel never shuts down a closed fd. */
void tm_receiver_close_setup(tm_receiver *r, tm_chan *ch);

/* ---- accept.c ---- */
/* A connection's handshake (TLS included, up to its HELLO) is done within this, or timeout_ms. */
#define TM_HANDSHAKE_DEADLINE_MS 10000u
/* Connections failing their handshake that one session's accept drops before it gives up;
 * once the session's first HELLO is in, two more per connection of the session
 * (tm_strangers_bound()): a round of setup redials replaces each placed connection once, and
 * the connections it closed while still in the backlog fail their handshake. */
#define TM_MAX_STRANGERS 64u

/* What the listener dropped: a count and the first reason (O(1), however many); and the
 * handshakes under way (accept.c), ended and joined by tm_strangers_clear(). */
typedef struct tm_strangers {
	unsigned dropped;
	char *first;         /* the reason of the first accepted of them */
	uint64_t first_seq;
	struct tm_hs_pool *pool;
} tm_strangers;
void tm_strangers_clear(tm_strangers *st);
/* How many strangers (replacements included) r's accept drops before it gives up. */
unsigned tm_strangers_bound(const tm_receiver *r);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(tm_strangers, tm_strangers_clear)

/*
 * The accept's deadline: timeout_ms from its start. Once the session's first HELLO offered
 * RESUME (a setup redial may come: tm_setup_redial_possible()), every connection of the session
 * placed, or replaced by a redial, moves it to timeout_ms and a half after that progress, but
 * never past timeout_ms + resume_deadline_ms from the start: the sender sees a HELLO lost on a
 * connection cut on our side only as timeout_ms of silence, and its redials must still find us
 * accepting (docs/wire-format.md, "Setup").
 */
typedef struct tm_accept_clock {
	int64_t start_us;
	int64_t deadline_us;
} tm_accept_clock;
void tm_accept_clock_start(const tm_receiver *r, tm_accept_clock *clk);
/* A connection of the session was placed or replaced just now. */
void tm_accept_clock_progress(const tm_receiver *r, tm_accept_clock *clk);

/* When a handshake starting now must be done: min(timeout_ms, TM_HANDSHAKE_DEADLINE_MS). */
int64_t tm_handshake_deadline(unsigned timeout_ms);
/* The same for a connection the receiver accepted, capped by the accept deadline (0: none). */
int64_t tm_receiver_handshake_deadline(const tm_receiver *r, int64_t accept_deadline_us);
/*
 * Where the accept's connections come from: a listener (tm_receiver_accept), or the VMM's
 * attached sockets (tm_receiver_attach) and, with tm_live_config.reconnect, its hook, which a
 * thread of the accept calls while it runs (the reconnect thread only after it). Attached
 * sockets are handshaken at once, all of them (TM_HS_SLOTS), the hook's connections like a
 * listener's (up to TM_HANDSHAKES_AT_ONCE).
 * One whose handshake fails (or whose HELLO is refused) ends the session, named by its index
 * in fds, unless the hook is there and the session offered RESUME (its sender redials): then
 * it is dropped like a listener's stranger (counted, its reason kept) and its replacement, the
 * sender's setup redial, awaited through the hook until the accept's deadline (a session whose
 * first HELLO then comes without RESUME ends at once, quoting it).
 */
typedef struct tm_accept_src {
	int listen_fd;       /* a listener, or -1 */
	const int *fds;      /* the attached sockets, or NULL */
	unsigned nfds;
	unsigned next;       /* fds[next..] are not handshaken yet (ours: closed when it fails) */
	bool hook;           /* the VMM's reconnect hook (attach mode) */
	unsigned lost;       /* attached sockets dropped (with the hook), their redials awaited */
} tm_accept_src;
/*
 * Accepts connections from src until one is placed (0), dropping strangers into st.
 * -ETIMEDOUT without *error at clk's deadline (moved on by each placement and replacement);
 * -ENODATA without *error: attached sockets only, all of them tried; another -errno with
 * *error: a refused sender, a listener failure, an attached socket that failed without a hook,
 * or the TM_MAX_STRANGERS-th stranger.
 */
int tm_receiver_accept_one(tm_receiver *r, tm_accept_src *src, tm_accept_clock *clk,
			   tm_strangers *st, GError **error);
/*
 * Once the session has all of its connections: handshakes still under way that finish within
 * TM_ACCEPT_DRAIN_MS are placed if they are setup redials of a placed connection (accepted
 * after it, finished before it: handshakes finish in any order), refused otherwise.
 */
#define TM_ACCEPT_DRAIN_MS 250u
void tm_receiver_accept_drain(tm_receiver *r, tm_strangers *st);
/* Appends "; N other connections dropped, the first: ..." to *error when there were some. */
void tm_strangers_explain(const tm_strangers *st, GError **error);

/* ---- complete.c ---- */
/*
 * 0 when every page of every announced block is present or waived, else -EPROTO with how many
 * pages never arrived and where the first is (docs/wire-format.md, "Completeness").
 */
int tm_receiver_check_complete(tm_receiver *r, GError **error);

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
/*
 * Test hooks (-Dtest_hooks=true): how a finished session ended. Sender: data channels ended by
 * finish's own thread, and whether it sent the control END itself (0 or 1). Receiver: 1 when the
 * last data worker answered the control END (READY, END_ACK), 0 when the control thread did.
 */
void tm_sender_test_direct_ends(tm_sender *s, unsigned *ret_data, unsigned *ret_control);
/* Sender: 1 when finish's own thread read the control END_ACK, 0 when the control thread did. */
unsigned tm_sender_test_direct_read(tm_sender *s);
/* Tests: SYNCs tm_sender_sync() sent and had answered in its caller's thread. */
uint64_t tm_sender_test_direct_syncs(tm_sender *s);
/* Sender: data channels' END_ACKs finish's thread woke for while it waited for READY. */
uint64_t tm_sender_test_early_end_acks(tm_sender *s);
/* Sender: workers parked now (waiting for work with nothing queued). */
unsigned tm_sender_test_parked(tm_sender *s);
unsigned tm_receiver_test_direct_end(tm_receiver *r);
/* Receiver: the syncs field channel's RESUME_ACK would carry now. */
uint64_t tm_receiver_test_resume_syncs(tm_receiver *r, unsigned channel);
/* Receiver: every RESUME_ACK's syncs from now on is off by skew (a receiver that lies). */
void tm_receiver_test_syncs_skew(int64_t skew);
/* Receiver: data channel channel's END_ACK counts one page more than it applied (a receiver that
 * lies, or a count gone wrong); -1: none, -2: every channel. Global. */
void tm_receiver_test_end_ack_lie(int channel);
/* Sender: a data channel's END_ACK is read ms late, whichever thread reads it (0: not). Global. */
void tm_send_test_end_ack_delay(unsigned ms);
/* Sender: finish's thread, once control decided the end, waits ms before it reports the
 * outcome (as if preempted there): a data channel's failure meanwhile. Global. */
void tm_sender_test_decided_delay(unsigned ms);
#endif

/* ---- recv-pages.c ---- */
/* The worker thread of one receiver channel (data: its recv_chan). */
gpointer tm_recv_worker(gpointer data);

/* ---- state.c ---- */
/* Sender, protocol 2 finish: RAM_END (if not yet) and END_OF_STATE handed to the channels. */
void tm_sender_state_finish(tm_sender *s);
/* Receiver, start(): the chunk order and each channel's first chunk number. */
void tm_receiver_state_init(tm_receiver *r);
/* Sender: whether RAM is closed (the first put_state or finish): queue_* and sync refuse. */
int tm_sender_check_ram_open(tm_sender *s, GError **error);
/* Sender's control thread (tm_control.ready): the READY whose frame header f it read: body,
 * mode, and the downtime clock stops. */
int tm_sender_take_ready(void *owner, const tm_frame *f, GError **error);
/* Sender: the bytes of device state WORK_STATE item w carries (0 for END_OF_STATE), as
 * tm_send_state_work sends them and the resume logs count them. */
uint64_t tm_state_chunk_bytes(tm_sender *s, const work *w);
/* Sender worker: a WORK_RAM_END or WORK_STATE item (the open packet already flushed). */
int tm_send_state_work(send_chan *c, const work *w, GError **error);
/* Sender worker: END with its three counts (protocol 2), and what the cork held before it. */
int tm_send_end_v2_post(send_chan *c, GError **error);
/* Sender worker: END_ACK read and checked against what END said (protocol 2). */
int tm_send_end_v2_ack(send_chan *c, GError **error);
void tm_sender_state_free(tm_sender *s);

/* Receiver: state_names of a tm_live_config copied and checked (set_live). */
int tm_receiver_load_state_names(tm_receiver *r, const tm_live_config *cfg, GError **error);
/* Receiver worker: frames of the device-state part of a data channel (RAM_END, STATE) and the
 * order rules around them for the others (DATA, SYNC, END). Returns 0 or -errno. */
/* The channel's device-state chunk buffer (packet_size), allocated once, at setup. */
void tm_recv_state_setup(recv_chan *c, uint32_t packet_size);
int tm_recv_state_frame(recv_chan *c, const tm_frame *f, GError **error);
int tm_recv_state_gate(recv_chan *c, const tm_frame *f, GError **error);
/* Receiver, under r->lock: the VMM has a state section (or the rest of one) to read. */
bool tm_receiver_state_waiting(tm_receiver *r);
/* Receiver's control thread (tm_control.ready), once every data channel ended: END_OF_STATE
 * reached, READY sent (f unused). */
int tm_receiver_send_ready(void *owner, const tm_frame *f, GError **error);
void tm_receiver_state_free(tm_receiver *r);

/* ---- handshake.c ---- */
/* Sends the HELLO of connection ch: a data channel (its id is the channel number) or control. */
int tm_sender_send_hello(tm_sender *s, tm_chan *ch, tm_conn_role role, GError **error);
/*
 * Waits for the HELLO_ACK of every connection; the error says what the receiver answered
 * instead. Protocol 2: every HELLO_ACK is checked against the offer and must be identical.
 */
int tm_sender_await_acks(tm_sender *s, GError **error);
/* Opens fd as connection id (data i, control nch, urgent nch + 1): TLS, then HELLO (sender.c). */
int tm_sender_open_connection(tm_sender *s, int fd, unsigned id, GError **error);
/*
 * The refusal of a protocol 1 receiver (its ERROR as tm_chan_recv_peer_error() words it: `said`)
 * as the error of a protocol 2 sender: -EPROTONOSUPPORT, quoting the receiver's own words and
 * saying to set wire_version = 1.
 */
int tm_sender_v1_refusal(const tm_chan *ch, const char *said, GError **error);
/* Connections of the session being accepted: its channels, plus control in protocol 2. */
unsigned tm_receiver_connections(const tm_receiver *r);
/* A fresh connection whose HELLO was read and decoded, not yet placed (accept.c). */
typedef struct tm_hs_result {
	tm_chan ch;
	tm_frame f;
	tm_hello h;
} tm_hs_result;
/*
 * A fresh connection's handshake, which touches no state of r but its read-only configuration:
 * any thread, several at once. fd's TLS handshake and HELLO (complete by deadline_us), decoded
 * into *res. On failure (before a HELLO could be decoded: garbage, a close, a failed TLS
 * authentication, the deadline; a stranger the accept drops) the connection is closed, after
 * an ERROR when one can reach the peer.
 */
int tm_receiver_read_hello(const tm_receiver *r, int fd, int64_t deadline_us, tm_hs_result *res,
			   GError **error);
/* Then, on the accepting thread: places res (taken over, cleared) by role and channel id, or
 * refuses it; on failure *ret_stranger says whether the accept drops it and goes on. */
int tm_receiver_place_hello(tm_receiver *r, tm_hs_result *res, bool *ret_stranger, GError **error);
/* The layout the sender announced, built from its HELLO (host pointers NULL). */
int tm_receiver_build_announced(tm_receiver *r, GError **error);
/* Compares our RAM with the announced layout; the message says what differs. */
int tm_receiver_compare_layout(tm_receiver *r, const tm_ram_layout *layout, tm_tag_store *tags,
			       GError **error);
