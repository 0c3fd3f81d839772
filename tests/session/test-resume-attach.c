/* SPDX-License-Identifier: MIT */
/*
 * Resume in attach mode (docs/api.md, "Resume"; tm_live_config.reconnect): sender and receiver
 * run on sockets the "VMM" (this test) connected and accepted itself, through a proxy that cuts
 * one connection. With the reconnect hook on both sides (the sender's connects to the proxy, the
 * receiver's accepts on its own listener) a cut data channel and a cut control connection are
 * resumed: both complete bit-exact and count the reconnect. Without the hook the cut fails the
 * session as before. Every backend pair, plaintext and TLS.
 *
 * Setup (docs/api.md, "Resume"): the receiver handshakes the attached sockets at once, so they
 * may come in any order (TLS: each side would otherwise wait for another connection's
 * handshake); an attached socket whose handshake fails ends the session at once, naming it,
 * without the hook, and with the hook on both sides it is dialled again through them and the
 * migration completes.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cut-proxy.h"
#include "session-fixture.h"
#include "transport/transport.h"

#define RAM (16u << 20)
#define CHANNELS 3u      /* unless a test says (opts.channels) */
#define MAX_CHANNELS 10u
#define CONTROL_CONN 1 /* the proxy's index of the control connection (setup order) */
static const block_spec spec[] = { { "pc.ram", RAM, 4096 } };

typedef struct vmm {
	const char *proxy_port; /* the sender's side dials here */
	int listen_fd;          /* the receiver's side accepts here */
	unsigned dialed, accepted; /* reconnects the hooks handed over (atomics) */
} vmm;

static int sender_hook(void *opaque, unsigned connection, unsigned timeout_ms)
{
	vmm *v = opaque;
	g_autoptr(GError) err = NULL;
	int fd = tm_net_connect("127.0.0.1", v->proxy_port, timeout_ms, -1, &err);
	if (fd >= 0)
		__atomic_add_fetch(&v->dialed, 1, __ATOMIC_RELAXED);
	return fd;
}

