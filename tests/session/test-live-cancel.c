/* SPDX-License-Identifier: MIT */
/*
 * Cancel from another thread (docs/design/live-engine.md 1.5): in the connect (a receiver that
 * never accepts, or whose accept queue is full), in accept, in a round (pages in flight to a
 * slow destination), in a sync wait and in finish; by the sender and by the receiver. Every blocked call
 * of both sides returns -ECANCELED (the peer: the failure that names the canceller's reason)
 * within a second, and both sides are freed (ASan: no leak).
 */
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "session-fixture.h"
#include "session/session-internal.h"
#include "tagmig/error.h"

#define BLOCK (8u << 20)
#define PAGES (BLOCK / 4096u)
#define SECOND G_USEC_PER_SEC
static const block_spec one_block[] = { { "pc.ram", BLOCK, 4096 } };

/* ---- a monitor thread that cancels after a delay ---- */

typedef struct monitor {
	tm_sender *s;
	tm_receiver *r;
	unsigned delay_ms;
	const char *reason;
	int ret;
	int64_t t; /* when the cancel was called */
	GThread *thread;
} monitor;

/* 1 while the slow destination holds every packet it got (slow_present): until the cancel. */
static gint slow_gate;

static gpointer monitor_fn(gpointer data)
{
	monitor *m = data;
	g_usleep(m->delay_ms * 1000);
	__atomic_store_n(&m->t, g_get_monotonic_time(), __ATOMIC_RELEASE);
	m->ret = m->s ? tm_sender_cancel(m->s, m->reason) : tm_receiver_cancel(m->r, m->reason);
	g_atomic_int_set(&slow_gate, 0); /* the cancel came first: the destination may go on */
	return NULL;
}

static void monitor_start(monitor *m, tm_sender *s, tm_receiver *r, unsigned delay_ms,
			  const char *reason)
{
	*m = (monitor){ .s = s, .r = r, .delay_ms = delay_ms, .reason = reason };
	m->thread = g_thread_new("monitor", monitor_fn, m);
}

/* Joins the monitor; the call that returned at `now` did so within a second of the cancel. */
static void monitor_join(monitor *m, int64_t now)
{
	g_thread_join(m->thread);
	g_assert_cmpint(m->ret, ==, 0);
	g_assert_cmpint(m->t, >, 0);
	g_assert_cmpint(now - m->t, <, SECOND);
}

static void assert_cancelled(int r, const GError *err, const char *text)
{
	g_assert_cmpint(r, ==, -ECANCELED);
	g_assert_nonnull(err);
	g_assert_cmpint(err->code, ==, ECANCELED);
	g_test_message("%s", err->message);
	g_assert_nonnull(strstr(err->message, text));
}

/*
 * ---- a receiver in a thread, slow to apply pages: a round lasts until the monitor cancelled
 * (timed alone, a monitor starved for 2 s cancelled a round already acknowledged) ----
 */

typedef struct slow_peer {
	guest *g;
	int listen_fd;
	tm_receiver *r;
	int ret;
	GError *error;
	int64_t t_end; /* when wait returned */
	GThread *thread;
} slow_peer;

static void slow_present(void *opaque, unsigned ch, unsigned block, uint64_t first, uint64_t n)
{
	g_usleep(200000);
	while (g_atomic_int_get(&slow_gate))
		g_usleep(10000);
}

static gpointer slow_peer_fn(gpointer data)
{
	slow_peer *p = data;
	p->ret = tm_receiver_accept(p->r, p->listen_fd, &p->error);
	if (p->ret >= 0)
		p->ret = tm_receiver_start(p->r, p->g->layout, NULL, &p->error);
	if (p->ret >= 0)
		p->ret = tm_receiver_wait(p->r, &p->error);
	__atomic_store_n(&p->t_end, g_get_monotonic_time(), __ATOMIC_RELEASE);
	return NULL;
}

static char *slow_peer_start(slow_peer *p, guest *g)
{
	unsigned port = 0;
	tm_receiver_config cfg = { .io_backend = recv_io, .tls_creds_dir = tls_dir,
				   .timeout_ms = 20000, .on_present = slow_present };
	*p = (slow_peer){ .g = g, .listen_fd = tm_listen("127.0.0.1", "0", &port, NULL) };
	g_atomic_int_set(&slow_gate, 1);
	g_assert_cmpint(p->listen_fd, >=, 0);
	g_assert_cmpint(tm_receiver_new(&cfg, &p->r, NULL), ==, 0);
	p->thread = g_thread_new("receiver", slow_peer_fn, p);
	return g_strdup_printf("%u", port);
}

