/* SPDX-License-Identifier: MIT */
/*
 * Protocol versions and the control connection: a tagmig 0.1 receiver refuses a protocol 2
 * sender, senders that mix what they speak are refused, and a hand-made protocol 2 sender
 * (fake-peer.h) misusing control (END counts, SYNC, PONG without PING, a PING flood) is
 * refused with the reason.
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

/* ---- protocol versions: a tagmig 0.1 receiver, and senders that mix what they speak ---- */

/*
 * A tagmig 0.1 receiver as a protocol 2 sender sees it: its channel code decodes the frame
 * header in protocol 1 only, refuses with its own words in a protocol 1 ERROR ("handshake:"
 * and the channel prefixed, as 0.1 does) and gives up the session.
 */
typedef struct v1_receiver {
	int listen_fd;
	bool reset_first; /* the others reset before channel 0's answer arrives */
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
	/*
	 * 0.1's tool exits: its listening socket goes, and the connections waiting in it. The
	 * resets of those can reach the sender before the ERROR on channel 0 does (loopback
	 * delivers on the CPU that sent, and a thread moves): reset_first makes that order sure.
	 */
	if (v->reset_first) {
		close(v->listen_fd);
		g_usleep(300 * 1000);
	}
	tm_io_send_last(io, buf, n);
	if (!v->reset_first)
		close(v->listen_fd);
	tm_io_free(io);
	return NULL;
}

static void v1_receiver_refuses(bool reset_first)
{
	guest src;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;
	unsigned port;

	guest_init(&src, a, 1, false);
	v1_receiver v = { .listen_fd = tm_listen("127.0.0.1", "0", &port, NULL),
			  .reset_first = reset_first };
	g_assert_cmpint(v.listen_fd, >=, 0);
	GThread *t = g_thread_new("v1-receiver", v1_receiver_thread, &v);
	g_autofree char *ports = g_strdup_printf("%u", port);
	/* With resets first, many connections: their redials must not add up (resume-setup.c). */
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir,
				 .channels = reset_first ? 16 : 2, .timeout_ms = 10000 };
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &cfg, &s, &err), ==, 0);
	int64_t t0 = g_get_monotonic_time();
	int r = tm_sender_connect(s, "127.0.0.1", ports, &err);
	g_thread_join(t);
	g_assert_cmpint(r, ==, -EPROTONOSUPPORT);
	g_test_message("sender, after %.2f s: %s", (double)(g_get_monotonic_time() - t0) / 1e6,
		       err->message);
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

static void test_v1_receiver_refuses(void)
{
	v1_receiver_refuses(false);
}

/* The other 16 connections reset before channel 0's answer came: they are not dialled again
 * for resume_deadline_ms (the receiver gave up the session), and its answer still explains. */
