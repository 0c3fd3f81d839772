/* SPDX-License-Identifier: MIT */
/*
 * What the files of the session module share: the sender's and the receiver's state, and the
 * entry points one file of the module offers another. Not part of the API.
 *
 *   sender.c / receiver.c   life cycle: new, connect/accept, queue, sync, finish, wait, free
 *   handshake.c             HELLO and HELLO_ACK on both sides, the receiver's layout check
 *   send-pages.c            the sender's channel worker: DATA packets, SYNC, END
 *   recv-pages.c            the receiver's channel worker: DATA applied to guest RAM, SYNC, END
 *   channel.c               the protocol channel: framing, sequence numbers, control messages
 *   failure.c, stats.c      the first failure that explains the most; counters summed
 *   control.c               protocol 2: the control thread (keepalive, liveness, END, ERROR)
 *   cancel.c, events.c      cancel from any thread; phase, event bits and their eventfd
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "codec/codec.h"
#include "tagmig/session.h"
#include "session/channel.h"
#include "transport/tls/tls.h"

enum work_kind { WORK_PAGES, WORK_SYNC, WORK_END };

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

/* ---- control.c: the control connection's thread (protocol 2) ---- */
/*
 * One per side, from the end of the handshake to the end of the session: it alone reads and
 * writes the control connection. It sends a PING every ka_ms (docs/design/live-engine.md 3.5),
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
	int *data_fds;         /* the data channels' sockets (TCP_INFO), valid until free */
	unsigned ndata;
	GThread *thread;
	void *owner;           /* tm_sender or tm_receiver */
	GMutex *lock;          /* the owner's lock, which protects the fields below and *quit */
	GCond *cond;           /* the owner's condition: broadcast on every change below */
	bool *quit;
	tm_failure *failure;
	/* records a failure and stops the owner's channels (tm_sender_fail, tm_receiver_fail) */
	void (*fail)(void *owner, GError *err, bool from_peer);
	/* receiver: waits until every data channel ended; 0, or -ECANCELED when the session quit */
	int (*await_data_end)(void *owner);

	/* protected by *lock */
	bool started;          /* the thread runs (or ran) */
	bool end_requested;    /* sender: finish() asks for END */
	bool ended;            /* END / END_ACK done and the connection closed cleanly */
	bool error_sent;       /* after a failure: our ERROR is out (or could not be sent) */
	bool exited;

	/* relaxed atomics, for the statistics */
	uint64_t rtt_us;       /* smoothed PING round trip, 0 before the first PONG */
	uint64_t keepalives;   /* PINGs sent */
} tm_control;

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
/*
 * Sender, migration thread: asks for END on control and waits (under *lock, held by the
 * caller) until END_ACK came or the session quit. Returns 0 or -ECANCELED (quit).
 */
int tm_control_end_locked(tm_control *c);
/* Under *lock: waits at most ms for the thread to send its ERROR after a quit. */
void tm_control_await_error_locked(tm_control *c, unsigned ms);
/* Under *lock: waits until the thread exited (no-op before start). */
void tm_control_await_exit_locked(tm_control *c);
/*
 * At the owner's free, after *quit was set: joins the thread and closes wake_fd; the connection
 * itself is the owner's. Idempotent.
 */
void tm_control_stop(tm_control *c);

typedef struct work {
	uint32_t kind;
	uint32_t block;
	uint64_t first; /* first page; sync id for WORK_SYNC */
	uint64_t count;
} work;

