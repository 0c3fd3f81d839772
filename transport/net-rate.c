/* SPDX-License-Identifier: MIT */
/*
 * The delivery rate, byte counts and their bases of a TCP connection (transport.h), apart from
 * net.c: they need the kernel's struct tcp_info (linux/tcp.h), whose newer fields glibc's
 * netinet/tcp.h lacks, and the two headers do not mix.
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

/*
 * The kernel's meaning of the counts (Linux net/ipv4: tcp_input.c, tcp_minisocks.c, tcp.c),
 * which the base is made of:
 * - tcpi_bytes_acked (tcp_snd_una_update) grows by every advance of snd_una, so it counts each
 *   sequence number the peer acknowledged: the connecting end's SYN too (tcp_connect_init
 *   starts snd_una at the SYN's sequence number), the accepting end's SYN-ACK not (its child
 *   socket starts snd_una past it, tcp_create_openreq_child), and a FIN.
 * - tcpi_bytes_received (tcp_rcv_nxt_update) grows by every advance of rcv_nxt, whatever the
 *   application read: never the peer's SYN (rcv_nxt starts past it), but a FIN.
 * - SIOCOUTQ: write_seq - snd_una, the bytes written and not yet acknowledged, sent or not (0
 *   in SYN_SENT and SYN_RECV); SIOCOUTQNSD, write_seq - snd_nxt, counts only those not sent
 *   yet, so acknowledged + SIOCOUTQ is everything written (plus the SYN) and SIOCOUTQNSD is
 *   not what is wanted here.
 * - SIOCINQ (tcp_inq): rcv_nxt - copied_seq, the bytes received and not read (less one for a
 *   received FIN; up to the urgent mark with urgent data), so received - SIOCINQ is what the
 *   application read (plus a FIN).
 * The three are read separately: an acknowledgement or a segment that arrives in between moves
 * one and not the other. Nobody writes or reads fd meanwhile, so SIOCOUTQ only falls (acks) and
 * SIOCINQ only grows (arrivals): the same values before and after TCP_INFO mean it saw the
 * same state.
 */
int tm_net_stream_base(int fd, tm_net_base *ret_base)
{
	if (fd < 0)
		return -EBADF;
	for (unsigned tries = 0; tries < 16; tries++) {
		int outq0 = 0, inq0 = 0, outq1 = 0, inq1 = 0;
		struct tcp_info ti;
		socklen_t len = sizeof(ti);

		memset(&ti, 0, sizeof(ti));
		if (ioctl(fd, SIOCOUTQ, &outq0) < 0 || ioctl(fd, SIOCINQ, &inq0) < 0 ||
		    getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 ||
		    ioctl(fd, SIOCOUTQ, &outq1) < 0 || ioctl(fd, SIOCINQ, &inq1) < 0)
			return errno == ENOTTY || errno == ENOPROTOOPT || errno == EINVAL ? -EOPNOTSUPP
											   : -errno;
		if (len < offsetof(struct tcp_info, tcpi_bytes_received) +
				  sizeof(ti.tcpi_bytes_received))
			return -EOPNOTSUPP;
		if (outq0 != outq1 || inq0 != inq1)
			continue;
		if (outq0 < 0 || inq0 < 0 || ti.tcpi_bytes_received < (uint64_t)inq0)
			return -EOPNOTSUPP;
		*ret_base = (tm_net_base){ .tx = ti.tcpi_bytes_acked + (uint64_t)outq0,
					   .rx = ti.tcpi_bytes_received - (uint64_t)inq0,
					   .ok = true };
		return 0;
	}
	return -EAGAIN;
}

int tm_net_session_bytes(int fd, const tm_net_base *base, uint64_t *ret_acked,
			 uint64_t *ret_received, uint64_t *ret_unread)
{
	uint64_t acked, received, unread;

	if (!base->ok)
		return -EOPNOTSUPP;
	int r = tm_net_stream_bytes(fd, &acked, &received, &unread);
	if (r < 0)
		return r;
	if (acked < base->tx || received < base->rx)
		return -EAGAIN;
	*ret_acked = acked - base->tx;
	*ret_received = received - base->rx;
	*ret_unread = unread;
	return 0;
}
