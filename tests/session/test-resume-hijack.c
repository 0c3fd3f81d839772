/* SPDX-License-Identifier: MIT */
/*
 * Strangers at a session's door (docs/wire-format.md, "Resume"): a connection with the session's
 * id and a wrong secret (inside TLS, with a certificate of the CA), as a data channel's
 * reconnect or as an urgent connection of epoch 0 mid-session, gets an ERROR and nothing else,
 * is counted, and the session completes untouched.
 */
#include <errno.h>
#include <string.h>

#include "codec/codec.h"
#include "cut-rig.h"
#include "fake-peer.h"
#include "transport/tls/tls.h"
#include "transport/transport.h"

/*
 * A stranger's reconnect as data channel 0 of this session (its id, epoch 1) with token: HELLO
 * and RESUME, inside TLS when the session uses it (the stranger then has a certificate of the
 * CA: only the secret stops it). Returns what came back before the close (at most one frame).
 */
static size_t hijack(const char *port, const uint8_t id[16], guest *g, unsigned channels,
		     uint8_t role, uint64_t token, uint8_t *ret, size_t cap, int *ret_err)
{
	int fd = tm_net_connect("127.0.0.1", port, 5000, -1, NULL);
	g_assert_cmpint(fd, >=, 0);
	tm_io *io = NULL;
	g_autoptr(tm_tls_ctx) tls = NULL;
	tm_io_config ioc = { .timeout_ms = 5000, .depth = 1 }; /* no answer must not hang us */
	g_assert_cmpint(tm_io_open(fd, 0, &tm_transport_socket, &ioc, &io, NULL), ==, 0);
	if (tls_dir) {
		g_assert_cmpint(tm_tls_ctx_new(TM_TLS_CLIENT, tls_dir, "127.0.0.1", &tls, NULL), ==, 0);
		g_assert_cmpint(tm_tls_wrap(tls, &io, NULL), ==, 0);
	}
	/* An urgent connection: postcopy offered, epoch 0 (the codec allows no other) */
	bool urgent = role == TM_ROLE_URGENT;
	tm_ram_block_info bi;
	tm_ram_layout_block(g->layout, 0, &bi);
	const fake_hello h = { .version = 2, .channel_count = (uint16_t)channels,
			       .features = TM_FEATURE_TAGS_MTE4 | TM_FEATURE_RESUME |
					   TM_FEATURE_RESUME_CONTROL | TM_FEATURE_CONN_LOST |
					   TM_FEATURE_LINK_CHECK | (urgent ? TM_FEATURE_POSTCOPY : 0),
			       .role = role, .epoch = urgent ? 0 : 1, .packet_size = 64u << 10,
			       .chunk_size = 2u << 20, .block = { "pc.ram", CUT_RAM, 4096 },
			       .guest_base = bi.guest_base, .id = id };
	size_t n;
	g_autofree uint8_t *buf = fake_hello_bytes(&h, 64, &n);
	n += tm_resume_encode(buf + n, 1, token);
	struct iovec v = { .iov_base = buf, .iov_len = n };
	g_assert_cmpint(tm_io_send(io, &v, 1, n), ==, 0);
	/* The answer: a frame header, then its body (an ERROR is at most cap bytes). */
	size_t got = 0;
	tm_frame f;
	struct iovec hv = { .iov_base = ret, .iov_len = TM_FRAME_HDR_LEN };
	*ret_err = -tm_io_recv(io, &hv, 1, TM_FRAME_HDR_LEN);
	if (*ret_err == 0) {
		got = TM_FRAME_HDR_LEN;
		if (tm_frame_decode(ret, got, 2, 0, &f, NULL) == 0 && got + f.body_len <= cap) {
			struct iovec bv = { .iov_base = ret + got, .iov_len = f.body_len };
			if ((*ret_err = -tm_io_recv(io, &bv, 1, f.body_len)) == 0)
				got += f.body_len;
		}
	}
	tm_io_free(io);
	return got;
}

/*
 * A stranger that knows the session id (and, with TLS, has a certificate of the CA) but not the
 * secret connects mid-session as channel 0's reconnect: it gets an ERROR and nothing else, is
 * counted, and the session completes.
 */
static void hijack_refused(bool urgent)
{
	guest src, dst;
	peer p;
	g_autoptr(GError) err = NULL;
	uint8_t id[16];

	guest_init(&src, cut_spec, 1, true);
	guest_init(&dst, cut_spec, 1, true);
	guest_fill(&src);
	g_autofree char *port = peer_start(&p, &dst);
	/* No compression, so the session's features are exactly what hijack() offers (MTE4 and
	 * RESUME): the stranger knows everything but the secret. */
	tm_live_config lc = { .size = sizeof(lc), .compress = TM_COMPRESS_NONE };
	tm_sender *s = sender_new(&src, 3, &lc);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", port, &err), ==, 0);
	tm_sender_get_session_id(s, id);
	queue_all(s);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
	uint8_t rb[TM_FRAME_HDR_LEN + TM_ERROR_FIXED_LEN + TM_MAX_ERROR_MESSAGE];
	int rerr = 0;
	size_t got = hijack(port, id, &src, 3, urgent ? TM_ROLE_URGENT : TM_ROLE_DATA,
			    0x1234567890abcdefull, rb, sizeof(rb), &rerr);
	tm_frame f;
	if (got == 0) {
		/*
		 * Closed without an answer: a refusal too (seen once in a loaded full-suite run,
		 * not reproduced: the receiver's I/O handle for the connection could not be made,
		 * e.g. io_uring out of memory). The count and the session's end below still hold.
		 */
		g_test_message("stranger: closed without an answer (%s)", g_strerror(rerr));
	} else {
		g_assert_cmpint(tm_frame_decode(rb, got, 2, 0, &f, NULL), ==, 0);
		g_assert_cmpuint(f.type, ==, TM_MSG_ERROR);
		g_assert_cmpuint(got, ==, TM_FRAME_HDR_LEN + f.body_len);
		int code;
		g_autofree char *msg = NULL;
		g_assert_cmpint(tm_error_decode(rb + TM_FRAME_HDR_LEN, f.body_len, &code, &msg, NULL),
				==, 0);
		g_test_message("stranger told: %s", msg);
		if (urgent) {
			/* an urgent connection of epoch 0 mid-session (a reconnect needs an epoch) */
			g_assert_cmpint(code, ==, EPROTO);
			g_assert_nonnull(strstr(msg, "not an urgent connection of epoch 0"));
		} else {
			g_assert_cmpint(code, ==, EACCES);
			g_assert_nonnull(strstr(msg, "wrong secret"));
		}
	}
	/* The session goes on, untouched. */
	int r = tm_sender_finish(s, &err);
	peer_join(&p);
	g_assert_cmpint(r, ==, 0);
	g_assert_cmpint(p.ret, ==, 0);
	assert_same(&src, &dst);
	tm_live_stats rs = { .size = sizeof(rs) };
	g_assert_cmpint(tm_receiver_get_live_stats(p.r, &rs), ==, 0);
	g_assert_cmpuint(rs.resume_refused, ==, 1);
	g_assert_cmpuint(rs.reconnects, ==, 0);
	tm_sender_free(s);
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

static void test_hijack_refused(void)
{
	hijack_refused(false);
}

static void test_urgent_reconnect_refused(void)
{
	hijack_refused(true);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "resume/hijack-refused", test_hijack_refused, false },
		{ "resume/urgent-refused", test_urgent_reconnect_refused, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
