/* SPDX-License-Identifier: MIT */
/*
 * The TLS layer (transport/tls) over loopback TCP, with each inner backend: handshake and data
 * both ways, resumption, every refusal with the message that says which check failed, a
 * plaintext peer either way, a byte flipped in flight, a premature end, and the credentials
 * script. Credentials are made at run time with OpenSSL by common/testing/tls-creds.c, the code
 * behind `tagmig demo --tls` (and once with scripts/make-tls-creds.sh).
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <glib/gstdio.h>

#include "codec/codec.h"
#include "tagmig/error.h"
#include "common/testing/tcp-pair.h"
#include "common/testing/tls-creds.h"
#include "transport/tls/tls-internal.h"
#include "session/channel.h"
#include "transport/tls/tls.h"
#include "transport/transport.h"

#define TIMEOUT_MS 10000u

static char *tmp_root;
static const tm_transport_ops *inner; /* the backend of the test case at hand */

/* ---- credentials ---- */

/* A key and certificate valid from now + from to now + to days (common/testing/tls-creds.h). */
static tls_cred *cred(const char *cn, const tls_cred *issuer, const char *eku, const char *san,
		      int from, int to)
{
	g_autoptr(GError) err = NULL;
	tls_cred *c = NULL;
	int r = tls_cred_new(cn, issuer, eku, san, from, to, &c, &err);
	g_assert_no_error(err); /* first: it says why */
	g_assert_cmpint(r, ==, 0);
	return c;
}

static void write_cred(const char *dir, const char *base, const tls_cred *c)
{
	g_autoptr(GError) err = NULL;
	int r = tls_cred_write(c, dir, base, &err);
	g_assert_no_error(err);
	g_assert_cmpint(r, ==, 0);
}

/* A credentials directory: the CA's pair, and the server's and client's if given. */
static void make_dir(const char *name, const tls_cred *ca, const tls_cred *server,
		     const tls_cred *client)
{
	g_autofree char *dir = g_build_filename(tmp_root, name, NULL);
	g_assert_cmpint(g_mkdir_with_parents(dir, 0700), ==, 0);
	write_cred(dir, "ca", ca);
	if (server)
		write_cred(dir, "server", server);
	if (client)
		write_cred(dir, "client", client);
}

/*
 * good: CA A, server "localhost" (and 127.0.0.1), client. other: the same from CA B.
 * expired-server / expired-client: CA A with one expired certificate. foreign-client: trusts CA A
 * but holds a client certificate of CA B. no-client: only the CA.
 */
static void make_all_creds(void)
{
	const char *srv = "serverAuth", *cli = "clientAuth";
	const char *san = "DNS:localhost,IP:127.0.0.1";
	g_autoptr(tls_cred) ca_a = cred("tagmig test CA A", NULL, NULL, NULL, -1, 30);
	g_autoptr(tls_cred) ca_b = cred("tagmig test CA B", NULL, NULL, NULL, -1, 30);
	g_autoptr(tls_cred) srv_a = cred("localhost", ca_a, srv, san, -1, 30);
	g_autoptr(tls_cred) cli_a = cred("tagmig sender", ca_a, cli, NULL, -1, 30);
	g_autoptr(tls_cred) srv_b = cred("localhost", ca_b, srv, san, -1, 30);
	g_autoptr(tls_cred) cli_b = cred("tagmig sender", ca_b, cli, NULL, -1, 30);
	g_autoptr(tls_cred) srv_old = cred("localhost", ca_a, srv, san, -3, -1);
	g_autoptr(tls_cred) cli_old = cred("tagmig sender", ca_a, cli, NULL, -3, -1);
	g_autoptr(tls_cred) srv_as_cli = cred("localhost", ca_a, srv, san, -1, 30);

	make_dir("good", ca_a, srv_a, cli_a);
	make_dir("other", ca_b, srv_b, cli_b);
	make_dir("expired-server", ca_a, srv_old, cli_a);
	make_dir("expired-client", ca_a, srv_a, cli_old);
	make_dir("foreign-client", ca_a, srv_a, cli_b);
	make_dir("server-cert-as-client", ca_a, srv_a, srv_as_cli);
	make_dir("no-client", ca_a, srv_a, NULL);
	/* a key that does not belong to the certificate */
	const tls_cred mismatched = { .key = cli_a->key, .cert = srv_a->cert };
	make_dir("mismatched-key", ca_a, &mismatched, cli_a);
}

static tm_tls_ctx *ctx_new(tm_tls_role role, const char *set, const char *host)
{
	g_autofree char *dir = g_build_filename(tmp_root, set, NULL);
	g_autoptr(GError) err = NULL;
	tm_tls_ctx *ctx = NULL;
	g_assert_cmpint(tm_tls_ctx_new(role, dir, host, &ctx, &err), ==, 0);
	g_assert_no_error(err);
	return ctx;
}

/* ---- connections ---- */

/* A connected loopback TCP pair, or the test fails saying why. */
static void loopback_pair(int *ret_client, int *ret_server)
{
	g_autoptr(GError) err = NULL;
	int r = tcp_pair(ret_client, ret_server, &err);
	g_assert_no_error(err);
	g_assert_cmpint(r, ==, 0);
}

static void chan_open(tm_chan *ch, int fd, unsigned id)
{
	g_autoptr(GError) err = NULL;
	g_assert_cmpint(tm_chan_open(ch, fd, id, inner, &(tm_io_config){ .timeout_ms = TIMEOUT_MS, .depth = 1 }, &err), ==, 0);
	g_assert_no_error(err);
}

static void chan_pair(tm_chan *c, tm_chan *s, unsigned id)
{
	int cfd, sfd;
	loopback_pair(&cfd, &sfd);
	chan_open(c, cfd, id);
	chan_open(s, sfd, id);
}

