/* SPDX-License-Identifier: MIT */
/* Loopback TCP pairs (tcp-pair.h). */
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tagmig/error.h"
#include "common/testing/tcp-pair.h"

int tcp_pair(int *ret_client, int *ret_server, GError **error)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	const char *step = "socket";
	int l, c = -1, s = -1, e;

	/* connect() completes against the listen backlog, so one thread does both ends. */
	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0)
		goto fail;
	step = "bind";
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0)
		goto fail;
	step = "listen";
	if (listen(l, 4) < 0 || getsockname(l, (struct sockaddr *)&a, &alen) < 0)
		goto fail;
	step = "connect";
	c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) < 0)
		goto fail;
	step = "accept";
	s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	if (s < 0)
		goto fail;
	close(l);
	*ret_client = c;
	*ret_server = s;
	return 0;

fail:
	e = errno;
	if (c >= 0)
		close(c);
	if (l >= 0)
		close(l);
	g_set_error(error, TM_ERROR, e, "loopback TCP pair: %s: %s", step, g_strerror(e));
	return -e;
}
