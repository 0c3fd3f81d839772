/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "session/session-internal.h"
#include "tagmig/error.h"
#include "transport/tls/tls.h"
#include "transport/transport.h"

int tm_chan_open(tm_chan *ch, int fd, unsigned id, const tm_transport_ops *ops,
		 unsigned timeout_ms, unsigned depth, GError **error)
{
	memset(ch, 0, sizeof(*ch));
	ch->fd = fd;
	ch->id = id;
	ch->ops = ops;
	ch->timeout_ms = timeout_ms;
	ch->depth = ops->submit ? MAX(depth, 1) : 1;

	/* Every blocked read or write ends after timeout_ms: a stuck peer is an error, not a hang. */
	struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
	int one = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) {
		int e = errno;
		g_set_error(error, TM_ERROR, e, "channel %u: socket setup: %s", id, g_strerror(e));
		close(fd);
		ch->fd = -1;
		return -e;
	}
	/* Control messages are tiny and latency bound (sync barriers); data goes out in big writes. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	ch->priv = g_malloc0(MAX(ops->priv_size, 1));
	if (ops->open) {
		int r = ops->open(ch, error);
		if (r < 0) {
			g_free(ch->priv);
			ch->priv = NULL;
			close(fd);
			ch->fd = -1;
			return r;
		}
	}
	return 0;
}

void tm_chan_set_timeout(tm_chan *ch, unsigned timeout_ms)
{
	struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };

	ch->timeout_ms = timeout_ms;
	setsockopt(ch->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(ch->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

void tm_chan_close(tm_chan *ch)
{
	if (ch->fd < 0)
		return;
	if (ch->ops && ch->ops->close)
		ch->ops->close(ch);
	g_free(ch->priv);
	ch->priv = NULL;
	close(ch->fd);
	ch->fd = -1;
}

void tm_chan_prefix_error(const tm_chan *ch, GError **error)
{
	g_prefix_error(error, "channel %u: ", ch->id);
}

const char *tm_chan_io_reason(const tm_chan *ch, int err)
{
	/* A TLS channel knows more than an errno: which record failed to authenticate, and so on. */
	const char *tls = tm_tls_chan_last_error(ch);
	if (tls)
		return tls;
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

int tm_chan_send(tm_chan *ch, const struct iovec *iov, unsigned n, size_t len, GError **error)
{
	int r = ch->ops->send(ch, iov, n, len);
	if (r < 0) {
		g_set_error(error, TM_ERROR, -r, "channel %u: send: %s", ch->id, tm_chan_io_reason(ch, -r));
		return r;
	}
	tm_count(&ch->st.wire_bytes, len);
	return 0;
}

int tm_chan_submit(tm_chan *ch, unsigned slot, const struct iovec *iov, unsigned n, size_t len,
		   GError **error)
{
	if (!ch->ops->submit)
		return tm_chan_send(ch, iov, n, len, error);
	int r = ch->ops->submit(ch, slot, iov, n, len);
	if (r < 0) {
		g_set_error(error, TM_ERROR, -r, "channel %u: send: %s", ch->id, tm_chan_io_reason(ch, -r));
		return r;
	}
	tm_count(&ch->st.wire_bytes, len);
	return 0;
}

int tm_chan_wait_slot(tm_chan *ch, unsigned slot, GError **error)
{
	int r = ch->ops->wait_slot ? ch->ops->wait_slot(ch, slot) : 0;
	if (r < 0)
		g_set_error(error, TM_ERROR, -r, "channel %u: send: %s", ch->id, tm_chan_io_reason(ch, -r));
	return r;
}

int tm_chan_recv(tm_chan *ch, void *buf, size_t len, GError **error)
{
	struct iovec v = { .iov_base = buf, .iov_len = len };
	int r = ch->ops->recv(ch, &v, 1, len);
	if (r < 0) {
		g_set_error(error, TM_ERROR, -r, "channel %u: receive: %s", ch->id, tm_chan_io_reason(ch, -r));
		return r;
	}
	tm_count(&ch->st.wire_bytes, len);
	return 0;
}

int tm_chan_recv_iov(tm_chan *ch, const struct iovec *iov, unsigned n, size_t len)
{
	int r = ch->ops->recv(ch, iov, n, len);
	if (r < 0)
		return r;
	tm_count(&ch->st.wire_bytes, len);
	return 0;
}

