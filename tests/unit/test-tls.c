/* SPDX-License-Identifier: MIT */
/*
 * The TLS layer (transport/tls) over loopback TCP, with each inner backend: handshakes and
 * credentials. Data both ways after a full handshake and after resumption; every refusal of a
 * peer's certificate (wrong CA, expired, name mismatch, wrong purpose, none) with the message that
 * says which check failed, on both ends; a plaintext peer either way; a context's setup errors;
 * the kernel TLS probe's verdict; and the credentials of scripts/make-tls-creds.sh. What happens
 * to the records after the handshake is test-tls-records.c's; both share tls-fixture.c.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "codec/codec.h"
#include "common/testing/tls-creds.h"
#include "tagmig/error.h"
#include "tls-fixture.h"
#include "transport/tls/tls-internal.h"

/* ---- handshakes that succeed ---- */

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

/* ---- handshakes that must fail ---- */

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

/*
 * The receiver's allow-list of senders (tls_authz): a certificate of the CA whose subject is
 * listed gets in, one whose subject is not is refused at the handshake, and the list is checked
 * when it is set.
 */
static void test_authz(void)
{
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", "localhost");
	g_autoptr(GError) err = NULL;

	/* listed (RFC 2253 form of the sender's subject), among others */
	g_autoptr(tm_tls_ctx) allow = ctx_new(TM_TLS_SERVER, "good", NULL);
	const char *const listed[] = { "CN=another sender", "CN=tagmig sender", NULL };
	g_assert_cmpint(tm_tls_ctx_set_authz(allow, listed, &err), ==, 0);
	tm_chan c, s;
	chan_pair(&c, &s, 1);
	start_both(cctx, &c, allow, &s);
	tm_chan_close(&c);
	tm_chan_close(&s);

	/* not listed: the same certificate, a list without it (a near miss included) */
	g_autoptr(tm_tls_ctx) deny = ctx_new(TM_TLS_SERVER, "good", NULL);
	const char *const others[] = { "CN=another sender", "CN=tagmig sender ", "cn=tagmig sender",
				       NULL };
	g_assert_cmpint(tm_tls_ctx_set_authz(deny, others, &err), ==, 0);
	expect_refusal(cctx, deny, EKEYREJECTED, "the receiver refused our certificate", EACCES,
		       "the sender's certificate (subject CN=tagmig sender) is from our CA but not "
		       "in the allow-list of senders");

	/* set-up errors */
	const char *const none[] = { NULL };
	g_assert_cmpint(tm_tls_ctx_set_authz(deny, none, &err), ==, -EINVAL);
	g_assert_nonnull(strstr(err->message, "empty"));
	g_clear_error(&err);
	g_assert_cmpint(tm_tls_ctx_set_authz(cctx, listed, &err), ==, -EINVAL);
	g_assert_nonnull(strstr(err->message, "receiver's"));
}

/*
 * Security level 2: a certificate with an RSA-1024 key (80-bit security) is refused at setup,
 * even where the system's OpenSSL configuration allows it (Debian's asks for level 2 already;
 * the check runs in a child process whose OPENSSL_CONF lowers the default to level 1).
 */