/* One side's handshake in a thread. */
typedef struct side {
	tm_tls_ctx *ctx;
	tm_chan *ch;
	int r;
	GError *err;
	GThread *thread;
} side;

static gpointer start_fn(gpointer p)
{
	side *s = p;
	s->r = tm_tls_wrap(s->ctx, &s->ch->io, &s->err);
	return NULL;
}

static void side_start(side *s, tm_tls_ctx *ctx, tm_chan *ch)
{
	*s = (side){ .ctx = ctx, .ch = ch };
	s->thread = g_thread_new("tls-side", start_fn, s);
}

static void side_join(side *s)
{
	g_thread_join(s->thread);
	s->thread = NULL;
}

/*
 * Under tests/vm/ktls ($TAGMIG_EXPECT_KTLS): the kernel protects the sender's records wherever our
 * record layer does ("1"), or nowhere on a kernel that cannot take new keys ("norekey").
 */
static void check_ktls(tm_chan *c, tm_chan *s)
{
	const char *want = g_getenv("TAGMIG_EXPECT_KTLS");
	const tls_chan *tc = c->io->priv, *ts = s->io->priv;

	if (g_strcmp0(want, "1") == 0) {
		g_assert_cmpuint(tm_tls_ktls(c->io), ==,
				 tc->tx_engine->own_keys && tc->ctx->ktls ? TM_TLS_KTLS_TX : 0);
		g_assert_cmpuint(tm_tls_ktls(s->io), ==, ts->rx_engine->own_keys ? TM_TLS_KTLS_RX : 0);
	} else if (g_strcmp0(want, "norekey") == 0) {
		g_assert_cmpuint(tm_tls_ktls(c->io) | tm_tls_ktls(s->io), ==, 0);
	}
}

/* Handshakes on both ends of c/s; both must succeed. */
static void start_both(tm_tls_ctx *cctx, tm_chan *c, tm_tls_ctx *sctx, tm_chan *s)
{
	side srv;
	g_autoptr(GError) err = NULL;
	side_start(&srv, sctx, s);
	g_assert_cmpint(tm_tls_wrap(cctx, &c->io, &err), ==, 0);
	g_assert_no_error(err);
	side_join(&srv);
	g_assert_no_error(srv.err);
	g_assert_cmpint(srv.r, ==, 0);
	check_ktls(c, s);
}

/*
 * A refused handshake: runs both sides, closes the client's channel when it failed (so that the
 * server never waits for it), checks both errors. NULL expectations: that side must succeed or
 * fail with anything.
 */
static void expect_refusal(tm_tls_ctx *cctx, tm_tls_ctx *sctx, int ccode, const char *cmsg,
			   int scode, const char *smsg)
{
	tm_chan c, s;
	side srv;
	g_autoptr(GError) cerr = NULL;
	chan_pair(&c, &s, 3);
	side_start(&srv, sctx, &s);
	int r = tm_tls_wrap(cctx, &c.io, &cerr);
	tm_chan_close(&c);
	side_join(&srv);
	tm_chan_close(&s);
	if (cmsg) {
		g_test_message("client: %s", cerr ? cerr->message : "(no error)");
		g_assert_error(cerr, TM_ERROR, ccode);
		g_assert_cmpint(r, ==, -ccode);
		g_assert_nonnull(strstr(cerr->message, "channel 3: TLS handshake: "));
		g_assert_nonnull(strstr(cerr->message, cmsg));
	}
	if (smsg) {
		g_test_message("server: %s", srv.err ? srv.err->message : "(no error)");
		g_assert_error(srv.err, TM_ERROR, scode);
		g_assert_cmpint(srv.r, ==, -scode);
		g_assert_nonnull(strstr(srv.err->message, smsg));
	}
	g_clear_error(&srv.err);
}

/* ---- data ---- */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void fill_random(uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)rnd();
}

/* Cuts [buf, buf+len) into iovecs of random sizes (1 byte .. 70000), some long, some tiny. */
static unsigned cut(uint8_t *buf, size_t len, struct iovec *iov, unsigned max)
{
	unsigned n = 0;
	while (len > 0 && n < max - 1) {
		size_t k = rnd() % 4 == 0 ? 1 + rnd() % 64 : 1 + rnd() % 70000;
		k = MIN(k, len);
		iov[n++] = (struct iovec){ .iov_base = buf, .iov_len = k };
		buf += k;
		len -= k;
	}
	if (len > 0)
		iov[n++] = (struct iovec){ .iov_base = buf, .iov_len = len };
	return n;
}

typedef struct xfer {
	tm_chan *ch;
	uint8_t *buf;
	size_t len;
	int r;
} xfer;

static gpointer send_fn(gpointer p)
{
	xfer *x = p;
	struct iovec iov[512];
	unsigned n = cut(x->buf, x->len, iov, G_N_ELEMENTS(iov));
	x->r = tm_io_send(x->ch->io, iov, n, x->len);
	return NULL;
}

/* Sends len random bytes c -> s (sender in a thread), receives them in other pieces, compares. */
static void transfer(tm_chan *c, tm_chan *s, size_t len)
{
	g_autofree uint8_t *out = g_malloc(len);
	g_autofree uint8_t *in = g_malloc0(len);
	struct iovec iov[512];
	fill_random(out, len);
	xfer x = { c, out, len, 0 };
	GThread *th = g_thread_new("tls-send", send_fn, &x);
	unsigned n = cut(in, len, iov, G_N_ELEMENTS(iov));
	g_assert_cmpint(tm_io_recv(s->io, iov, n, len), ==, 0);
	g_thread_join(th);
	g_assert_cmpint(x.r, ==, 0);
	g_assert_true(memcmp(in, out, len) == 0);
}

typedef struct closer {
	tm_chan *ch;
	int r;
	GError *err;
} closer;

