/* SPDX-License-Identifier: MIT */
/*
 * The protocol channel over one I/O handle: frames, sequence numbers, control and ERROR
 * messages, wire-byte counting and error messages that name the channel. How the bytes move
 * (sockets, io_uring, TLS around either) is the handle's business (transport.h).
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include "common/escape.h"
#include "session/session-internal.h"
#include "tagmig/error.h"
#include "session/channel.h"
#include "transport/tls/tls.h"

int tm_chan_open(tm_chan *ch, int fd, unsigned id, const tm_transport_ops *ops,
		 const tm_io_config *cfg, GError **error)
{
	memset(ch, 0, sizeof(*ch));
	ch->id = id;
	ch->version = TM_WIRE_VERSION_1;
	g_snprintf(ch->label, sizeof(ch->label), "channel %u", id);
	ch->fd = -1;
	/* Before any I/O of ours; not TCP, or unreadable: that connection is not checked. */
	(void)tm_net_stream_base(fd, &ch->base);
	int r = tm_io_open(fd, id, ops, cfg, &ch->io, error);
	if (r < 0)
		return r;
	ch->fd = ch->io->fd;
	ch->depth = ch->io->depth;
	return 0;
}

void tm_chan_set_id(tm_chan *ch, unsigned id)
{
	ch->id = id;
	g_snprintf(ch->label, sizeof(ch->label), "channel %u", id);
	for (tm_io *l = ch->io; l; l = l->inner)
		memcpy(l->label, ch->label, sizeof(l->label));
}

void tm_chan_set_control(tm_chan *ch, const char *name)
{
	ch->id = 0;
	g_strlcpy(ch->label, name, sizeof(ch->label));
	for (tm_io *l = ch->io; l; l = l->inner)
		memcpy(l->label, ch->label, sizeof(l->label));
}

void tm_chan_set_timeout(tm_chan *ch, unsigned timeout_ms)
{
	if (ch->io) /* a channel closed for a reconnect that did not come (resume-*.c) */
		tm_io_set_timeout(ch->io, timeout_ms);
}

void tm_chan_close(tm_chan *ch)
{
	/* The statistics of a session outlive its channels' handles. */
	tm_io_add_counters(ch->io, &ch->io_closed);
	tm_io_free(ch->io);
	ch->io = NULL;
	ch->fd = -1;
}

void tm_chan_prefix_error(const tm_chan *ch, GError **error)
{
	g_prefix_error(error, "%s: ", ch->label);
}

const char *tm_chan_io_reason(const tm_chan *ch, int err)
{
	return tm_io_reason(ch->io, err);
}

const char *tm_chan_deadline_note(const tm_chan *ch, int err)
{
	if (err != ETIMEDOUT || !ch->io || !ch->io->deadline_us || tm_now_us() < ch->io->deadline_us)
		return "";
	if (ch->setup_deadline_us && ch->io->deadline_us >= ch->setup_deadline_us)
		return " (the handshake's deadline passed)";
	return " (a message body arrived slower than the minimum rate)";
}

void tm_chan_cork(tm_chan *ch)
{
	ch->corked = true;
}

int tm_chan_flush(tm_chan *ch, GError **error)
{
	if (!ch->cork_len)
		return 0;
	struct iovec v = { .iov_base = ch->cork, .iov_len = ch->cork_len };
	size_t len = ch->cork_len;
	ch->cork_len = 0;
	int r = tm_io_send(ch->io, &v, 1, len);
	if (r < 0)
		g_set_error(error, TM_ERROR, -r, "%s: send: %s", ch->label, tm_chan_io_reason(ch, -r));
	return r;
}

int tm_chan_uncork(tm_chan *ch, GError **error)
{
	ch->corked = false;
	return tm_chan_flush(ch, error);
}

