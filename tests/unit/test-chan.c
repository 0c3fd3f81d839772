/* SPDX-License-Identifier: MIT */
/*
 * The protocol channel's small-message paths, on every byte mover (issue 16): a corked channel
 * holds its small messages and sends them in one system call, but never holds one back from a
 * peer that must answer it (a receive sends it first) nor loses one behind an ERROR; a frame
 * header is received in one call when it is there, and still whole when it trickles in; the
 * peer's ERROR before its close is found behind what it said before that nobody read.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "codec/codec.h"
#include "codec/delta-wire.h"
#include "session/channel.h"
#include "tagmig/tagmig.h"
#include "transport/transport.h"

static void tcp_pair_of(int *ret_a, int *ret_b)
{
	unsigned port = 0;
	int lfd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(lfd, >=, 0);
	g_autofree char *ports = g_strdup_printf("%u", port);
	*ret_a = tm_net_connect("127.0.0.1", ports, 5000, -1, NULL);
	g_assert_cmpint(*ret_a, >=, 0);
	*ret_b = tm_net_accept(lfd, 5000, -1, NULL);
	g_assert_cmpint(*ret_b, >=, 0);
	close(lfd);
}

/* Two connected channels on backend name, or a skip. Timeouts of 2 s: a hold-back fails,
 * it does not hang. */
static bool chan_pair(const char *name, tm_chan *a, tm_chan *b)
{
	const tm_transport_ops *ops;
	g_autoptr(GError) err = NULL;
	if (tm_transport_lookup(name, &ops, NULL, &err) < 0) {
		g_test_skip(err->message);
		return false;
	}
	int fa, fb;
	tcp_pair_of(&fa, &fb);
	tm_io_config cfg = { .timeout_ms = 2000, .depth = 2 };
	g_assert_cmpint(tm_chan_open(a, fa, 1, ops, &cfg, NULL), ==, 0);
	g_assert_cmpint(tm_chan_open(b, fb, 1, ops, &cfg, NULL), ==, 0);
	return true;
}

static bool readable_within(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	return poll(&p, 1, ms) > 0;
}

static void expect_sync(tm_chan *ch, uint64_t id)
{
	uint64_t a = 0, b = 0;
	g_autoptr(GError) err = NULL;
	g_assert_cmpint(tm_chan_recv_ctrl(ch, TM_MSG_SYNC, &a, &b, &err), ==, 0);
	g_assert_cmpuint(a, ==, id);
}

/* The peer of the hold-back case: answers the SYNC it must first receive. */
static gpointer answer_sync(gpointer data)
{
	tm_chan *b = data;
	expect_sync(b, 3);
	g_assert_cmpint(tm_chan_send_ctrl(b, TM_MSG_SYNC_ACK, 3, 0, NULL), ==, 0);
	return NULL;
}

static void test_cork(gconstpointer name)
{
	tm_chan a, b;
	if (!chan_pair(name, &a, &b))
		return;

	/* Held while corked, then out in one submission, in order. */
	tm_chan_cork(&a);
	g_assert_cmpint(tm_chan_send_ctrl(&a, TM_MSG_SYNC, 1, 0, NULL), ==, 0);
	g_assert_cmpint(tm_chan_send_ctrl(&a, TM_MSG_SYNC, 2, 0, NULL), ==, 0);
	g_assert_false(readable_within(b.fd, 100));
	uint64_t before = a.io->st.io_submissions;
	g_assert_cmpint(tm_chan_uncork(&a, NULL), ==, 0);
	g_assert_cmpuint(a.io->st.io_submissions - before, ==, 1);
	expect_sync(&b, 1);
	expect_sync(&b, 2);

	/* A receive sends what is held first: the peer's answer needs it. */
	tm_chan_cork(&a);
	GThread *th = g_thread_new("peer", answer_sync, &b);
	g_assert_cmpint(tm_chan_send_ctrl(&a, TM_MSG_SYNC, 3, 0, NULL), ==, 0);
	uint64_t ack = 0, applied = 0;
	g_autoptr(GError) err = NULL;
	g_assert_cmpint(tm_chan_recv_ctrl(&a, TM_MSG_SYNC_ACK, &ack, &applied, &err), ==, 0);
	g_assert_cmpuint(ack, ==, 3);
	g_thread_join(th);

	/* An ERROR goes behind what is held, with the sequence number that follows it. */
	g_assert_cmpint(tm_chan_send_ctrl(&a, TM_MSG_SYNC, 4, 0, NULL), ==, 0);
	tm_chan_send_error(&a, EIO, "disk on fire");
	expect_sync(&b, 4);
	tm_frame f;
	g_assert_cmpint(tm_chan_recv_frame(&b, 0, &f, NULL), ==, 0);
	g_assert_cmpint(f.type, ==, TM_MSG_ERROR);
	g_clear_error(&err);
	g_assert_cmpint(tm_chan_recv_peer_error(&b, &f, "sender", &err), ==, -EIO);
	g_assert_nonnull(strstr(err->message, "disk on fire"));
	g_assert_false(a.corked);

	tm_chan_close(&a);
	tm_chan_close(&b);
}

typedef struct trickle {
	int fd;
	const uint8_t *buf;
	size_t len;
} trickle;

static gpointer trickle_fn(gpointer data)
{
	trickle *t = data;
	for (size_t i = 0; i < t->len; i++) {
		g_assert_cmpint(write(t->fd, t->buf + i, 1), ==, 1);
		g_usleep(2000);
	}
	return NULL;
}