static gpointer shutdown_fn(gpointer p)
{
	closer *c = p;
	c->r = tm_tls_shutdown(c->ch->io, &c->err);
	return NULL;
}

/* Clean close on both sides at once. */
static void shutdown_both(tm_chan *c, tm_chan *s)
{
	closer cl = { .ch = s };
	g_autoptr(GError) err = NULL;
	GThread *th = g_thread_new("tls-close", shutdown_fn, &cl);
	g_assert_cmpint(tm_tls_shutdown(c->io, &err), ==, 0);
	g_assert_no_error(err);
	g_thread_join(th);
	g_assert_no_error(cl.err);
	g_assert_cmpint(cl.r, ==, 0);
}

/* ---- tests ---- */

static void test_roundtrip(void)
{
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", "localhost");
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	tm_chan c, s;
	chan_pair(&c, &s, 0);
	start_both(cctx, &c, sctx, &s);

	g_assert_true(tm_tls_active(c.io) && tm_tls_active(s.io));
	g_assert_cmpstr(tm_tls_cipher(c.io), ==, "TLS_AES_128_GCM_SHA256");
	g_assert_cmpstr(tm_tls_cipher(s.io), ==, "TLS_AES_128_GCM_SHA256");
	g_assert_false(tm_tls_resumed(c.io));
	for (int i = 0; i < 4; i++) {
		transfer(&c, &s, 1 + rnd() % (3u << 20));
		transfer(&s, &c, 1 + rnd() % 100000);
	}
	/* tiny messages, as control messages are */
	for (int i = 0; i < 50; i++)
		transfer(&c, &s, 1 + rnd() % 40);
	/* through the channel API: frames, wire byte counts */
	g_autoptr(GError) err = NULL;
	g_assert_cmpint(tm_chan_send_ctrl(&c, TM_MSG_SYNC, 7, 9, &err), ==, 0);
	uint64_t a = 0, b = 0;
	g_assert_cmpint(tm_chan_recv_ctrl(&s, TM_MSG_SYNC, &a, &b, &err), ==, 0);
	g_assert_no_error(err);
	g_assert_cmpuint(a, ==, 7);
	(void)b; /* SYNC carries one field */

	shutdown_both(&c, &s);
	tm_chan_close(&c);
	tm_chan_close(&s);

	tm_tls_stats st;
	tm_tls_ctx_get_stats(cctx, &st);
	g_assert_cmpuint(st.full_handshakes, ==, 1);
	g_assert_cmpuint(st.resumed_handshakes, ==, 0);
	g_assert_cmpuint(st.handshake_us, >, 0);
	tm_tls_ctx_get_stats(sctx, &st);
	g_assert_cmpuint(st.full_handshakes, ==, 1);
}

static void test_resumption(void)
{
	/* An IP address as the name: checked against the certificate's IP subjectAltName. */
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", "127.0.0.1");
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	tm_chan c[4], s[4];

	for (unsigned i = 0; i < 4; i++) {
		chan_pair(&c[i], &s[i], i);
		start_both(cctx, &c[i], sctx, &s[i]);
		g_assert_cmpint(tm_tls_resumed(c[i].io), ==, i > 0);
		g_assert_cmpint(tm_tls_resumed(s[i].io), ==, i > 0);
	}
	tm_tls_stats st;
	tm_tls_ctx_get_stats(cctx, &st);
	g_assert_cmpuint(st.full_handshakes, ==, 1);
	g_assert_cmpuint(st.resumed_handshakes, ==, 3);
	tm_tls_ctx_get_stats(sctx, &st);
	g_assert_cmpuint(st.full_handshakes, ==, 1);
	g_assert_cmpuint(st.resumed_handshakes, ==, 3);
	g_test_message("4 handshakes (1 full, 3 resumed): %" G_GUINT64_FORMAT " us",
		       st.handshake_us);

	for (unsigned i = 0; i < 4; i++) {
		transfer(&c[i], &s[i], 300000);
		transfer(&s[i], &c[i], 1000);
		shutdown_both(&c[i], &s[i]);
		tm_chan_close(&c[i]);
		tm_chan_close(&s[i]);
	}
}

/* ---- tagmig's record layer against OpenSSL's ---- */

static SSL *chan_ssl(tm_chan *ch)
{
	return ((tls_chan *)ch->io->priv)->ssl;
}

/*
 * Each layer of a channel's I/O handle counts what it moved itself, and the statistics say which
 * path that was: the byte mover below TLS always (the handshake at least), the TLS handle only
 * under kernel TLS, where its path is "ktls" and the TLS note says so.
 */
static void check_paths(tm_tls_ctx *ctx, const tm_chan *ch)
{
	const tm_io *io = ch->io;
	bool kernel = tm_tls_ktls(io) != 0;
	tm_stats st = { 0 };

	g_assert_nonnull(io->inner);
	g_assert_null(io->inner->inner);
	g_assert_cmpstr(io->inner->path, ==, inner->name);
	g_assert_cmpuint(io->inner->st.io_submissions, >, 0);
	g_assert_cmpstr(io->path, ==, kernel ? "ktls" : NULL);
	if (kernel)
		g_assert_cmpuint(io->st.io_submissions, >, 0);
	else
		g_assert_cmpuint(io->st.io_submissions, ==, 0);
	tm_chan_sum(ch, &st);
	g_assert_cmpuint(st.io_submissions, ==, io->st.io_submissions + io->inner->st.io_submissions);
	tm_tls_fill_stats(ctx, io, &st);
	g_test_message("%s", st.tls_note);
	if (kernel) {
		g_autofree char *rest = g_strdup_printf("path ktls), the rest by %s", inner->name);
		g_assert_nonnull(strstr(st.tls_note, rest));
	}
}

/*
 * A session with the record layers given for the sender-to-receiver direction on each end:
 * ours against OpenSSL's proves our records are the TLS 1.3 OpenSSL writes and reads, key
 * updates included (key_limit: records per key on the client, 0 for the default).
 */
