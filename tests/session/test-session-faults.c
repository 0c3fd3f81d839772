/* SPDX-License-Identifier: MIT */
/*
 * Sessions that something goes wrong in, on purpose: hand-made hostile or vanishing peers, a
 * receiver that dies mid-packet or gives up, a proxy that alters TLS ciphertext, a tag store that
 * fails, bad tags, a late sender, setup failures without a GError. Each checks that the failure
 * is found, explained on both sides where it can be, and never lets bad data into guest RAM.
 * Every test runs for each backend pair, plaintext and TLS (session-fixture.c).
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "codec/codec.h"
#include "fake-peer.h"
#include "session-fixture.h"
#include "transport/transport.h"
#include "transport/tls/tls.h"

typedef struct sender_run {
	guest *g;
	const char *port;
	unsigned channels;
	bool queue_all; /* after connect: queue everything and finish */
	int ret;
	GError *error;
} sender_run;

static gpointer sender_thread(gpointer data)
{
	sender_run *sr = data;
	g_autoptr(tm_sender) s = NULL;
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = sr->channels, .timeout_ms = 20000 };

	sr->ret = tm_sender_new(sr->g->layout, sr->g->tags, &cfg, &s, &sr->error);
	if (sr->ret >= 0)
		sr->ret = tm_sender_connect(s, "127.0.0.1", sr->port, &sr->error);
	for (unsigned b = 0; sr->ret >= 0 && sr->queue_all && b < sr->g->nblocks; b++) {
		tm_ram_block_info bi;
		tm_ram_layout_block(sr->g->layout, b, &bi);
		uint64_t np = bi.length / bi.page_size;
		g_autofree uint64_t *pages = g_new(uint64_t, np);
		for (uint64_t i = 0; i < np; i++)
			pages[i] = i;
		sr->ret = tm_sender_queue_pages(s, b, pages, np, &sr->error);
	}
	if (sr->ret >= 0 && sr->queue_all)
		sr->ret = tm_sender_finish(s, &sr->error);
	return NULL;
}

/* The receiver gives up after accept (a tool that cannot map the RAM): the sender learns why. */
static void test_receiver_abort(void)
{
	guest src;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_receiver) r = NULL;
	unsigned port;

	guest_init(&src, a, 1, false);
	int lfd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_autofree char *ports = g_strdup_printf("%u", port);
	sender_run sr = { .g = &src, .port = ports, .channels = 3 };
	GThread *t = g_thread_new("sender", sender_thread, &sr);
	tm_receiver_config cfg = { .io_backend = recv_io, .tls_creds_dir = tls_dir, .timeout_ms = 20000 };
	g_assert_cmpint(tm_receiver_new(&cfg, &r, NULL), ==, 0);
	g_assert_cmpint(tm_receiver_accept(r, lfd, &err), ==, 0);
	const tm_ram_layout *ann = tm_receiver_announced_layout(r);
	tm_ram_block_info bi;
	g_assert_cmpint(tm_ram_layout_block(ann, 0, &bi), ==, 0);
	g_assert_cmpstr(bi.name, ==, "pc.ram");
	g_assert_cmpuint(bi.length, ==, 1 << 20);
	g_assert_false(tm_receiver_peer_sends_tags(r));
	tm_receiver_abort(r, ENOSPC, "RAM file out.img is 4096 bytes, the sender announces 1048576");
	g_thread_join(t);
	g_assert_cmpint(sr.ret, ==, -ENOSPC);
	g_assert_nonnull(strstr(sr.error->message, "out.img is 4096 bytes"));
	g_clear_error(&sr.error);
	close(lfd);
	guest_fini(&src);
}

/* A tag byte that is not a 4-bit tag stops the sender with block and offset named. */
static void test_sender_bad_tag(void)
{
	guest src, dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };

	guest_init(&src, a, 1, true);
	guest_init(&dst, a, 1, true);
	tm_tag_store_soft_array(src.tags, 0)[(5 * 4096 + 32) / 16] = 0x21;
	g_autofree char *port = peer_start(&p, &dst);
	sender_run sr = { .g = &src, .port = port, .channels = 2, .queue_all = true };
	sender_thread(&sr);
	peer_join(&p);
	g_assert_cmpint(sr.ret, ==, -EINVAL);
	g_test_message("sender: %s", sr.error->message);
	g_assert_nonnull(strstr(sr.error->message, "block 'pc.ram', offset 0x5020"));
	g_assert_nonnull(strstr(sr.error->message, "high nibble"));
	g_assert_cmpint(p.ret, <, 0);
	g_test_message("receiver: %s", p.error->message);
	g_assert_nonnull(strstr(p.error->message, "sender gave up"));
	g_assert_nonnull(strstr(p.error->message, "high nibble"));
	g_clear_error(&sr.error);
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

/* ---- a hand-made hostile sender: valid HELLO, then whatever the test wants ---- */
static fake_hello raw_hello_of(const block_spec *spec, uint16_t id, uint16_t count, bool tags)
{
	return (fake_hello){ .channel_id = id, .channel_count = count,
			     .features = tags ? TM_FEATURE_TAGS_MTE4 : 0, .packet_size = 512 * 1024,
			     .chunk_size = 2 << 20, .block = *spec, .sid = 7 };
}

static int raw_connect(const char *port, const block_spec *spec, uint16_t id, uint16_t count,
		       bool tags)
{
	fake_hello h = raw_hello_of(spec, id, count, tags);

	return fake_connect(port, &h);
}

static void expect_ack(int fd)
{
	fake_expect_ack(fd, TM_WIRE_VERSION_1, 0, NULL);
}

/* ---- issue 14: deadlines, not idle timers; the listener drops strangers ---- */

typedef struct trickle {
	int fd;
	const uint8_t *buf;
	size_t len;
	size_t step;      /* bytes per write */
	unsigned gap_ms;  /* between writes */
	gint stop;
} trickle;

/* Writes t->buf in steps of t->step bytes every gap_ms until done, a failed write, or stop. */
static gpointer trickle_thread(gpointer data)
{
	trickle *t = data;
	for (size_t off = 0; off < t->len && !g_atomic_int_get(&t->stop);) {
		ssize_t r = send(t->fd, t->buf + off, MIN(t->step, t->len - off), MSG_NOSIGNAL);
		if (r <= 0)
			break;
		off += (size_t)r;
		g_usleep(t->gap_ms * 1000);
	}
	return NULL;
}

