/* SPDX-License-Identifier: MIT */
/*
 * The I/O handle (transport.h): opening a byte mover on a socket, wrapping a handle in another
 * (TLS), closing a stack of handles from the top, and what the core does on top of the hooks
 * (timeouts on every layer, the last message before giving up, counters and paths summed over
 * the layers: each layer counts only what it moved itself).
 */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tagmig/error.h"
#include "transport/tls/tls.h"
#include "transport/transport.h"

static void set_timeouts(int fd, unsigned timeout_ms, int *ret_err)
{
	struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };

	if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) {
		if (ret_err)
			*ret_err = errno;
	}
}

int tm_io_open(int fd, unsigned id, const tm_transport_ops *ops, const tm_io_config *cfg,
	       tm_io **ret, GError **error)
{
	unsigned timeout_ms = cfg->timeout_ms, depth = cfg->depth;

	/* Every blocked read or write ends after timeout_ms: a stuck peer is an error, not a hang. */
	int e = 0, one = 1;
	set_timeouts(fd, timeout_ms, &e);
	if (e) {
		g_set_error(error, TM_ERROR, e, "channel %u: socket setup: %s", id, g_strerror(e));
		close(fd);
		return -e;
	}
	/* Control messages are tiny and latency bound (sync barriers); data goes out in big writes. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	tm_io *io = g_new0(tm_io, 1);
	io->fd = fd;
	g_snprintf(io->label, sizeof(io->label), "channel %u", id);
	io->ops = ops;
	io->path = ops->name;
	io->timeout_ms = timeout_ms;
	io->depth = ops->submit ? MAX(depth, 1) : 1;
	io->zerocopy = cfg->zerocopy;
	io->priv = g_malloc0(MAX(ops->priv_size, 1));
	if (ops->open) {
		int r = ops->open(io, error);
		if (r < 0) {
			g_free(io->priv);
			g_free(io);
			close(fd);
			return r;
		}
	}
	*ret = io;
	return 0;
}

tm_io *tm_io_wrap(tm_io *inner, const tm_transport_ops *ops, void *priv)
{
	tm_io *io = g_new0(tm_io, 1);

	io->fd = inner->fd;
	memcpy(io->label, inner->label, sizeof(io->label));
	io->timeout_ms = inner->timeout_ms;
	io->deadline_us = inner->deadline_us;
	io->depth = 1;
	io->ops = ops;
	io->priv = priv;
	io->inner = inner;
	return io;
}

void tm_io_free(tm_io *io)
{
	if (!io)
		return;
	/* Top down: a wrapper may still send through its inner handle as it closes. */
	if (io->ops->close)
		io->ops->close(io);
	g_free(io->priv);
	if (io->inner)
		tm_io_free(io->inner);
	else
		close(io->fd);
	g_free(io);
}

int tm_io_sendmsg_all(tm_io *io, struct iovec *v, unsigned n, size_t len, bool completions)
{
	while (len > 0) {
		struct msghdr msg = { .msg_iov = v, .msg_iovlen = MIN(n, (unsigned)IOV_MAX) };
		ssize_t r = sendmsg(io->fd, &msg, MSG_NOSIGNAL);
		tm_count(&io->st.io_submissions, 1);
		if (completions)
			tm_count(&io->st.io_completions, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		len -= (size_t)r;
		tm_iov_advance(&v, &n, (size_t)r);
	}
	return 0;
}

void tm_io_set_timeout(tm_io *io, unsigned timeout_ms)
{
	for (tm_io *l = io; l; l = l->inner)
		l->timeout_ms = timeout_ms;
	set_timeouts(io->fd, timeout_ms, NULL);
}

void tm_io_set_deadline(tm_io *io, int64_t deadline_us)
{
	for (tm_io *l = io; l; l = l->inner)
		l->deadline_us = deadline_us;
}

int tm_io_wait_ms(const tm_io *io)
{
	int ms = io->timeout_ms ? (int)MIN(io->timeout_ms, (unsigned)INT_MAX) : -1;
	if (!io->deadline_us)
		return ms;
	int64_t left = io->deadline_us - tm_now_us();
	if (left <= 0)
		return 0;
	/* Round up: a wait of 0 would mean "the deadline passed". */
	int64_t left_ms = MIN((left + 999) / 1000, (int64_t)INT_MAX);
	return ms < 0 ? (int)left_ms : (int)MIN((int64_t)ms, left_ms);
}

void tm_io_cancel(tm_io *io)
{
	for (tm_io *l = io; l; l = l->inner)
		__atomic_store_n(&l->cancelled, true, __ATOMIC_RELEASE);
}

bool tm_io_readable(tm_io *io)
{
	if (io->ops->readable)
		return io->ops->readable(io);
	if (io->inner)
		return tm_io_readable(io->inner);
	/* A byte mover holds nothing back: its socket says. Hang-up and errors count: recv
	 * returns at once with them. */
	struct pollfd p = { .fd = io->fd, .events = POLLIN };
	return poll(&p, 1, 0) > 0;
}

bool tm_io_peer_ended(const tm_io *io, int err)
{
	if (io->ops->peer_ended)
		return err == ECONNRESET && io->ops->peer_ended(io);
	return err == ECONNRESET || err == EPIPE;
}

int tm_io_unsent_slot(const tm_io *io)
{
	return io && io->ops->unsent_slot ? io->ops->unsent_slot(io) : -1;
}

void tm_io_send_last(tm_io *io, const void *buf, size_t len)
{
	if (io->ops->send_last) {
		io->ops->send_last(io, buf, len);
		return;
	}
	/* Not into the middle of a message still in flight: let the backend finish it first. A
	 * backend that cannot (its own send failed) leaves a stream the peer cannot parse. */
	if (io->ops->drain && io->ops->drain(io) < 0)
		return;
	/* Best effort and never blocking: the peer may be gone or not reading. */
	(void)!send(io->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
}

const char *tm_io_reason(const tm_io *io, int err)
{
	/* A wrapper may know more than an errno: which record failed to authenticate, and so on. */
	const char *why = io->ops->last_error ? io->ops->last_error(io) : NULL;
	if (why)
		return why;
	switch (err) {
	case ECONNRESET:
	case EPIPE:
		return "connection closed by the peer";
	case ETIMEDOUT:
		return "timed out";
	default:
		return g_strerror(err);
	}
}

bool tm_io_peer_speaks_tls(const tm_io *io, const uint8_t *buf, size_t len)
{
	/* Through a wrapper these are not the peer's raw bytes. */
	return !io->inner && tm_tls_looks_like_tls(buf, len);
}

void tm_io_add_counters(const tm_io *io, tm_io_counters *ret)
{
	for (const tm_io *l = io; l; l = l->inner) {
		ret->io_submissions += __atomic_load_n(&l->st.io_submissions, __ATOMIC_RELAXED);
		ret->io_completions += __atomic_load_n(&l->st.io_completions, __ATOMIC_RELAXED);
		ret->zc_sends += __atomic_load_n(&l->st.zc_sends, __ATOMIC_RELAXED);
		ret->zc_copied += __atomic_load_n(&l->st.zc_copied, __ATOMIC_RELAXED);
		ret->io_waits += __atomic_load_n(&l->st.io_waits, __ATOMIC_RELAXED);
	}
}