int tm_chan_recv_frame(tm_chan *ch, uint32_t packet_size, tm_frame *ret, GError **error)
{
	uint8_t hdr[TM_FRAME_HDR_LEN];
	int r = tm_chan_recv(ch, hdr, sizeof(hdr), error);
	if (r < 0)
		return r;
	r = tm_frame_decode(hdr, sizeof(hdr), packet_size, ret, error);
	if (r < 0) {
		if (!tm_tls_chan_is_tls(ch) && ch->rx_seq == 0 &&
		    tm_tls_looks_like_tls(hdr, sizeof(hdr))) {
			/* Say what happened rather than "bad magic". */
			g_clear_error(error);
			g_set_error(error, TM_ERROR, EPROTO,
				    "the peer speaks TLS but this side runs without it "
				    "(give both sides --tls-creds)");
			r = -EPROTO;
		}
		tm_chan_prefix_error(ch, error);
		return r;
	}
	if (ret->seq != ch->rx_seq) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "channel %u: %s message has sequence number %u, expected %u", ch->id,
			    tm_msg_name(ret->type), ret->seq, ch->rx_seq);
		return -EPROTO;
	}
	ch->rx_seq++;
	return 0;
}

int tm_chan_send_ctrl(tm_chan *ch, uint8_t type, uint64_t a, uint64_t b, GError **error)
{
	uint8_t buf[TM_FRAME_HDR_LEN + 16];
	size_t len = tm_ctrl_encode(buf, type, ch->tx_seq++, a, b);
	struct iovec v = { .iov_base = buf, .iov_len = len };
	return tm_chan_send(ch, &v, 1, len, error);
}

int tm_chan_recv_peer_error(tm_chan *ch, const tm_frame *f, const char *peer, GError **error)
{
	uint8_t body[TM_ERROR_FIXED_LEN + TM_MAX_ERROR_MESSAGE];
	g_autofree char *msg = NULL;
	int code = 0;

	int r = tm_chan_recv(ch, body, f->body_len, error);
	if (r < 0)
		return r;
	r = tm_error_decode(body, f->body_len, &code, &msg, error);
	if (r < 0) {
		tm_chan_prefix_error(ch, error);
		return r;
	}
	if (code <= 0 || code > 4095)
		code = EPROTO;
	g_set_error(error, TM_ERROR, code, "channel %u: %s: %s", ch->id, peer, msg);
	ch->peer_error = true;
	return -code;
}

int tm_chan_recv_ctrl(tm_chan *ch, uint8_t type, uint64_t *ret_a, uint64_t *ret_b,
		      GError **error)
{
	tm_frame f;
	uint8_t body[16];
	int r = tm_chan_recv_frame(ch, 0, &f, error);
	if (r < 0)
		return r;
	if (f.type == TM_MSG_ERROR)
		return tm_chan_recv_peer_error(
			ch, &f, type == TM_MSG_HELLO_ACK ? "receiver refused" : "receiver failed",
			error);
	if (f.type != type || f.body_len > sizeof(body)) {
		g_set_error(error, TM_ERROR, EPROTO, "channel %u: expected %s, received %s", ch->id,
			    tm_msg_name(type), tm_msg_name(f.type));
		return -EPROTO;
	}
	r = tm_chan_recv(ch, body, f.body_len, error);
	if (r < 0)
		return r;
	r = tm_ctrl_decode(type, body, f.body_len, ret_a, ret_b, error);
	if (r < 0)
		tm_chan_prefix_error(ch, error);
	return r;
}

void tm_chan_send_error(tm_chan *ch, int code, const char *message)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_ERROR_FIXED_LEN + TM_MAX_ERROR_MESSAGE];
	size_t len = tm_error_encode(buf, ch->tx_seq++, code, message);

	if (tm_tls_chan_is_tls(ch)) {
		/* Inside the TLS stream, or the peer could not read it. Small, so it does not wait
		 * for a peer that is not reading unless the socket buffer is full, and then at most
		 * the channel's timeout. */
		struct iovec v = { .iov_base = buf, .iov_len = len };
		(void)ch->ops->send(ch, &v, 1, len);
		return;
	}
	/* Not into the middle of a message still in flight: let the backend finish it first. A
	 * backend that cannot (its own send failed) leaves a stream the peer cannot parse. */
	if (ch->ops->drain && ch->ops->drain(ch) < 0)
		return;
	/* Best effort and never blocking: the peer may be gone or not reading. */
	(void)!send(ch->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
}

int tm_chan_peer_error(tm_chan *ch, const char *peer, GError **error)
{
	struct pollfd p = { .fd = ch->fd, .events = POLLIN };
	tm_frame f;

	if (poll(&p, 1, 1000) <= 0)
		return 0;
	/* A TCP reset does not discard what already arrived: the peer's ERROR is still readable. */
	g_autoptr(GError) local = NULL;
	if (tm_chan_recv_frame(ch, 0, &f, &local) < 0 || f.type != TM_MSG_ERROR)
		return 0;
	return tm_chan_recv_peer_error(ch, &f, peer, error);
}
