/* SPDX-License-Identifier: MIT */
/* The session tests' hand-made peer: fake-peer.h. */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fake-peer.h"
#include "transport/transport.h"

uint8_t *fake_hello_bytes(const fake_hello *fh, size_t room, size_t *ret_len)
{
	uint8_t v = fh->version ? fh->version : TM_WIRE_VERSION_1;
	tm_wire_block wb = { .length = fh->block.len, .page_size = fh->block.page_size,
			     .guest_base = fh->guest_base };
	g_strlcpy(wb.name, fh->block.name, sizeof(wb.name));
	tm_hello h = { .version = fh->version, .role = fh->role, .channel_id = fh->channel_id,
		       .channel_count = fh->channel_count, .features = fh->features,
		       .epoch = fh->epoch, .packet_size = fh->packet_size,
		       .chunk_size = fh->chunk_size, .block_count = 1, .blocks = &wb };

	if (fh->id)
		memcpy(h.session_id, fh->id, 16);
	else
		memset(h.session_id, fh->sid, 16);
	g_assert_cmpint(tm_hello_check(&h, NULL), ==, 0);
	size_t bl = tm_hello_body_len(&h);
	uint8_t *buf = g_malloc(TM_FRAME_HDR_LEN + bl + room);
	tm_frame_encode_v(buf, v, TM_MSG_HELLO, (uint32_t)bl, 0);
	tm_hello_encode(&h, buf + TM_FRAME_HDR_LEN);
	*ret_len = TM_FRAME_HDR_LEN + bl;
	return buf;
}

int fake_connect(const char *port, const fake_hello *h)
{
	size_t len;
	g_autofree uint8_t *buf = fake_hello_bytes(h, 0, &len);
	int fd = tm_net_connect("127.0.0.1", port, 5000, -1, NULL);

	g_assert_cmpint(fd, >=, 0);
	g_assert_cmpint(write(fd, buf, len), ==, (ssize_t)len);
	return fd;
}

fake_hello fake_hello_v1(const block_spec *spec, uint16_t id, uint16_t count, bool tags)
{
	return (fake_hello){ .channel_id = id, .channel_count = count,
			     .features = tags ? TM_FEATURE_TAGS_MTE4 : 0, .packet_size = 512 * 1024,
			     .chunk_size = 2 << 20, .block = *spec, .sid = 7 };
}

int fake_connect_v1(const char *port, const block_spec *spec, uint16_t id, uint16_t count,
		    bool tags)
{
	fake_hello h = fake_hello_v1(spec, id, count, tags);

	return fake_connect(port, &h);
}

int fake_v1_start(peer *p, guest *dst, bool tags)
{
	static const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };

	guest_init(dst, a, 1, tags);
	g_autofree char *port = peer_start(p, dst);
	int fd = fake_connect_v1(port, a, 0, 1, tags);
	fake_expect_ack(fd, TM_WIRE_VERSION_1, 0, NULL);
	return fd;
}

void fake_expect_ack(int fd, uint8_t version, uint32_t offered, tm_hello_ack *ret)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_HELLO_ACK2_LEN];
	size_t len = TM_FRAME_HDR_LEN + (version == TM_WIRE_VERSION_2 ? TM_HELLO_ACK2_LEN : 8);

	tm_frame f;

	g_assert_cmpint(recv(fd, buf, len, MSG_WAITALL), ==, (ssize_t)len);
	g_assert_cmpint(tm_frame_decode(buf, TM_FRAME_HDR_LEN, version, 0, &f, NULL), ==, 0);
	g_assert_cmpuint(f.type, ==, TM_MSG_HELLO_ACK);
	if (ret)
		g_assert_cmpint(tm_hello_ack_decode(buf + TM_FRAME_HDR_LEN, TM_HELLO_ACK2_LEN,
						    offered, ret, NULL), ==, 0);
}

void fake_read_hello(int fd, uint8_t version, tm_hello *ret)
{
	uint8_t h[TM_FRAME_HDR_LEN];
	tm_frame f;

	g_assert_cmpint(recv(fd, h, sizeof(h), MSG_WAITALL), ==, sizeof(h));
	g_assert_cmpint(tm_frame_decode(h, sizeof(h), version, 0, &f, NULL), ==, 0);
	g_assert_cmpuint(f.type, ==, TM_MSG_HELLO);
	g_autofree uint8_t *body = g_malloc(f.body_len);
	g_assert_cmpint(recv(fd, body, f.body_len, MSG_WAITALL), ==, (ssize_t)f.body_len);
	g_assert_cmpint(tm_hello_decode(body, f.body_len, version, ret, NULL), ==, 0);
}

