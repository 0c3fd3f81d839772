/* SPDX-License-Identifier: MIT */
/*
 * The session's opening exchange (docs/wire-format.md, "Handshake"), both sides: the sender sends
 * HELLO on every channel and collects the HELLO_ACKs; the receiver places each connection by the
 * channel id of its HELLO, checks that every HELLO belongs to one session, and compares the
 * announced layout with its own RAM before it acknowledges.
 */
#include <errno.h>
#include <string.h>

#include "ram/ram-internal.h"
#include "session/session-internal.h"
#include "tagmig/error.h"
#include "tagstore/tagstore-internal.h"

/* ---- sender ---- */

int tm_sender_send_hello(tm_sender *s, tm_chan *ch, GError **error)
{
	size_t blen = tm_hello_body_len(&s->hello);
	g_autofree uint8_t *buf = g_malloc(TM_FRAME_HDR_LEN + blen);

	s->hello.channel_id = (uint16_t)ch->id;
	tm_frame_encode(buf, TM_MSG_HELLO, (uint32_t)blen, ch->tx_seq++);
	tm_hello_encode(&s->hello, buf + TM_FRAME_HDR_LEN);
	struct iovec v = { .iov_base = buf, .iov_len = TM_FRAME_HDR_LEN + blen };
	return tm_chan_send(ch, &v, 1, v.iov_len, error);
}

int tm_sender_await_acks(tm_sender *s, GError **error)
{
	for (unsigned i = 0; i < s->nch; i++) {
		uint64_t a, b;
		int r = tm_chan_recv_ctrl(&s->chans[i].ch, TM_MSG_HELLO_ACK, &a, &b, error);
		if (r < 0) {
			g_prefix_error(error, "handshake: ");
			if (r == -ECONNRESET && !s->tls)
				/* What a TLS receiver does with a plaintext HELLO. */
				g_prefix_error(error, "the receiver closed the connection at once (does "
						      "it expect TLS? then give both sides TLS "
						      "credentials): ");
			return r;
		}
	}
	return 0;
}

/* ---- receiver ---- */

int tm_receiver_place_channel(tm_receiver *r, int fd, unsigned timeout_ms, GError **error)
{
	tm_chan tmp;
	tm_frame f;
	tm_hello h = { 0 };
	tm_io_config ioc = { .timeout_ms = timeout_ms, .depth = 1, .zerocopy = r->cfg.tuning.zerocopy };
	int ret = tm_chan_open(&tmp, fd, 0, r->io, &ioc, error);
	if (ret < 0)
		return ret;
	if (r->tls && (ret = tm_tls_wrap(r->tls, &tmp.io, error)) < 0) {
		/* The TLS layer told the peer already (an alert); nothing else can reach it. */
		tm_chan_close(&tmp);
		return ret;
	}
	ret = tm_chan_recv_frame(&tmp, 0, &f, error);
	if (ret >= 0 && f.type != TM_MSG_HELLO) {
		g_set_error(error, TM_ERROR, EPROTO, "expected HELLO, received %s",
			    tm_msg_name(f.type));
		ret = -EPROTO;
	}
	g_autofree uint8_t *body = NULL;
	if (ret >= 0) {
		body = g_malloc(f.body_len ? f.body_len : 1);
		ret = tm_chan_recv(&tmp, body, f.body_len, error);
	}
	if (ret >= 0)
		ret = tm_hello_decode(body, f.body_len, f.version, &h, error);
	if (ret >= 0 && r->chans)
		ret = tm_hello_same_session(&r->hello, &h, error);
	if (ret >= 0 && r->chans && r->chans[h.channel_id].used) {
		g_set_error(error, TM_ERROR, EPROTO, "channel id %u connected twice", h.channel_id);
		ret = -EPROTO;
	}
	if (ret < 0) {
		g_prefix_error(error, "handshake: ");
		g_autofree char *msg = g_strdup((*error)->message);
		tm_chan_send_error(&tmp, -ret, msg);
		tm_chan_close(&tmp);
		tm_hello_clear(&h);
		return ret;
	}
	if (!r->chans) {
		r->hello = h;
		h.blocks = NULL;
		r->nch = r->hello.channel_count;
		r->chans = g_new0(recv_chan, r->nch);
		for (unsigned i = 0; i < r->nch; i++) {
			r->chans[i].ch.fd = -1;
			r->chans[i].r = r;
		}
	}
	unsigned id = h.channel_id;
	tm_hello_clear(&h);
	tm_chan_set_id(&tmp, id);
	r->chans[id].ch = tmp;
	r->chans[id].used = true;
	return 0;
}

int tm_receiver_build_announced(tm_receiver *r, GError **error)
{
	tm_ram_layout_new(&r->announced);
	for (unsigned i = 0; i < r->hello.block_count; i++) {
		const tm_wire_block *b = &r->hello.blocks[i];
		int ret = tm_ram_layout_add_block(r->announced, b->name, NULL, b->length,
						  b->page_size, b->guest_base, error);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int tm_receiver_compare_layout(tm_receiver *r, const tm_ram_layout *layout, tm_tag_store *tags,
			       GError **error)
{
	unsigned n = layout->blocks->len;
	bool store_tags = tags && tm_tag_store_get_ops(tags)->has_tags;

	if (n != r->hello.block_count) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "RAM layout differs: sender has %u blocks, receiver has %u",
			    r->hello.block_count, n);
		return -EINVAL;
	}
	for (unsigned i = 0; i < n; i++) {
		const tm_wire_block *w = &r->hello.blocks[i];
		const tm_ram_block *b = tm_ram_layout_get(layout, i);
		if (strcmp(w->name, b->name) != 0) {
			g_set_error(error, TM_ERROR, EINVAL,
				    "RAM layout differs: block %u is '%s' on the sender, '%s' on the receiver",
				    i, w->name, b->name);
			return -EINVAL;
		}
		if (w->length != b->length || w->page_size != b->page_size) {
			g_set_error(error, TM_ERROR, EINVAL,
				    "RAM block %u '%s' differs: sender length %" G_GUINT64_FORMAT
				    " page size %u, receiver length %" G_GUINT64_FORMAT " page size %u",
				    i, b->name, w->length, w->page_size, b->length, b->page_size);
			return -EINVAL;
		}
		if (!b->host) {
			g_set_error(error, TM_ERROR, EINVAL, "RAM block '%s' has no host memory",
				    b->name);
			return -EINVAL;
		}
	}
	if (tags && tm_tag_store_layout(tags) != layout) {
		g_set_error(error, TM_ERROR, EINVAL, "the tag store was made for another RAM layout");
		return -EINVAL;
	}
	if (tm_receiver_peer_sends_tags(r) && !store_tags) {
		g_set_error(error, TM_ERROR, EOPNOTSUPP,
			    "the sender migrates memory tags but this receiver has no tag store");
		return -EOPNOTSUPP;
	}
	if (!tm_receiver_peer_sends_tags(r) && store_tags) {
		g_set_error(error, TM_ERROR, EOPNOTSUPP,
			    "this receiver has a tag store ('%s') but the sender migrates no tags",
			    tm_tag_store_get_ops(tags)->name);
		return -EOPNOTSUPP;
	}
	return 0;
}
