/* SPDX-License-Identifier: MIT */
/*
 * The delivery rate and byte counts of a TCP connection (transport.h), apart from net.c: they need the kernel's
 * struct tcp_info (linux/tcp.h), whose newer fields glibc's netinet/tcp.h lacks, and the two
 * headers do not mix.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/sockios.h>
#include <linux/tcp.h>

#include "transport/transport.h"

int tm_net_delivery_rate(int fd, uint64_t *ret_bytes_per_sec, bool *ret_app_limited)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return -errno;
	if (len < offsetof(struct tcp_info, tcpi_delivery_rate) + sizeof(ti.tcpi_delivery_rate))
		return -EOPNOTSUPP;
	*ret_bytes_per_sec = ti.tcpi_delivery_rate;
	*ret_app_limited = ti.tcpi_delivery_rate_app_limited;
	return 0;
}

int tm_net_stream_bytes(int fd, uint64_t *ret_acked, uint64_t *ret_received, uint64_t *ret_unread)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	if (fd < 0)
		return -EBADF;
	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return -errno;
	if (len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof(ti.tcpi_bytes_received))
		return -EOPNOTSUPP;
	int unread = 0;
	if (ioctl(fd, SIOCINQ, &unread) < 0 || unread < 0)
		return -EOPNOTSUPP;
	*ret_acked = ti.tcpi_bytes_acked;
	*ret_received = ti.tcpi_bytes_received;
	*ret_unread = (uint64_t)unread;
	return 0;
}