static void records_case(bool own_client, bool own_server, uint64_t key_limit)
{
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", "localhost");
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	tm_chan c, s;

	tm_tls_ctx_set_record_layer(cctx, own_client);
	tm_tls_ctx_set_record_layer(sctx, own_server);
	if (key_limit)
		tm_tls_ctx_set_key_limit(cctx, key_limit);
	chan_pair(&c, &s, 0);
	start_both(cctx, &c, sctx, &s);
	g_assert_cmpint(((tls_chan *)c.io->priv)->tx_engine->own_keys, ==, own_client);
	g_assert_cmpint(((tls_chan *)s.io->priv)->rx_engine->own_keys, ==, own_server);
	/* Kernel TLS: the key is checked once per send call, not per record (the kernel cuts). */
	bool ktls = tm_tls_ktls(c.io) != 0;
	for (int i = 0; i < 3; i++) {
		transfer(&c, &s, 1 + rnd() % (2u << 20));
		transfer(&s, &c, 1 + rnd() % 50000);
	}
	for (int i = 0; i < 20; i++)
		transfer(&c, &s, 1 + rnd() % 40);
	shutdown_both(&c, &s);
	check_paths(cctx, &c);
	check_paths(sctx, &s);
	tm_chan_close(&c);
	tm_chan_close(&s);

	tm_tls_stats cst, sst;
	tm_tls_ctx_get_stats(cctx, &cst);
	tm_tls_ctx_get_stats(sctx, &sst);
	g_test_message("client %s, server %s records: %" G_GUINT64_FORMAT " key updates sent, %"
		       G_GUINT64_FORMAT " received", own_client ? "tagmig" : "OpenSSL",
		       own_server ? "tagmig" : "OpenSSL", cst.key_updates, sst.key_updates);
	if (key_limit && own_client)
		g_assert_cmpuint(cst.key_updates, >, ktls ? 3 : 10); /* > 6 MiB, <= 16 KiB records */
	if (own_client && own_server)
		g_assert_cmpuint(sst.key_updates, ==, cst.key_updates);
}

static void test_records_interop(void)
{
	records_case(true, false, 0);
	records_case(false, true, 0);
}

static void test_key_update(void)
{
	records_case(true, true, 7);
	records_case(true, false, 7); /* OpenSSL follows our key updates */
}

/*
 * OpenSSL as the sender: padded records (the content type is no longer the last byte, so our
 * receiver takes back what it decrypted in place) and a key update it requests (our receiver
 * updates its key, and OpenSSL's sending key of the other direction follows).
 */
static void test_openssl_sender(void)
{
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", "localhost");
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	tm_chan c, s;

	tm_tls_ctx_set_record_layer(cctx, false);
	chan_pair(&c, &s, 0);
	start_both(cctx, &c, sctx, &s);
	g_assert_true(((tls_chan *)s.io->priv)->rx_engine->own_keys);
	g_assert_cmpint(SSL_set_block_padding(chan_ssl(&c), 4096), ==, 1);
	for (int i = 0; i < 3; i++)
		transfer(&c, &s, 1 + rnd() % (1u << 20));
	for (int i = 0; i < 20; i++)
		transfer(&c, &s, 1 + rnd() % 40);
	g_assert_cmpint(SSL_key_update(chan_ssl(&c), SSL_KEY_UPDATE_REQUESTED), ==, 1);
	transfer(&c, &s, 100000);
	transfer(&s, &c, 100000);
	transfer(&c, &s, 100000);
	shutdown_both(&c, &s);
	tm_chan_close(&c);
	tm_chan_close(&s);
	tm_tls_stats st;
	tm_tls_ctx_get_stats(sctx, &st);
	g_assert_cmpuint(st.key_updates, ==, 1);
}

/*
 * Records no TLS stack writes, sent raw after the handshake: our receiver refuses each with
 * EBADMSG and says why, without waiting for more.
 */
static void test_hostile_records(void)
{
	static const struct {
		const char *what;
		uint8_t bytes[64];
		size_t len;
		const char *msg;
	} cases[] = {
		{ "length beyond the TLS limit", { 23, 3, 3, 0x41, 0x11 }, 5,
		  "malformed TLS record header 17 03 03, length 16657" },
		{ "shorter than a tag", { 23, 3, 3, 0, 16 }, 5, "length 16" },
		{ "handshake type outside", { 22, 3, 3, 0, 40 }, 5, "malformed TLS record header 16" },
		{ "legacy version", { 23, 3, 1, 0, 40 }, 5, "malformed TLS record header 17 03 01" },
		{ "not authentic", { 23, 3, 3, 0, 40, 1, 2, 3 }, 45,
		  "TLS record authentication failed (bad record MAC)" },
	};

	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", "localhost");
		g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
		tm_chan c, s;
		uint8_t buf[100];
		struct iovec v = { .iov_base = buf, .iov_len = sizeof(buf) };

		/* The raw bytes must reach the socket as they are: no kernel TLS on the sender. */
		tm_tls_ctx_set_ktls(cctx, false);
		chan_pair(&c, &s, 2);
		start_both(cctx, &c, sctx, &s);
		bool ktls = tm_tls_ktls(s.io) != 0;
		if (ktls)
			tm_chan_set_timeout(&s, 3000);
		g_assert_cmpint(write(c.fd, cases[i].bytes, cases[i].len), ==, (ssize_t)cases[i].len);
		int r = tm_io_recv(s.io, &v, 1, sizeof(buf));
		const char *why = tm_tls_last_error(s.io);
		g_test_message("%s: %d %s", cases[i].what, r, why);
		if (!ktls) {
			g_assert_cmpint(r, ==, -EBADMSG);
			g_assert_nonnull(strstr(why, cases[i].msg));
		} else if (i == G_N_ELEMENTS(cases) - 1) {
			/* The kernel opens the records: a whole record that is not authentic. */
			g_assert_cmpint(r, ==, -EBADMSG);
			g_assert_nonnull(strstr(why, "authentication failed"));
		} else {
			/*
			 * A malformed header: some kernels fail the socket, others wait for the
			 * record's body until the channel's timeout. Never data.
			 */
			g_assert_cmpint(r, <, 0);
		}
		tm_chan_close(&s);
		tm_chan_close(&c);
	}
}