/* The HELLO raw_connect sends, as bytes (*ret_len). */
static uint8_t *hello_bytes(const block_spec *spec, size_t *ret_len)
{
	fake_hello h = raw_hello_of(spec, 0, 1, false);

	return fake_hello_bytes(&h, 0, ret_len);
}

/*
 * A HELLO at 10 bytes/s (with TLS: a ClientHello record of 512 bytes, 10 bytes/s): every byte
 * comes well within the 3 s timeout, but the handshake, TLS included, has a total deadline
 * (min(timeout, 10 s)); the connection is dropped and accept ends at its deadline.
 */
static void test_handshake_trickle(void)
{
	guest dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };
	size_t len;

	guest_init(&dst, a, 1, false);
	g_autofree uint8_t *hello = hello_bytes(a, &len);
	if (tls_dir) {
		/* A handshake record header (ClientHello follows), then its body byte by byte. */
		g_free(hello);
		len = 5 + 512;
		hello = g_malloc0(len);
		memcpy(hello, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11);
	}
	int64_t t0 = g_get_monotonic_time();
	g_autofree char *port = peer_start_ex(&p, &dst, false, 3000);
	trickle t = { .fd = tm_net_connect("127.0.0.1", port, 5000, -1, NULL), .buf = hello, .len = len,
		      .step = 1, .gap_ms = 100 };
	g_assert_cmpint(t.fd, >=, 0);
	GThread *th = g_thread_new("trickle", trickle_thread, &t);
	peer_join(&p);
	int64_t took = g_get_monotonic_time() - t0;
	g_atomic_int_set(&t.stop, 1);
	g_thread_join(th);
	close(t.fd);
	g_test_message("receiver after %.1f s: %s", took / 1e6, p.error ? p.error->message : "ok");
	g_assert_cmpint(p.ret, ==, -ETIMEDOUT);
	g_assert_nonnull(strstr(p.error->message, "1 other connection dropped"));
	if (!tls_dir)
		g_assert_nonnull(strstr(p.error->message, "the handshake's deadline passed"));
	g_assert_cmpint(took, <, 6 * G_USEC_PER_SEC);
	peer_free(&p);
	guest_fini(&dst);
}

/* A TLS server that answers a ClientHello with a ServerHello record at 10 bytes/s. */
static gpointer tls_trickle_server(gpointer data)
{
	trickle *t = data;
	int fd = accept(t->fd, NULL, NULL);
	uint8_t buf[4096];
	if (fd < 0)
		return NULL;
	(void)!recv(fd, buf, sizeof(buf), 0); /* the ClientHello (or its start) */
	trickle w = { .fd = fd, .buf = t->buf, .len = t->len, .step = 1, .gap_ms = 100 };
	for (size_t off = 0; off < w.len && !g_atomic_int_get(&t->stop); off++) {
		if (send(fd, w.buf + off, 1, MSG_NOSIGNAL) <= 0)
			break;
		g_usleep(w.gap_ms * 1000);
	}
	close(fd);
	return NULL;
}

/*
 * The sender's TLS handshake has a total deadline too (min(timeout, 10 s)): a receiver that
 * trickles its ServerHello fails the connect in about 3 s, though every byte comes in time.
 */
static void test_sender_tls_trickle(void)
{
	guest src;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;
	unsigned port;

	if (!tls_dir) {
		g_test_skip("the sender's TLS handshake: TLS runs only");
		return;
	}
	guest_init(&src, a, 1, false);
	uint8_t rec[5 + 512] = { 0x16, 0x03, 0x03, 0x02, 0x00, 0x02, 0x00, 0x01, 0xfc, 0x03, 0x03 };
	trickle t = { .buf = rec, .len = sizeof(rec) };
	t.fd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(t.fd, >=, 0);
	GThread *th = g_thread_new("tls-trickle", tls_trickle_server, &t);
	g_autofree char *ports = g_strdup_printf("%u", port);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 1,
				 .timeout_ms = 3000 };
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &cfg, &s, &err), ==, 0);
	int64_t t0 = g_get_monotonic_time();
	int r = tm_sender_connect(s, "127.0.0.1", ports, &err);
	int64_t took = g_get_monotonic_time() - t0;
	g_atomic_int_set(&t.stop, 1);
	g_thread_join(th);
	close(t.fd);
	g_assert_cmpint(r, <, 0);
	g_test_message("sender after %.1f s: %s", took / 1e6, err->message);
	g_assert_cmpint(took, <, 6 * G_USEC_PER_SEC);
	guest_fini(&src);
}

/*
 * A DATA packet of 16 pages (66 KiB of body) at 5 KiB/s after a clean handshake: the body must
 * arrive within TM_BODY_GRACE_MS + body / TM_BODY_MIN_RATE (about 6 s), though no single wait
 * comes near the 20 s timeout.
 */
static void test_body_trickle(void)
{
	guest dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };
	const uint32_t n = 16;
	size_t body = TM_DATA_HDR_LEN + 8 * n + 4096 * n;

	guest_init(&dst, a, 1, false);
	g_autofree char *port = peer_start(&p, &dst);
	int fd = raw_connect(port, a, 0, 1, false);
	expect_ack(fd);
	g_autofree uint8_t *msg = g_malloc0(TM_FRAME_HDR_LEN + body);
	tm_frame_encode(msg, TM_MSG_DATA, (uint32_t)body, 1);
	uint8_t *d = msg + TM_FRAME_HDR_LEN;
	tm_put32(d, 0);
	tm_put32(d + 4, n);
	tm_put32(d + 8, 4096 * n);
	tm_put32(d + 12, 0);
	for (uint32_t i = 0; i < n; i++)
		tm_put32(d + 16 + 8 * i, i); /* NORMAL, TAGS_ZERO */
	int64_t t0 = g_get_monotonic_time();
	trickle t = { .fd = fd, .buf = msg, .len = TM_FRAME_HDR_LEN + body, .step = 1024,
		      .gap_ms = 200 };
	GThread *th = g_thread_new("trickle", trickle_thread, &t);
	peer_join(&p);
	int64_t took = g_get_monotonic_time() - t0;
	g_atomic_int_set(&t.stop, 1);
	g_thread_join(th);
	close(fd);
	g_test_message("receiver after %.1f s: %s", took / 1e6, p.error ? p.error->message : "ok");
	g_assert_cmpint(p.ret, ==, -ETIMEDOUT);
	g_assert_nonnull(strstr(p.error->message, "slower than the minimum rate"));
	g_assert_cmpint(took, <, 10 * G_USEC_PER_SEC);
	g_assert_false(tm_receiver_page_present(p.r, 0, 0));
	peer_free(&p);
	guest_fini(&dst);
}