static void test_v1_receiver_refuses_after_resets(void)
{
	v1_receiver_refuses(true);
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

static int raw_hello_link(const char *port, uint8_t role, bool link_check)
{
	const fake_hello h = { .version = 2, .role = role, .channel_count = 1,
			       .features = link_check ? TM_FEATURE_LINK_CHECK : 0,
			       .packet_size = 512 * 1024, .chunk_size = 2 << 20,
			       .block = { "pc.ram", 2 << 20, 4096 }, .sid = 9 };

	return fake_connect(port, &h);
}

/* Control frames until one of type; its body's fields in v. */
static void read_until(int fd, uint8_t type, uint64_t v[TM_CTRL_MAX_FIELDS])
{
	uint8_t buf[TM_FRAME_HDR_LEN + 8 * TM_CTRL_MAX_FIELDS];
	tm_frame f;

	do {
		g_assert_cmpint(recv(fd, buf, TM_FRAME_HDR_LEN, MSG_WAITALL), ==, TM_FRAME_HDR_LEN);
		g_assert_cmpint(tm_frame_decode(buf, TM_FRAME_HDR_LEN, 2, 0, &f, NULL), ==, 0);
		g_assert_cmpuint(f.body_len, <=, sizeof(buf));
		g_assert_cmpint(recv(fd, buf, f.body_len, MSG_WAITALL), ==, f.body_len);
	} while (f.type != type);
	g_assert_cmpint(tm_ctrl_decode_v(2, type, buf, f.body_len, v, NULL), ==, 0);
}

/*
 * LINK_CHECK's question from a hand-made sender: answered with the receiver's kernel's counts of
 * its connection (what the sender's kernel sees from its side: its own acknowledged bytes less
 * its SYN, and what it received); misused (unagreed, a channel the session lacks, a flood), the
 * receiver fails with the reason.
 */
static void test_link_check_checked(void)
{
	static const struct {
		const char *what;
		bool agreed;
		uint64_t chan;
		unsigned n;
		int errnum;
		const char *substr;
	} cases[] = {
		{ "answered", true, 0, 1, 0, NULL },
		{ "unagreed", false, 0, 1, EPROTO, "control: unexpected LINK_Q" },
		{ "range", true, 5, 1, ERANGE, "LINK_Q for channel 5, the session has 1 data channels" },
		{ "flood", true, 0, 25, EPROTO, "control: LINK_Q flood: more than 20 in one second" },
	};
	guest dst;
	const block_spec a[] = { { "pc.ram", 2 << 20, 4096 } };

	guest_init(&dst, a, 1, false);
	for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
		peer p;
		uint8_t buf[TM_FRAME_HDR_LEN + 8 * TM_CTRL_MAX_FIELDS];
		g_autofree char *port = peer_start_ex(&p, &dst, false, 5000);
		int fd0 = raw_hello_link(port, TM_ROLE_DATA, cases[i].agreed);
		int fdc = raw_hello_link(port, TM_ROLE_CONTROL, cases[i].agreed);
		uint32_t seq = 1;

		fake_expect_ack(fd0, TM_WIRE_VERSION_2, 0, NULL);
		fake_expect_ack(fdc, TM_WIRE_VERSION_2, 0, NULL);
		const uint64_t q[TM_CTRL_MAX_FIELDS] = { cases[i].chan, 0 };
		for (unsigned k = 0; k < cases[i].n; k++) {
			size_t n = tm_ctrl_encode_v(buf, 2, TM_MSG_LINK_Q, seq++, q);
			g_assert_cmpint(write(fdc, buf, n), ==, (ssize_t)n);
		}
		if (!cases[i].errnum) {
			uint64_t v[TM_CTRL_MAX_FIELDS], acked, received, unread;
			read_until(fdc, TM_MSG_LINK_A, v);
			g_assert_cmpint(tm_net_stream_bytes(fd0, &acked, &received, &unread), ==, 0);
			g_test_message("answered: received %" G_GUINT64_FORMAT ", acked %"
				       G_GUINT64_FORMAT ", unread %" G_GUINT64_FORMAT
				       "; here acked %" G_GUINT64_FORMAT ", received %" G_GUINT64_FORMAT,
				       (guint64)v[2], (guint64)v[3], (guint64)v[4], (guint64)acked,
				       (guint64)received);
			g_assert_cmpuint(v[0], ==, 0);
			g_assert_cmpuint(v[1], ==, 0);
			g_assert_cmpuint(v[2], ==, acked - 1); /* our SYN */
			g_assert_cmpuint(v[3], ==, received);
			g_assert_cmpuint(v[4], ==, 0);
			close(fd0);
			close(fdc);
			peer_join(&p);
			peer_free(&p);
			continue;
		}
		peer_join(&p);
		g_test_message("%s: receiver: %s", cases[i].what, p.error->message);
		g_assert_cmpint(p.ret, ==, -cases[i].errnum);
		g_assert_nonnull(strstr(p.error->message, cases[i].substr));
		close(fd0);
		close(fdc);
		peer_free(&p);
	}
	guest_fini(&dst);
}

typedef struct fake_rx {
	int listen_fd;
	int fd[2]; /* data channel 0, control */
	uint32_t offered;
} fake_rx;

