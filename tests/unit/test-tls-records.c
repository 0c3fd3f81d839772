/* SPDX-License-Identifier: MIT */
/*
 * The TLS layer's records after the handshake (transport/tls: records.c, ktls.c, the OpenSSL
 * engine), over loopback TCP with each inner backend: tagmig's record layer against OpenSSL's
 * both ways, key updates either side starts, OpenSSL's padded records, and which I/O path moved
 * the bytes as each layer's statistics tell it; then what a receiver refuses: records no TLS stack
 * writes, a byte flipped in flight, and a connection that ends without close_notify or with data
 * where close_notify belongs; and the fatal alert each refusal sends (tls-alert.c), as OpenSSL
 * reads it on the other end, both ways. Handshakes and credentials are test-tls.c's; both share
 * tls-fixture.c.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "codec/codec.h"
#include "codec/delta-wire.h"
#include "tls-fixture.h"
#include "transport/tls/tls-internal.h"

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
 * The receiver asks for a key update of the sender's direction (KeyUpdate with update_requested,
 * RFC 8446 4.6.3): the sender's next record is its KeyUpdate, and what follows goes under the
 * next key. The receiver's records are OpenSSL's (it sends the request); its receiving direction
 * is OpenSSL's (interop: OpenSSL must follow our KeyUpdate, or the data after it would fail) or
 * ours.
 */
static void requested_case(bool own_server)
{
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", "localhost");
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	tm_chan c, s;

	tm_tls_ctx_set_record_layer(sctx, own_server);
	chan_pair(&c, &s, 0);
	start_both(cctx, &c, sctx, &s);
	const tls_chan *tc = c.io->priv;
	g_assert_true(tc->tx_engine->own_keys);
	transfer(&c, &s, 100000);
	g_assert_cmpint(SSL_key_update(chan_ssl(&s), SSL_KEY_UPDATE_REQUESTED), ==, 1);
	transfer(&s, &c, 1000); /* the request, then data: the sender reads both */
	g_assert_cmpuint(tc->tx.generation, ==, 0);
	transfer(&c, &s, 100000); /* the answer first, then data under the next key */
	g_assert_cmpuint(tc->tx.generation, ==, 1);
	transfer(&s, &c, 1000);
	transfer(&c, &s, 1000);
	g_assert_cmpuint(tc->tx.generation, ==, 1); /* answered once */
	shutdown_both(&c, &s);
	tm_chan_close(&c);
	tm_chan_close(&s);

	tm_tls_stats cst, sst;
	tm_tls_ctx_get_stats(cctx, &cst);
	tm_tls_ctx_get_stats(sctx, &sst);
	g_assert_cmpuint(cst.key_updates, ==, 1);
	if (own_server)
		g_assert_cmpuint(sst.key_updates, ==, 1);
}

static void test_key_update_requested(void)
{
	requested_case(false);
	requested_case(true);
}

/* ---- what a receiver refuses, and the alert it sends ---- */

/* The last alert OpenSSL read on an SSL (its info callback): level << 8 | description. */
static int alert_read = -1;

static void alert_cb(const SSL *ssl, int where, int ret)
{
	if ((where & SSL_CB_READ_ALERT) == SSL_CB_READ_ALERT)
		alert_read = ret;
}

/*
 * ch reads and fails at the peer's fatal alert desc: OpenSSL reads it as that alert (decrypted
 * with the keys and at the sequence number it expects, or there would be no alert but a record
 * that fails), and the error names it. code: the -errno expected.
 */
static void expect_alert_openssl(tm_chan *ch, int desc, int code)
{
	uint8_t b[64];
	struct iovec v = { .iov_base = b, .iov_len = sizeof(b) };

	alert_read = -1;
	SSL_set_info_callback(chan_ssl(ch), alert_cb);
	int r = tm_io_recv(ch->io, &v, 1, sizeof(b));
	const char *why = tm_tls_last_error(ch->io);
	g_test_message("the peer: %d %s", r, why);
	g_assert_cmpint(alert_read, ==, SSL3_AL_FATAL << 8 | desc);
	g_assert_cmpint(r, ==, code);
	g_autofree char *name = g_strdup_printf("(alert: %s)", SSL_alert_desc_string_long(desc));
	g_assert_nonnull(strstr(why, name));
}

/* The -errno tagmig gives a received fatal alert (tls-failure.c). */
static int alert_code(int desc)
{
	return desc == SSL_AD_BAD_RECORD_MAC ? -EBADMSG : -EPROTO;
}