/*
 * Garbage and immediate closes are dropped without ending the session, up to TM_MAX_STRANGERS
 * (64): the 64th ends it, naming the first reason.
 */
static void test_strangers_bound(void)
{
	guest dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };

	guest_init(&dst, a, 1, false);
	g_autofree char *port = peer_start(&p, &dst);
	for (unsigned i = 0; i < 64; i++) {
		int fd = tm_net_connect("127.0.0.1", port, 5000, -1, NULL);
		g_assert_cmpint(fd, >=, 0);
		if (i % 2 == 0)
			(void)!send(fd, "GET / HTTP/1.0\r\n\r\n", 18, MSG_NOSIGNAL);
		close(fd);
		if (i == 10) {
			/* Still listening: the session did not end with the first strangers. */
			g_usleep(100000);
			g_assert_null(p.error);
		}
	}
	peer_join(&p);
	g_test_message("receiver: %s", p.error->message);
	g_assert_cmpint(p.ret, <, 0);
	g_assert_nonnull(strstr(p.error->message, "64 connections failed their handshake"));
	g_assert_nonnull(strstr(p.error->message, "the first: handshake: channel 0: frame header: bad magic"));
	peer_free(&p);
	guest_fini(&dst);
}

/* A DATA packet whose page lies outside the block: refused before any byte reaches RAM. */
static void test_corrupt_page_out_of_range(void)
{
	guest dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };

	guest_init(&dst, a, 1, false);
	g_autofree char *port = peer_start(&p, &dst);
	int fd = raw_connect(port, a, 0, 1, false);
	expect_ack(fd);
	/* DATA: one NORMAL page at index 256 (the block has 256 pages), then 4 KiB of 0xee. */
	uint8_t msg[TM_FRAME_HDR_LEN + TM_DATA_HDR_LEN + 8 + 4096];
	memset(msg, 0xee, sizeof(msg));
	tm_frame_encode(msg, TM_MSG_DATA, sizeof(msg) - TM_FRAME_HDR_LEN, 1);
	uint8_t *d = msg + TM_FRAME_HDR_LEN;
	tm_put32(d, 0);
	tm_put32(d + 4, 1);
	tm_put32(d + 8, 4096);
	tm_put32(d + 12, 0);
	tm_put32(d + 16, 256);
	d[20] = TM_PAGE_NORMAL;
	d[21] = TM_TAGS_ZERO;
	tm_put16(d + 22, 0);
	(void)!write(fd, msg, sizeof(msg));
	/* The receiver says why before it closes. */
	uint8_t hdr[TM_FRAME_HDR_LEN];
	g_assert_cmpint(recv(fd, hdr, sizeof(hdr), MSG_WAITALL), ==, sizeof(hdr));
	g_assert_cmpuint(hdr[5], ==, TM_MSG_ERROR);
	close(fd);
	peer_join(&p);
	g_assert_cmpint(p.ret, ==, -ERANGE);
	g_test_message("receiver: %s", p.error->message);
	g_assert_nonnull(strstr(p.error->message, "channel 0"));
	g_assert_nonnull(strstr(p.error->message, "256"));
	g_assert_true(tm_buffer_is_zero(dst.ram[0], dst.len[0]));
	g_assert_false(tm_receiver_page_present(p.r, 0, 0));
	peer_free(&p);
	guest_fini(&dst);
}

/*
 * Issue 14, defect 6: a DATA packet of two NORMAL pages whose second uniform tag byte has its high
 * nibble set. The tag payload follows the page data on the wire; still, no byte of the packet's
 * data may reach guest RAM (it is staged until the tags are checked).
 */
static void test_bad_uniform_tag_before_ram(void)
{
	guest dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };

	guest_init(&dst, a, 1, true);
	g_autofree char *port = peer_start(&p, &dst);
	int fd = raw_connect(port, a, 0, 1, true);
	expect_ack(fd);
	uint8_t msg[TM_FRAME_HDR_LEN + TM_DATA_HDR_LEN + 16 + 2 * 4096 + 2];
	memset(msg, 0xee, sizeof(msg));
	tm_frame_encode(msg, TM_MSG_DATA, sizeof(msg) - TM_FRAME_HDR_LEN, 1);
	uint8_t *d = msg + TM_FRAME_HDR_LEN;
	tm_put32(d, 0);
	tm_put32(d + 4, 2);
	tm_put32(d + 8, 2 * 4096);
	tm_put32(d + 12, 2);
	for (unsigned i = 0; i < 2; i++) {
		tm_put32(d + 16 + 8 * i, 3 + i);
		d[20 + 8 * i] = TM_PAGE_NORMAL;
		d[21 + 8 * i] = TM_TAGS_UNIFORM;
		tm_put16(d + 22 + 8 * i, 0);
	}
	msg[sizeof(msg) - 2] = 0x05; /* valid */
	msg[sizeof(msg) - 1] = 0x35; /* high nibble set */
	g_assert_cmpint(write(fd, msg, sizeof(msg)), ==, (ssize_t)sizeof(msg));
	peer_join(&p);
	g_test_message("receiver: %s", p.error->message);
	g_assert_cmpint(p.ret, ==, -EBADMSG);
	g_assert_nonnull(strstr(p.error->message, "high nibble"));
	g_assert_true(tm_buffer_is_zero(dst.ram[0], dst.len[0]));
	g_assert_false(tm_receiver_page_present(p.r, 0, 3));
	close(fd);
	peer_free(&p);
	guest_fini(&dst);
}

/* Two connections claiming the same channel id. */
static void test_corrupt_duplicate_channel(void)
{
	guest dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };

	guest_init(&dst, a, 1, false);
	g_autofree char *port = peer_start(&p, &dst);
	int fd0 = raw_connect(port, a, 1, 2, false);
	int fd1 = raw_connect(port, a, 1, 2, false);
	peer_join(&p);
	g_assert_cmpint(p.ret, ==, -EPROTO);
	g_assert_nonnull(strstr(p.error->message, "channel id 1 connected twice"));
	close(fd0);
	close(fd1);
	peer_free(&p);
	guest_fini(&dst);
}