/* A hand-made receiver: accepts a one-channel sender's two connections, agrees LINK_CHECK. */
static gpointer fake_rx_thread(gpointer data)
{
	fake_rx *x = data;

	for (unsigned k = 0; k < 2; k++) {
		int fd = accept(x->listen_fd, NULL, NULL);
		g_assert_cmpint(fd, >=, 0);
		tm_hello h;
		fake_read_hello(fd, TM_WIRE_VERSION_2, &h);
		x->offered = h.features;
		x->fd[h.role == TM_ROLE_CONTROL] = fd;
		tm_hello_ack ack = { .features = h.features & (TM_FEATURE_TAGS_MTE4 |
							       TM_FEATURE_LINK_CHECK),
				     .max_state_section = 1 << 20, .max_state_total = 1 << 22 };
		tm_hello_clear(&h);
		uint8_t buf[TM_FRAME_HDR_LEN + TM_HELLO_ACK2_LEN];
		size_t len = tm_hello_ack_encode(buf, 0, &ack);
		g_assert_cmpint(write(fd, buf, len), ==, (ssize_t)len);
	}
	return NULL;
}

/*
 * LINK_CHECK's answer to a sender from a hand-made receiver: one nobody asked for, or for a
 * channel the session lacks, fails the sender with the reason (a receiver cannot make the sender
 * reset connections at will by answering questions that were never asked).
 */
static void test_link_answer_checked(void)
{
	static const struct {
		uint64_t chan;
		int errnum;
		const char *substr;
	} cases[] = {
		{ 0, EPROTO, "control: LINK_A for channel 0 answers no LINK_Q" },
		{ 5, ERANGE, "control: LINK_A for channel 5, the session has 1 data channels" },
	};
	const block_spec a[] = { { "pc.ram", 2 << 20, 4096 } };
	guest src;

	guest_init(&src, a, 1, false);
	guest_fill(&src);
	for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
		fake_rx x = { .fd = { -1, -1 } };
		unsigned port = 0;
		x.listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
		g_assert_cmpint(x.listen_fd, >=, 0);
		g_autofree char *ps = g_strdup_printf("%u", port);
		GThread *t = g_thread_new("fake-rx", fake_rx_thread, &x);
		tm_sender_config cfg = { .io_backend = send_io, .channels = 1,
					 .packet_size = 64u << 10, .timeout_ms = 5000 };
		tm_sender *s = NULL;
		g_autoptr(GError) err = NULL;
		g_assert_cmpint(tm_sender_new(src.layout, src.tags, &cfg, &s, &err), ==, 0);
		g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", ps, &err), ==, 0);
		g_thread_join(t);
		g_assert_true(x.offered & TM_FEATURE_LINK_CHECK); /* the library dialled */
		uint8_t buf[TM_FRAME_HDR_LEN + 8 * TM_CTRL_MAX_FIELDS];
		const uint64_t v[TM_CTRL_MAX_FIELDS] = { cases[i].chan, 0, 10, 10, 0 };
		size_t n = tm_ctrl_encode_v(buf, 2, TM_MSG_LINK_A, 1, v);
		g_assert_cmpint(write(x.fd[1], buf, n), ==, (ssize_t)n);
		int r = tm_sender_finish(s, &err);
		g_test_message("sender: %s", err ? err->message : "done");
		g_assert_cmpint(r, ==, -cases[i].errnum);
		g_assert_nonnull(strstr(err->message, cases[i].substr));
		tm_sender_free(s);
		close(x.fd[0]);
		close(x.fd[1]);
		close(x.listen_fd);
	}
	guest_fini(&src);
}

/* A receiver that answers channel 0 and then stops listening (fake_gone_thread). */
typedef struct fake_gone {
	int listen_fd;
	int fd0;             /* data channel 0, held open until the sender is done */
	bool resume_control; /* agrees RESUME_CONTROL */
} fake_gone;

/*
 * Accepts data channel 0 only and closes its listener, which resets the control connection
 * waiting in it; its HELLO_ACK comes after that reset reached the sender. The sender's redial of
 * control is refused while channel 0 has an answer: it stops (resume-setup.c), and the answer is
 * a HELLO_ACK, so it must dial again, not go on with a closed connection.
 */
