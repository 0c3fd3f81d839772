/* SPDX-License-Identifier: MIT */
/*
 * Byte movers: the I/O handle (tm_io: one connected TCP socket, the backend that moves its bytes,
 * that backend's state and counters) and the backend interface. Backends: socket/, io_uring/, and
 * tls/, which wraps another handle. The protocol channel that owns a handle (sequence numbers,
 * messages) is session/channel.h; sessions never call read/write themselves.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include <glib.h>

#include "codec/codec.h"
#include "tagmig/session.h"

typedef struct tm_io tm_io;

/* How a byte mover is opened (tm_io_open, tm_chan_open). */
typedef struct tm_io_config {
	unsigned timeout_ms; /* any single blocked read or write */
	unsigned depth;      /* packet slots for ops->submit (the backend may take fewer) */
	int zerocopy;        /* io_uring: 0 zero-copy sends while they pay, 1 always, -1 never */
} tm_io_config;

/*
 * An I/O handle's backend: a byte mover on a connected socket (sockets, io_uring) or a wrapper
 * that moves its bytes through another handle (TLS, transport/tls/tls.h). The ops table is
 * const. A byte mover is opened by tm_io_open(): the core allocates priv_size bytes zeroed
 * (io->priv) before open and frees them after close. A wrapper is made by its own start function
 * over an open handle (tm_io_wrap()); its open hook refuses.
 *
 * Every hook runs on the thread that owns the handle at the time, one call at a time. Counters
 * (io->st) count what this handle itself submitted to the kernel, never what its inner handle did.
 */
