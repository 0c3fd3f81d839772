/* SPDX-License-Identifier: MIT */
/*
 * Sessions that something goes wrong in, on purpose: a receiver that gives up or dies
 * mid-packet, a sender that vanishes, a tag store that fails, bad tags, a late sender, setup
 * failures without a GError. Each checks that the failure is found, explained on both sides
 * where it can be, and never lets bad data into guest RAM. Deadlines and strangers:
 * test-session-deadlines.c; corrupt data: test-session-corrupt.c; protocol versions and the
 * control connection: test-session-protocol.c.
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

/* A sender that disappears midway: the receiver fails naming the channel, no hang. */
static void test_peer_vanishes(void)
{
	guest dst;
	peer p;

	int fd = fake_v1_start(&p, &dst, false);
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

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "receiver-abort", test_receiver_abort, false },
		{ "sender-bad-tag", test_sender_bad_tag, false },
		{ "peer-vanishes", test_peer_vanishes, true },
		{ "peer-closes-mid-packet", test_peer_closes_mid_packet, true },
		{ "unsolicited-sync-ack", test_unsolicited_sync_ack, true },
		{ "late-sender", test_late_sender, false },
		{ "receiver-reason-reaches-sender", test_receiver_reason_reaches_sender, false },
		{ "null-error", test_null_error, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