/* A sender that disappears midway: the receiver fails naming the channel, no hang. */
static void test_peer_vanishes(void)
{
	guest dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };

	guest_init(&dst, a, 1, false);
	g_autofree char *port = peer_start(&p, &dst);
	int fd = raw_connect(port, a, 0, 1, false);
	expect_ack(fd);
	uint8_t half[TM_FRAME_HDR_LEN / 2] = { 'T', 'M', 'I', 'G' };
	(void)!write(fd, half, sizeof(half));
	close(fd);
	peer_join(&p);
	g_assert_cmpint(p.ret, ==, -ECONNRESET);
	g_assert_nonnull(strstr(p.error->message, "channel 0"));
	g_assert_nonnull(strstr(p.error->message, "connection closed"));
	peer_free(&p);
	guest_fini(&dst);
}

typedef struct half_receiver {
	int listen_fd;
	size_t read_before_close;
	bool sync_ack_first; /* a SYNC_ACK nobody asked for right after HELLO_ACK */
} half_receiver;

/* Acknowledges the handshake, reads part of the stream and closes: a receiver that dies. */
static gpointer half_receiver_thread(gpointer data)
{
	half_receiver *h = data;
	int fd = accept(h->listen_fd, NULL, NULL);
	uint8_t buf[65536];
	tm_frame f;

	g_assert_cmpint(recv(fd, buf, TM_FRAME_HDR_LEN, MSG_WAITALL), ==, TM_FRAME_HDR_LEN);
	g_assert_cmpint(tm_frame_decode(buf, TM_FRAME_HDR_LEN, TM_WIRE_VERSION_1, 0, &f, NULL), ==, 0);
	g_assert_cmpint(recv(fd, buf, f.body_len, MSG_WAITALL), ==, (ssize_t)f.body_len);
	size_t len = tm_ctrl_encode(buf, TM_MSG_HELLO_ACK, 0, 0, 0);
	g_assert_cmpint(send(fd, buf, len, 0), ==, (ssize_t)len);
	if (h->sync_ack_first) {
		len = tm_ctrl_encode(buf, TM_MSG_SYNC_ACK, 1, 7, 0);
		g_assert_cmpint(send(fd, buf, len, 0), ==, (ssize_t)len);
	}
	size_t got = 0;
	while (got < h->read_before_close) {
		ssize_t r = recv(fd, buf, MIN(sizeof(buf), h->read_before_close - got), 0);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	return NULL;
}

static void test_peer_closes_mid_packet(void)
{
	guest src;
	const block_spec a[] = { { "pc.ram", 16 << 20, 4096 } };
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;
	unsigned port;

	guest_init(&src, a, 1, false);
	for (uint64_t i = 0; i < 4096; i++)
		fill_page(&src, 0, i, 0);
	half_receiver h = { .read_before_close = 300000 };
	h.listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	GThread *t = g_thread_new("half", half_receiver_thread, &h);
	g_autofree char *ports = g_strdup_printf("%u", port);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 1, .timeout_ms = 10000 };
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &cfg, &s, &err), ==, 0);
	/* The half receiver is a hand-written protocol 1 peer. */
	tm_live_config lc = { .size = sizeof(lc), .wire_version = 1 };
	g_assert_cmpint(tm_sender_set_live(s, &lc, &err), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", ports, &err), ==, 0);
	uint64_t bm[64];
	memset(bm, 0xff, sizeof(bm));
	int64_t t0 = g_get_monotonic_time();
	int r = tm_sender_queue_bitmap(s, 0, bm, 0, 4096, &err);
	if (r == 0)
		r = tm_sender_finish(s, &err);
	g_thread_join(t);
	g_assert_cmpint(r, <, 0);
	g_test_message("sender: %s", err->message);
	g_assert_nonnull(strstr(err->message, "channel 0"));
	g_assert_true(r == -EPIPE || r == -ECONNRESET);
	g_assert_nonnull(strstr(err->message, "connection closed by the peer"));
	/* Fails at once, not after the 10 s timeout. */
	g_assert_cmpint(g_get_monotonic_time() - t0, <, 5 * G_USEC_PER_SEC);
	close(h.listen_fd);
	guest_fini(&src);
}

/*
 * Issue 14, defect 8: a receiver that answers a SYNC the sender never sent. The sender says so
 * instead of "connection closed by the peer" (the receiver reads on and closes later).
 */
static void test_unsolicited_sync_ack(void)
{
	guest src;
	const block_spec a[] = { { "pc.ram", 16 << 20, 4096 } };
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;
	unsigned port;

	guest_init(&src, a, 1, false);
	for (uint64_t i = 0; i < (16 << 20) / 4096; i++)
		fill_page(&src, 0, i, 0);
	half_receiver h = { .read_before_close = 64 << 20, .sync_ack_first = true };
	h.listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	GThread *t = g_thread_new("half", half_receiver_thread, &h);
	g_autofree char *ports = g_strdup_printf("%u", port);
	tm_sender_config cfg = { .io_backend = send_io, .channels = 1, .timeout_ms = 10000 };
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &cfg, &s, &err), ==, 0);
	tm_live_config lc = { .size = sizeof(lc), .wire_version = 1 };
	g_assert_cmpint(tm_sender_set_live(s, &lc, &err), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", ports, &err), ==, 0);
	uint64_t bm[64];
	memset(bm, 0xff, sizeof(bm));
	int r = tm_sender_queue_bitmap(s, 0, bm, 0, 4096, &err);
	if (r == 0)
		r = tm_sender_finish(s, &err);
	g_assert_cmpint(r, ==, -EPROTO);
	g_test_message("sender: %s", err->message);
	g_assert_nonnull(strstr(err->message, "channel 0: the receiver sent SYNC_ACK unsolicited"));
	tm_sender_free(g_steal_pointer(&s));
	g_thread_join(t);
	close(h.listen_fd);
	guest_fini(&src);
}

/* ---- a man in the middle that flips one byte of channel 0's ciphertext ---- */
typedef struct flip_proxy {
	int listen_fd;     /* where the sender connects */
	const char *port;  /* the receiver's */
	unsigned channels;
	uint64_t flip_at;  /* offset in channel 0's sender-to-receiver stream */
} flip_proxy;