static gpointer fake_gone_thread(gpointer data)
{
	fake_gone *x = data;
	tm_hello h;

	x->fd0 = accept(x->listen_fd, NULL, NULL);
	g_assert_cmpint(x->fd0, >=, 0);
	fake_read_hello(x->fd0, TM_WIRE_VERSION_2, &h);
	g_assert_cmpuint(h.role, ==, TM_ROLE_DATA);
	g_assert_true(h.features & TM_FEATURE_RESUME);
	g_assert_true(h.features & TM_FEATURE_RESUME_CONTROL);
	close(x->listen_fd);
	g_usleep(300 * 1000);
	uint32_t agreed = TM_FEATURE_TAGS_MTE4 | TM_FEATURE_LINK_CHECK | TM_FEATURE_RESUME |
			  (x->resume_control ? TM_FEATURE_RESUME_CONTROL : 0u);
	tm_hello_ack ack = { .features = h.features & agreed,
			     .max_state_section = 1 << 20, .max_state_total = 1 << 22,
			     .resume_token = 0x5eed };
	tm_hello_clear(&h);
	uint8_t buf[TM_FRAME_HDR_LEN + TM_HELLO_ACK2_LEN];
	size_t len = tm_hello_ack_encode(buf, 0, &ack);
	g_assert_cmpint(write(x->fd0, buf, len), ==, (ssize_t)len);
	return NULL;
}

static void answer_then_listener_gone(bool resume_control)
{
	const block_spec a[] = { { "pc.ram", 2 << 20, 4096 } };
	fake_gone x = { .fd0 = -1, .resume_control = resume_control };
	unsigned port = 0;
	guest src;

	guest_init(&src, a, 1, false);
	x.listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(x.listen_fd, >=, 0);
	g_autofree char *ps = g_strdup_printf("%u", port);
	GThread *t = g_thread_new("fake-gone", fake_gone_thread, &x);
	tm_sender_config cfg = { .io_backend = send_io, .channels = 1, .timeout_ms = 5000 };
	tm_live_config lc = { .size = sizeof(lc), .resume_deadline_ms = 2000 };
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_set_live(s, &lc, &err), ==, 0);
	int64_t t0 = g_get_monotonic_time();
	int r = tm_sender_connect(s, "127.0.0.1", ps, &err);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	g_thread_join(t);
	g_test_message("sender, after %.2f s: %s", secs, err ? err->message : "connected");
	g_assert_cmpint(r, <, 0);
	g_assert_nonnull(strstr(err->message, "control: broke before its HELLO_ACK"));
	if (resume_control) {
		/* Dialled again, refused until the redials' budget ends: the setup fails. */
		g_assert_nonnull(strstr(err->message, "could not connect again within 2.0 s"));
		g_assert_cmpfloat(secs, >=, 1.9);
	} else {
		/* Not resumable: no redial; it fails as soon as the HELLO_ACK says so. */
		g_assert_null(strstr(err->message, "could not connect again"));
		g_assert_cmpfloat(secs, <, 1.5);
	}
	g_assert_cmpfloat(secs, <, 5.0);
	close(x.fd0);
	guest_fini(&src);
}

static void test_answer_then_listener_gone(void)
{
	answer_then_listener_gone(true);
}

/* The same, control not resumable (no RESUME_CONTROL): it fails at once, saying why. */
static void test_answer_then_listener_gone_no_resume(void)
{
	answer_then_listener_gone(false);
}

/* A connected pair: TCP over loopback (ret[0] connected, ret[1] accepted) or a unix socketpair. */
static void conn_pair(bool unix_pair, int ret[2])
{
	if (unix_pair) {
		g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ret), ==, 0);
		return;
	}
	unsigned port = 0;
	int l = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(l, >=, 0);
	g_autofree char *ps = g_strdup_printf("%u", port);
	ret[0] = tm_net_connect("127.0.0.1", ps, 5000, -1, NULL);
	g_assert_cmpint(ret[0], >=, 0);
	ret[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	g_assert_cmpint(ret[1], >=, 0);
	close(l);
}

/*
 * A one-channel session's HELLO (data 0, or control) offering LINK_CHECK and the raw bits extra
 * (which the encoder would refuse), as one message (g_free); *ret_len its length.
 */
static uint8_t *hello_bytes(bool control, uint32_t extra, size_t *ret_len)
{
	const fake_hello h = { .version = 2, .role = control ? TM_ROLE_CONTROL : TM_ROLE_DATA,
			       .channel_count = 1, .features = TM_FEATURE_LINK_CHECK,
			       .packet_size = 512 * 1024, .chunk_size = 2 << 20,
			       .block = { "pc.ram", 2 << 20, 4096 }, .sid = 9 };
	uint8_t *b = fake_hello_bytes(&h, 0, ret_len);
	uint8_t *features = b + TM_FRAME_HDR_LEN + 20; /* little-endian */
	for (unsigned i = 0; i < 4; i++)
		features[i] |= (uint8_t)(extra >> (8 * i));
	return b;
}