static void slow_peer_join(slow_peer *p)
{
	g_thread_join(p->thread);
	close(p->listen_fd);
}

static void slow_peer_free(slow_peer *p)
{
	tm_receiver_free(p->r);
	g_clear_error(&p->error);
}

static tm_sender *sender_new(guest *g)
{
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 2,
				 .timeout_ms = 20000 };
	tm_sender *s = NULL;
	g_assert_cmpint(tm_sender_new(g->layout, NULL, &cfg, &s, NULL), ==, 0);
	return s;
}

static int queue_all(tm_sender *s, GError **err)
{
	uint64_t bm[PAGES / 64];
	memset(bm, 0xff, sizeof(bm));
	return tm_sender_queue_bitmap(s, 0, bm, 0, PAGES, err);
}

/* ---- tests ---- */

/*
 * Connect phase: a receiver that listens but never accepts (the sender waits for HELLO_ACK, or
 * for the TLS handshake), and one whose accept queue is full (the sender waits in connect).
 */
static void test_cancel_connect(void)
{
	guest src;
	guest_init(&src, one_block, 1, false);
	for (int full = 0; full < 2; full++) {
		int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), fill[4] = { -1, -1, -1, -1 };
		struct sockaddr_in sa = { .sin_family = AF_INET,
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		socklen_t sl = sizeof(sa);
		g_assert_cmpint(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
		g_assert_cmpint(listen(lfd, full ? 0 : 16), ==, 0);
		g_assert_cmpint(getsockname(lfd, (struct sockaddr *)&sa, &sl), ==, 0);
		for (int i = 0; full && i < 4; i++) {
			fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
			(void)!connect(fill[i], (struct sockaddr *)&sa, sizeof(sa));
		}
		g_autofree char *port = g_strdup_printf("%u", ntohs(sa.sin_port));
		g_autoptr(GError) err = NULL;
		tm_sender *s = sender_new(&src);
		monitor m;
		monitor_start(&m, s, NULL, 300, "operator said so");
		int r = tm_sender_connect(s, "127.0.0.1", port, &err);
		monitor_join(&m, g_get_monotonic_time());
		assert_cancelled(r, err, "sender cancelled: operator said so");
		g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_FAILED);
		g_assert_cmpuint(tm_sender_take_events(s), ==, TM_EVENT_FAILED);
		g_assert_cmpint(tm_sender_cancel(s, "again"), ==, -EALREADY);
		tm_sender_free(s);
		for (int i = 0; i < 4; i++)
			if (fill[i] >= 0)
				close(fill[i]);
		close(lfd);
	}
	guest_fini(&src);
}

/* The receiver waits in accept for a sender that never comes. */
static void test_cancel_accept(void)
{
	unsigned port = 0;
	int lfd = tm_listen("127.0.0.1", "0", &port, NULL);
	tm_receiver_config cfg = { .io_backend = recv_io, .tls_creds_dir = tls_dir, .timeout_ms = 20000 };
	g_autoptr(GError) err = NULL;
	tm_receiver *r = NULL;
	monitor m;

	g_assert_cmpint(tm_receiver_new(&cfg, &r, NULL), ==, 0);
	monitor_start(&m, NULL, r, 300, "no sender today");
	int ret = tm_receiver_accept(r, lfd, &err);
	monitor_join(&m, g_get_monotonic_time());
	assert_cancelled(ret, err, "receiver cancelled: no sender today");
	g_assert_cmpint(tm_receiver_phase(r), ==, TM_PHASE_FAILED);
	g_assert_cmpint(tm_receiver_cancel(r, "again"), ==, -EALREADY);
	tm_receiver_free(r);
	close(lfd);
}

/*
 * Round phase: pages are in flight to a slow destination and the migration thread is between
 * calls when the monitor cancels. The receiver's wait fails with the sender's reason within a
 * second; the sender's next call fails at once with its own.
 */
