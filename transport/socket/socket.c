/* SPDX-License-Identifier: MIT */
/*
 * The portable backend: blocking sendmsg/readv straight from and into guest RAM (no bounce copy).
 * Timeouts come from SO_SNDTIMEO/SO_RCVTIMEO, which the I/O handle sets up (tm_io_open); a
 * receive with a deadline (tm_io_set_deadline) reads what is there and polls for the rest.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "transport/transport.h"

typedef struct sock_priv {
	struct iovec *scratch; /* grows to the largest message once, then is reused */
	unsigned cap;
} sock_priv;

static void sock_close(tm_io *io)
{
	sock_priv *p = io->priv;

	g_free(p->scratch);
}

/* Copies iov into the channel's scratch array so that partial transfers can advance it. */
static struct iovec *scratch_copy(tm_io *io, const struct iovec *iov, unsigned n)
{
	sock_priv *p = io->priv;

	if (n > p->cap) {
		p->scratch = g_renew(struct iovec, p->scratch, n);
		p->cap = n;
	}
	memcpy(p->scratch, iov, n * sizeof(*iov));
	return p->scratch;
}

static int sock_send(tm_io *io, const struct iovec *iov, unsigned n, size_t len)
{
	return tm_io_sendmsg_all(io, scratch_copy(io, iov, n), n, len, false);
}

/*
 * With a deadline: SO_RCVTIMEO would restart with every byte of a trickle, so read without
 * blocking and poll for at most what is left (tm_io_wait_ms); the extra poll only comes when the
 * bytes are not there yet.
 */
static ssize_t recv_by_deadline(tm_io *io, struct iovec *v, unsigned n)
{
	for (;;) {
		int ms = tm_io_wait_ms(io);
		if (ms == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		struct msghdr msg = { .msg_iov = v, .msg_iovlen = MIN(n, (unsigned)IOV_MAX) };
		ssize_t r = recvmsg(io->fd, &msg, MSG_DONTWAIT);
		tm_count(&io->st.io_submissions, 1);
		if (r >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
			return r;
		struct pollfd p = { .fd = io->fd, .events = POLLIN };
		int pr = poll(&p, 1, ms);
		if (pr < 0 && errno != EINTR)
			return -1;
		if (pr == 0 && ms == (int)io->timeout_ms) {
			errno = ETIMEDOUT; /* the timeout, not the deadline */
			return -1;
		}
	}
}

static int sock_recv(tm_io *io, const struct iovec *iov, unsigned n, size_t len)
{
	struct iovec *v = scratch_copy(io, iov, n);

	while (len > 0) {
		ssize_t r;
		if (io->deadline_us) {
			r = recv_by_deadline(io, v, n);
		} else {
			r = readv(io->fd, v, (int)MIN(n, (unsigned)IOV_MAX));
			tm_count(&io->st.io_submissions, 1);
		}
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		}
		if (r == 0)
			return -ECONNRESET;
		/* A trickle that keeps each read short still ends at the deadline. */
		if (io->deadline_us && len > (size_t)r && tm_now_us() >= io->deadline_us)
			return -ETIMEDOUT;
		len -= (size_t)r;
		tm_iov_advance(&v, &n, (size_t)r);
	}
	return 0;
}

static int sock_recv_some(tm_io *io, void *buf, size_t len)
{
	struct iovec v = { .iov_base = buf, .iov_len = MIN(len, (size_t)INT_MAX) };

	for (;;) {
		ssize_t r;
		if (io->deadline_us) {
			r = recv_by_deadline(io, &v, 1);
		} else {
			r = readv(io->fd, &v, 1);
			tm_count(&io->st.io_submissions, 1);
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		return r == 0 ? -ECONNRESET : (int)r;
	}
}

const tm_transport_ops tm_transport_socket = {
	.name = "sockets",
	.priv_size = sizeof(sock_priv),
	.close = sock_close,
	.send = sock_send,
	.recv = sock_recv,
	.recv_some = sock_recv_some,
};