/* hello_bytes() written on fd; returns its length. */
static size_t write_hello(int fd, bool control, uint32_t extra)
{
	size_t hlen = 0;
	g_autofree uint8_t *b = hello_bytes(control, extra, &hlen);
	g_assert_cmpint(write(fd, b, hlen), ==, (ssize_t)hlen);
	return hlen;
}

/* Both HELLOs: data 0 on data_fd, control on ctl_fd. */
static size_t write_hellos(int data_fd, int ctl_fd, uint32_t extra)
{
	(void)write_hello(data_fd, false, extra);
	return write_hello(ctl_fd, true, extra);
}

/*
 * The receiving VMM of the attach tests: two connections, data 0 and control, each a pair whose
 * [0] the hand-made sender holds and [1] the receiver is given, and a receiver with live
 * settings (timeout_ms, the reconnect hook or none) that has not attached them yet.
 */
typedef struct attached_rx {
	int d[2], c[2];
	tm_receiver *r;
	GError *err;
} attached_rx;

static void arx_new(attached_rx *x, bool unix_pair, unsigned timeout_ms,
		    int (*hook)(void *, unsigned, unsigned))
{
	tm_receiver_config cfg = { .io_backend = recv_io, .timeout_ms = timeout_ms };
	tm_live_config lc = { .size = sizeof(lc), .reconnect = hook };

	conn_pair(unix_pair, x->d);
	conn_pair(unix_pair, x->c);
	x->r = NULL;
	x->err = NULL;
	g_assert_cmpint(tm_receiver_new(&cfg, &x->r, &x->err), ==, 0);
	g_assert_cmpint(tm_receiver_set_live(x->r, &lc, &x->err), ==, 0);
}

/* tm_receiver_attach() of both; its error logged. */
static int arx_attach(attached_rx *x)
{
	int fds[2] = { x->d[1], x->c[1] };
	int ret = tm_receiver_attach(x->r, fds, 2, &x->err);
	if (ret < 0)
		g_test_message("attach: %s", x->err->message);
	return ret;
}

/* Started on g: both connections' HELLO_ACKs (protocol 2) accept exactly features. */
static void arx_start_expect(attached_rx *x, guest *g, uint32_t features)
{
	tm_hello_ack ack;

	g_assert_cmpint(tm_receiver_start(x->r, g->layout, g->tags, &x->err), ==, 0);
	fake_expect_ack(x->d[0], TM_WIRE_VERSION_2, features, &ack);
	g_assert_cmphex(ack.features, ==, features);
	fake_expect_ack(x->c[0], TM_WIRE_VERSION_2, features, &ack);
	g_assert_cmphex(ack.features, ==, features);
}

static void arx_free(attached_rx *x)
{
	close(x->d[0]);
	close(x->c[0]);
	tm_receiver_free(x->r);
	g_clear_error(&x->err);
}

#define PRE_S 100 /* the hand-made sender's preamble, which the receiving VMM reads */
#define PRE_R 37  /* and the receiving VMM's, which the sender reads */

/*
 * LINK_CHECK on a VMM's own sockets (attach mode): a receiver attached on sockets that carried a
 * preamble each way keeps LINK_CHECK, and its LINK_A counts the session's bytes alone (what the
 * hand-made sender's kernel counts less the preamble and its SYN); on a unix socketpair it
 * keeps it too and answers "unknown" (never an error). A sender attached offers it.
 */
