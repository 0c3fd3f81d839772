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
} tm_failure;

/*
 * Records err (taking ownership) if it explains more than what is recorded: the first failure
 * wins, except that a peer's own ERROR replaces a local one. Returns true if recorded.
 */
bool tm_failure_record(tm_failure *f, GError *err, bool from_peer);

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
	bool ctl_ended;            /* END / END_ACK done on it (migration thread) */
	uint64_t **present;        /* per block bitmap, atomic bit ops */
	uint64_t **waived;         /* per block bitmap or NULL, protected by lock (complete.c) */
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

/* ---- send-pages.c ---- */
/* The worker thread of one sender channel (data: its send_chan). */
gpointer tm_send_worker(gpointer data);

/* ---- receiver.c ---- */
/* Records a failure of channel c (or of the VMM) and wakes the other channels' workers. */
void tm_receiver_fail(tm_receiver *r, recv_chan *c, GError *err, bool from_peer);

/* ---- accept.c ---- */
/* A connection's handshake (TLS included, up to its HELLO) is done within this, or timeout_ms. */
#define TM_HANDSHAKE_DEADLINE_MS 10000u
/* Connections failing their handshake that one session's accept drops before it gives up. */
#define TM_MAX_STRANGERS 64u

/* What the listener dropped: a count and the first reason (O(1), however many). */
typedef struct tm_strangers {
	unsigned dropped;
	char *first;
} tm_strangers;
void tm_strangers_clear(tm_strangers *st);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(tm_strangers, tm_strangers_clear)

/* When a handshake starting now must be done: min(timeout_ms, TM_HANDSHAKE_DEADLINE_MS). */
int64_t tm_handshake_deadline(unsigned timeout_ms);
/* The same for a connection the receiver accepted, capped by the accept deadline (0: none). */
int64_t tm_receiver_handshake_deadline(const tm_receiver *r, int64_t accept_deadline_us);
/*
 * Accepts connections on listen_fd until one is placed (0), dropping strangers into st.
 * -ETIMEDOUT without *error at deadline_us; another -errno with *error: a refused sender, a
 * listener failure, or the TM_MAX_STRANGERS-th stranger.
 */
int tm_receiver_accept_one(tm_receiver *r, int listen_fd, int64_t deadline_us,
			   tm_strangers *st, GError **error);
/* Appends "; N other connections dropped, the first: ..." to *error when there were some. */
void tm_strangers_explain(const tm_strangers *st, GError **error);

/* ---- complete.c ---- */
/*
 * 0 when every page of every announced block is present or waived, else -EPROTO with how many
 * pages never arrived and where the first is (docs/wire-format.md, "Completeness").
 */
int tm_receiver_check_complete(tm_receiver *r, GError **error);

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
/*
 * Reads the HELLO of a fresh connection and places it by role and channel id. Its handshake
 * (TLS included) must be complete by deadline_us. On failure *ret_stranger says whether the
 * connection failed before a HELLO could be decoded (garbage, a close, a failed TLS
 * authentication, the deadline): a stranger the listener drops, not a refused sender.
 */
int tm_receiver_place_channel(tm_receiver *r, int fd, int64_t deadline_us, bool *ret_stranger,
			      GError **error);
/* The layout the sender announced, built from its HELLO (host pointers NULL). */
int tm_receiver_build_announced(tm_receiver *r, GError **error);
/* Compares our RAM with the announced layout; the message says what differs. */
int tm_receiver_compare_layout(tm_receiver *r, const tm_ram_layout *layout, tm_tag_store *tags,
			       GError **error);