static void test_cancel_round(void)
{
	guest src, dst;
	slow_peer p;
	g_autoptr(GError) err = NULL;

	guest_init(&src, one_block, 1, false);
	guest_init(&dst, one_block, 1, false);
	guest_fill(&src);
	g_autofree char *port = slow_peer_start(&p, &dst);
	tm_sender *s = sender_new(&src);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", port, &err), ==, 0);
	g_assert_cmpint(queue_all(s, &err), ==, 0);
	monitor m;
	monitor_start(&m, s, NULL, 200, "round aborted by the VMM");
	g_thread_join(m.thread);
	g_assert_cmpint(m.ret, ==, 0);
	int r = tm_sender_sync(s, &err);
	g_assert_cmpint(g_get_monotonic_time() - m.t, <, SECOND);
	assert_cancelled(r, err, "sender cancelled: round aborted by the VMM");
	slow_peer_join(&p);
	g_assert_cmpint(p.t_end - m.t, <, SECOND);
	assert_cancelled(p.ret, p.error, "sender cancelled: round aborted by the VMM");
	g_assert_cmpint(tm_receiver_phase(p.r), ==, TM_PHASE_FAILED);
	g_assert_cmpuint(tm_receiver_take_events(p.r), ==, TM_EVENT_FAILED);
	tm_sender_free(s);
	slow_peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

/* Sync (or finish) phase: either side cancels while the sender's migration thread is blocked. */
static void cancel_sync(bool by_receiver, bool finish)
{
	guest src, dst;
	slow_peer p;
	g_autoptr(GError) err = NULL;
	const char *why = by_receiver ? "receiver cancelled: destination host going down"
				      : "sender cancelled: source host going down";

	guest_init(&src, one_block, 1, false);
	guest_init(&dst, one_block, 1, false);
	guest_fill(&src);
	g_autofree char *port = slow_peer_start(&p, &dst);
	tm_sender *s = sender_new(&src);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", port, &err), ==, 0);
	g_assert_cmpint(queue_all(s, &err), ==, 0);
	monitor m;
	monitor_start(&m, by_receiver ? NULL : s, by_receiver ? p.r : NULL, 300,
		      by_receiver ? "destination host going down" : "source host going down");
	int r = finish ? tm_sender_finish(s, &err) : tm_sender_sync(s, &err);
	monitor_join(&m, g_get_monotonic_time());
	assert_cancelled(r, err, why);
	slow_peer_join(&p);
	g_assert_cmpint(p.t_end - m.t, <, SECOND);
	assert_cancelled(p.ret, p.error, why);
	g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_FAILED);
	g_assert_cmpint(tm_receiver_phase(p.r), ==, TM_PHASE_FAILED);
	g_assert_cmpint(tm_sender_cancel(s, "again"), ==, -EALREADY);
	g_assert_cmpint(tm_receiver_cancel(p.r, "again"), ==, -EALREADY);
	tm_sender_free(s);
	slow_peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

static void test_cancel_sync_sender(void)
{
	cancel_sync(false, false);
}

static void test_cancel_sync_receiver(void)
{
	cancel_sync(true, false);
}

static void test_cancel_finish(void)
{
	cancel_sync(false, true);
	cancel_sync(true, true);
}

/*
 * A destination VMM that stops in on_present (its worker reads nothing more): the sender's
 * zero-copy sends wait for acknowledgements that cannot come. A cancel still ends the sender's
 * sync within a second; the receiver follows once its VMM returns.
 */
static gint stuck_gate; /* 1 while the destination's callback holds its worker */

static void stuck_present(void *opaque, unsigned ch, unsigned block, uint64_t first, uint64_t n)
{
	while (g_atomic_int_get(&stuck_gate))
		g_usleep(10000);
}

static void test_cancel_stuck_destination(void)
{
	guest src, dst;
	slow_peer p;
	g_autoptr(GError) err = NULL;
	unsigned port = 0;

	guest_init(&src, one_block, 1, false);
	guest_init(&dst, one_block, 1, false);
	guest_fill(&src);
	g_atomic_int_set(&stuck_gate, 1);
	tm_receiver_config rcfg = { .io_backend = recv_io, .tls_creds_dir = tls_dir,
				    .timeout_ms = 20000, .on_present = stuck_present };
	p = (slow_peer){ .g = &dst, .listen_fd = tm_listen("127.0.0.1", "0", &port, NULL) };
	g_assert_cmpint(tm_receiver_new(&rcfg, &p.r, NULL), ==, 0);
	p.thread = g_thread_new("receiver", slow_peer_fn, &p);
	g_autofree char *ports = g_strdup_printf("%u", port);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 1,
				 .timeout_ms = 20000, .tuning.zerocopy = 1 };
	tm_sender *s = NULL;
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &cfg, &s, NULL), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", ports, &err), ==, 0);
	for (int i = 0; i < 4; i++) /* 32 MiB: more than the sockets' buffers hold */
		g_assert_cmpint(queue_all(s, &err), ==, 0);
	monitor m;
	monitor_start(&m, s, NULL, 500, "destination stuck");
	int r = tm_sender_sync(s, &err);
	monitor_join(&m, g_get_monotonic_time());
	assert_cancelled(r, err, "sender cancelled: destination stuck");
	g_atomic_int_set(&stuck_gate, 0);
	slow_peer_join(&p);
	g_assert_cmpint(p.ret, ==, -ECANCELED);
	tm_sender_free(s);
	slow_peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

