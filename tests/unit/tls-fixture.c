/* SPDX-License-Identifier: MIT */
/*
 * The fixture of the TLS tests (tls-fixture.h): credential sets, contexts, loopback channel
 * pairs, handshakes on both ends with the kernel TLS expectation of tests/vm/ktls, transfers, a
 * clean close, and the per-backend main loop. Credentials are made at run time with OpenSSL by
 * common/testing/tls-creds.c, the code behind `tagmig demo --tls`.
 */
#include "tls-fixture.h"

#include <string.h>

#include <glib/gstdio.h>

#include "common/testing/tcp-pair.h"
#include "common/testing/tls-creds.h"
#include "transport/tls/tls-internal.h"

char *tmp_root;
const tm_transport_ops *inner;

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

/* name/ca-crl.pem: ca's revocation list of revoked[0..n), valid until next_days from now. */
static void write_crl(const char *name, const tls_cred *ca, const tls_cred *const *revoked,
		      size_t n, int next_days)
{
	g_autofree char *path = g_build_filename(tmp_root, name, "ca-crl.pem", NULL);
	g_autoptr(GError) err = NULL;
	int r = tls_crl_write(ca, revoked, n, next_days, path, &err);
	g_assert_no_error(err);
	g_assert_cmpint(r, ==, 0);
}

/* The credential sets under tmp_root that tls-fixture.h lists. */
static void make_all_creds(void)
{
	const char *srv = "serverAuth", *cli = "clientAuth";
	const char *san = "DNS:localhost,IP:127.0.0.1,IP:::1,IP:fe80::1";
	g_autoptr(tls_cred) ca_a = cred("tagmig test CA A", NULL, NULL, NULL, -1, 30);
	g_autoptr(tls_cred) ca_b = cred("tagmig test CA B", NULL, NULL, NULL, -1, 30);
	g_autoptr(tls_cred) srv_a = cred("localhost", ca_a, srv, san, -1, 30);
	g_autoptr(tls_cred) cli_a = cred("tagmig sender", ca_a, cli, NULL, -1, 30);
	g_autoptr(tls_cred) srv_b = cred("localhost", ca_b, srv, san, -1, 30);
	g_autoptr(tls_cred) cli_b = cred("tagmig sender", ca_b, cli, NULL, -1, 30);
	g_autoptr(tls_cred) srv_old = cred("localhost", ca_a, srv, san, -3, -1);
	g_autoptr(tls_cred) cli_old = cred("tagmig sender", ca_a, cli, NULL, -3, -1);
	g_autoptr(tls_cred) srv_as_cli = cred("localhost", ca_a, srv, san, -1, 30);
	g_autoptr(tls_cred) srv_evil = cred("evil.example", ca_a, srv, "DNS:evil.example", -1, 30);

	make_dir("good", ca_a, srv_a, cli_a);
	make_dir("other", ca_b, srv_b, cli_b);
	make_dir("expired-server", ca_a, srv_old, cli_a);
	make_dir("expired-client", ca_a, srv_a, cli_old);
	make_dir("foreign-client", ca_a, srv_a, cli_b);
	make_dir("server-cert-as-client", ca_a, srv_a, srv_as_cli);
	make_dir("no-client", ca_a, srv_a, NULL);
	make_dir("evil", ca_a, srv_evil, cli_a);
	/* revocation lists (ca-crl.pem) */
	g_autoptr(tls_cred) srv_rev = cred("localhost", ca_a, srv, san, -1, 30);
	g_autoptr(tls_cred) cli_rev = cred("tagmig sender", ca_a, cli, NULL, -1, 30);
	const tls_cred *const revoked[] = { srv_rev, cli_rev };
	make_dir("crl-ok", ca_a, srv_a, cli_a);
	write_crl("crl-ok", ca_a, revoked, 2, 30);
	make_dir("revoked-server", ca_a, srv_rev, cli_a);
	write_crl("revoked-server", ca_a, revoked, 1, 30);
	make_dir("revoked-client", ca_a, srv_a, cli_rev);
	write_crl("revoked-client", ca_a, revoked + 1, 1, 30);
	make_dir("crl-expired", ca_a, srv_a, cli_a);
	write_crl("crl-expired", ca_a, NULL, 0, -1);
	const tls_cred *const ca_itself[] = { ca_a };
	make_dir("revoked-ca", ca_a, srv_a, cli_a);
	write_crl("revoked-ca", ca_a, ca_itself, 1, 30);
	make_dir("crl-other-ca", ca_a, srv_a, cli_a);
	write_crl("crl-other-ca", ca_b, NULL, 0, 30);
	make_dir("crl-bad", ca_a, srv_a, cli_a);
	g_autofree char *bad = g_build_filename(tmp_root, "crl-bad", "ca-crl.pem", NULL);
	g_assert_true(g_file_set_contents(bad, "not a CRL\n", -1, NULL));
	/* a key that does not belong to the certificate */
	const tls_cred mismatched = { .key = cli_a->key, .cert = srv_a->cert };
	make_dir("mismatched-key", ca_a, &mismatched, cli_a);
}