static gpointer flip_proxy_thread(gpointer data)
{
	flip_proxy *fp = data;
	struct pollfd pfd[2 * TM_MAX_CHANNELS];
	uint64_t forwarded[TM_MAX_CHANNELS] = { 0 };
	unsigned open = 2 * fp->channels;
	uint8_t buf[65536];

	/* The sender connects channel 0 first (then control, then the other channels). */
	for (unsigned i = 0; i < fp->channels; i++) {
		pfd[2 * i] = (struct pollfd){ .fd = accept(fp->listen_fd, NULL, NULL), .events = POLLIN };
		pfd[2 * i + 1] = (struct pollfd){
			.fd = tm_net_connect("127.0.0.1", fp->port, 5000, -1, NULL), .events = POLLIN };
	}
	while (open > 0 && poll(pfd, 2 * fp->channels, 10000) > 0) {
		for (unsigned k = 0; k < 2 * fp->channels; k++) {
			if (pfd[k].fd < 0 || !(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t n = recv(pfd[k].fd, buf, sizeof(buf), 0);
			int to = pfd[k ^ 1].fd;
			if (n <= 0) {
				shutdown(to, SHUT_WR);
				pfd[k].fd = -1;
				open--;
				continue;
			}
			unsigned ch = k / 2;
			if (k % 2 == 0) {
				if (ch == 0 && forwarded[0] <= fp->flip_at &&
				    fp->flip_at < forwarded[0] + (uint64_t)n)
					buf[fp->flip_at - forwarded[0]] ^= 0x20;
				forwarded[ch] += (uint64_t)n;
			}
			(void)!send(to, buf, (size_t)n, MSG_NOSIGNAL);
		}
	}
	for (unsigned k = 0; k < 2 * fp->channels; k++)
		close(pfd[k].fd);
	g_test_message("proxy: channel 0 carried %" G_GUINT64_FORMAT " bytes", forwarded[0]);
	return NULL;
}

/* A byte altered in flight: the receiver refuses the record and never marks a wrong page present. */
static void test_tls_tampered(void)
{
	guest src, dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 8 << 20, 4096 } };
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;
	unsigned pport;

	if (!tls_dir) {
		g_test_skip("needs TLS");
		return;
	}
	guest_init(&src, a, 1, true);
	guest_init(&dst, a, 1, true);
	guest_fill(&src);
	g_autofree char *port = peer_start(&p, &dst);
	/* Two data channels and the control connection (protocol 2). */
	flip_proxy fp = { .port = port, .channels = 3, .flip_at = 1 << 20 };
	fp.listen_fd = tm_listen("127.0.0.1", "0", &pport, NULL);
	GThread *t = g_thread_new("proxy", flip_proxy_thread, &fp);
	g_autofree char *pports = g_strdup_printf("%u", pport);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 2,
				 .timeout_ms = 20000 };
	g_assert_cmpint(tm_sender_new(src.layout, src.tags, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", pports, &err), ==, 0);
	uint64_t np = (8 << 20) / 4096, bm[np / 64];
	memset(bm, 0xff, sizeof(bm));
	int r = tm_sender_queue_bitmap(s, 0, bm, 0, np, &err);
	if (r == 0)
		r = tm_sender_finish(s, &err);
	peer_join(&p);
	g_assert_cmpint(r, <, 0);
	g_test_message("sender: %s", err->message);
	g_assert_cmpint(p.ret, ==, -EBADMSG);
	g_test_message("receiver: %s", p.error->message);
	g_assert_nonnull(strstr(p.error->message, "channel 0"));
	/* Its own "authentication failed", or (when the sender's reaction to our alert arrives on
	 * control first) the sender's echo of it, "could not authenticate". */
	g_assert_nonnull(strstr(p.error->message, "authenticat"));
	/* Every page marked present holds exactly what was sent; some never arrived. */
	uint64_t present = 0;
	for (uint64_t i = 0; i < np; i++) {
		if (!tm_receiver_page_present(p.r, 0, i))
			continue;
		present++;
		g_assert_true(memcmp(src.ram[0] + i * 4096, dst.ram[0] + i * 4096, 4096) == 0);
		g_assert_true(memcmp(tm_tag_store_soft_array(src.tags, 0) + i * 256,
				     tm_tag_store_soft_array(dst.tags, 0) + i * 256, 256) == 0);
	}
	g_test_message("%" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT " pages present", present, np);
	g_assert_cmpuint(present, <, np);
	/* Both sides' connections close when they are freed (a failed session keeps them until
	 * then): only then has the proxy seen every stream end. */
	peer_free(&p);
	tm_sender_free(g_steal_pointer(&s));
	g_thread_join(t);
	close(fp.listen_fd);
	guest_fini(&src);
	guest_fini(&dst);
}

/*
 * The destination listens first and the source comes late, as in a real migration: every
 * channel still gets the full timeout for its I/O, not what was left of the accept wait.
 */
static void test_late_sender(void)
{
	guest src, dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 2 << 20, 4096 } };
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;

	guest_init(&src, a, 1, false);
	guest_init(&dst, a, 1, false);
	guest_fill(&src);
	/* Timeout 4 s; the sender comes after 2.5 s and pauses 2 s: longer than the 1.5 s left of
	 * the accept window, well inside the full timeout even on a loaded machine. */
	g_autofree char *ports = peer_start_ex(&p, &dst, false, 4000);
	g_usleep(2500 * 1000);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 3,
				 .timeout_ms = 20000 };
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", ports, &err), ==, 0);
	/* A pause between rounds longer than what was left of the accept window. */
	g_usleep(2000 * 1000);
	uint64_t bm[(2 << 20) / 4096 / 64];
	memset(bm, 0xff, sizeof(bm));
	g_assert_cmpint(tm_sender_queue_bitmap(s, 0, bm, 0, (2 << 20) / 4096, &err), ==, 0);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	g_assert_no_error(err);
	peer_join(&p);
	g_assert_no_error(p.error);
	assert_same(&src, &dst);
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

/* A tag store that fails to set tags: the receiver gives up mid-stream. */
static int failing_set(tm_tag_store *store, unsigned block, uint64_t offset, uint64_t length,
		       const uint8_t *buf)
{
	return offset >= (1 << 20) ? -ENOSPC : tm_tag_store_soft.set(store, block, offset, length, buf);
}