typedef struct tm_transport_ops {
	const char *name;
	size_t priv_size;
	/*
	 * Optional. Whether the backend can run on this host (kernel support, sysctls, seccomp).
	 * Returns 0 or -errno with the reason in *error. Called before a session picks the backend,
	 * at every tm_sender_new() / tm_receiver_new(): a probe that costs more than a few calls
	 * answers once per process (io_uring's makes a ring), error may be NULL.
	 */
	int (*probe)(GError **error);
	/*
	 * Optional. Called once by tm_io_open() after io->fd is connected and configured; may lower
	 * io->depth. Returns 0 or -errno with *error set; on failure close is not called.
	 */
	int (*open)(tm_io *io, GError **error);
	/*
	 * Optional. Called once before the handle goes: frees what open (or the wrapper's start)
	 * acquired, but not io->priv itself. A wrapper's close runs before its inner handle is closed
	 * and may still send through it (TLS: close_notify).
	 */
	void (*close)(tm_io *io);
	/*
	 * Required. Sends exactly len bytes described by iov[0..n) (n may exceed IOV_MAX) and
	 * returns 0 once the buffers may be reused, or -errno: -ETIMEDOUT after io->timeout_ms with
	 * no progress, -EPIPE / -ECONNRESET when the peer is gone. A short write is resumed, never
	 * reported. The iov array itself is not modified.
	 */
	int (*send)(tm_io *io, const struct iovec *iov, unsigned n, size_t len);
	/*
	 * Required. Fills exactly len bytes into iov[0..n). Returns 0 or -errno; the peer closing
	 * before len bytes arrived is -ECONNRESET, a wait beyond io->timeout_ms -ETIMEDOUT. A byte
	 * mover also returns -ETIMEDOUT once io->deadline_us passed, however steadily bytes trickle
	 * in (tm_io_wait_ms() says how long it may still wait); a wrapper leaves that to its inner
	 * handle.
	 */
	int (*recv)(tm_io *io, const struct iovec *iov, unsigned n, size_t len);
	/*
	 * Optional. Like recv, but returns once at least one byte arrived: the count filled into
	 * buf[0..len) (1..len, what was there; never waits for more), or -errno as recv. Lets a
	 * frame header come in one system call where recv of its first byte and then of the rest
	 * would take two. Without it tm_io_recv_some() receives exactly one byte with recv.
	 */
	int (*recv_some)(tm_io *io, void *buf, size_t len);

	/*
	 * Optional, all three or none: messages in flight. The sender keeps io->depth packet slots
	 * (set by open, at least 1). submit() queues the message of slot (0..depth-1) and may
	 * return before it is sent; until wait_slot() for that slot returns 0 the backend may
	 * still read the buffers and the iov array. Messages leave in submission order. A short
	 * send is resumed by the backend, never reported. An error of an earlier submission may be
	 * returned by any later call. drain() waits until every submitted message has been handed
	 * to the kernel in full, so that later bytes on the socket come after it; the buffers of a
	 * slot may stay in use (zero-copy) until wait_slot(). send() drains first; neither send(),
	 * drain() nor recv() waits for buffers to be released, only wait_slot() does.
	 */
	int (*submit)(tm_io *io, unsigned slot, const struct iovec *iov, unsigned n, size_t len);
	int (*wait_slot)(tm_io *io, unsigned slot);
	int (*drain)(tm_io *io);
	/*
	 * Optional, with submit. The packet slot whose submitted message the kernel has not taken
	 * in full: its send failed, or it is still in the kernel (a wait that timed out); -1 when
	 * every submitted message was taken. The peer cannot have applied that message. Never
	 * blocks, reads only the handle's own state (called on a broken connection, before close).
	 * Without it every message submit() accepted counts as sent.
	 */
	int (*unsent_slot)(const tm_io *io);

	/*
	 * Optional. A last message before giving up (an ERROR), best effort: sends len bytes without
	 * waiting for a peer that does not read longer than the socket buffer makes it (at most
	 * io->timeout_ms). Without it tm_io_send_last() drains, then writes to the socket without
	 * blocking. A wrapper needs it: its peer can only read what went through it.
	 */
	void (*send_last)(tm_io *io, const void *buf, size_t len);
	/*
	 * Optional. Words for the last failed send or recv when the backend knows more than the
	 * errno (TLS: which record failed to authenticate), or NULL. Valid until the next call on io.
	 */
	const char *(*last_error)(const tm_io *io);
	/*
	 * Optional. Whether recv would make progress now without waiting for a new write of the
	 * peer: bytes (or the end of the stream, or an error) are already there. Must not block or
	 * consume anything. A wrapper that buffers (TLS: plaintext or ciphertext read ahead) must
	 * have it; without it tm_io_readable() asks the inner handle, and a byte mover is asked with
	 * a poll of zero time on its socket. A "yes" may still block in recv, but only until the
	 * rest of what the peer is writing arrives (half a TLS record). Used by the threads that
	 * poll a connection (the control thread) before they call recv.
	 */
	bool (*readable)(tm_io *io);
	/*
	 * Optional. After a recv that failed with -ECONNRESET: whether the peer ended its stream on
	 * purpose, in a way only it can (TLS: its authenticated close_notify came), rather than the
	 * connection breaking. Without it a byte stream's end and a reset are all one can tell
	 * (tm_io_peer_ended()). Must not block or consume anything.
	 */
	bool (*peer_ended)(const tm_io *io);
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

/* What one I/O handle submitted to the kernel: written by its owner only (relaxed atomics). */
typedef struct tm_io_counters {
	uint64_t io_submissions; /* kernel submissions (io_uring SQEs, or send/recv calls) */
	uint64_t io_completions;
	uint64_t zc_sends;       /* zero-copy sends */
	uint64_t zc_copied;      /* zero-copy sends the kernel completed by copying after all */
	uint64_t io_waits;       /* waits for a completion that blocked (none was ready): io_uring */
} tm_io_counters;

static inline void tm_count(uint64_t *c, uint64_t v)
{
	__atomic_fetch_add(c, v, __ATOMIC_RELAXED);
}

/* One connected socket and the backend that moves its bytes (plus, for a wrapper, its inner handle). */
struct tm_io {
	/* read-only after setup */
	int fd;
	char label[16];       /* what error messages call it: "channel 3", "control" */
	unsigned timeout_ms;
	unsigned depth;       /* packet slots for ops->submit; 1 without it */
	int zerocopy;         /* tm_io_config.zerocopy, for backends that can send zero-copy */
	const tm_transport_ops *ops;
	void *priv;
	tm_io *inner;         /* a wrapper's handle that moves its bytes (owned); NULL: a byte mover */
	/*
	 * What moves this handle's bytes, for the statistics: ops->name for a byte mover; NULL for a
	 * wrapper that hands all of them to its inner handle; a wrapper that moves some on the socket
	 * itself names that path ("ktls": kernel TLS, sendmsg/recvmsg). A static string, set by
	 * tm_io_open or tm_io_wrap; a wrapper may change it before its start function returns.
	 */
	const char *path;
	bool cancelled;       /* any thread, atomic: tm_io_cancel() was called */
	/* worker-local (the thread that owns the channel at the time) */
	tm_io_counters st;
	/* 0 or the monotonic time (tm_now_us) receives must be done by: tm_io_set_deadline() */
	int64_t deadline_us;
};

/*
 * Opens a byte mover on fd (taken, closed on failure too): configures the socket (timeouts,
 * TCP_NODELAY), allocates io->priv, calls ops->open with cfg->depth packet slots (the backend
 * may lower it; io->depth says what it took) and cfg->zerocopy in io->zerocopy. Returns 0 and *ret (free with tm_io_free), or -errno
 * with "channel <id>: ..." in *error. ops must be a byte mover: a wrapper's open refuses.
 */
int tm_io_open(int fd, unsigned id, const tm_transport_ops *ops, const tm_io_config *cfg,
	       tm_io **ret, GError **error);

/*
 * Makes a wrapper handle over inner (which it then owns) with ops and priv (a g_malloc'd block
 * the handle frees after ops->close), path NULL. fd, id and timeout are inner's; no packet slots
 * (tm_chan_submit sends synchronously). Never fails.
 */
tm_io *tm_io_wrap(tm_io *inner, const tm_transport_ops *ops, void *priv);

/* Closes io: ops->close, then its inner handle (a byte mover closes the fd). NULL: no-op. */
void tm_io_free(tm_io *io);

/*
 * Changes how long a single blocked read or write may take, on io and every handle below it;
 * 0: no limit (a protocol 2 data channel after its handshake: liveness is the control thread's).
 */
void tm_io_set_timeout(tm_io *io, unsigned timeout_ms);

/*
 * Sets (deadline_us > 0, monotonic microseconds) or clears (0) the time by which every receive
 * on io and the handles below it must be complete: a total bound for a handshake or a message
 * body, where the timeout only bounds each wait for the next byte.
 */
void tm_io_set_deadline(tm_io *io, int64_t deadline_us);

/*
 * How long a byte mover may wait for the next bytes of a receive now, in milliseconds:
 * io->timeout_ms (0: unbounded, -1 here), capped by what is left until io->deadline_us; 0 once
 * the deadline passed (the receive fails with -ETIMEDOUT).
 */
int tm_io_wait_ms(const tm_io *io);

/*
 * Any thread, with a shutdown of the socket: the session gave up. A byte mover that can wait for
 * something a shutdown does not end (io_uring: zero-copy completions, which need the peer's
 * acknowledgements) returns -ECANCELED from such a wait within a quarter of a second. Every
 * layer of io is marked.
 */
void tm_io_cancel(tm_io *io);

/* Whether a recv on io would progress now (ops->readable, see its contract). Never blocks. */
bool tm_io_readable(tm_io *io);
/*
 * After a recv of io failed with -err: whether that was the peer's end of its stream (TLS: its
 * close_notify, ops->peer_ended), not a break. A handle without the hook cannot tell its peer's
 * end from a reset: then any -ECONNRESET or -EPIPE. Never blocks.
 */
bool tm_io_peer_ended(const tm_io *io, int err);
/* ops->unsent_slot, or -1 without it. */
int tm_io_unsent_slot(const tm_io *io);

/* The hooks, for callers that hold a handle (see the contracts above). */
static inline int tm_io_send(tm_io *io, const struct iovec *iov, unsigned n, size_t len)
{
	return io->ops->send(io, iov, n, len);
}
static inline int tm_io_recv(tm_io *io, const struct iovec *iov, unsigned n, size_t len)
{
	return io->ops->recv(io, iov, n, len);
}

/* Between 1 and len bytes (ops->recv_some, else exactly 1 with ops->recv): the count or -errno. */
static inline int tm_io_recv_some(tm_io *io, void *buf, size_t len)
{
	if (io->ops->recv_some)
		return io->ops->recv_some(io, buf, len);
	struct iovec v = { .iov_base = buf, .iov_len = 1 };
	int r = io->ops->recv(io, &v, 1, 1);
	return r < 0 ? r : 1;
}

/* Best effort, never blocks longer than the timeout: ops->send_last, else drain + MSG_DONTWAIT. */
void tm_io_send_last(tm_io *io, const void *buf, size_t len);

/* Words for a failed send or receive of io: ops->last_error if it has some, or the errno's. */
const char *tm_io_reason(const tm_io *io, int err);

/*
 * Whether buf, the first bytes received on io, say that the peer speaks TLS while io moves the
 * socket's bytes as they are (no wrapper): a TLS handshake record (a ClientHello) where a
 * plaintext peer's first message would be. Needs at least 3 bytes.
 */
bool tm_io_peer_speaks_tls(const tm_io *io, const uint8_t *buf, size_t len);

/* Adds the I/O counters of io and of every handle below it to ret. io NULL: no-op. */
void tm_io_add_counters(const tm_io *io, tm_io_counters *ret);

/* ---- net.c ---- */
/*
 * Connects to host:port within timeout_ms; returns fd or -errno. cancel_fd (an eventfd, or -1)
 * readable ends the wait at once with -ECANCELED (tm_sender_cancel from another thread).
 */
int tm_net_connect(const char *host, const char *port, unsigned timeout_ms, int cancel_fd,
		   GError **error);
/* Accepts one connection within timeout_ms; returns fd or -errno (-ETIMEDOUT, -ECANCELED). */
int tm_net_accept(int listen_fd, unsigned timeout_ms, int cancel_fd, GError **error);
/*
 * Where a connected socket's peer is, for a message: "192.0.2.1:4444", "[2001:db8::1]:4444",
 * "a unix socket", or "an unknown peer" (g_free it).
 */
char *tm_net_peer_name(int fd);

/*
 * Liveness of a connection once its handshake is done: SO_KEEPALIVE with idle time and probe
 * interval keepalive_ms rounded up to seconds, 4 probes (a dead peer of an idle connection is
 * found by the kernel); user_timeout_ms non-zero also sets TCP_USER_TIMEOUT (data unacknowledged,
 * or a zero window, for that long aborts the connection: the control connection only, whose
 * peer always reads). Returns 0 or -errno.
 */
int tm_net_keepalive(int fd, unsigned keepalive_ms, unsigned user_timeout_ms);

/*
 * From TCP_INFO: segments sent and not yet acknowledged by the peer's kernel
 * (*ret_unacked) and milliseconds since the last acknowledgement arrived (*ret_ack_age_ms).
 * Returns 0 or -errno (not a TCP socket).
 */
int tm_net_ack_age(int fd, uint32_t *ret_unacked, uint32_t *ret_ack_age_ms);

/*
 * Ends a connection whose path is dead, at once: what it still holds unacknowledged is dropped
 * (a reset goes out), so that zero-copy sends waiting for their data's release complete and
 * every blocked reader or writer of fd fails; fd stays open for its owner to close. A shutdown
 * alone would keep that data queued for retransmission for as long as TCP retries (minutes).
 */
void tm_net_abort(int fd);

/*
 * From TCP_INFO (transport/net-rate.c): the kernel's recent delivery rate of the connection in
 * bytes/s and whether the application, not the network, limited it. Returns 0 or -errno (not
 * a TCP socket, or a kernel before 4.18 that does not report it: -EOPNOTSUPP).
 */
int tm_net_delivery_rate(int fd, uint64_t *ret_bytes_per_sec, bool *ret_app_limited);

/*
 * From TCP_INFO (transport/net-rate.c): the bytes of the stream this end sent that its peer's
 * kernel acknowledged (*ret_acked; the connecting end counts its SYN too, both count a FIN),
 * those it received (*ret_received; a FIN counts), whatever the application read, and those
 * received that the application has not read yet (*ret_unread). Through a proxy the peer is
 * the proxy. Returns 0 or -errno (-EBADF for fd < 0; not a TCP socket, or a kernel without
 * these counts: -EOPNOTSUPP).
 */
int tm_net_stream_bytes(int fd, uint64_t *ret_acked, uint64_t *ret_received, uint64_t *ret_unread);

/*
 * Where the library's own bytes begin in a TCP connection's stream, taken when the library
 * takes the socket (tm_chan_open), before it reads or writes any: a socket a VMM attached, or
 * its reconnect hook handed over, may have carried bytes first (a preamble of its own, a proxy's
 * handshake that only this end's kernel counted). tx: the bytes written before, acknowledged or
 * still queued (the connecting end's SYN among them); rx: the bytes read before (what is
 * received and unread is the library's). ok false: not TCP, or the counts could not be read:
 * the connection's counts are never compared (LINK_CHECK skips it).
 */
typedef struct tm_net_base {
	uint64_t tx, rx;
	bool ok;
} tm_net_base;

/*
 * Takes fd's base (above; transport/net-rate.c): *ret_base, or -errno (not a TCP socket, a
 * kernel without the counts: -EOPNOTSUPP; counts that kept moving while read: -EAGAIN) with
 * *ret_base untouched. Nobody may read or write fd meanwhile.
 */
int tm_net_stream_base(int fd, tm_net_base *ret_base);

/*
 * tm_net_stream_bytes() of the library's bytes alone: each count less base's. Returns 0 or
 * -errno: as tm_net_stream_bytes(); -EOPNOTSUPP for a base that is not ok; -EAGAIN for counts
 * below the base (bytes written before it not all acknowledged yet, or fd is not the connection
 * the base was taken of).
 */
int tm_net_session_bytes(int fd, const tm_net_base *base, uint64_t *ret_acked,
			 uint64_t *ret_received, uint64_t *ret_unread);

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

/*
 * Sends len bytes of v[0..n) (a private copy: advanced after a partial send) on io's socket by
 * blocking sendmsg, with the socket's SO_SNDTIMEO (tm_io_open): 0, -ETIMEDOUT or -errno. Each
 * call counts a submission, and a completion too when completions is set (a backend whose
 * counters pair them, io_uring).
 */
int tm_io_sendmsg_all(tm_io *io, struct iovec *v, unsigned n, size_t len, bool completions);

/* Monotonic microseconds. */
static inline int64_t tm_now_us(void)
{
	return g_get_monotonic_time();
}