static void test_weak_key(void)
{
	if (!g_test_subprocess()) {
		g_autofree char *conf = g_build_filename(tmp_root, "seclevel1.cnf", NULL);
		static const char text[] = "openssl_conf = default_conf\n[default_conf]\n"
					   "ssl_conf = ssl_sect\n[ssl_sect]\n"
					   "system_default = system_default_sect\n"
					   "[system_default_sect]\nCipherString = DEFAULT:@SECLEVEL=1\n";
		g_assert_true(g_file_set_contents(conf, text, -1, NULL));
		g_setenv("OPENSSL_CONF", conf, TRUE);
		g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_INHERIT_STDERR);
		g_unsetenv("OPENSSL_CONF");
		g_test_trap_assert_passed();
		return;
	}
	/* The child's OpenSSL really defaults to level 1: the refusal below is ours. */
	SSL_CTX *plain = SSL_CTX_new(TLS_client_method());
	g_assert_cmpint(SSL_CTX_get_security_level(plain), ==, 1);
	SSL_CTX_free(plain);

	g_autoptr(GError) err = NULL;
	g_autoptr(tls_cred) ca = NULL;
	g_autoptr(tls_cred) weak = NULL;
	g_autoptr(tls_cred) fine = NULL;
	g_autofree char *dir = g_build_filename(tmp_root, "weak-key", NULL);
	g_autofree char *dir2 = g_build_filename(tmp_root, "rsa-2048", NULL);
	tm_tls_ctx *ctx = NULL;

	g_assert_cmpint(tls_cred_new("weak-key test CA", NULL, NULL, NULL, -1, 30, &ca, &err), ==, 0);
	g_assert_cmpint(tls_cred_new_rsa(1024, "tagmig sender", ca, "clientAuth", NULL, -1, 30, &weak,
					 &err), ==, 0);
	g_assert_cmpint(tls_cred_new_rsa(2048, "tagmig sender", ca, "clientAuth", NULL, -1, 30, &fine,
					 &err), ==, 0);
	g_assert_cmpint(g_mkdir_with_parents(dir, 0700), ==, 0);
	g_assert_cmpint(g_mkdir_with_parents(dir2, 0700), ==, 0);
	g_assert_cmpint(tls_cred_write(ca, dir, "ca", &err), ==, 0);
	g_assert_cmpint(tls_cred_write(weak, dir, "client", &err), ==, 0);
	g_assert_cmpint(tls_cred_write(ca, dir2, "ca", &err), ==, 0);
	g_assert_cmpint(tls_cred_write(fine, dir2, "client", &err), ==, 0);

	g_assert_cmpint(tm_tls_ctx_new(TM_TLS_CLIENT, dir, "localhost", &ctx, &err), ==, -EKEYREJECTED);
	g_test_message("%s", err->message);
	g_assert_nonnull(strstr(err->message, "client-cert.pem"));
	g_assert_null(ctx);
	g_clear_error(&err);
	g_assert_cmpint(tm_tls_ctx_new(TM_TLS_CLIENT, dir2, "localhost", &ctx, &err), ==, 0);
	tm_tls_ctx_free(ctx);
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

/*
 * Each form of the expected name is checked: a certificate of the same CA for another name
 * (evil.example) is refused, the right one accepted. The channels run over 127.0.0.1 whatever
 * the name: the name is only what the certificate must carry, so the scoped link-local address
 * (fe80::1 on the loopback interface) is exercised end to end without being configured on lo.
 */
static void test_name_forms(void)
{
	static const char *const names[] = { "localhost", "127.0.0.1", "::1", "[::1]",
					     "fe80::1%lo", "[fe80::1%lo]" };
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	g_autoptr(tm_tls_ctx) sctx_evil = ctx_new(TM_TLS_SERVER, "evil", NULL);

	for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
		g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", names[i]);
		tm_chan c, s;
		chan_pair(&c, &s, 0);
		start_both(cctx, &c, sctx, &s);
		transfer(&c, &s, 20000);
		shutdown_both(&c, &s);
		tm_chan_close(&c);
		tm_chan_close(&s);

		g_autofree char *msg = g_strdup_printf("the receiver's certificate (/CN=evil.example) "
						       "does not match the name '%s' (name mismatch",
						       names[i]);
		expect_refusal(cctx, sctx_evil, EKEYREJECTED, msg, EKEYREJECTED,
			       "the sender refused our certificate");
	}
}