/* The receiver's reason reaches the sender, whichever backend the sender's send failed on. */
static void test_receiver_reason_reaches_sender(void)
{
	guest src, dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 16 << 20, 4096 } };
	g_autoptr(tm_sender) s = NULL;

	guest_init(&src, a, 1, true);
	guest_init(&dst, a, 1, false);
	guest_fill(&src);
	tm_tag_store_ops ops = tm_tag_store_soft;
	ops.set = failing_set;
	g_assert_cmpint(tm_tag_store_new(&ops, dst.layout, NULL, &dst.tags, NULL), ==, 0);
	g_autofree char *port = peer_start(&p, &dst);
	sender_run sr = { .g = &src, .port = port, .channels = 2, .queue_all = true };
	sender_thread(&sr);
	peer_join(&p);
	g_assert_cmpint(sr.ret, <, 0);
	g_test_message("sender: %s", sr.error->message);
	g_assert_nonnull(strstr(sr.error->message, "receiver failed"));
	g_assert_nonnull(strstr(sr.error->message, "setting tags failed"));
	g_assert_cmpint(p.ret, ==, -ENOSPC);
	g_assert_nonnull(strstr(p.error->message, "block 'pc.ram', offset 0x"));
	g_clear_error(&sr.error);
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

/* Setup failures with no GError to fill: reported by the return value, no crash. */
static void test_null_error(void)
{
	guest src, dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };
	const block_spec b[] = { { "pc.ram", 2 << 20, 4096 } };
	g_autoptr(tm_receiver) r = NULL;
	unsigned port;

	tm_receiver_config cfg = { .io_backend = recv_io, .tls_creds_dir = tls_dir,
				   .timeout_ms = 200 };
	g_assert_cmpint(tm_receiver_new(&cfg, &r, NULL), ==, 0);
	int lfd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(tm_receiver_accept(r, lfd, NULL), ==, -ETIMEDOUT);
	close(lfd);

	/* A layout mismatch found by start() without an error to fill. */
	guest_init(&src, a, 1, false);
	guest_init(&dst, b, 1, false);
	memset(&p, 0, sizeof(p));
	p.listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_autofree char *ports = g_strdup_printf("%u", port);
	sender_run sr = { .g = &src, .port = ports, .channels = 1 };
	GThread *t = g_thread_new("sender", sender_thread, &sr);
	g_autoptr(tm_receiver) r2 = NULL;
	tm_receiver_config cfg2 = { .io_backend = recv_io, .tls_creds_dir = tls_dir,
				    .timeout_ms = 20000 };
	g_assert_cmpint(tm_receiver_new(&cfg2, &r2, NULL), ==, 0);
	g_assert_cmpint(tm_receiver_accept(r2, p.listen_fd, NULL), ==, 0);
	g_assert_cmpint(tm_receiver_start(r2, dst.layout, NULL, NULL), ==, -EINVAL);
	g_thread_join(t);
	g_assert_cmpint(sr.ret, ==, -EINVAL);
	g_clear_error(&sr.error);
	close(p.listen_fd);
	guest_fini(&src);
	guest_fini(&dst);
}

/* ---- protocol versions: a tagmig 0.1 receiver, and senders that mix what they speak ---- */

/*
 * A tagmig 0.1 receiver as a protocol 2 sender sees it: its channel code decodes the frame
 * header in protocol 1 only, refuses with its own words in a protocol 1 ERROR ("handshake:"
 * and the channel prefixed, as 0.1 does) and gives up the session.
 */
typedef struct v1_receiver {
	int listen_fd;
} v1_receiver;

static gpointer v1_receiver_thread(gpointer data)
{
	v1_receiver *v = data;
	int fd = accept(v->listen_fd, NULL, NULL);
	uint8_t hdr[TM_FRAME_HDR_LEN];
	uint8_t buf[TM_FRAME_HDR_LEN + TM_ERROR_FIXED_LEN + TM_MAX_ERROR_MESSAGE];
	g_autoptr(GError) why = NULL;
	g_autoptr(tm_tls_ctx) tls = NULL;
	tm_io *io = NULL;
	tm_io_config ioc = { .timeout_ms = 10000, .depth = 1 };
	tm_frame f;

	g_assert_cmpint(fd, >=, 0);
	g_assert_cmpint(tm_io_open(fd, 0, &tm_transport_socket, &ioc, &io, NULL), ==, 0);
	/* With TLS, as 0.1 did: the handshake, then the stream inside it. */
	if (tls_dir) {
		g_assert_cmpint(tm_tls_ctx_new(TM_TLS_SERVER, tls_dir, NULL, &tls, NULL), ==, 0);
		g_assert_cmpint(tm_tls_wrap(tls, &io, NULL), ==, 0);
	}
	struct iovec hv = { .iov_base = hdr, .iov_len = sizeof(hdr) };
	g_assert_cmpint(tm_io_recv(io, &hv, 1, sizeof(hdr)), ==, 0);
	g_assert_cmpint(tm_frame_decode(hdr, sizeof(hdr), TM_WIRE_VERSION_1, 0, &f, &why), ==,
			-EPROTONOSUPPORT);
	g_autofree char *msg = g_strdup_printf("handshake: channel 0: %s", why->message);
	size_t n = tm_error_encode(buf, 0, EPROTONOSUPPORT, msg);
	tm_io_send_last(io, buf, n);
	/* 0.1's tool exits: its listening socket goes, and the connections waiting in it. */
	close(v->listen_fd);
	tm_io_free(io);
	return NULL;
}

static void test_v1_receiver_refuses(void)
{
	guest src;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;
	unsigned port;

	guest_init(&src, a, 1, false);
	v1_receiver v = { .listen_fd = tm_listen("127.0.0.1", "0", &port, NULL) };
	g_assert_cmpint(v.listen_fd, >=, 0);
	GThread *t = g_thread_new("v1-receiver", v1_receiver_thread, &v);
	g_autofree char *ports = g_strdup_printf("%u", port);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 2,
				 .timeout_ms = 10000 };
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &cfg, &s, &err), ==, 0);
	int64_t t0 = g_get_monotonic_time();
	int r = tm_sender_connect(s, "127.0.0.1", ports, &err);
	g_thread_join(t);
	g_assert_cmpint(r, ==, -EPROTONOSUPPORT);
	g_test_message("sender: %s", err->message);
	g_assert_error(err, TM_ERROR, EPROTONOSUPPORT);
	g_assert_nonnull(strstr(err->message, "channel 0: handshake: the receiver speaks tagmig "
					      "protocol 1 only"));
	g_assert_nonnull(strstr(err->message, "it said: handshake: channel 0: frame header: "
					      "unsupported protocol version 2 (supported: 1)"));
	g_assert_nonnull(strstr(err->message, "set wire_version = 1 in tm_live_config"));
	/* At once, not after the timeout: channel 0's answer is there. */
	g_assert_cmpint(g_get_monotonic_time() - t0, <, 5 * G_USEC_PER_SEC);
	g_assert_cmpuint(tm_sender_wire_version(s), ==, 0);
	guest_fini(&src);
}