/* After a completed session a cancel is too late; the event fd told of the end. */
static void test_cancel_after_end(void)
{
	guest src, dst;
	peer p;
	g_autoptr(GError) err = NULL;

	guest_init(&src, one_block, 1, false);
	guest_init(&dst, one_block, 1, false);
	g_autofree char *port = peer_start(&p, &dst);
	tm_sender *s = sender_new(&src);
	int efd = tm_sender_event_fd(s);
	g_assert_cmpint(efd, >=, 0);
	g_assert_cmpuint(tm_sender_take_events(s), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", port, &err), ==, 0);
	g_assert_cmpint(queue_all(s, &err), ==, 0);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	uint64_t v;
	g_assert_cmpint(read(efd, &v, sizeof(v)), ==, sizeof(v)); /* readable */
	g_assert_cmpuint(tm_sender_take_events(s), ==, TM_EVENT_COMPLETE);
	g_assert_cmpint(tm_sender_cancel(s, "late"), ==, -EALREADY);
	peer_join(&p);
	g_assert_cmpint(p.ret, ==, 0);
	g_assert_cmpint(tm_receiver_cancel(p.r, "late"), ==, -EALREADY);
	tm_sender_free(s);
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

/*
 * Which failure a session reports (session/failure.c): a peer's ERROR replaces a local failure,
 * unless it only says "connection closed" (the echo of this side's own shutdown, which a control
 * thread can read after its workers failed) or the local failure is a cancel.
 */
static void test_failure_rules(void)
{
	tm_failure f = { 0 };

	tm_failure_record(&f, g_error_new_literal(TM_ERROR, EINVAL, "bad tag"), false);
	g_assert_false(tm_failure_record(
		&f, g_error_new_literal(TM_ERROR, ECONNRESET, "receiver failed: closed"), true));
	g_assert_false(tm_failure_record(&f, g_error_new_literal(TM_ERROR, EPIPE, "gone"), true));
	g_assert_cmpint(f.error->code, ==, EINVAL);
	g_assert_true(tm_failure_record(&f, g_error_new_literal(TM_ERROR, ENOSPC, "tags"), true));
	g_assert_cmpint(f.error->code, ==, ENOSPC);
	g_assert_false(tm_failure_record(&f, g_error_new_literal(TM_ERROR, EPROTO, "x"), true));
	g_clear_error(&f.error);

	f = (tm_failure){ 0 };
	tm_failure_record(&f, g_error_new_literal(TM_ERROR, ECANCELED, "sender cancelled: x"), false);
	f.cancelled = true;
	g_assert_false(tm_failure_record(&f, g_error_new_literal(TM_ERROR, EPROTO, "echo"), true));
	g_assert_cmpint(f.error->code, ==, ECANCELED);
	g_clear_error(&f.error);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "connect", test_cancel_connect, false },
		{ "accept", test_cancel_accept, false },
		{ "round", test_cancel_round, false },
		{ "sync-sender", test_cancel_sync_sender, false },
		{ "sync-receiver", test_cancel_sync_receiver, false },
		{ "finish", test_cancel_finish, false },
		{ "stuck-destination", test_cancel_stuck_destination, false },
		{ "after-end", test_cancel_after_end, false },
		{ "failure-rules", test_failure_rules, true }, /* no I/O: plaintext pairs suffice */
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