int tm_chan_send(tm_chan *ch, const struct iovec *iov, unsigned n, size_t len, GError **error)
{
	if (ch->corked && len <= sizeof(ch->cork)) {
		int r = ch->cork_len + len > sizeof(ch->cork) ? tm_chan_flush(ch, error) : 0;
		if (r < 0)
			return r;
		for (unsigned i = 0; i < n; i++) {
			if (!iov[i].iov_len)
				continue; /* its base may be NULL */
			memcpy(ch->cork + ch->cork_len, iov[i].iov_base, iov[i].iov_len);
			ch->cork_len += (uint16_t)iov[i].iov_len;
		}
		tm_count(&ch->st.wire_bytes, len);
		return 0;
	}
	int r = tm_chan_flush(ch, error);
	if (r < 0)
		return r;
	r = tm_io_send(ch->io, iov, n, len);
	if (r < 0) {
		g_set_error(error, TM_ERROR, -r, "%s: send: %s", ch->label, tm_chan_io_reason(ch, -r));
		return r;
	}
	tm_count(&ch->st.wire_bytes, len);
	return 0;
}

int tm_chan_submit(tm_chan *ch, unsigned slot, const struct iovec *iov, unsigned n, size_t len,
		   GError **error)
{
	/* Packets are never held back: what is corked goes first, then the packet. */
	int r = tm_chan_flush(ch, error);
	if (r < 0)
		return r;
	r = ch->io->ops->submit ? ch->io->ops->submit(ch->io, slot, iov, n, len) :
				  tm_io_send(ch->io, iov, n, len);
	if (r < 0) {
		g_set_error(error, TM_ERROR, -r, "%s: send: %s", ch->label, tm_chan_io_reason(ch, -r));
		return r;
	}
	tm_count(&ch->st.wire_bytes, len);
	return 0;
}

