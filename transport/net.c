/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
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

static int wait_fd(int fd, short events, int64_t deadline_us)
{
	for (;;) {
		int64_t left = deadline_us - tm_now_us();
		if (left <= 0)
			return -ETIMEDOUT;
		struct pollfd p = { .fd = fd, .events = events };
		int r = poll(&p, 1, (int)MIN(left / 1000 + 1, INT32_MAX));
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

int tm_net_connect(const char *host, const char *port, unsigned timeout_ms, GError **error)
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
			r = wait_fd(fd, POLLOUT, deadline);
			socklen_t sl = sizeof(err);
			if (r == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) == 0 && err == 0)
				break;
			if (r < 0)
				err = -r;
		} else {
			err = errno;
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		g_set_error(error, TM_ERROR, err, "cannot connect to %s:%s: %s", host, port,
			    g_strerror(err));
		return -err;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return fd;
}

int tm_net_accept(int listen_fd, unsigned timeout_ms, GError **error)
{
	int64_t deadline = tm_now_us() + (int64_t)timeout_ms * 1000;

	for (;;) {
		int r = wait_fd(listen_fd, POLLIN, deadline);
		if (r < 0) {
			g_set_error(error, TM_ERROR, -r, "waiting for a channel to connect: %s",
				    g_strerror(-r));
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