static void test_wrong_ca(void)
{
	/* The client trusts another CA than the one that issued the server's certificate. */
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "other", "localhost");
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	expect_refusal(cctx, sctx, EKEYREJECTED,
		       "the receiver's certificate (/CN=localhost) is not issued by the CA in our "
		       "ca-cert.pem (wrong CA?)",
		       EKEYREJECTED, "the sender refused our certificate: not issued by the CA");

	/* The server gets a client certificate from another CA. */
	g_autoptr(tm_tls_ctx) cctx2 = ctx_new(TM_TLS_CLIENT, "foreign-client", "localhost");
	expect_refusal(cctx2, sctx, EKEYREJECTED,
		       "the receiver refused our certificate: not issued by the CA it trusts",
		       EKEYREJECTED,
		       "the sender's certificate (/CN=tagmig sender) is not issued by the CA in our "
		       "ca-cert.pem (wrong CA?)");
}

static void test_expired(void)
{
	g_autoptr(tm_tls_ctx) sctx_old = ctx_new(TM_TLS_SERVER, "expired-server", NULL);
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", "localhost");
	expect_refusal(cctx, sctx_old, EKEYEXPIRED,
		       "the receiver's certificate (/CN=localhost) has expired (notAfter ",
		       EKEYEXPIRED, "the sender refused our certificate as expired");

	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	g_autoptr(tm_tls_ctx) cctx_old = ctx_new(TM_TLS_CLIENT, "expired-client", "localhost");
	expect_refusal(cctx_old, sctx, EKEYEXPIRED,
		       "the receiver refused our certificate as expired", EKEYEXPIRED,
		       "the sender's certificate (/CN=tagmig sender) has expired (notAfter ");
}

static void test_name_mismatch(void)
{
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", "dst.example.org");
	expect_refusal(cctx, sctx, EKEYREJECTED,
		       "the receiver's certificate (/CN=localhost) does not match the name "
		       "'dst.example.org' (name mismatch",
		       EKEYREJECTED, "the sender refused our certificate");
	g_autoptr(tm_tls_ctx) cctx_ip = ctx_new(TM_TLS_CLIENT, "good", "127.0.0.2");
	expect_refusal(cctx_ip, sctx, EKEYREJECTED, "does not match the name '127.0.0.2'", 0,
		       NULL);
}

static void test_wrong_purpose(void)
{
	/* A server certificate (serverAuth) used as the client's: refused for its purpose. */
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "server-cert-as-client", "localhost");
	expect_refusal(cctx, sctx, EKEYREJECTED, "the receiver refused our certificate",
		       EKEYREJECTED, "is not meant for TLS client authentication");
}

typedef struct raw_client {
	int fd;
	bool connected;
	unsigned long read_err;
} raw_client;

/* A TLS 1.3 client without a certificate that verifies nothing, like `openssl s_client`. */
static gpointer raw_client_fn(gpointer p)
{
	raw_client *rc = p;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, rc->fd);
	rc->connected = SSL_connect(ssl) == 1;
	uint8_t b[8];
	size_t got;
	if (SSL_read_ex(ssl, b, sizeof(b), &got) != 1)
		rc->read_err = ERR_peek_error();
	ERR_clear_error();
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	return NULL;
}

static void test_no_client_cert(void)
{
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	g_autoptr(GError) err = NULL;
	tm_chan s;
	raw_client rc = { 0 };
	int sfd;
	loopback_pair(&rc.fd, &sfd);
	chan_open(&s, sfd, 1);
	GThread *th = g_thread_new("raw-client", raw_client_fn, &rc);
	int r = tm_tls_wrap(sctx, &s.io, &err);
	tm_chan_close(&s);
	g_thread_join(th);
	close(rc.fd);
	g_test_message("server: %s", err ? err->message : "(no error)");
	g_assert_cmpint(r, ==, -EACCES);
	g_assert_error(err, TM_ERROR, EACCES);
	g_assert_cmpstr(err->message, ==,
			"channel 1: TLS handshake: the sender presented no client certificate: "
			"mutual authentication requires client-cert.pem");
	/* The client learns it from the alert (TLS 1.3: after its side of the handshake). */
	g_assert_cmpint(ERR_GET_REASON(rc.read_err), ==, SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED);

	/* Our own client refuses to start without its certificate. */
	g_clear_error(&err);
	g_autofree char *dir = g_build_filename(tmp_root, "no-client", NULL);
	tm_tls_ctx *ctx = NULL;
	g_assert_cmpint(tm_tls_ctx_new(TM_TLS_CLIENT, dir, "localhost", &ctx, &err), ==, -ENOENT);
	g_assert_null(ctx);
	g_assert_nonnull(strstr(err->message, "no-client/client-cert.pem: No such file"));
}

typedef struct plain_peer {
	int fd;
	bool saw_tls;
} plain_peer;