/*
 * Records no TLS stack writes, sent raw after the handshake: our receiver refuses each with
 * EBADMSG and says why, without waiting for more, and tells the sender with the alert RFC 8446
 * names for it, sealed in the direction OpenSSL protects (tls-alert.c), which the sender's
 * OpenSSL reads as that alert. Under kernel TLS only what the kernel refuses for certain (a
 * record that is not authentic) is checked.
 */
static void test_hostile_records(void)
{
	static const struct {
		const char *what;
		uint8_t bytes[64];
		size_t len;
		const char *msg;
		int alert;
	} cases[] = {
		{ "length beyond the TLS limit", { 23, 3, 3, 0x41, 0x11 }, 5,
		  "malformed TLS record header 17 03 03, length 16657", SSL_AD_RECORD_OVERFLOW },
		{ "shorter than a tag", { 23, 3, 3, 0, 15 }, 5, "length 15", SSL_AD_BAD_RECORD_MAC },
		{ "content and padding beyond 2^14 + 1", { 23, 3, 3, 0x40, 0x12 }, 5,
		  "a record with 16386 bytes of content, type and padding, more than TLS allows "
		  "(record overflow)", SSL_AD_RECORD_OVERFLOW },
		{ "handshake type outside", { 22, 3, 3, 0, 40 }, 5, "malformed TLS record header 16",
		  SSL_AD_UNEXPECTED_MESSAGE },
		{ "alert type outside", { 21, 3, 3, 0, 2 }, 5, "malformed TLS record header 15",
		  SSL_AD_UNEXPECTED_MESSAGE },
		{ "legacy version", { 23, 3, 1, 0, 40 }, 5, "malformed TLS record header 17 03 01",
		  SSL_AD_DECODE_ERROR },
		{ "not authentic", { 23, 3, 3, 0, 40, 1, 2, 3 }, 45,
		  "TLS record authentication failed (bad record MAC)", SSL_AD_BAD_RECORD_MAC },
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
			expect_alert_openssl(&c, cases[i].alert, alert_code(cases[i].alert));
		} else if (i == G_N_ELEMENTS(cases) - 1) {
			/* The kernel opens the records: a whole record that is not authentic. */
			g_assert_cmpint(r, ==, -EBADMSG);
			g_assert_nonnull(strstr(why, "authentication failed"));
			expect_alert_openssl(&c, SSL_AD_BAD_RECORD_MAC, -EBADMSG);
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

/*
 * A resumed session (the second channel of a context pair) writes another handshake flight, but
 * OpenSSL's direction is followed from the same point on: the alert still decrypts at the sender.
 */
static void test_alert_resumed(void)
{
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", "localhost");
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	static const uint8_t bad[45] = { 23, 3, 3, 0, 40, 1, 2, 3 };
	uint8_t buf[100];
	struct iovec v = { .iov_base = buf, .iov_len = sizeof(buf) };
	tm_chan c, s;

	tm_tls_ctx_set_ktls(cctx, false); /* the raw record must reach the socket as it is */
	chan_pair(&c, &s, 0);
	start_both(cctx, &c, sctx, &s);
	transfer(&c, &s, 1000);
	shutdown_both(&c, &s);
	tm_chan_close(&c);
	tm_chan_close(&s);

	chan_pair(&c, &s, 1);
	start_both(cctx, &c, sctx, &s);
	g_assert_true(tm_tls_resumed(c.io));
	transfer(&s, &c, 5000);
	g_assert_cmpint(write(c.fd, bad, sizeof(bad)), ==, (ssize_t)sizeof(bad));
	g_assert_cmpint(tm_io_recv(s.io, &v, 1, sizeof(buf)), ==, -EBADMSG);
	expect_alert_openssl(&c, SSL_AD_BAD_RECORD_MAC, -EBADMSG);
	tm_chan_close(&s);
	tm_chan_close(&c);
}

/*
 * Records sealed with the sender's keys whose content no TLS 1.3 stack sends after the handshake:
 * our receiver refuses each and the sender's OpenSSL reads the alert RFC 8446 names. OpenSSL's
 * sending direction on the receiver has moved to its next key first (a KeyUpdate of its own):
 * the alert is sealed with that key. Under kernel TLS the kernel opens the records and hands the
 * content over; a record without content type it refuses itself (bad_record_mac).
 */
static void test_hostile_contents(void)
{
	static const struct {
		const char *what;
		uint8_t type;
		uint8_t content[8];
		size_t len;
		const char *msg;
		int alert;
	} cases[] = {
		{ "content type 20", 20, { 1 }, 1, "unexpected record content type 20",
		  SSL_AD_UNEXPECTED_MESSAGE },
		{ "no content type", 0, { 0, 0 }, 2, "a record without content type",
		  SSL_AD_UNEXPECTED_MESSAGE },
		{ "NewSessionTicket", 22, { 4, 0, 0, 0 }, 4,
		  "unexpected TLS handshake message (type 4)", SSL_AD_UNEXPECTED_MESSAGE },
		{ "KeyUpdate of length 2", 22, { 24, 0, 0, 2, 0, 0 }, 6,
		  "malformed TLS KeyUpdate (length 2)", SSL_AD_DECODE_ERROR },
		{ "KeyUpdate and more", 22, { 24, 0, 0, 1, 0, 24 }, 6,
		  "KeyUpdate that does not end its record", SSL_AD_UNEXPECTED_MESSAGE },
		{ "request_update 2", 22, { 24, 0, 0, 1, 2 }, 5, "request_update 2",
		  SSL_AD_ILLEGAL_PARAMETER },
		{ "alert of 3 bytes", 21, { 2, 20, 0 }, 3, "malformed TLS alert (3 bytes)",
		  SSL_AD_DECODE_ERROR },
	};

	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", "localhost");
		g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
		tm_chan c, s;
		uint8_t buf[100], rec[64];
		struct iovec v = { .iov_base = buf, .iov_len = sizeof(buf) };
		size_t len = cases[i].len;

		/* The test seals with the sender's keys in user space: no kernel TLS there. */
		tm_tls_ctx_set_ktls(cctx, false);
		chan_pair(&c, &s, 3);
		start_both(cctx, &c, sctx, &s);
		bool ktls = tm_tls_ktls(s.io) != 0;
		tls_chan *tc = c.io->priv;
		g_assert_true(tc->tx_engine == &tm_tls_engine_own);
		transfer(&c, &s, 100000);
		g_assert_cmpint(SSL_key_update(chan_ssl(&s), SSL_KEY_UPDATE_NOT_REQUESTED), ==, 1);
		transfer(&s, &c, 1000);
		transfer(&s, &c, 1000);
		g_assert_cmpuint(((tls_chan *)s.io->priv)->ossl_tx.generation, ==, 1);

		g_assert_cmpint(tm_tls_seal_begin(&tc->tx, rec, len), ==, 0);
		g_assert_cmpint(tm_tls_crypt(&tc->tx, rec + TM_TLS_HDR, cases[i].content, len), ==, 0);
		g_assert_cmpint(tm_tls_seal_end(&tc->tx, cases[i].type, rec + TM_TLS_HDR + len), ==, 0);
		len += TM_TLS_OVERHEAD;
		g_assert_cmpint(write(c.fd, rec, len), ==, (ssize_t)len);
		int r = tm_io_recv(s.io, &v, 1, sizeof(buf));
		const char *why = tm_tls_last_error(s.io);
		g_test_message("%s: %d %s", cases[i].what, r, why);
		g_assert_cmpint(r, <, 0);
		if (ktls && cases[i].type == 0) {
			expect_alert_openssl(&c, SSL_AD_BAD_RECORD_MAC, -EBADMSG);
		} else {
			g_assert_nonnull(strstr(why, cases[i].msg));
			expect_alert_openssl(&c, cases[i].alert, alert_code(cases[i].alert));
		}
		tm_chan_close(&s);
		tm_chan_close(&c);
	}
}

/*
 * The other way: records the sender's OpenSSL refuses, written raw by the receiver. OpenSSL's
 * alert may not go out with its own keys in the direction tagmig's records own (its sequence
 * number is stale there): the sender sends it with its keys and sequence number, or through
 * kernel TLS, and the receiver reads it as that alert, with our records or with OpenSSL's.
 */
static void test_sender_alerts(void)
{
	static const struct {
		const char *what;
		uint8_t bytes[64];
		size_t len;
		int alert;
	} cases[] = {
		{ "not authentic", { 23, 3, 3, 0, 40, 1, 2, 3 }, 45, SSL_AD_BAD_RECORD_MAC },
		{ "length beyond the TLS limit", { 23, 3, 3, 0x41, 0x11 }, 5, SSL_AD_RECORD_OVERFLOW },
		{ "handshake type outside", { 22, 3, 3, 0, 40 }, 5, SSL_AD_UNEXPECTED_MESSAGE },
	};

	for (int own_server = 0; own_server < 2; own_server++) {
		for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
			g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", "localhost");
			g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
			tm_chan c, s;
			uint8_t buf[100];
			struct iovec v = { .iov_base = buf, .iov_len = sizeof(buf) };

			tm_tls_ctx_set_record_layer(sctx, own_server);
			chan_pair(&c, &s, 6);
			start_both(cctx, &c, sctx, &s);
			g_assert_true(((tls_chan *)c.io->priv)->tx_engine->own_keys);
			transfer(&c, &s, 100000); /* our sequence number is well past OpenSSL's */
			g_assert_cmpint(write(s.fd, cases[i].bytes, cases[i].len), ==,
					(ssize_t)cases[i].len);
			int r = tm_io_recv(c.io, &v, 1, sizeof(buf));
			g_test_message("%s: the sender: %d %s", cases[i].what, r,
				       tm_tls_last_error(c.io));
			g_assert_cmpint(r, <, 0);
			if (!own_server) {
				expect_alert_openssl(&s, cases[i].alert, alert_code(cases[i].alert));
			} else {
				r = tm_io_recv(s.io, &v, 1, sizeof(buf));
				const char *why = tm_tls_last_error(s.io);
				g_autofree char *name = g_strdup_printf(
					"the sender aborted the TLS session (alert: %s)",
					SSL_alert_desc_string_long(cases[i].alert));
				g_test_message("the receiver: %d %s", r, why);
				g_assert_cmpint(r, ==, alert_code(cases[i].alert));
				if (cases[i].alert == SSL_AD_BAD_RECORD_MAC)
					g_assert_nonnull(strstr(why, "could not authenticate our TLS "
								     "records"));
				else
					g_assert_cmpstr(why, ==, name);
			}
			tm_chan_close(&s);
			tm_chan_close(&c);
		}
	}
}