/* A hand-made HELLO of protocol version with role; returns the connected socket. */
static int raw_hello(const char *port, uint8_t version, uint8_t role, uint16_t id, uint16_t count)
{
	const fake_hello h = { .version = version, .role = role, .channel_id = id,
			       .channel_count = count, .packet_size = 512 * 1024,
			       .chunk_size = 2 << 20, .block = { "pc.ram", 2 << 20, 4096 },
			       .sid = 9 };

	return fake_connect(port, &h);
}

/* Reads what the receiver answered a refused connection: a frame of `version` with ERROR. */
static void expect_error_frame(int fd, uint8_t version)
{
	uint8_t hdr[TM_FRAME_HDR_LEN];
	tm_frame f;

	g_assert_cmpint(recv(fd, hdr, sizeof(hdr), MSG_WAITALL), ==, sizeof(hdr));
	g_assert_cmpint(tm_frame_decode(hdr, sizeof(hdr), 0, 0, &f, NULL), ==, 0);
	g_assert_cmpuint(f.type, ==, TM_MSG_ERROR);
	g_assert_cmpuint(f.version, ==, version);
}

typedef struct raw_case {
	uint8_t v[2], role[2];
	uint16_t id[2];
	int errnum;
	const char *substr;
} raw_case;

/* Two connections the receiver must not put into one session; it refuses the second. */
static void test_hello_mix_refused(void)
{
	static const raw_case cases[] = {
		{ { 2, 1 }, { 0, 0 }, { 0, 1 }, EPROTO,
		  "channel 1 speaks protocol 1, the session speaks 2" },
		{ { 1, 2 }, { 0, 1 }, { 0, 0 }, EPROTO,
		  "the control connection speaks protocol 2, the session speaks 1" },
		{ { 2, 2 }, { 1, 1 }, { 0, 0 }, EPROTO, "control connection connected twice" },
		{ { 2, 2 }, { 0, 0 }, { 1, 1 }, EPROTO, "channel id 1 connected twice" },
	};
	guest dst;
	const block_spec a[] = { { "pc.ram", 2 << 20, 4096 } };

	guest_init(&dst, a, 1, false);
	for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
		const raw_case *c = &cases[i];
		peer p;
		g_autofree char *port = peer_start_ex(&p, &dst, false, 5000);
		int fd0 = raw_hello(port, c->v[0], c->role[0], c->id[0], 2);
		int fd1 = raw_hello(port, c->v[1], c->role[1], c->id[1], 2);
		/* The refusal goes back in the protocol the refused connection spoke. */
		expect_error_frame(fd1, c->v[1]);
		peer_join(&p);
		g_test_message("case %u: receiver: %s", i, p.error->message);
		g_assert_cmpint(p.ret, ==, -c->errnum);
		g_assert_nonnull(strstr(p.error->message, c->substr));
		close(fd0);
		close(fd1);
		peer_free(&p);
	}
	guest_fini(&dst);
}

/*
 * A hand-made protocol 2 sender with one data channel: a clean handshake, RAM_END, the end of
 * device state and END on the data channel, then whatever the case puts on the control
 * connection. The receiver checks it as every other peer byte: only END (0, 0, 0) in protocol 2
 * is accepted, answered by READY and END_ACK (the good case answers the keepalive PINGs).
 */
static void test_control_end_checked(void)
{
	static const struct {
		const char *what;
		int errnum;
		const char *substr;
	} cases[] = {
		{ "end-counts", EPROTO, "control: END counts 1 pages, 0 packets, 0 state chunks" },
		{ "sync", EPROTO, "control: unexpected SYNC" },
		{ "v1-end", EPROTO, "control: frame header: protocol 1 frame in a protocol 2 session" },
		{ "good", 0, NULL },
	};
	guest dst;
	const block_spec a[] = { { "pc.ram", 2 << 20, 4096 } };

	guest_init(&dst, a, 1, false);
	for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
		peer p;
		/* large enough for a STATE header (tm_state_encode) */
		uint8_t buf[TM_FRAME_HDR_LEN + TM_STATE_HDR_LEN + TM_MAX_STATE_NAME];
		/* No DATA at all: only a VMM that waived the pages lets such a session end. */
		g_autofree char *port = peer_start_waived(&p, &dst, 5000);
		int fd0 = raw_hello(port, 2, TM_ROLE_DATA, 0, 1);
		int fdc = raw_hello(port, 2, TM_ROLE_CONTROL, 0, 1);
		tm_frame f;

		fake_expect_ack(fd0, TM_WIRE_VERSION_2, 0, NULL);
		fake_expect_ack(fdc, TM_WIRE_VERSION_2, 0, NULL);
		const uint64_t zero[3] = { 0, 0, 0 }, one[3] = { 1, 0, 0 }, eos[3] = { 0, 0, 1 };
		const tm_state_hdr end = { .flags = TM_STATE_END };
		size_t n = tm_ram_end_encode(buf, 1, TM_RAM_END_FINAL, 0, 0);
		g_assert_cmpint(write(fd0, buf, n), ==, (ssize_t)n);
		n = tm_state_encode(buf, 2, &end, NULL);
		g_assert_cmpint(write(fd0, buf, n), ==, (ssize_t)n);
		n = tm_ctrl_encode_v(buf, 2, TM_MSG_END, 3, eos);
		g_assert_cmpint(write(fd0, buf, n), ==, (ssize_t)n);
		g_assert_cmpint(recv(fd0, buf, TM_FRAME_HDR_LEN + 16, MSG_WAITALL), ==,
				TM_FRAME_HDR_LEN + 16);
		g_assert_cmpuint(buf[5], ==, TM_MSG_END_ACK);
		if (i == 0)
			n = tm_ctrl_encode_v(buf, 2, TM_MSG_END, 1, one);
		else if (i == 1)
			n = tm_ctrl_encode_v(buf, 2, TM_MSG_SYNC, 1, one);
		else if (i == 2)
			n = tm_ctrl_encode(buf, TM_MSG_END, 1, 0, 0);
		else
			n = tm_ctrl_encode_v(buf, 2, TM_MSG_END, 1, zero);
		g_assert_cmpint(write(fdc, buf, n), ==, (ssize_t)n);
		/* The answer on control: READY then END_ACK, or an ERROR that says why; the
		 * receiver's keepalive PINGs meanwhile are answered, as a sender's library does (the
		 * receiver ends control only with no PING of its out). */
		bool ready = false;
		uint64_t seq = 2;
		for (;;) {
			g_assert_cmpint(recv(fdc, buf, TM_FRAME_HDR_LEN, MSG_WAITALL), ==,
					TM_FRAME_HDR_LEN);
			g_assert_cmpint(tm_frame_decode(buf, TM_FRAME_HDR_LEN, 2, 0, &f, NULL), ==, 0);
			if (f.type != TM_MSG_PING && f.type != TM_MSG_READY)
				break;
			g_assert_false(ready); /* nothing between READY and END_ACK */
			ready = f.type == TM_MSG_READY;
			g_assert_cmpint(recv(fdc, buf, 8, MSG_WAITALL), ==, 8);
			if (f.type == TM_MSG_PING && i == G_N_ELEMENTS(cases) - 1) {
				const uint64_t nonce[3] = { tm_get64(buf), 0, 0 };
				n = tm_ctrl_encode_v(buf, 2, TM_MSG_PONG, seq++, nonce);
				g_assert_cmpint(write(fdc, buf, n), ==, (ssize_t)n);
			}
		}
		g_assert_cmpuint(f.type, ==, cases[i].errnum ? TM_MSG_ERROR : TM_MSG_END_ACK);
		g_assert_true(ready == !cases[i].errnum);
		peer_join(&p);
		if (cases[i].errnum) {
			g_test_message("%s: receiver: %s", cases[i].what, p.error->message);
			g_assert_cmpint(p.ret, ==, -cases[i].errnum);
			g_assert_nonnull(strstr(p.error->message, cases[i].substr));
		} else {
			g_assert_no_error(p.error);
			g_assert_cmpint(p.ret, ==, 0);
		}
		close(fd0);
		close(fdc);
		peer_free(&p);
	}
	guest_fini(&dst);
}