/* A plaintext tagmig receiver: reads the first record, answers with an ERROR frame, closes. */
static gpointer plain_server_fn(gpointer p)
{
	plain_peer *pp = p;
	uint8_t hdr[5];
	g_assert_cmpint(recv(pp->fd, hdr, sizeof(hdr), MSG_WAITALL), ==, 5);
	pp->saw_tls = tm_tls_looks_like_tls(hdr, sizeof(hdr));
	size_t body = (size_t)hdr[3] << 8 | hdr[4];
	g_autofree uint8_t *skip = g_malloc(body + 1);
	g_assert_cmpint(recv(pp->fd, skip, body, MSG_WAITALL), ==, (ssize_t)body);
	uint8_t buf[TM_FRAME_HDR_LEN + TM_ERROR_FIXED_LEN + TM_MAX_ERROR_MESSAGE];
	size_t len = tm_error_encode(buf, 0, EBADMSG, "frame header: bad magic");
	g_assert_cmpint(send(pp->fd, buf, len, MSG_NOSIGNAL), ==, (ssize_t)len);
	shutdown(pp->fd, SHUT_WR);
	while (recv(pp->fd, buf, sizeof(buf), 0) > 0)
		;
	return NULL;
}

/* A plaintext tagmig sender: sends a HELLO frame header and waits for an answer. */
static gpointer plain_client_fn(gpointer p)
{
	plain_peer *pp = p;
	uint8_t buf[TM_FRAME_HDR_LEN + TM_HELLO_FIXED_LEN] = { 0 };
	tm_frame_encode(buf, TM_MSG_HELLO, TM_HELLO_FIXED_LEN, 0);
	g_assert_cmpint(send(pp->fd, buf, sizeof(buf), MSG_NOSIGNAL), ==, (ssize_t)sizeof(buf));
	uint8_t in[256];
	while (recv(pp->fd, in, sizeof(in), 0) > 0)
		;
	return NULL;
}

static void test_plaintext_peer(void)
{
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", "localhost");
	g_autoptr(GError) err = NULL;
	tm_chan ch;
	plain_peer pp = { 0 };
	int fd;

	/* plaintext sender -> TLS receiver */
	loopback_pair(&pp.fd, &fd);
	chan_open(&ch, fd, 2);
	GThread *th = g_thread_new("plain-client", plain_client_fn, &pp);
	int r = tm_tls_wrap(sctx, &ch.io, &err);
	tm_chan_close(&ch);
	g_thread_join(th);
	close(pp.fd);
	g_test_message("TLS receiver: %s", err ? err->message : "(no error)");
	g_assert_cmpint(r, ==, -EPROTO);
	g_assert_cmpstr(err->message, ==,
			"channel 2: TLS handshake: the sender is not speaking TLS: it sent a "
			"plaintext tagmig message (is TLS configured on both sides?)");

	/* TLS sender -> plaintext receiver */
	g_clear_error(&err);
	pp = (plain_peer){ 0 };
	loopback_pair(&fd, &pp.fd);
	chan_open(&ch, fd, 2);
	th = g_thread_new("plain-server", plain_server_fn, &pp);
	r = tm_tls_wrap(cctx, &ch.io, &err);
	tm_chan_close(&ch);
	g_thread_join(th);
	close(pp.fd);
	g_test_message("TLS sender: %s", err ? err->message : "(no error)");
	g_assert_true(pp.saw_tls); /* what a plaintext receiver can use to explain itself */
	g_assert_cmpint(r, ==, -EPROTO);
	g_assert_cmpstr(err->message, ==,
			"channel 2: TLS handshake: the receiver is not speaking TLS: it sent a "
			"plaintext tagmig message (is TLS configured on both sides?)");

	/* and a peer that sends something else entirely */
	uint8_t junk[5] = { 'G', 'E', 'T', ' ', '/' };
	g_assert_false(tm_tls_looks_like_tls(junk, sizeof(junk)));
}

/* ---- a proxy that flips one byte client -> server ---- */

typedef struct proxy {
	int a, b;     /* a: the client's peer, b: the server's peer */
	size_t flip;  /* offset in the client -> server stream */
	size_t moved; /* bytes forwarded client -> server */
} proxy;