static void test_header(gconstpointer name)
{
	tm_chan a, b;
	if (!chan_pair(name, &a, &b))
		return;
	uint8_t msg[2][TM_FRAME_HDR_LEN + 8 * TM_CTRL_MAX_FIELDS];
	size_t n0 = tm_ctrl_encode(msg[0], TM_MSG_SYNC, 0, 7, 0);
	size_t n1 = tm_ctrl_encode(msg[1], TM_MSG_SYNC, 1, 8, 0);

	/* What is there, never more than asked for: the rest stays for the next receive. */
	g_assert_cmpint(write(a.fd, msg[0], n0), ==, (ssize_t)n0);
	g_assert_true(readable_within(b.fd, 2000));
	uint8_t got[sizeof(msg[0])];
	g_assert_cmpint(tm_io_recv_some(b.io, got, 5), ==, 5);
	struct iovec v = { .iov_base = got + 5, .iov_len = n0 - 5 };
	g_assert_cmpint(tm_io_recv(b.io, &v, 1, n0 - 5), ==, 0);
	g_assert_cmpmem(got, n0, msg[0], n0);
	g_assert_false(readable_within(b.fd, 50));

	/* A whole header in one receive call; then one trickling in byte by byte. */
	g_assert_cmpint(write(a.fd, msg[0], n0), ==, (ssize_t)n0);
	g_assert_true(readable_within(b.fd, 2000));
	g_usleep(20000);
	b.rx_seq = 0;
	uint64_t before = b.io->st.io_submissions;
	expect_sync(&b, 7);
	g_assert_cmpuint(b.io->st.io_submissions - before, ==, 2); /* header, body */
	trickle t = { .fd = a.fd, .buf = msg[1], .len = n1 };
	GThread *th = g_thread_new("trickle", trickle_fn, &t);
	expect_sync(&b, 8);
	g_thread_join(th);

	tm_chan_close(&a);
	tm_chan_close(&b);
}

/*
 * A receiver that refused a delta and then gave up: its DELTA_NACK and a SYNC_ACK nobody read
 * come before its ERROR and close. The sender's look for the reason passes over them, and
 * finds none (0) when the close came without one.
 */
static void test_peer_error_behind(gconstpointer name)
{
	const uint32_t packet_size = 64 << 10, pages[2] = { 3, 9 }, reasons[2] = { 1, 1 };
	g_autoptr(GError) err = NULL;
	uint8_t buf[256 + TM_MAX_ERROR_MESSAGE];
	tm_chan a, b;

	for (int with_error = 1; with_error >= 0; with_error--) {
		if (!chan_pair(name, &a, &b))
			return;
		a.version = b.version = TM_WIRE_VERSION_2;
		size_t n = tm_delta_nack_encode(buf, TM_WIRE_VERSION_2, 0, 0, pages, reasons, 2);
		n += tm_ctrl_encode_v(buf + n, TM_WIRE_VERSION_2, TM_MSG_SYNC_ACK, 1,
				      (const uint64_t[]){ 5, 2 });
		if (with_error)
			n += tm_error_encode_v(buf + n, TM_WIRE_VERSION_2, 2, EIO, "disk on fire");
		g_assert_cmpint(write(a.fd, buf, n), ==, (ssize_t)n);
		tm_chan_close(&a);
		g_clear_error(&err);
		int r = tm_chan_peer_error(&b, packet_size, "receiver failed", &err);
		if (with_error) {
			g_assert_cmpint(r, ==, -EIO);
			g_assert_nonnull(strstr(err->message, "disk on fire"));
			g_assert_true(b.peer_error);
		} else {
			g_assert_cmpint(r, ==, 0);
			g_assert_null(err);
		}
		tm_chan_close(&b);
	}
}

/*
 * A peer that stopped halfway through a frame (a DELTA_NACK whose body never ends) and keeps its
 * connection open: the look for its reason gives up within its second, not the body's deadline
 * (TM_BODY_GRACE_MS).
 */
static void test_peer_error_half_frame(gconstpointer name)
{
	const uint32_t pages[2] = { 3, 9 }, reasons[2] = { 1, 1 };
	g_autoptr(GError) err = NULL;
	uint8_t buf[256];
	tm_chan a, b;

	if (!chan_pair(name, &a, &b))
		return;
	a.version = b.version = TM_WIRE_VERSION_2;
	size_t n = tm_delta_nack_encode(buf, TM_WIRE_VERSION_2, 0, 0, pages, reasons, 2);
	g_assert_cmpint(write(a.fd, buf, n - 4), ==, (ssize_t)(n - 4));
	int64_t t0 = g_get_monotonic_time();
	g_assert_cmpint(tm_chan_peer_error(&b, 64 << 10, "receiver failed", &err), ==, 0);
	int64_t dt = g_get_monotonic_time() - t0;
	g_test_message("gave up after %.2f s", dt / 1e6);
	g_assert_cmpint(dt, <, 1500000);
	g_assert_null(err);
	tm_chan_close(&a);
	tm_chan_close(&b);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_data_func("/chan/cork/sockets", "sockets", test_cork);
	g_test_add_data_func("/chan/cork/io_uring", "io_uring", test_cork);
	g_test_add_data_func("/chan/header/sockets", "sockets", test_header);
	g_test_add_data_func("/chan/header/io_uring", "io_uring", test_header);
	g_test_add_data_func("/chan/peer-error-behind/sockets", "sockets", test_peer_error_behind);
	g_test_add_data_func("/chan/peer-error-behind/io_uring", "io_uring", test_peer_error_behind);
	g_test_add_data_func("/chan/peer-error-half-frame/sockets", "sockets",
			     test_peer_error_half_frame);
	g_test_add_data_func("/chan/peer-error-half-frame/io_uring", "io_uring",
			     test_peer_error_half_frame);
	return g_test_run();
}