bool tm_chan_broke(const tm_chan *ch)
{
	uint8_t b;
	ssize_t got = ch->fd < 0 ? 0 : recv(ch->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	return got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

int tm_chan_wait_slot(tm_chan *ch, unsigned slot, GError **error)
{
	int r = ch->io->ops->wait_slot ? ch->io->ops->wait_slot(ch->io, slot) : 0;
	if (r < 0)
		g_set_error(error, TM_ERROR, -r, "%s: send: %s", ch->label, tm_chan_io_reason(ch, -r));
	return r;
}

int tm_chan_recv(tm_chan *ch, void *buf, size_t len, GError **error)
{
	struct iovec v = { .iov_base = buf, .iov_len = len };
	/* The peer may be waiting for what we hold before it says anything. */
	int r = tm_chan_flush(ch, error);
	if (r < 0)
		return r;
	r = tm_io_recv(ch->io, &v, 1, len);
	if (r < 0) {
		g_set_error(error, TM_ERROR, -r, "%s: receive: %s%s", ch->label,
			    tm_chan_io_reason(ch, -r), tm_chan_deadline_note(ch, -r));
		return r;
	}
	tm_count(&ch->st.wire_bytes, len);
	return 0;
}

int tm_chan_recv_iov(tm_chan *ch, const struct iovec *iov, unsigned n, size_t len)
{
	int r = tm_chan_flush(ch, NULL);
	if (r >= 0)
		r = tm_io_recv(ch->io, iov, n, len);
	if (r < 0)
		return r;
	tm_count(&ch->st.wire_bytes, len);
	return 0;
}

/* The deadline of a body of len bytes whose header arrived now (TM_BODY_MIN_RATE). */
static int64_t body_deadline(const tm_chan *ch, uint32_t len)
{
	int64_t d = tm_now_us() + (int64_t)TM_BODY_GRACE_MS * 1000 +
		    (int64_t)len * G_USEC_PER_SEC / TM_BODY_MIN_RATE;
	return ch->setup_deadline_us ? MIN(d, ch->setup_deadline_us) : d;
}

int tm_chan_recv_frame(tm_chan *ch, uint32_t packet_size, tm_frame *ret, GError **error)
{
	uint8_t hdr[TM_FRAME_HDR_LEN];
	if (!ch->io) { /* closed for a reconnect that did not come (resume-*.c) */
		g_set_error(error, TM_ERROR, ENOTCONN, "%s: closed", ch->label);
		return -ENOTCONN;
	}
	/*
	 * Between messages: no deadline but the handshake's. The first byte of a message starts
	 * the deadline of the rest of its header, the complete header that of its body.
	 */
	tm_io_set_deadline(ch->io, ch->setup_deadline_us);
	int got = tm_chan_flush(ch, error);
	if (got < 0)
		return got;
	/* Usually the whole header, in one system call; never beyond it. */
	if ((got = tm_io_recv_some(ch->io, hdr, sizeof(hdr))) < 0) {
		g_set_error(error, TM_ERROR, -got, "%s: receive: %s%s", ch->label,
			    tm_chan_io_reason(ch, -got), tm_chan_deadline_note(ch, -got));
		return got;
	}
	tm_count(&ch->st.wire_bytes, (uint64_t)got);
	tm_io_set_deadline(ch->io, body_deadline(ch, 0));
	int r = (size_t)got < sizeof(hdr) ? tm_chan_recv(ch, hdr + got, sizeof(hdr) - (size_t)got,
							  error) : 0;
	if (r < 0)
		return r;
	r = tm_frame_decode(hdr, sizeof(hdr), ch->version, packet_size, ret, error);
	if (r < 0) {
		if (ch->rx_seq == 0 && tm_io_peer_speaks_tls(ch->io, hdr, sizeof(hdr))) {
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
	ch->peer_version = ret->version;
	tm_io_set_deadline(ch->io, body_deadline(ch, ret->body_len));
	if (ret->seq != ch->rx_seq) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "%s: %s message has sequence number %u, expected %u", ch->label,
			    tm_msg_name(ret->type), ret->seq, ch->rx_seq);
		return -EPROTO;
	}
	ch->rx_seq++;
	return 0;
}

int tm_chan_send_ctrl(tm_chan *ch, uint8_t type, uint64_t a, uint64_t b, GError **error)
{
	/* protocol 2 END: state_chunks 0 (no device state yet, design step 9) */
	const uint64_t vals[TM_CTRL_MAX_FIELDS] = { a, b };

	return tm_chan_send_ctrl_v(ch, type, vals, error);
}

int tm_chan_send_ctrl_v(tm_chan *ch, uint8_t type, const uint64_t vals[TM_CTRL_MAX_FIELDS],
			GError **error)
{
	uint8_t buf[TM_FRAME_HDR_LEN + 8 * TM_CTRL_MAX_FIELDS];
	size_t len = tm_ctrl_encode_v(buf, ch->version, type, ch->tx_seq++, vals);
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
	g_autofree char *shown = tm_escape_untrusted(msg);
	g_set_error(error, TM_ERROR, code, "%s: %s: %s", ch->label, peer, shown);
	ch->peer_error = true;
	return -code;
}

int tm_chan_recv_ctrl(tm_chan *ch, uint8_t type, uint64_t *ret_a, uint64_t *ret_b,
		      GError **error)
{
	tm_frame f;
	uint8_t body[8 * TM_CTRL_MAX_FIELDS];
	uint64_t v[TM_CTRL_MAX_FIELDS];
	int r = tm_chan_recv_frame(ch, 0, &f, error);
	if (r < 0)
		return r;
	if (f.type == TM_MSG_ERROR)
		return tm_chan_recv_peer_error(
			ch, &f, type == TM_MSG_HELLO_ACK ? "receiver refused" : "receiver failed",
			error);
	if (f.type != type || f.body_len > sizeof(body)) {
		g_set_error(error, TM_ERROR, EPROTO, "%s: expected %s, received %s", ch->label,
			    tm_msg_name(type), tm_msg_name(f.type));
		return -EPROTO;
	}
	r = tm_chan_recv(ch, body, f.body_len, error);
	if (r < 0)
		return r;
	r = tm_ctrl_decode_v(f.version, type, body, f.body_len, v, error);
	if (r < 0) {
		tm_chan_prefix_error(ch, error);
		return r;
	}
	if (ret_a)
		*ret_a = v[0];
	if (ret_b)
		*ret_b = v[1];
	return 0;
}

void tm_chan_send_error(tm_chan *ch, int code, const char *message)
{
	uint8_t buf[TM_CHAN_CORK_MAX + TM_FRAME_HDR_LEN + TM_ERROR_FIXED_LEN + TM_MAX_ERROR_MESSAGE];
	if (!ch->io)
		return;
	/* What a corked channel held goes first: the ERROR's sequence number follows it. */
	size_t held = ch->cork_len;
	memcpy(buf, ch->cork, held);
	ch->cork_len = 0;
	ch->corked = false;
	size_t len = tm_error_encode_v(buf + held, ch->version ? ch->version : TM_WIRE_VERSION_1,
				       ch->tx_seq++, code, message);

	tm_io_send_last(ch->io, buf, held + len);
}

/* Reads and drops len bytes of a body (a frame tm_chan_peer_error passes over). */
static int skip_body(tm_chan *ch, uint32_t len)
{
	uint8_t buf[4096];
	for (uint32_t n; len; len -= n) {
		n = MIN(len, (uint32_t)sizeof(buf));
		if (tm_chan_recv(ch, buf, n, NULL) < 0)
			return -1;
	}
	return 0;
}

static int peer_error(tm_chan *ch, uint32_t packet_size, const char *peer, int64_t until,
		      GError **error)
{
	/*
	 * A TCP reset does not discard what already arrived: the peer's ERROR is still readable,
	 * maybe behind what it said before (a DELTA_NACK no one read yet), which is passed over.
	 */
	unsigned most = ch->version ? TM_PEER_ERROR_FRAMES : 1; /* a handshake: its answer or ERROR */
	for (unsigned k = 0; k < most && ch->io; k++) {
		struct pollfd p = { .fd = ch->fd, .events = POLLIN };
		int64_t left = until - g_get_monotonic_time();
		tm_frame f;
		/* What a TLS layer holds already is there without a poll (read with the frame
		 * passed over, say). */
		if (!tm_io_readable(ch->io) &&
		    (left <= 0 || poll(&p, 1, (int)((left + 999) / 1000)) <= 0))
			return 0;
		g_autoptr(GError) local = NULL;
		if (tm_chan_recv_frame(ch, packet_size, &f, &local) < 0)
			return 0;
		if (f.type == TM_MSG_ERROR)
			return tm_chan_recv_peer_error(ch, &f, peer, error);
		if (skip_body(ch, f.body_len) < 0)
			return 0;
	}
	return 0;
}

int tm_chan_peer_error(tm_chan *ch, uint32_t packet_size, const char *peer, GError **error)
{
	int64_t until = g_get_monotonic_time() + G_USEC_PER_SEC;
	int64_t saved = ch->setup_deadline_us;

	/* The second bounds the reads too: a frame that stops halfway does not hold it for its
	 * body's deadline (every receive of a frame is capped by setup_deadline_us). */
	ch->setup_deadline_us = saved ? MIN(saved, until) : until;
	int r = peer_error(ch, packet_size, peer, until, error);
	ch->setup_deadline_us = saved;
	if (ch->io)
		tm_io_set_deadline(ch->io, saved);
	return r;
}

int tm_chan_recv_unsolicited(tm_chan *ch, const char *peer, GError **error)
{
	g_autoptr(GError) local = NULL;
	tm_frame f;

	int r = tm_chan_recv_frame(ch, 0, &f, &local);
	if (r == -ECONNRESET || r == -EPIPE) {
		g_set_error(error, TM_ERROR, ECONNRESET, "%s: connection closed by the peer (the %s)",
			    ch->label, peer);
		return -ECONNRESET;
	}
	if (r < 0) {
		g_propagate_error(error, g_steal_pointer(&local));
		return r;
	}
	if (f.type == TM_MSG_ERROR) {
		g_autofree char *failed = g_strdup_printf("%s failed", peer);
		return tm_chan_recv_peer_error(ch, &f, failed, error);
	}
	g_set_error(error, TM_ERROR, EPROTO,
		    "%s: the %s sent %s unsolicited: nothing this side sent asks for it", ch->label,
		    peer, tm_msg_name(f.type));
	return -EPROTO;
}

void tm_chan_sum(const tm_chan *ch, tm_stats *ret)
{
	tm_io_counters io = ch->io_closed;

	tm_counters_sum(&ch->st, ret);
	tm_io_add_counters(ch->io, &io);
	ret->io_submissions += io.io_submissions;
	ret->io_completions += io.io_completions;
	ret->zc_sends += io.zc_sends;
	ret->zc_copied += io.zc_copied;
}