static gpointer proxy_fn(gpointer p)
{
	proxy *px = p;
	uint8_t buf[65536];
	bool a_open = true, b_open = true;

	while (a_open || b_open) {
		struct pollfd f[2] = { { .fd = a_open ? px->a : -1, .events = POLLIN },
				       { .fd = b_open ? px->b : -1, .events = POLLIN } };
		if (poll(f, 2, 20000) <= 0)
			break;
		for (int i = 0; i < 2; i++) {
			if (!(f[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			int from = i == 0 ? px->a : px->b, to = i == 0 ? px->b : px->a;
			ssize_t r = recv(from, buf, sizeof(buf), 0);
			if (r <= 0) {
				shutdown(to, SHUT_WR);
				*(i == 0 ? &a_open : &b_open) = false;
				continue;
			}
			if (i == 0) {
				if (px->flip >= px->moved && px->flip < px->moved + (size_t)r)
					buf[px->flip - px->moved] ^= 0x20;
				px->moved += (size_t)r;
			}
			if (send(to, buf, (size_t)r, MSG_NOSIGNAL) != r)
				goto out;
		}
	}
out:
	close(px->a);
	close(px->b);
	return NULL;
}

static void test_tampered(void)
{
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", "localhost");
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	tm_chan c, s;
	int cfd, sfd;
	proxy px = { .flip = 200000 };

	loopback_pair(&cfd, &px.a);
	loopback_pair(&px.b, &sfd);
	GThread *pth = g_thread_new("proxy", proxy_fn, &px);
	chan_open(&c, cfd, 5);
	chan_open(&s, sfd, 5);
	start_both(cctx, &c, sctx, &s);

	const size_t len = 1 << 20;
	g_autofree uint8_t *out = g_malloc(len);
	g_autofree uint8_t *in = g_malloc0(len);
	fill_random(out, len);
	xfer x = { &c, out, len, 0 };
	GThread *th = g_thread_new("tls-send", send_fn, &x);
	struct iovec v = { .iov_base = in, .iov_len = len };
	int r = tm_io_recv(s.io, &v, 1, len);
	g_test_message("receiver: %s", tm_tls_last_error(s.io));
	g_assert_cmpint(r, ==, -EBADMSG);
	g_assert_cmpstr(tm_tls_last_error(s.io), ==,
			"TLS record authentication failed (bad record MAC): the data was altered "
			"in transit");
	/*
	 * Everything before the damaged record arrived intact; the receive failed at it (its
	 * unverified bytes may be in the buffer: the session never marks such pages present).
	 */
	g_assert_true(memcmp(in, out, 100000) == 0);
	g_assert_false(memcmp(in + 200000 - 16384, out + 200000 - 16384, 32768) == 0);
	/* A failed session stays failed; a clean close is refused. */
	g_assert_cmpint(tm_io_recv(s.io, &v, 1, 1), ==, -EPIPE);
	g_autoptr(GError) err = NULL;
	g_assert_cmpint(tm_tls_shutdown(s.io, &err), ==, -EPIPE);
	g_assert_nonnull(strstr(err->message, "channel 5: TLS close: the session already failed"));
	tm_chan_close(&s);
	g_thread_join(th); /* the sender fails or finishes, whichever comes first */
	tm_chan_close(&c);
	g_thread_join(pth);
}

static void test_premature_end(void)
{
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", "localhost");
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	uint8_t buf[4096];
	struct iovec v = { .iov_base = buf, .iov_len = sizeof(buf) };
	tm_chan c, s;

	/* The connection ends in the middle of the data, without close_notify. */
	chan_pair(&c, &s, 4);
	start_both(cctx, &c, sctx, &s);
	fill_random(buf, sizeof(buf));
	g_assert_cmpint(tm_io_send(c.io, &v, 1, 1000), ==, 0);
	shutdown(c.fd, SHUT_RDWR);
	tm_chan_close(&c);
	g_assert_cmpint(tm_io_recv(s.io, &v, 1, 2000), ==, -ECONNRESET);
	g_assert_cmpstr(tm_tls_last_error(s.io), ==,
			"premature end: the sender closed the connection without a TLS "
			"close_notify (the stream may have been cut)");
	tm_chan_close(&s);

	/* All data arrived, but the end comes without close_notify: the clean close says so. */
	chan_pair(&c, &s, 4);
	start_both(cctx, &c, sctx, &s);
	g_assert_cmpint(tm_io_send(c.io, &v, 1, 1000), ==, 0);
	shutdown(c.fd, SHUT_RDWR);
	tm_chan_close(&c);
	g_assert_cmpint(tm_io_recv(s.io, &v, 1, 1000), ==, 0);
	g_autoptr(GError) err = NULL;
	g_assert_cmpint(tm_tls_shutdown(s.io, &err), ==, -ECONNRESET);
	g_assert_cmpstr(err->message, ==,
			"channel 4: TLS close: premature end: the sender closed the connection "
			"without a TLS close_notify (the stream may have been cut)");
	tm_chan_close(&s);

	/* A clean close where data was still expected: an error too, with its own words. */
	chan_pair(&c, &s, 4);
	start_both(cctx, &c, sctx, &s);
	g_assert_cmpint(tm_io_send(c.io, &v, 1, 10), ==, 0);
	tm_chan_close(&c); /* sends close_notify */
	g_assert_cmpint(tm_io_recv(s.io, &v, 1, 20), ==, -ECONNRESET);
	g_assert_cmpstr(tm_tls_last_error(s.io), ==,
			"the sender ended the TLS session (close_notify) while more data was "
			"expected");
	tm_chan_close(&s);

	/* Data where the peer's close_notify should be. */
	chan_pair(&c, &s, 4);
	start_both(cctx, &c, sctx, &s);
	g_assert_cmpint(tm_io_send(c.io, &v, 1, 10), ==, 0);
	g_clear_error(&err);
	g_assert_cmpint(tm_tls_shutdown(s.io, &err), ==, -EPROTO);
	g_assert_nonnull(strstr(err->message, "sent data after the end of the session"));
	tm_chan_close(&s);
	tm_chan_close(&c);
}

static void test_setup_errors(void)
{
	g_autoptr(GError) err = NULL;
	tm_tls_ctx *ctx = NULL;
	g_autofree char *good = g_build_filename(tmp_root, "good", NULL);
	g_autofree char *bad = g_build_filename(tmp_root, "mismatched-key", NULL);
	g_autofree char *none = g_build_filename(tmp_root, "does-not-exist", NULL);

	g_assert_cmpint(tm_tls_ctx_new(TM_TLS_CLIENT, good, NULL, &ctx, &err), ==, -EINVAL);
	g_assert_nonnull(strstr(err->message, "name to verify the receiver's certificate"));
	g_clear_error(&err);
	g_assert_cmpint(tm_tls_ctx_new(TM_TLS_SERVER, none, NULL, &ctx, &err), ==, -ENOENT);
	g_assert_nonnull(strstr(err->message, "does-not-exist/ca-cert.pem: No such file"));
	g_clear_error(&err);
	g_assert_cmpint(tm_tls_ctx_new(TM_TLS_SERVER, bad, NULL, &ctx, &err), ==, -EKEYREJECTED);
	g_assert_nonnull(strstr(err->message, "server-key.pem does not belong to the certificate"));
	g_assert_null(ctx);
	g_clear_error(&err);

	/* The wrapper cannot be opened directly, and starts only once. */
	int a, b;
	tm_chan ch;
	loopback_pair(&a, &b);
	close(b);
	g_assert_cmpint(tm_chan_open(&ch, a, 0, &tm_transport_tls, &(tm_io_config){ .timeout_ms = TIMEOUT_MS, .depth = 1 }, &err), ==,
			-EINVAL);
	g_assert_nonnull(strstr(err->message, "tm_tls_wrap"));
	tm_tls_ctx_free(NULL);
}

static void test_ktls_probe(void)
{
	g_autoptr(GError) err = NULL;
	int r = tm_tls_ktls_probe(&err);
	g_assert_true(r == 0 || r == -EOPNOTSUPP);
	if (r < 0) {
		g_assert_error(err, TM_ERROR, EOPNOTSUPP);
		g_assert_nonnull(strstr(err->message, "kernel TLS offload unavailable"));
	}
	g_autoptr(tm_tls_ctx) ctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	const char *why = tm_tls_ctx_ktls_reason(ctx), *want = g_getenv("TAGMIG_EXPECT_KTLS");
	g_test_message("%s", why);
	if (g_strcmp0(want, "1") == 0) {
		/* tests/vm/ktls: a kernel with the tls module and key updates */
		g_assert_cmpint(r, ==, 0);
		g_assert_nonnull(strstr(why, "kernel TLS offload available"));
	} else if (g_strcmp0(want, "norekey") == 0) {
		/* tests/vm/ktls on Linux 6.1: kernel TLS is there but cannot take new keys */
		g_assert_cmpint(r, ==, 0);
		g_assert_nonnull(strstr(why, "cannot change kernel TLS keys"));
		g_assert_nonnull(strstr(why, "user space"));
	} else if (r < 0) {
		g_assert_nonnull(strstr(why, "user space"));
	}
}

/* scripts/make-tls-creds.sh makes credentials our contexts accept and verify. */
static void test_script(void)
{
	g_autofree char *script = g_test_build_filename(G_TEST_DIST, "..", "scripts",
							"make-tls-creds.sh", NULL);
	g_autofree char *openssl = g_find_program_in_path("openssl");
	if (!openssl) {
		g_test_skip("no openssl command (Debian package openssl) for make-tls-creds.sh");
		return;
	}
	g_autofree char *set = g_strdup_printf("script-%s", inner->name);
	g_autofree char *dir = g_build_filename(tmp_root, set, NULL);
	g_autofree char *out = NULL, *errs = NULL;
	g_autoptr(GError) err = NULL;
	int status = 0;
	const char *argv[] = { "/bin/sh", script, dir, "localhost", NULL };
	g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out,
				   &errs, &status, &err));
	if (status != 0)
		g_test_message("make-tls-creds.sh: %s%s", out, errs);
	g_assert_true(g_spawn_check_wait_status(status, NULL));

	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, set, "localhost");
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, set, NULL);
	tm_chan c, s;
	chan_pair(&c, &s, 0);
	start_both(cctx, &c, sctx, &s);
	transfer(&c, &s, 100000);
	shutdown_both(&c, &s);
	tm_chan_close(&c);
	tm_chan_close(&s);

	/* and the name is checked against them too */
	g_autoptr(tm_tls_ctx) cctx2 = ctx_new(TM_TLS_CLIENT, set, "otherhost");
	expect_refusal(cctx2, sctx, EKEYREJECTED, "does not match the name 'otherhost'", 0, NULL);
}