/* A name that cannot be checked fails the context (the session's setup), never the check. */
static void test_name_unusable(void)
{
	g_autofree char *good = g_build_filename(tmp_root, "good", NULL);
	g_autofree char *longname = g_strnfill(300, 'a');
	const char *const names[] = { "1::2::3", "fe80::zz%lo", "fe80::1%", "[fe80::1%]",
				      "010.0.0.1", "1.2.3.256", "1.2.3", longname };

	for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
		g_autoptr(GError) err = NULL;
		tm_tls_ctx *ctx = NULL;
		int r = tm_tls_ctx_new(TM_TLS_CLIENT, good, names[i], &ctx, &err);
		g_test_message("%s: %s", names[i], err ? err->message : "(accepted)");
		g_assert_cmpint(r, ==, -EINVAL);
		g_assert_error(err, TM_ERROR, EINVAL);
		g_assert_nonnull(strstr(err->message, "TLS: cannot check the receiver's certificate "
					"against '"));
		g_assert_null(ctx);
	}

	/* A channel whose SSL would check no name is refused before its handshake starts. */
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "good", "localhost");
	g_assert_cmpint(X509_VERIFY_PARAM_set1_host(SSL_CTX_get0_param(cctx->ssl_ctx), NULL, 0),
			==, 1);
	g_autoptr(GError) err = NULL;
	tm_chan c, s;
	chan_pair(&c, &s, 6);
	g_assert_cmpint(tm_tls_wrap(cctx, &c.io, &err), ==, -EINVAL);
	g_assert_cmpstr(err->message, ==, "channel 6: TLS: cannot set up the check of the "
			"receiver's certificate against 'localhost'");
	g_assert_false(tm_tls_active(c.io));
	tm_chan_close(&c);
	tm_chan_close(&s);
}

static void test_wrong_purpose(void)
{
	/* A server certificate (serverAuth) used as the client's: refused for its purpose. */
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "good", NULL);
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "server-cert-as-client", "localhost");
	expect_refusal(cctx, sctx, EKEYREJECTED, "the receiver refused our certificate",
		       EKEYREJECTED, "is not meant for TLS client authentication");
}

/*
 * ca-crl.pem: with it, each side checks every certificate of the peer's chain against the
 * revocation lists; the client's and the server's revoked certificate are each refused, by the
 * side that holds the list, and the other side learns it from the alert.
 */