tm_tls_ctx *ctx_new(tm_tls_role role, const char *set, const char *host)
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
void loopback_pair(int *ret_client, int *ret_server)
{
	g_autoptr(GError) err = NULL;
	int r = tcp_pair(ret_client, ret_server, &err);
	g_assert_no_error(err);
	g_assert_cmpint(r, ==, 0);
}

void chan_open(tm_chan *ch, int fd, unsigned id)
{
	g_autoptr(GError) err = NULL;
	g_assert_cmpint(tm_chan_open(ch, fd, id, inner, &(tm_io_config){ .timeout_ms = TIMEOUT_MS, .depth = 1 }, &err), ==, 0);
	g_assert_no_error(err);
}

void chan_pair(tm_chan *c, tm_chan *s, unsigned id)
{
	int cfd, sfd;
	loopback_pair(&cfd, &sfd);
	chan_open(c, cfd, id);
	chan_open(s, sfd, id);
}

static gpointer start_fn(gpointer p)
{
	side *s = p;
	s->r = tm_tls_wrap(s->ctx, &s->ch->io, &s->err);
	return NULL;
}

void side_start(side *s, tm_tls_ctx *ctx, tm_chan *ch)
{
	*s = (side){ .ctx = ctx, .ch = ch };
	s->thread = g_thread_new("tls-side", start_fn, s);
}

void side_join(side *s)
{
	g_thread_join(s->thread);
	s->thread = NULL;
}

/*
 * Under tests/vm/ktls ($TAGMIG_EXPECT_KTLS): the kernel protects the sender's records wherever our
 * record layer does ("1"), or nowhere on a kernel that cannot take new keys ("norekey").
 */
void check_ktls(tm_chan *c, tm_chan *s)
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
void start_both(tm_tls_ctx *cctx, tm_chan *c, tm_tls_ctx *sctx, tm_chan *s)
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

/* ---- data ---- */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void fill_random(uint8_t *p, size_t len)
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

gpointer send_fn(gpointer p)
{
	xfer *x = p;
	struct iovec iov[512];
	unsigned n = cut(x->buf, x->len, iov, G_N_ELEMENTS(iov));
	x->r = tm_io_send(x->ch->io, iov, n, x->len);
	return NULL;
}

/* Sends len random bytes c -> s (sender in a thread), receives them in other pieces, compares. */
void transfer(tm_chan *c, tm_chan *s, size_t len)
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
void shutdown_both(tm_chan *c, tm_chan *s)
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

/* ---- the main loop ---- */

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

int tls_tests_run(int *argc, char ***argv, const tls_test *tests, size_t n)
{
	static const tm_transport_ops *const backends[] = { &tm_transport_socket,
							    &tm_transport_io_uring };
	g_autofree backend_case *cases = g_new(backend_case, G_N_ELEMENTS(backends) * n);

	g_test_init(argc, argv, NULL);
	tmp_root = g_dir_make_tmp("tagmig-tls-XXXXXX", NULL);
	g_assert_nonnull(tmp_root);
	make_all_creds();
	for (size_t i = 0; i < G_N_ELEMENTS(backends); i++) {
		for (size_t j = 0; j < n; j++) {
			backend_case *bc = &cases[i * n + j];
			*bc = (backend_case){ backends[i], tests[j].fn };
			g_autofree char *path = g_strdup_printf("/tls/over-%s/%s", backends[i]->name,
								tests[j].path);
			g_test_add_data_func(path, bc, run_case);
		}
	}
	int r = g_test_run();
	rm_rf(tmp_root);
	g_clear_pointer(&tmp_root, g_free);
	return r;
}