static void test_link_check_attach(void)
{
	const block_spec a[] = { { "pc.ram", 2 << 20, 4096 } };
	guest g;

	guest_init(&g, a, 1, false);
	for (int unix_pair = 0; unix_pair < 2; unix_pair++) {
		attached_rx x;
		char pre[PRE_S];
		arx_new(&x, unix_pair, 5000, NULL);
		int *d = x.d, *c = x.c; /* [0] the hand-made sender's, [1] the receiving VMM's */
		memset(pre, 'S', PRE_S);
		g_assert_cmpint(write(d[0], pre, PRE_S), ==, PRE_S);
		g_assert_cmpint(recv(d[1], pre, PRE_S, MSG_WAITALL), ==, PRE_S);
		memset(pre, 'R', PRE_R);
		g_assert_cmpint(write(d[1], pre, PRE_R), ==, PRE_R);
		g_assert_cmpint(recv(d[0], pre, PRE_R, MSG_WAITALL), ==, PRE_R);
		size_t hlen = write_hellos(d[0], c[0], 0);
		g_assert_cmpint(arx_attach(&x), ==, 0);
		arx_start_expect(&x, &g, TM_FEATURE_LINK_CHECK);
		uint8_t buf[TM_FRAME_HDR_LEN + 8 * TM_CTRL_MAX_FIELDS];
		const uint64_t q[TM_CTRL_MAX_FIELDS] = { 0, 0 };
		uint64_t v[TM_CTRL_MAX_FIELDS], acked, received, unread;
		/* Asked again until our kernel's acknowledgement of the HELLO_ACK (delayed) is in
		 * the receiver's count, 10 times a second (below the flood bound). */
		for (uint32_t seq = 1; seq <= 20; seq++) {
			size_t n = tm_ctrl_encode_v(buf, 2, TM_MSG_LINK_Q, seq, q);
			g_assert_cmpint(write(c[0], buf, n), ==, (ssize_t)n);
			read_until(c[0], TM_MSG_LINK_A, v);
			if (unix_pair || v[3] == TM_FRAME_HDR_LEN + TM_HELLO_ACK2_LEN)
				break;
			g_usleep(100 * 1000);
		}
		g_test_message("%s: received %" G_GUINT64_FORMAT ", acked %" G_GUINT64_FORMAT
			       ", unread %" G_GUINT64_FORMAT, unix_pair ? "unix" : "tcp",
			       (guint64)v[2], (guint64)v[3], (guint64)v[4]);
		g_assert_cmpuint(v[0], ==, 0);
		if (unix_pair) {
			g_assert_cmpuint(v[2], ==, TM_LINK_UNKNOWN);
			g_assert_cmpuint(v[3], ==, TM_LINK_UNKNOWN);
			g_assert_cmpuint(v[4], ==, TM_LINK_UNKNOWN);
		} else {
			/* The session's bytes: our HELLO one way, its HELLO_ACK the other. */
			g_assert_cmpint(tm_net_stream_bytes(d[0], &acked, &received, &unread), ==, 0);
			g_assert_cmpuint(v[2], ==, hlen);
			g_assert_cmpuint(v[2], ==, acked - 1 - PRE_S);
			g_assert_cmpuint(v[3], ==, TM_FRAME_HDR_LEN + TM_HELLO_ACK2_LEN);
			g_assert_cmpuint(v[3], ==, received - PRE_R);
			g_assert_cmpuint(v[4], ==, 0);
		}
		arx_free(&x);
	}
	guest_fini(&g);

	/* The sending side attached: its HELLO offers LINK_CHECK. */
	guest src;
	guest_init(&src, a, 1, false);
	guest_fill(&src);
	fake_rx x = { .fd = { -1, -1 } };
	unsigned port = 0;
	x.listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(x.listen_fd, >=, 0);
	g_autofree char *ps = g_strdup_printf("%u", port);
	GThread *t = g_thread_new("fake-rx", fake_rx_thread, &x);
	tm_sender_config cfg = { .io_backend = send_io, .channels = 1, .packet_size = 64u << 10,
				 .timeout_ms = 5000 };
	tm_live_config lc = { .size = sizeof(lc) };
	tm_sender *s = NULL;
	g_autoptr(GError) err = NULL;
	int fds[2];
	for (unsigned k = 0; k < 2; k++) {
		fds[k] = tm_net_connect("127.0.0.1", ps, 5000, -1, NULL);
		g_assert_cmpint(fds[k], >=, 0);
	}
	g_assert_cmpint(tm_sender_new(src.layout, src.tags, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_set_live(s, &lc, &err), ==, 0);
	g_assert_cmpint(tm_sender_attach(s, fds, 2, &err), ==, 0);
	g_thread_join(t);
	g_assert_true(x.offered & TM_FEATURE_LINK_CHECK);
	tm_sender_free(s);
	close(x.fd[0]);
	close(x.fd[1]);
	close(x.listen_fd);
	guest_fini(&src);
}

/*
 * A newer sender's offer this receiver does not know (bit 30) is declined, not refused: the
 * session opens with what both know, HELLO_ACK accepting LINK_CHECK alone on both connections.
 */
static void test_unknown_offer_declined(void)
{
	const block_spec a[] = { { "pc.ram", 2 << 20, 4096 } };
	guest g;
	attached_rx x;

	guest_init(&g, a, 1, false);
	arx_new(&x, true, 5000, NULL);
	(void)write_hellos(x.d[0], x.c[0], 1u << 30); /* bit 30: no feature of ours */
	g_assert_cmpint(arx_attach(&x), ==, 0);
	arx_start_expect(&x, &g, TM_FEATURE_LINK_CHECK);
	arx_free(&x);
	guest_fini(&g);
}

/* The receiving VMM's hook: no connection to hand over. */
static int idle_hook(void *opaque, unsigned connection, unsigned timeout_ms)
{
	(void)opaque;
	(void)connection;
	g_usleep(MIN(timeout_ms, 50u) * 1000);
	return -ETIMEDOUT;
}

typedef struct late_sender {
	int data_fd, ctl_fd;
	unsigned delay_ms;
} late_sender;

/* A sender that reaches its control connection delay_ms after data 0 (a slow path, many
 * connections before it). */
static gpointer late_sender_thread(gpointer data)
{
	late_sender *ls = data;
	(void)write_hello(ls->data_fd, false, TM_FEATURE_RESUME);
	g_usleep(ls->delay_ms * 1000);
	size_t hlen = 0;
	g_autofree uint8_t *b = hello_bytes(true, TM_FEATURE_RESUME, &hlen);
	/* The receiver may have given the socket up (the test says so): no SIGPIPE. */
	(void)!send(ls->ctl_fd, b, hlen, MSG_NOSIGNAL);
	return NULL;
}

/*
 * Attached sockets wait for their sender: a VMM connected them all before the sender began, and
 * the sender sets them up one at a time. The control connection's HELLO comes 2.3 s after data
 * 0's, past the handshake deadline (timeout_ms 2 s) counted from the attach, within the accept
 * deadline data 0's progress moved on (1.5 x timeout_ms with RESUME, 0.7 s to spare for a
 * sleeping thread's late wake-up): the attach completes.
 */
static void test_attach_late_connection(void)
{
	const block_spec a[] = { { "pc.ram", 2 << 20, 4096 } };
	guest g;
	attached_rx x;

	guest_init(&g, a, 1, false);
	arx_new(&x, true, 2000, idle_hook);
	late_sender ls = { .data_fd = x.d[0], .ctl_fd = x.c[0], .delay_ms = 2300 };
	int64_t t0 = g_get_monotonic_time();
	GThread *t = g_thread_new("late-sender", late_sender_thread, &ls);
	int ret = arx_attach(&x);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	g_thread_join(t);
	g_test_message("attach after %.2f s", secs);
	g_assert_cmpint(ret, ==, 0);
	g_assert_cmpfloat(secs, >=, 2.2);
	arx_start_expect(&x, &g, TM_FEATURE_LINK_CHECK | TM_FEATURE_RESUME);
	arx_free(&x);
	guest_fini(&g);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "v1-receiver-refuses", test_v1_receiver_refuses, false },
		{ "v1-receiver-refuses-after-resets", test_v1_receiver_refuses_after_resets, false },
		{ "hello-mix-refused", test_hello_mix_refused, true },
		{ "control-end-checked", test_control_end_checked, true },
		{ "control-keepalive-checked", test_control_keepalive_checked, true },
		{ "link-check-checked", test_link_check_checked, true },
		{ "link-answer-checked", test_link_answer_checked, true },
		{ "link-check-attach", test_link_check_attach, true },
		{ "unknown-offer-declined", test_unknown_offer_declined, true },
		{ "attach-late-connection", test_attach_late_connection, true },
		{ "answer-then-listener-gone", test_answer_then_listener_gone, true },
		{ "answer-then-listener-gone-no-resume", test_answer_then_listener_gone_no_resume,
		  true },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