typedef struct send_chan {
	tm_chan ch;
	tm_sender *s;
	GThread *thread;
	GCond wake;

	/* protected by s->lock */
	GArray *pending;  /* of work, handed to the worker by swapping with ->work */
	uint64_t synced;  /* highest sync id acknowledged by the receiver */
	bool ended;       /* END acknowledged */
	bool exited;

	/* worker-local */
	GArray *work;
	tm_packet *pkts;  /* ch.depth slots; the backend may still send from the others */
	unsigned cur;     /* slot being filled */
	bool pkt_open;
	uint8_t *tagraw;  /* tags of the pages being added, one byte per granule */
	uint64_t pages_sent;
	uint64_t packets_sent;
} send_chan;

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
	unsigned nch;
	send_chan *chans;
	tm_live_config live;   /* defaults filled in (tm_live_config_load) */
	bool live_set;         /* tm_sender_set_live() was called */
	uint8_t wire;          /* protocol spoken: 2 unless set_live said 1 or attach got N sockets */
	tm_chan ctl;           /* protocol 2: the control connection (fd -1 without) */
	unsigned wire_done;    /* wire once the handshake completed, else 0 (atomic) */
	tm_events events;      /* phase, event bits, eventfds (any thread) */
	tm_control control;    /* protocol 2: the control thread */

	/* migration-thread local */
	enum sender_state state;
	GArray **staging; /* per channel, work being split before hand-over */
	uint64_t next_sync;

	/* protected by lock */
	GMutex lock;
	GCond cond; /* workers -> migration thread: ack, end, failure */
	tm_failure failure;
	bool quit;
	int64_t t_start, t_end; /* also read by get_stats */
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
	uint64_t pages_applied;
	uint64_t packets_applied;
} recv_chan;

enum receiver_state { R_NEW, R_ACCEPTED, R_RUNNING, R_DONE };

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
	tm_events events;          /* phase, event bits, eventfds (any thread) */
	tm_control control;        /* protocol 2: the control thread */
	int setup_fd;              /* protected by lock: the connection accept is reading, or -1 */
	uint64_t **present;        /* per block bitmap, atomic bit ops */
	bool no_populate;          /* the kernel lacks MADV_POPULATE_WRITE */

	enum receiver_state state; /* migration-thread local */

	/* protected by lock */
	GMutex lock;
	GCond cond;
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
/* Connections a protocol 2 session has beyond its data channels (the control connection). */
#define TM_V2_EXTRA_CONNECTIONS 1u

/* ---- sender.c ---- */
/* Records a failure and stops every channel: blocked sends and receives return at once. */
void tm_sender_fail(tm_sender *s, GError *err, bool from_peer);
/* Under s->lock, after s->quit was set: wakes every waiter (workers, migration thread, control
 * thread, a blocked connect). */
void tm_sender_wake_all(tm_sender *s);

/* ---- send-pages.c ---- */
/* The worker thread of one sender channel (data: its send_chan). */
gpointer tm_send_worker(gpointer data);

/* ---- receiver.c ---- */
/* Records a failure of channel c (or of the VMM) and wakes the other channels' workers. */
void tm_receiver_fail(tm_receiver *r, recv_chan *c, GError *err, bool from_peer);
/* Closes a connection being set up (accept's), so that a cancel never shuts down a closed fd. */
void tm_receiver_close_setup(tm_receiver *r, tm_chan *ch);

/* ---- recv-pages.c ---- */
/* The worker thread of one receiver channel (data: its recv_chan). */
gpointer tm_recv_worker(gpointer data);

/* ---- handshake.c ---- */
/* Sends the HELLO of connection ch: a data channel (its id is the channel number) or control. */
int tm_sender_send_hello(tm_sender *s, tm_chan *ch, tm_conn_role role, GError **error);
/*
 * Waits for the HELLO_ACK of every connection; the error says what the receiver answered
 * instead. Protocol 2: every HELLO_ACK is checked against the offer and must be identical.
 */
int tm_sender_await_acks(tm_sender *s, GError **error);
/*
 * The refusal of a protocol 1 receiver (its ERROR as tm_chan_recv_peer_error() words it: `said`)
 * as the error of a protocol 2 sender: -EPROTONOSUPPORT, quoting the receiver's own words and
 * saying to set wire_version = 1.
 */
int tm_sender_v1_refusal(const tm_chan *ch, const char *said, GError **error);
/* Connections of the session being accepted: its channels, plus control in protocol 2. */
unsigned tm_receiver_connections(const tm_receiver *r);
/* Reads the HELLO of a fresh connection and places it by role and channel id. */
int tm_receiver_place_channel(tm_receiver *r, int fd, unsigned timeout_ms, GError **error);
/* The layout the sender announced, built from its HELLO (host pointers NULL). */
int tm_receiver_build_announced(tm_receiver *r, GError **error);
/* Compares our RAM with the announced layout; the message says what differs. */
int tm_receiver_compare_layout(tm_receiver *r, const tm_ram_layout *layout, tm_tag_store *tags,
			       GError **error);