static void test_revoked(void)
{
	/* A list that revokes other certificates: the handshake goes through. */
	g_autoptr(tm_tls_ctx) cctx_ok = ctx_new(TM_TLS_CLIENT, "crl-ok", "localhost");
	g_autoptr(tm_tls_ctx) sctx_ok = ctx_new(TM_TLS_SERVER, "crl-ok", NULL);
	tm_chan c, s;
	chan_pair(&c, &s, 0);
	start_both(cctx_ok, &c, sctx_ok, &s);
	transfer(&c, &s, 20000);
	shutdown_both(&c, &s);
	tm_chan_close(&c);
	tm_chan_close(&s);

	/* The receiver's list revokes the sender's certificate. */
	g_autoptr(tm_tls_ctx) sctx = ctx_new(TM_TLS_SERVER, "revoked-client", NULL);
	g_autoptr(tm_tls_ctx) cctx = ctx_new(TM_TLS_CLIENT, "revoked-client", "localhost");
	expect_refusal(cctx, sctx, EKEYREJECTED,
		       "the receiver refused our certificate (alert: certificate revoked)",
		       EKEYREJECTED,
		       "the sender's certificate (/CN=tagmig sender) has been revoked (listed in our "
		       "ca-crl.pem)");

	/* The sender's list revokes the receiver's certificate. */
	g_autoptr(tm_tls_ctx) sctx2 = ctx_new(TM_TLS_SERVER, "revoked-server", NULL);
	g_autoptr(tm_tls_ctx) cctx2 = ctx_new(TM_TLS_CLIENT, "revoked-server", "localhost");
	expect_refusal(cctx2, sctx2, EKEYREJECTED,
		       "the receiver's certificate (/CN=localhost) has been revoked (listed in our "
		       "ca-crl.pem)",
		       EKEYREJECTED, "the sender refused our certificate (alert: certificate revoked)");

	/* The whole chain is checked: the CA's own certificate, revoked by itself. */
	g_autoptr(tm_tls_ctx) sctx3 = ctx_new(TM_TLS_SERVER, "good", NULL);
	g_autoptr(tm_tls_ctx) cctx3 = ctx_new(TM_TLS_CLIENT, "revoked-ca", "localhost");
	expect_refusal(cctx3, sctx3, EKEYREJECTED,
		       "the receiver's CA certificate (/CN=tagmig test CA A) has been revoked", 0,
		       NULL);

	/* A list that has expired, or none of the CA that issued the peer's certificate. */
	g_autoptr(tm_tls_ctx) cctx4 = ctx_new(TM_TLS_CLIENT, "crl-expired", "localhost");
	expect_refusal(cctx4, sctx3, EKEYEXPIRED,
		       "the revocation list in our ca-crl.pem for the receiver's certificate "
		       "(/CN=localhost) has expired", 0, NULL);
	g_autoptr(tm_tls_ctx) cctx5 = ctx_new(TM_TLS_CLIENT, "crl-other-ca", "localhost");
	expect_refusal(cctx5, sctx3, EKEYREJECTED,
		       "the receiver's certificate (/CN=localhost) cannot be checked for revocation",
		       0, NULL);

	/* A ca-crl.pem without a list fails the setup. */
	g_autofree char *bad = g_build_filename(tmp_root, "crl-bad", NULL);
	g_autoptr(GError) err = NULL;
	tm_tls_ctx *ctx = NULL;
	g_assert_cmpint(tm_tls_ctx_new(TM_TLS_SERVER, bad, NULL, &ctx, &err), ==, -EKEYREJECTED);
	g_test_message("%s", err->message);
	g_assert_nonnull(strstr(err->message, "crl-bad/ca-crl.pem: cannot load the certificate "
				"revocation list"));
	g_assert_null(ctx);
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

	/* The control and urgent connections are named in the words, not by the channel number
	 * they share with data channel 0 (a reconnect's last error said "channel 0" for control). */
	for (int k = 0; k < 2; k++) {
		const char *name = k ? "urgent" : "control";
		g_clear_error(&err);
		pp = (plain_peer){ 0 };
		loopback_pair(&fd, &pp.fd);
		chan_open(&ch, fd, 0);
		tm_chan_set_control(&ch, name);
		th = g_thread_new("plain-server", plain_server_fn, &pp);
		r = tm_tls_wrap(cctx, &ch.io, &err);
		tm_chan_close(&ch);
		g_thread_join(th);
		close(pp.fd);
		g_test_message("TLS %s: %s", name, err ? err->message : "(no error)");
		g_assert_cmpint(r, ==, -EPROTO);
		g_autofree char *want = g_strdup_printf("%s: TLS handshake: ", name);
		g_assert_true(g_str_has_prefix(err->message, want));
	}

	/* and a peer that sends something else entirely */
	uint8_t junk[5] = { 'G', 'E', 'T', ' ', '/' };
	g_assert_false(tm_tls_looks_like_tls(junk, sizeof(junk)));
}

/* ---- setup, the kernel TLS probe, the credentials script ---- */

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

int main(int argc, char **argv)
{
	static const tls_test tests[] = {
		{ "roundtrip", test_roundtrip },
		{ "resumption", test_resumption },
		{ "wrong-ca", test_wrong_ca },
		{ "expired", test_expired },
		{ "name-mismatch", test_name_mismatch },
		{ "name-forms", test_name_forms },
		{ "name-unusable", test_name_unusable },
		{ "wrong-purpose", test_wrong_purpose },
		{ "revoked", test_revoked },
		{ "authz", test_authz },
		{ "weak-key", test_weak_key },
		{ "no-client-cert", test_no_client_cert },
		{ "plaintext-peer", test_plaintext_peer },
		{ "setup-errors", test_setup_errors },
		{ "ktls-probe", test_ktls_probe },
		{ "script", test_script },
	};
	return tls_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
