/* SPDX-License-Identifier: MIT */
/*
 * Issue 14: deadlines, not idle timers. A HELLO, a TLS handshake or a packet body that
 * trickles in byte by byte ends at its deadline, and the listener drops strangers within a
 * bound. The hand-made senders: fake-peer.h.
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

/* The HELLO fake_connect_v1 sends, as bytes (*ret_len). */
static uint8_t *hello_bytes(const block_spec *spec, size_t *ret_len)
{
	fake_hello h = fake_hello_v1(spec, 0, 1, false);

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
 * trickles its ServerHello fails the connect in about 3 s, though every byte comes in time;
 * then the connection is dialled again (it may have been cut on the receiver's side only:
 * docs/wire-format.md, "Setup"), and that redial's handshake ends with resume_deadline_ms (1 s
 * here).
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
	tm_live_config lc = { .size = sizeof(lc), .resume_deadline_ms = 1000 };
	g_assert_cmpint(tm_sender_set_live(s, &lc, &err), ==, 0);
	int64_t t0 = g_get_monotonic_time();
	int r = tm_sender_connect(s, "127.0.0.1", ports, &err);
	int64_t took = g_get_monotonic_time() - t0;
	g_atomic_int_set(&t.stop, 1);
	g_thread_join(th);
	close(t.fd);
	g_assert_cmpint(r, <, 0);
	g_test_message("sender after %.1f s: %s", took / 1e6, err->message);
	g_assert_cmpint(took, <, 6 * G_USEC_PER_SEC);
	g_assert_cmpint(err->code, ==, ETIMEDOUT);
	g_assert_nonnull(strstr(err->message, "could not connect again within 1.0 s"));
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
	int fd = fake_connect_v1(port, a, 0, 1, false);
	fake_expect_ack(fd, TM_WIRE_VERSION_1, 0, NULL);
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
	/* Before its HELLO a connection is no channel: named by where it came from. */
	g_assert_nonnull(strstr(p.error->message, "the first: handshake: connection from 127.0.0.1:"));
	g_assert_nonnull(strstr(p.error->message, ": frame header: bad magic"));
	g_assert_null(strstr(p.error->message, "channel 0"));
	peer_free(&p);
	guest_fini(&dst);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "handshake-trickle", test_handshake_trickle, false },
		{ "body-trickle", test_body_trickle, true },
		{ "sender-tls-trickle", test_sender_tls_trickle, false },
		{ "strangers-bound", test_strangers_bound, true },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