/* Runs a test with the inner backend named by data, or skips with the reason. */
typedef struct backend_case {
	const tm_transport_ops *ops;
	void (*fn)(void);
} backend_case;

static void run_case(gconstpointer data)
{
	const backend_case *bc = data;
	g_autoptr(GError) err = NULL;
	if (bc->ops->probe && bc->ops->probe(&err) < 0) {
		g_autofree char *why = g_strdup_printf("%s backend unavailable: %s", bc->ops->name,
						       err->message);
		g_test_skip(why);
		return;
	}
	inner = bc->ops;
	bc->fn();
}

static gboolean rm_rf(const char *path)
{
	g_autoptr(GDir) d = g_dir_open(path, 0, NULL);
	const char *name;
	while (d && (name = g_dir_read_name(d))) {
		g_autofree char *p = g_build_filename(path, name, NULL);
		if (g_file_test(p, G_FILE_TEST_IS_DIR))
			rm_rf(p);
		else
			g_unlink(p);
	}
	return g_rmdir(path) == 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *path;
		void (*fn)(void);
	} tests[] = {
		{ "roundtrip", test_roundtrip },
		{ "resumption", test_resumption },
		{ "records-interop", test_records_interop },
		{ "key-update", test_key_update },
		{ "openssl-sender", test_openssl_sender },
		{ "hostile-records", test_hostile_records },
		{ "wrong-ca", test_wrong_ca },
		{ "expired", test_expired },
		{ "name-mismatch", test_name_mismatch },
		{ "wrong-purpose", test_wrong_purpose },
		{ "no-client-cert", test_no_client_cert },
		{ "plaintext-peer", test_plaintext_peer },
		{ "tampered", test_tampered },
		{ "premature-end", test_premature_end },
		{ "setup-errors", test_setup_errors },
		{ "ktls-probe", test_ktls_probe },
		{ "script", test_script },
	};
	static const tm_transport_ops *const backends[] = { &tm_transport_socket,
							    &tm_transport_io_uring };
	static backend_case cases[G_N_ELEMENTS(backends) * G_N_ELEMENTS(tests)];

	g_test_init(&argc, &argv, NULL);
	tmp_root = g_dir_make_tmp("tagmig-tls-XXXXXX", NULL);
	g_assert_nonnull(tmp_root);
	make_all_creds();
	for (size_t i = 0; i < G_N_ELEMENTS(backends); i++) {
		for (size_t j = 0; j < G_N_ELEMENTS(tests); j++) {
			backend_case *bc = &cases[i * G_N_ELEMENTS(tests) + j];
			*bc = (backend_case){ backends[i], tests[j].fn };
			g_autofree char *path = g_strdup_printf("/tls/over-%s/%s", backends[i]->name,
								tests[j].path);
			g_test_add_data_func(path, bc, run_case);
		}
	}
	int r = g_test_run();
	rm_rf(tmp_root);
	g_free(tmp_root);
	return r;
}
