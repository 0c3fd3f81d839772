/* SPDX-License-Identifier: MIT */
/*
 * Transport internals: channels and the I/O backend interface. A channel is one connected TCP
 * socket with its sequence numbers and counters; a backend (sockets, io_uring) moves bytes
 * for it. Sessions (session/) never call read/write themselves.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include <glib.h>

#include "codec/codec.h"
#include "tagmig/session.h"

typedef struct tm_chan tm_chan;

/*
 * An I/O backend. The ops table is const; per-channel state of priv_size bytes is allocated
 * zeroed by the core (ch->priv) before open and freed after close.
 */
typedef struct tm_transport_ops {
	const char *name;
	size_t priv_size;
	/*
	 * Optional. Whether the backend can run on this host (kernel support, sysctls, seccomp).
	 * Returns 0 or -errno with the reason in *error. Called before a session picks the backend.
	 */
	int (*probe)(GError **error);
	/* Optional. Called once per channel after ch->fd is connected and configured. */
	int (*open)(tm_chan *ch, GError **error);
	/* Optional. Called once per channel before the fd is closed; frees what open acquired. */
	void (*close)(tm_chan *ch);
	/*
	 * Required. Sends exactly len bytes described by iov[0..n) (n may exceed IOV_MAX) and
	 * returns 0 once the buffers may be reused, or -errno: -ETIMEDOUT after ch->timeout_ms with
	 * no progress, -EPIPE / -ECONNRESET when the peer is gone. A short write is resumed, never
	 * reported. The iov array itself is not modified.
	 */
	int (*send)(tm_chan *ch, const struct iovec *iov, unsigned n, size_t len);
	/*
	 * Required. Fills exactly len bytes into iov[0..n). Returns 0 or -errno; the peer closing
	 * before len bytes arrived is -ECONNRESET, a wait beyond ch->timeout_ms -ETIMEDOUT.
	 */
	int (*recv)(tm_chan *ch, const struct iovec *iov, unsigned n, size_t len);

	/*
	 * Optional, all three or none: messages in flight. The sender keeps ch->depth packet slots
	 * (set by open, at least 1). submit() queues the message of slot (0..depth-1) and may
	 * return before it is sent; until wait_slot() for that slot returns 0 the backend may
	 * still read the buffers and the iov array. Messages leave in submission order. A short
	 * send is resumed by the backend, never reported. An error of an earlier submission may be
	 * returned by any later call. drain() waits for every slot. send() and recv() drain first.
	 */
	int (*submit)(tm_chan *ch, unsigned slot, const struct iovec *iov, unsigned n, size_t len);
	int (*wait_slot)(tm_chan *ch, unsigned slot);
	int (*drain)(tm_chan *ch);
} tm_transport_ops;

extern const tm_transport_ops tm_transport_socket;
extern const tm_transport_ops tm_transport_io_uring;

/*
 * Finds the backend to use: name, else the default (io_uring where its probe
 * succeeds, sockets otherwise). A named backend that cannot run here is an error with the
 * reason; when the default falls back, *ret_note (if not NULL) receives why (g_free).
 */
int tm_transport_lookup(const char *name, const tm_transport_ops **ret, char **ret_note,
			GError **error);

/* Counters of one channel: written by its worker only (relaxed atomics), summed by get_stats. */
typedef struct tm_counters {
	uint64_t pages;
	uint64_t by_kind[TM_PAGE_KIND_COUNT];
	uint64_t by_enc[TM_TAG_ENC_COUNT];
	uint64_t packets;
	uint64_t wire_bytes;
	uint64_t data_bytes;
	uint64_t tag_bytes;
	uint64_t io_submissions; /* kernel submissions (io_uring SQEs, or send/recv calls) */
	uint64_t io_completions;
	uint64_t zc_sends;       /* zero-copy sends */
	uint64_t zc_copied;      /* zero-copy sends the kernel completed by copying after all */
} tm_counters;

static inline void tm_count(uint64_t *c, uint64_t v)
{
	__atomic_fetch_add(c, v, __ATOMIC_RELAXED);
}