/*
 * As in a session: a receiver whose records failed sends its alert and closes the connection
 * while the sender is still sending. The sender's send fails; it reads the alert that is waiting
 * and names it instead of a premature end. With our records and OpenSSL's on the sender.
 */
static void alert_ends_send_case(bool own_client)
{
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", "localhost");
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	static const uint8_t bad[45] = { 23, 3, 3, 0, 40, 1, 2, 3 };
	uint8_t buf[100];
	struct iovec v = { .iov_base = buf, .iov_len = sizeof(buf) };
	tm_chan c, s;

	tm_tls_ctx_set_record_layer(cctx, own_client);
	tm_tls_ctx_set_ktls(cctx, false); /* the raw record must reach the socket as it is */
	chan_pair(&c, &s, 8);
	start_both(cctx, &c, sctx, &s);
	g_assert_cmpint(write(c.fd, bad, sizeof(bad)), ==, (ssize_t)sizeof(bad));
	g_assert_cmpint(tm_io_recv(s.io, &v, 1, sizeof(buf)), ==, -EBADMSG);
	tm_chan_close(&s);

	const size_t len = 16u << 20; /* more than the socket buffers hold */
	g_autofree uint8_t *out = g_malloc0(len);
	xfer x = { &c, out, len, 0 };
	send_fn(&x);
	g_test_message("the sender (%s records): %d %s", own_client ? "tagmig" : "OpenSSL", x.r,
		       tm_tls_last_error(c.io));
	g_assert_cmpint(x.r, ==, -EBADMSG);
	g_assert_cmpstr(tm_tls_last_error(c.io), ==,
			"the receiver could not authenticate our TLS records: the data was altered in "
			"transit (alert: bad record mac)");
	tm_chan_close(&c);
}