void fake_sender_open(fake_sender *w, const char *port, const fake_hello *h)
{
	fake_hello c = *h;

	memset(w, 0, sizeof(*w));
	c.role = TM_ROLE_DATA;
	c.channel_id = 0;
	w->fd[FAKE_DATA0] = fake_connect(port, &c);
	c.role = TM_ROLE_CONTROL;
	w->fd[FAKE_CTL] = fake_connect(port, &c);
	c.role = TM_ROLE_DATA;
	c.channel_id = 1;
	w->fd[FAKE_DATA1] = fake_connect(port, &c);
	c.role = TM_ROLE_URGENT;
	c.channel_id = 0;
	w->fd[FAKE_URG] = h->features & TM_FEATURE_POSTCOPY ? fake_connect(port, &c) : -1;
	fake_sender_acks(w, h);
}

void fake_sender_acks(fake_sender *w, const fake_hello *h)
{
	for (int k = 0; k < FAKE_CONNS; k++) {
		if (w->fd[k] < 0)
			continue;
		fake_expect_ack(w->fd[k], TM_WIRE_VERSION_2, h->features, &w->ack);
		w->seq[k] = 1;
	}
}

void fake_send(fake_sender *w, unsigned ch, const void *p, size_t n)
{
	(void)!send(w->fd[ch], p, n, MSG_NOSIGNAL);
}

bool fake_read(fake_sender *w, unsigned ch, tm_frame *f, uint8_t *body, size_t cap)
{
	uint8_t hdr[TM_FRAME_HDR_LEN];

	if (recv(w->fd[ch], hdr, sizeof(hdr), MSG_WAITALL) != sizeof(hdr))
		return false;
	g_assert_cmpint(tm_frame_decode(hdr, sizeof(hdr), 2, 0, f, NULL), ==, 0);
	g_assert_cmpuint(f->body_len, <=, cap);
	return recv(w->fd[ch], body, f->body_len, MSG_WAITALL) == (ssize_t)f->body_len;
}

void fake_ram_end(fake_sender *w, unsigned ch, uint32_t mode, uint64_t pages, uint64_t packets)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_RAM_END_LEN];
	size_t n = tm_ram_end_encode(buf, w->seq[ch]++, mode, pages, packets);

	fake_send(w, ch, buf, n);
}

void fake_end(fake_sender *w, unsigned ch, uint64_t pages, uint64_t packets, uint64_t chunks)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_END2_LEN];
	const uint64_t v[TM_CTRL_MAX_FIELDS] = { pages, packets, chunks };
	size_t n = tm_ctrl_encode_v(buf, TM_WIRE_VERSION_2, TM_MSG_END, w->seq[ch]++, v);

	fake_send(w, ch, buf, n);
}

void fake_finish_control(fake_sender *w, uint64_t want_mode)
{
	uint8_t buf[64];
	bool ready = false;
	tm_frame f;

	for (;;) {
		g_assert_true(fake_read(w, FAKE_CTL, &f, buf, sizeof(buf)));
		if (f.type == TM_MSG_PING) {
			const uint64_t nonce[TM_CTRL_MAX_FIELDS] = { tm_get64(buf) };
			uint8_t out[TM_FRAME_HDR_LEN + 8];
			size_t n = tm_ctrl_encode_v(out, TM_WIRE_VERSION_2, TM_MSG_PONG,
						    w->seq[FAKE_CTL]++, nonce);
			fake_send(w, FAKE_CTL, out, n);
		} else if (f.type == TM_MSG_READY) {
			if (want_mode)
				g_assert_cmpuint(tm_get64(buf), ==, want_mode);
			ready = true;
		} else {
			g_assert_cmpuint(f.type, ==, TM_MSG_END_ACK);
			g_assert_true(ready);
			return;
		}
	}
}

void fake_sender_close(fake_sender *w)
{
	for (int k = 0; k < FAKE_CONNS; k++)
		if (w->fd[k] >= 0)
			close(w->fd[k]);
}
