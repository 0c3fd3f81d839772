/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tagmig/error.h"
#include "transport.h"

int tm_listen(const char *host, const char *port, unsigned *ret_port, GError **error)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE };
	struct addrinfo *res = NULL;
	int r = getaddrinfo(host && *host ? host : NULL, port, &hints, &res);
	if (r != 0) {
		g_set_error(error, TM_ERROR, EINVAL, "cannot resolve %s:%s: %s", host ? host : "*",
			    port, gai_strerror(r));
		return -EINVAL;
	}
	int err = EADDRNOTAVAIL;
	int fd = -1;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			err = errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, TM_MAX_CHANNELS) == 0)
			break;
		err = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		g_set_error(error, TM_ERROR, err, "cannot listen on %s:%s: %s", host ? host : "*",
			    port, g_strerror(err));
		return -err;
	}
	if (ret_port) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		getsockname(fd, (struct sockaddr *)&ss, &sl);
		char serv[NI_MAXSERV];
		if (getnameinfo((struct sockaddr *)&ss, sl, NULL, 0, serv, sizeof(serv),
				NI_NUMERICSERV) == 0)
			*ret_port = (unsigned)atoi(serv);
	}
	return fd;
}

char *tm_net_peer_name(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[NI_MAXHOST], serv[NI_MAXSERV];

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
		return g_strdup("an unknown peer");
	if (ss.ss_family == AF_UNIX)
		return g_strdup("a unix socket");
	if ((ss.ss_family != AF_INET && ss.ss_family != AF_INET6) ||
	    getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), serv, sizeof(serv),
			NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		return g_strdup("an unknown peer");
	return ss.ss_family == AF_INET6 ? g_strdup_printf("[%s]:%s", host, serv)
					: g_strdup_printf("%s:%s", host, serv);
}

/* Waits for events on fd until the deadline, or until cancel_fd (if >= 0) is readable. */
static int wait_fd(int fd, short events, int64_t deadline_us, int cancel_fd)
{
	for (;;) {
		int64_t left = deadline_us - tm_now_us();
		if (left <= 0)
			return -ETIMEDOUT;
		struct pollfd p[2] = { { .fd = fd, .events = events },
				       { .fd = cancel_fd, .events = POLLIN } };
		int r = poll(p, cancel_fd >= 0 ? 2 : 1, (int)MIN(left / 1000 + 1, INT32_MAX));
		/* A cancel wins over a connection that completes at the same time. */
		if (r > 0 && cancel_fd >= 0 && p[1].revents)
			return -ECANCELED;
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

int tm_net_connect(const char *host, const char *port, unsigned timeout_ms, int cancel_fd,
		   GError **error)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res = NULL;
	int64_t deadline = tm_now_us() + (int64_t)timeout_ms * 1000;
	int r = getaddrinfo(host, port, &hints, &res);
	if (r != 0) {
		g_set_error(error, TM_ERROR, EINVAL, "cannot resolve %s:%s: %s", host, port,
			    gai_strerror(r));
		return -EINVAL;
	}
	int err = ECONNREFUSED, fd = -1;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			    ai->ai_protocol);
		if (fd < 0) {
			err = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS) {
			r = wait_fd(fd, POLLOUT, deadline, cancel_fd);
			socklen_t sl = sizeof(err);
			if (r == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) == 0 && err == 0)
				break;
			if (r < 0)
				err = -r;
			if (r == -ECANCELED) {
				close(fd);
				fd = -1;
				break; /* no other address either */
			}
		} else {
			err = errno;
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		g_set_error(error, TM_ERROR, err, "cannot connect to %s:%s: %s", host, port,
			    err == ECANCELED ? "cancelled" : g_strerror(err));
		return -err;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return fd;
}

int tm_net_accept(int listen_fd, unsigned timeout_ms, int cancel_fd, GError **error)
{
	int64_t deadline = tm_now_us() + (int64_t)timeout_ms * 1000;

	for (;;) {
		int r = wait_fd(listen_fd, POLLIN, deadline, cancel_fd);
		if (r < 0) {
			g_set_error(error, TM_ERROR, -r, "waiting for a channel to connect: %s",
				    r == -ECANCELED ? "cancelled" : g_strerror(-r));
			return r;
		}
		int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			return fd;
		if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
			int e = errno;
			g_set_error(error, TM_ERROR, e, "accept: %s", g_strerror(e));
			return -e;
		}
	}
}

int tm_net_keepalive(int fd, unsigned keepalive_ms, unsigned user_timeout_ms)
{
	int one = 1, secs = (int)MAX((keepalive_ms + 999) / 1000, 1u), probes = 4;

	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &secs, sizeof(secs)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &secs, sizeof(secs)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof(probes)) < 0)
		return -errno;
	/*
	 * Linux applies TCP_USER_TIMEOUT to zero-window probing too: on a data channel that would
	 * abort a flow whose destination VMM is merely slow. The caller sets it where the peer's
	 * library always reads (docs/design/live-engine.md 3.5).
	 */
	unsigned ut = user_timeout_ms;
	if (ut && setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut)) < 0)
		return -errno;
	return 0;
}

void tm_net_abort(int fd)
{
	/* connect() to AF_UNSPEC disconnects a TCP socket: tcp_disconnect() purges its queues. */
	struct sockaddr sa = { .sa_family = AF_UNSPEC };

	(void)connect(fd, &sa, sizeof(sa));
	shutdown(fd, SHUT_RDWR); /* where that was refused: at least wake the blocked */
}

int tm_net_ack_age(int fd, uint32_t *ret_unacked, uint32_t *ret_ack_age_ms)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return -errno;
	*ret_unacked = ti.tcpi_unacked;
	*ret_ack_age_ms = ti.tcpi_last_ack_recv;
	return 0;
}