static int receiver_hook(void *opaque, unsigned connection, unsigned timeout_ms)
{
	vmm *v = opaque;
	struct pollfd p = { .fd = v->listen_fd, .events = POLLIN };
	g_assert_cmpuint(connection, ==, TM_RECONNECT_ANY);
	if (poll(&p, 1, (int)timeout_ms) <= 0)
		return -ETIMEDOUT;
	int fd = accept4(v->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return -errno;
	__atomic_add_fetch(&v->accepted, 1, __ATOMIC_RELAXED);
	return fd;
}

typedef struct rside {
	guest *g;
	vmm *v;
	bool hook;
	bool reversed;  /* the sockets handed over in the reverse of their arrival */
	int dead;       /* >= 0: the socket handed over at this index is shut down first */
	bool shut;      /* that was done (atomic): the sender starts after it */
	unsigned nch;   /* the session's data channels */
	double secs;    /* attach's time */
	tm_receiver *r;
	GError *error;
	int ret;
	GThread *thread;
} rside;

/* The destination VMM: accepts the session's connections itself, then attach, start, wait. */
static gpointer receiver_thread(gpointer data)
{
	rside *p = data;
	tm_receiver_config cfg = { .io_backend = recv_io, .tls_creds_dir = tls_dir,
				   .timeout_ms = 20000 };
	tm_live_config lc = { .size = sizeof(lc) };
	if (p->hook) {
		lc.reconnect = receiver_hook;
		lc.reconnect_opaque = p->v;
	}
	int fds[MAX_CHANNELS + 1];
	unsigned n = p->nch + 1;
	for (unsigned i = 0; i < n; i++) {
		fds[i] = accept4(p->v->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		g_assert_cmpint(fds[i], >=, 0);
	}
	if (p->reversed)
		for (unsigned i = 0; i < n / 2; i++) {
			int t = fds[i];
			fds[i] = fds[n - 1 - i];
			fds[n - 1 - i] = t;
		}
	if (p->dead >= 0)
		shutdown(fds[p->dead], SHUT_RDWR);
	__atomic_store_n(&p->shut, true, __ATOMIC_RELEASE);
	p->ret = tm_receiver_new(&cfg, &p->r, &p->error);
	if (p->ret >= 0)
		p->ret = tm_receiver_set_live(p->r, &lc, &p->error);
	int64_t t0 = g_get_monotonic_time();
	if (p->ret >= 0)
		p->ret = tm_receiver_attach(p->r, fds, n, &p->error);
	p->secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	if (p->ret >= 0)
		p->ret = tm_receiver_start(p->r, p->g->layout, p->g->tags, &p->error);
	while (p->ret >= 0) {
		p->ret = tm_receiver_wait(p->r, &p->error);
		if (p->ret != 1)
			break;
		p->ret = receiver_read_states(p->r, NULL, NULL, &p->error);
	}
	return NULL;
}

typedef struct opts {
	int conn;      /* the proxy's index of the connection cut, or -1: none */
	bool hook;     /* both sides have the reconnect hook */
	bool rhook;    /* the receiver has it (the sender only with hook) */
	bool reversed; /* rside.reversed */
	int dead;      /* rside.dead */
	unsigned channels; /* 0: CHANNELS */
} opts;

/*
 * One migration in attach mode, connection o->conn cut 256 KiB into the round (data) or at once
 * (control).
 */
static void attach_run(const opts *o)
{
	guest src, dst;
	cut_proxy px;
	vmm v = { 0 };
	unsigned nch = o->channels ? o->channels : CHANNELS;
	rside p = { .reversed = o->reversed, .dead = o->dead, .hook = o->hook || o->rhook,
		    .nch = nch };
	int conn = o->conn;
	bool hook = o->hook;
	g_autoptr(GError) err = NULL;
	unsigned port = 0;
	int r;

	guest_init(&src, spec, 1, true);
	guest_init(&dst, spec, 1, true);
	guest_fill(&src);
	v.listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(v.listen_fd, >=, 0);
	g_autofree char *rport = g_strdup_printf("%u", port);
	g_autofree char *pport = proxy_start(&px, rport);
	v.proxy_port = pport;
	p.g = &dst;
	p.v = &v;
	p.thread = g_thread_new("receiver", receiver_thread, &p);

	tm_sender *s = NULL;
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir,
				 .tls_hostname = "127.0.0.1", .channels = nch,
				 .timeout_ms = 20000, .packet_size = 64u << 10 };
	tm_live_config lc = { .size = sizeof(lc), .resume_deadline_ms = 5000 };
	if (hook) {
		lc.reconnect = sender_hook;
		lc.reconnect_opaque = &v;
	}
	g_assert_cmpint(tm_sender_new(src.layout, src.tags, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_set_live(s, &lc, &err), ==, 0);
	int fds[MAX_CHANNELS + 1];
	/* In the order the sender sets them up (data 0, control, data 1..: the receiver takes
	 * them in the order they come, one TLS handshake at a time). */
	for (unsigned i = 0; i <= nch; i++) {
		unsigned idx = i == 0 ? 0 : i == 1 ? nch : i - 1;
		fds[idx] = tm_net_connect("127.0.0.1", pport, 5000, -1, NULL);
		g_assert_cmpint(fds[idx], >=, 0);
		/* The proxy numbers connections as it accepts them: one at a time, in order. */
		for (int k = 0; k < 1000; k++) {
			g_mutex_lock(&px.lock);
			unsigned n = px.accepted;
			g_mutex_unlock(&px.lock);
			if (n > i)
				break;
			g_usleep(1000);
		}
	}
	/* Not before the dead socket is shut down: a HELLO that came first would be read (after,
	 * its arrival resets the connection). */
	while (!__atomic_load_n(&p.shut, __ATOMIC_ACQUIRE))
		g_usleep(1000);
	r = tm_sender_attach(s, fds, nch + 1, &err);
	if (r < 0)
		g_test_message("attach: %s", err->message);
	if (o->dead >= 0 && !hook) {
		/* Nothing can replace the dead socket: attach fails at once, naming it. */
		g_thread_join(p.thread);
		g_assert_cmpint(r, <, 0);
		g_assert_cmpint(p.ret, <, 0);
		g_test_message("receiver after %.2f s: %s", p.secs, p.error->message);
		g_autofree char *name = g_strdup_printf("attached socket fds[%d]: ", o->dead);
		g_assert_nonnull(strstr(p.error->message, name));
		g_assert_cmpfloat(p.secs, <, 5.0);
		goto out;
	}
	g_assert_cmpint(r, ==, 0);
	/* 256 KiB into the channel: it carries 1-2 MiB, less when auto compresses its pages */
	if (conn >= 0)
		proxy_arm(&px, conn, conn == CONTROL_CONN ? 0 : 256u << 10);
	uint64_t np = RAM / 4096, bm[RAM / 4096 / 64];
	memset(bm, 0xff, sizeof(bm));
	r = tm_sender_queue_bitmap(s, 0, bm, 0, np, &err);
	if (r == 0)
		r = tm_sender_sync(s, &err);
	if (r == 0)
		r = tm_sender_finish(s, &err);
	g_thread_join(p.thread);
	g_assert_cmpuint(proxy_cuts(&px), ==, conn >= 0 ? 1 : 0);
	tm_live_stats ss = { .size = sizeof(ss) }, rs = { .size = sizeof(rs) };
	g_assert_cmpint(tm_sender_get_live_stats(s, &ss), ==, 0);
	if (conn < 0) {
		/* No cut after setup: both complete, the dead socket (if any) redialled once. */
		if (r != 0)
			g_test_message("sender: %s", err->message);
		g_assert_cmpint(r, ==, 0);
		if (p.ret != 0)
			g_test_message("receiver: %s", p.error->message);
		g_assert_cmpint(p.ret, ==, 0);
		assert_same(&src, &dst);
		g_test_message("reconnects: sender %" G_GUINT64_FORMAT "; hooks: dialed %u, "
			       "accepted %u", ss.reconnects, v.dialed, v.accepted);
		g_assert_cmpuint(ss.reconnects, ==, o->dead >= 0 ? 1 : 0);
		/* Nothing waited for a handshake's deadline (10 s). */
		g_test_message("attach took %.2f s", p.secs);
		if (o->dead < 0)
			g_assert_cmpfloat(p.secs, <, 5.0);
	} else if (hook) {
		if (r != 0)
			g_test_message("sender: %s", err->message);
		g_assert_cmpint(r, ==, 0);
		if (p.ret != 0)
			g_test_message("receiver: %s", p.error->message);
		g_assert_cmpint(p.ret, ==, 0);
		assert_same(&src, &dst);
		g_assert_cmpint(tm_receiver_get_live_stats(p.r, &rs), ==, 0);
		g_test_message("reconnects: sender %" G_GUINT64_FORMAT ", receiver %" G_GUINT64_FORMAT
			       "; hooks: dialed %u, accepted %u",
			       ss.reconnects, rs.reconnects, v.dialed, v.accepted);
		g_assert_cmpuint(ss.reconnects, ==, 1);
		g_assert_cmpuint(rs.reconnects, ==, 1);
		g_assert_cmpuint(v.dialed, >=, 1);
		g_assert_cmpuint(v.accepted, >=, 1);
	} else {
		/* The old behaviour: nowhere to reconnect, the cut fails the session. */
		g_assert_cmpint(r, <, 0);
		g_test_message("sender: %s", err->message);
		g_assert_cmpint(p.ret, <, 0);
		g_assert_cmpuint(ss.reconnects, ==, 0);
	}
out:
	tm_sender_free(s);
	tm_receiver_free(p.r);
	g_clear_error(&p.error);
	proxy_stop(&px);
	close(v.listen_fd);
	guest_fini(&src);
	guest_fini(&dst);
}

static void test_data_cut(void)
{
	attach_run(&(opts){ .conn = 3, .hook = true, .dead = -1 }); /* data channel 2 */
}

static void test_control_cut(void)
{
	attach_run(&(opts){ .conn = CONTROL_CONN, .hook = true, .dead = -1 });
}

static void test_without_hook(void)
{
	attach_run(&(opts){ .conn = 3, .dead = -1 });
}

/* The sockets handed over in the reverse of the sender's setup order: with TLS, handshaken one
 * at a time, each side would wait for another connection's handshake until its deadline. */
static void test_any_order(void)
{
	attach_run(&(opts){ .conn = -1, .reversed = true, .dead = -1 });
}

/*
 * The same with more sockets than a listener handshakes at once (8): data 0, whose TLS handshake
 * the sender does first, is handed over last. Every attached socket is handshaken at once, or
 * the first 8 wait for ClientHellos the sender sends only after data 0's handshake (10 s).
 */
static void test_any_order_many(void)
{
	attach_run(&(opts){ .conn = -1, .reversed = true, .dead = -1, .channels = 9 });
}

/* The third socket handed over is dead before its HELLO: without the hook, attach fails at
 * once naming it (not after its deadline, nor after the accept's). */
static void test_dead_socket(void)
{
	attach_run(&(opts){ .conn = -1, .dead = 2 });
}

/* The same when only the receiver has the hook: the sender offered no RESUME, so nothing
 * dials the socket again; attach fails at once, naming it, not at its accept deadline. */
static void test_dead_socket_receiver_hook(void)
{
	attach_run(&(opts){ .conn = -1, .rhook = true, .dead = 2 });
}

/* The same with the hook on both sides: the sender dials it again through its hook, the
 * receiver takes the redial through its own during setup; the migration completes. */
static void test_dead_socket_hook(void)
{
	attach_run(&(opts){ .conn = -1, .hook = true, .dead = 2 });
}

/* A hook with nothing to hand over: it waits out its timeout. */
static int idle_hook(void *opaque, unsigned connection, unsigned timeout_ms)
{
	(void)opaque;
	(void)connection;
	g_usleep((gulong)timeout_ms * 1000);
	return -ETIMEDOUT;
}

typedef struct canceller {
	tm_receiver *r;
	int64_t at; /* when it cancelled */
} canceller;

static gpointer cancel_later(gpointer data)
{
	canceller *c = data;
	g_usleep(300 * 1000);
	c->at = g_get_monotonic_time();
	g_assert_cmpint(tm_receiver_cancel(c->r, "no sender today"), ==, 0);
	return NULL;
}

/*
 * A cancel while attach handshakes sockets that stay silent (and, with hook, while its hook
 * thread waits in the hook): attach returns -ECANCELED at once, not at the sockets' deadline.
 */
static void cancel_silent(bool hook)
{
	tm_receiver *r = NULL;
	g_autoptr(GError) err = NULL;
	tm_receiver_config cfg = { .io_backend = recv_io, .tls_creds_dir = tls_dir,
				   .timeout_ms = 20000 };
	tm_live_config lc = { .size = sizeof(lc), .reconnect = hook ? idle_hook : NULL };
	int fds[CHANNELS + 1], peers[CHANNELS + 1];

	for (unsigned i = 0; i <= CHANNELS; i++) {
		int sv[2];
		g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
		fds[i] = sv[0];
		peers[i] = sv[1]; /* held open and silent */
	}
	g_assert_cmpint(tm_receiver_new(&cfg, &r, &err), ==, 0);
	g_assert_cmpint(tm_receiver_set_live(r, &lc, &err), ==, 0);
	canceller c = { .r = r };
	GThread *t = g_thread_new("cancel", cancel_later, &c);
	int ret = tm_receiver_attach(r, fds, CHANNELS + 1, &err);
	int64_t now = g_get_monotonic_time();
	g_thread_join(t);
	g_assert_cmpint(ret, ==, -ECANCELED);
	g_test_message("attach: %s, %.2f s after the cancel", err->message,
		       (double)(now - c.at) / 1e6);
	g_assert_nonnull(strstr(err->message, "no sender today"));
	g_assert_cmpint(now - c.at, <, 1000000);
	tm_receiver_free(r);
	for (unsigned i = 0; i <= CHANNELS; i++)
		close(peers[i]);
}

static void test_cancel_silent(void)
{
	cancel_silent(false);
}

static void test_cancel_silent_hook(void)
{
	cancel_silent(true);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "resume-attach/data-cut", test_data_cut, false },
		{ "resume-attach/control-cut", test_control_cut, false },
		{ "resume-attach/without-hook", test_without_hook, false },
		{ "resume-attach/any-order", test_any_order, false },
		{ "resume-attach/any-order-many", test_any_order_many, false },
		{ "resume-attach/dead-socket", test_dead_socket, false },
		{ "resume-attach/dead-socket-hook", test_dead_socket_hook, false },
		{ "resume-attach/dead-socket-receiver-hook", test_dead_socket_receiver_hook, false },
		{ "resume-attach/cancel-silent", test_cancel_silent, false },
		{ "resume-attach/cancel-silent-hook", test_cancel_silent_hook, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