/*
 * A hand-made protocol 2 sender misusing the control connection's keepalive: a PONG that answers
 * no PING, and a PING flood (more than 20 in a second bounds what control carries backwards).
 * The receiver fails with the reason, also on control.
 */
static void test_control_keepalive_checked(void)
{
	static const struct {
		const char *what;
		unsigned pings;
		const char *substr;
	} cases[] = {
		{ "pong-without-ping", 0, "control: PONG 0x1234 answers no PING" },
		{ "ping-flood", 25, "control: PING flood: more than 20 PINGs in one second" },
	};
	guest dst;
	const block_spec a[] = { { "pc.ram", 2 << 20, 4096 } };

	guest_init(&dst, a, 1, false);
	for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
		peer p;
		uint8_t buf[TM_FRAME_HDR_LEN + TM_HELLO_ACK2_LEN];
		g_autofree char *port = peer_start_ex(&p, &dst, false, 5000);
		int fd0 = raw_hello(port, 2, TM_ROLE_DATA, 0, 1);
		int fdc = raw_hello(port, 2, TM_ROLE_CONTROL, 0, 1);
		uint32_t seq = 1;

		fake_expect_ack(fd0, TM_WIRE_VERSION_2, 0, NULL);
		fake_expect_ack(fdc, TM_WIRE_VERSION_2, 0, NULL);
		const uint64_t nonce[3] = { 0x1234 };
		for (unsigned k = 0; k < MAX(cases[i].pings, 1u); k++) {
			size_t n = tm_ctrl_encode_v(buf, 2, cases[i].pings ? TM_MSG_PING : TM_MSG_PONG,
						    seq++, nonce);
			g_assert_cmpint(write(fdc, buf, n), ==, (ssize_t)n);
		}
		peer_join(&p);
		g_test_message("%s: receiver: %s", cases[i].what, p.error->message);
		g_assert_cmpint(p.ret, ==, -EPROTO);
		g_assert_nonnull(strstr(p.error->message, cases[i].substr));
		/* The reason reaches the sender on control, after the receiver's PINGs and PONGs. */
		tm_frame f;
		do {
			g_assert_cmpint(recv(fdc, buf, TM_FRAME_HDR_LEN, MSG_WAITALL), ==,
					TM_FRAME_HDR_LEN);
			g_assert_cmpint(tm_frame_decode(buf, TM_FRAME_HDR_LEN, 2, 0, &f, NULL), ==, 0);
			if (f.type != TM_MSG_ERROR)
				g_assert_cmpint(recv(fdc, buf, f.body_len, MSG_WAITALL), ==, f.body_len);
		} while (f.type != TM_MSG_ERROR);
		close(fd0);
		close(fdc);
		peer_free(&p);
	}
	guest_fini(&dst);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "receiver-abort", test_receiver_abort, false },
		{ "sender-bad-tag", test_sender_bad_tag, false },
		{ "corrupt-page-out-of-range", test_corrupt_page_out_of_range, true },
		{ "corrupt-duplicate-channel", test_corrupt_duplicate_channel, true },
		{ "bad-uniform-tag-before-ram", test_bad_uniform_tag_before_ram, true },
		{ "peer-vanishes", test_peer_vanishes, true },
		{ "peer-closes-mid-packet", test_peer_closes_mid_packet, true },
		{ "unsolicited-sync-ack", test_unsolicited_sync_ack, true },
		{ "handshake-trickle", test_handshake_trickle, false },
		{ "body-trickle", test_body_trickle, true },
		{ "sender-tls-trickle", test_sender_tls_trickle, false },
		{ "strangers-bound", test_strangers_bound, true },
		{ "tls-tampered", test_tls_tampered, false },
		{ "late-sender", test_late_sender, false },
		{ "receiver-reason-reaches-sender", test_receiver_reason_reaches_sender, false },
		{ "null-error", test_null_error, false },
		{ "v1-receiver-refuses", test_v1_receiver_refuses, false },
		{ "hello-mix-refused", test_hello_mix_refused, true },
		{ "control-end-checked", test_control_end_checked, true },
		{ "control-keepalive-checked", test_control_keepalive_checked, true },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