struct tm_chan {
	/* read-only after setup */
	int fd;
	unsigned id;
	unsigned timeout_ms;
	unsigned depth; /* packet slots for ops->submit; 1 without it */
	const tm_transport_ops *ops;
	void *priv;
	/* worker-local (the thread that owns the channel at the time) */
	uint32_t tx_seq;
	uint32_t rx_seq;
	bool peer_error; /* the failure at hand is the peer's ERROR message */
	tm_counters st;
};

/*
 * Takes fd (closed on failure too), configures it, opens the backend with depth packet slots
 * (the backend may lower it; ch->depth says what it took).
 */
int tm_chan_open(tm_chan *ch, int fd, unsigned id, const tm_transport_ops *ops,
		 unsigned timeout_ms, unsigned depth, GError **error);
void tm_chan_close(tm_chan *ch);

/* Changes how long a single blocked read or write of ch may take. */
void tm_chan_set_timeout(tm_chan *ch, unsigned timeout_ms);

/*
 * Sends the message of a packet slot: ops->submit where the backend has it, else ops->send.
 * Counts wire bytes; the error names the channel.
 */
int tm_chan_submit(tm_chan *ch, unsigned slot, const struct iovec *iov, unsigned n, size_t len,
		   GError **error);
/* Waits until the buffers of slot may be reused (no-op without ops->submit). */
int tm_chan_wait_slot(tm_chan *ch, unsigned slot, GError **error);

/* Send/receive with the channel named in *error; send counts wire bytes. */
int tm_chan_send(tm_chan *ch, const struct iovec *iov, unsigned n, size_t len, GError **error);
int tm_chan_recv(tm_chan *ch, void *buf, size_t len, GError **error);

/* Reads and decodes the next frame header; checks its sequence number. */
int tm_chan_recv_frame(tm_chan *ch, uint32_t packet_size, tm_frame *ret, GError **error);

/* Sends a control message (tm_ctrl_encode). */
int tm_chan_send_ctrl(tm_chan *ch, uint8_t type, uint64_t a, uint64_t b, GError **error);

/*
 * Receives the next message, which must be a control message of type `type`; an ERROR from the
 * peer becomes -code with its message ("channel N: receiver: ..."), anything else -EPROTO.
 */
int tm_chan_recv_ctrl(tm_chan *ch, uint8_t type, uint64_t *ret_a, uint64_t *ret_b,
		      GError **error);

/* Receives an ERROR body of f (already read) and turns it into *error. Returns -code. */
int tm_chan_recv_peer_error(tm_chan *ch, const tm_frame *f, const char *peer, GError **error);

/* Best effort, never blocks: tells the peer why we give up. */
void tm_chan_send_error(tm_chan *ch, int code, const char *message);

/*
 * After a send failed because the peer went away: waits up to a second for an ERROR the peer
 * sent before closing and turns it into *error (returns -code), else returns 0.
 */
int tm_chan_peer_error(tm_chan *ch, const char *peer, GError **error);

/* Words for a failed send or receive: the TLS layer's explanation, or the errno's. */
const char *tm_chan_io_reason(const tm_chan *ch, int err);

/* Prefixes *error with "channel N: ". */
void tm_chan_prefix_error(const tm_chan *ch, GError **error);

/* Sums counters of n channels into ret (pages, bytes, ...). */
void tm_counters_sum(const tm_counters *c, tm_stats *ret);

/* ---- net.c ---- */
/* Connects to host:port within timeout_ms; returns fd or -errno. */
int tm_net_connect(const char *host, const char *port, unsigned timeout_ms, GError **error);
/* Accepts one connection within timeout_ms; returns fd or -errno (-ETIMEDOUT). */
int tm_net_accept(int listen_fd, unsigned timeout_ms, GError **error);

/* Drops done bytes from the front of the iovec array *v of *n entries (after a partial transfer). */
static inline void tm_iov_advance(struct iovec **v, unsigned *n, size_t done)
{
	while (*n && done >= (*v)->iov_len) {
		done -= (*v)->iov_len;
		(*v)++;
		(*n)--;
	}
	if (*n && done) {
		(*v)->iov_base = (uint8_t *)(*v)->iov_base + done;
		(*v)->iov_len -= done;
	}
}

/* Monotonic microseconds. */
static inline int64_t tm_now_us(void)
{
	return g_get_monotonic_time();
}

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