static void test_alert_ends_send(void)
{
	alert_ends_send_case(true);
	alert_ends_send_case(false);
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

/*
 * One byte flipped in flight: the receiver refuses the record (bad record MAC), delivers nothing
 * of it, and tells the sender with a bad_record_mac alert, which the sender's OpenSSL reads once
 * its send is done: with our records or OpenSSL's on the sender. The data after the damaged
 * record fits in the socket buffers, so the send completes.
 */
static void tampered_case(bool own_client)
{
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", "localhost");
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	tm_chan c, s;
	int cfd, sfd;
	proxy px = { .flip = 200000 };

	tm_tls_ctx_set_record_layer(cctx, own_client);
	loopback_pair(&cfd, &px.a);
	loopback_pair(&px.b, &sfd);
	GThread *pth = g_thread_new("proxy", proxy_fn, &px);
	chan_open(&c, cfd, 5);
	chan_open(&s, sfd, 5);
	start_both(cctx, &c, sctx, &s);

	const size_t len = 256 << 10;
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
	g_thread_join(th);
	g_assert_cmpint(x.r, ==, 0);
	expect_alert_openssl(&c, SSL_AD_BAD_RECORD_MAC, -EBADMSG);
	g_assert_cmpstr(tm_tls_last_error(c.io), ==,
			"the receiver could not authenticate our TLS records: the data was altered in "
			"transit (alert: bad record mac)");
	tm_chan_close(&s);
	tm_chan_close(&c);
	g_thread_join(pth);
}

static void test_tampered(void)
{
	tampered_case(true);
	tampered_case(false);
}

/* ---- how a session ends ---- */

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

/*
 * tm_io_readable on a TLS handle: plaintext of a record read only in part is buffered above the
 * socket (our record layer, OpenSSL, or in the socket for kernel TLS) and must count, or a
 * thread that polls before it reads (the control thread) would sleep on data it already has.
 */
static void readable_case(bool own)
{
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", "localhost");
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	uint8_t out[100], in[100];
	tm_chan c, s;

	tm_tls_ctx_set_record_layer(cctx, own);
	tm_tls_ctx_set_record_layer(sctx, own);
	chan_pair(&c, &s, 0);
	start_both(cctx, &c, sctx, &s);
	fill_random(out, sizeof(out));
	/* Both directions: the sender's may be ours or the kernel's, the receiver's is OpenSSL's. */
	for (int dir = 0; dir < 2; dir++) {
		tm_chan *tx = dir ? &s : &c, *rx = dir ? &c : &s;
		struct iovec v = { .iov_base = out, .iov_len = sizeof(out) };
		g_assert_false(tm_io_readable(rx->io));
		g_assert_cmpint(tm_io_send(tx->io, &v, 1, sizeof(out)), ==, 0);
		struct iovec w = { .iov_base = in, .iov_len = 10 };
		g_assert_cmpint(tm_io_recv(rx->io, &w, 1, 10), ==, 0);
		/* 90 bytes of the record are above the socket (or in it, with kernel TLS) */
		g_assert_true(tm_io_readable(rx->io));
		w = (struct iovec){ .iov_base = in + 10, .iov_len = 90 };
		g_assert_cmpint(tm_io_recv(rx->io, &w, 1, 90), ==, 0);
		g_assert_cmpmem(in, sizeof(in), out, sizeof(out));
		g_assert_false(tm_io_readable(rx->io));
	}
	shutdown_both(&c, &s);
	tm_chan_close(&c);
	tm_chan_close(&s);
}

static void test_readable(void)
{
	readable_case(true);
	readable_case(false);
}

/*
 * A receiver's DELTA_NACK and ERROR in one record, its connection still open: the sender's look
 * for the reason (tm_chan_peer_error) takes the NACK, and finds the ERROR in what the record
 * layer holds already, without waiting for the socket, where nothing more comes.
 */
static void test_peer_error_buffered(void)
{
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", "localhost");
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	const uint32_t pages[1] = { 3 }, reasons[1] = { 1 };
	g_autoptr(GError) err = NULL;
	uint8_t buf[128 + TM_MAX_ERROR_MESSAGE];
	tm_chan c, s;

	chan_pair(&c, &s, 0);
	start_both(cctx, &c, sctx, &s);
	c.version = s.version = TM_WIRE_VERSION_2;
	size_t n = tm_delta_nack_encode(buf, TM_WIRE_VERSION_2, 0, 0, pages, reasons, 1);
	n += tm_error_encode_v(buf + n, TM_WIRE_VERSION_2, 1, EIO, "disk on fire");
	struct iovec v = { .iov_base = buf, .iov_len = n };
	g_assert_cmpint(tm_io_send(s.io, &v, 1, n), ==, 0);
	int64_t t0 = g_get_monotonic_time();
	g_assert_cmpint(tm_chan_peer_error(&c, 64 << 10, "receiver failed", &err), ==, -EIO);
	g_assert_nonnull(strstr(err->message, "disk on fire"));
	g_assert_cmpint(g_get_monotonic_time() - t0, <, 500000); /* not the poll's second */
	tm_chan_close(&c);
	tm_chan_close(&s);
}

/*
 * The peer says why it fails (an ERROR) and closes, cleanly (close_notify) or with a reset, while
 * this end still sends (data, or its own close_notify): the send that finds the close fails,
 * later sends are refused, and the
 * ERROR, which arrived before the close, is still read (tm_chan_peer_error). Either end may be the
 * one that sends (the client's reading direction is OpenSSL's, the server's our records' or
 * OpenSSL's), with our records or OpenSSL's.
 */
static void error_then_close_case(bool own, bool client_sends, bool reset, bool close_notify)
{
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", "localhost");
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	g_autoptr(GError) err = NULL;
	uint8_t buf[4096];
	tm_chan c, s;

	tm_tls_ctx_set_record_layer(cctx, own);
	tm_tls_ctx_set_record_layer(sctx, own);
	chan_pair(&c, &s, 0);
	start_both(cctx, &c, sctx, &s);
	c.version = s.version = TM_WIRE_VERSION_2;
	tm_chan *tx = client_sends ? &c : &s, *peer = client_sends ? &s : &c;
	size_t n = tm_error_encode_v(buf, TM_WIRE_VERSION_2, 0, EIO, "disk on fire");
	struct iovec v = { .iov_base = buf, .iov_len = n };
	g_assert_cmpint(tm_io_send(peer->io, &v, 1, n), ==, 0);
	if (reset) {
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };
		g_assert_cmpint(setsockopt(peer->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), ==, 0);
	}
	tm_chan_close(peer);

	fill_random(buf, sizeof(buf));
	v = (struct iovec){ .iov_base = buf, .iov_len = sizeof(buf) };
	int r = 0;
	if (close_notify) {
		/* The reset is in (loopback): our close_notify is what fails. */
		struct pollfd p = { .fd = tx->fd, .events = POLLRDHUP };
		g_assert_cmpint(poll(&p, 1, 2000), ==, 1);
		GError *cerr = NULL;
		r = tm_tls_close_notify(tx->io, &cerr);
		g_assert_cmpint(r, <, 0);
		/* Said as what it is: the sending of ours failed, not a close without one. */
		g_assert_nonnull(strstr(cerr->message, "closed or reset the connection while this "
					"side was sending its TLS close_notify"));
		g_clear_error(&cerr);
	}
	for (unsigned i = 0; i < 1000 && r == 0; i++, g_usleep(1000))
		r = tm_io_send(tx->io, &v, 1, sizeof(buf));
	g_test_message("own %d, %s sends, %s%s: %s", own, client_sends ? "client" : "server",
		       reset ? "reset" : "close_notify", close_notify ? ", ours fails" : "",
		       tm_tls_last_error(tx->io));
	g_assert_true(r == -ECONNRESET || r == -EPIPE);
	g_assert_cmpint(tm_io_send(tx->io, &v, 1, sizeof(buf)), ==, -EPIPE);
	g_assert_cmpint(tm_chan_peer_error(tx, 0, "peer failed", &err), ==, -EIO);
	g_assert_nonnull(strstr(err->message, "disk on fire"));
	tm_chan_close(tx);
}

static void test_error_then_close(void)
{
	for (int k = 0; k < 8; k++)
		error_then_close_case(k & 1, k & 2, k & 4, false);
	for (int k = 0; k < 4; k++) /* our close_notify fails on the reset */
		error_then_close_case(k & 1, k & 2, true, true);
}

int main(int argc, char **argv)
{
	static const tls_test tests[] = {
		{ "readable", test_readable },
		{ "peer-error-buffered", test_peer_error_buffered },
		{ "error-then-close", test_error_then_close },
		{ "records-interop", test_records_interop },
		{ "key-update", test_key_update },
		{ "openssl-sender", test_openssl_sender },
		{ "key-update-requested", test_key_update_requested },
		{ "hostile-records", test_hostile_records },
		{ "hostile-contents", test_hostile_contents },
		{ "alert-resumed", test_alert_resumed },
		{ "sender-alerts", test_sender_alerts },
		{ "alert-ends-send", test_alert_ends_send },
		{ "tampered", test_tampered },
		{ "premature-end", test_premature_end },
	};
	return tls_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
