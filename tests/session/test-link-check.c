/* SPDX-License-Identifier: MIT */
/*
 * LINK_CHECK (session/link-check.c; docs/wire-format.md, "A path that acknowledges what it does
 * not deliver"): a data connection whose path keeps both ends open and stops forwarding at a
 * message boundary, acknowledging what it took (cut-proxy.c's half + half_recv: a frozen
 * TCP-terminating middlebox). Nothing is unacknowledged and no message is half read, so before
 * LINK_CHECK the sender waited for an answer for good. Now the sender finds the gap between
 * both ends' byte counts after timeout_ms and resumes the connection, whichever way the held
 * bytes go; without resume the session fails and says why. A receiver whose VMM is slow behind
 * the same proxy (the proxy holds bytes then too, the receiver's window closed) is no gap.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "resume-rig.h"
#include "session/session-internal.h"
#include "transport/transport.h"

#define DATA2 3 /* the proxy's accept index of data channel 2 (0 data 0, 1 control, k + 1 data k) */
#define TIMEOUT_MS 1000u

/* Both sides completed bit-exact, with the one device-state section, no reconnect on either
 * side, the receiver's wait at least min_secs long; the run ended. */
static void assert_done_whole(run *t, double min_secs)
{
	tm_live_stats ss = { .size = sizeof(ss) }, rs = { .size = sizeof(rs) };
	run_assert_complete(t, &ss, &rs);
	g_assert_cmpuint(t->p.states, ==, 1);
	g_assert_cmpfloat(t->p.secs, >=, min_secs);
	g_assert_cmpuint(ss.reconnects, ==, 0);
	g_assert_cmpuint(rs.reconnects, ==, 0);
	run_end(t);
}

/* Data channel 2's path freezes right before a frame of type (from the sender or not). */
static void held(uint8_t type, bool from_sender)
{
	run t;

	if (tls_dir) {
		g_test_skip("the proxy finds the message by its frame header: plaintext only");
		return;
	}
	rig_send_timeout_ms = rig_recv_timeout_ms = TIMEOUT_MS;
	run_start(&t, NULL, 5000);
	run_fill_state(&t);
	t.px.exact = true;
	t.px.half = t.px.half_recv = true; /* both sides kept open and silent */
	proxy_arm_frame(&t.px, DATA2, type, from_sender);
	int64_t t0 = g_get_monotonic_time();
	t.r = run_migrate(&t);
	rpeer_join(&t.p);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	rig_send_timeout_ms = rig_recv_timeout_ms = 20000;
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1);
	tm_live_stats ss = { .size = sizeof(ss) }, rs = { .size = sizeof(rs) };
	run_assert_complete(&t, &ss, &rs);
	g_assert_cmpuint(t.p.states, ==, 1);
	g_test_message("%.2f s, reconnects %" G_GUINT64_FORMAT "/%" G_GUINT64_FORMAT, secs,
		       (guint64)ss.reconnects, (guint64)rs.reconnects);
	/* That connection alone: the others flowed, or waited with their receiver's window shut. */
	g_assert_cmpuint(ss.reconnects, ==, 1);
	g_assert_cmpuint(rs.reconnects, ==, 1);
	/* timeout_ms of gap, up to two keepalive intervals to see it (quiet, then asked) */
	g_assert_cmpfloat(secs, <, 1.0 + 0.5 + 4.0);
	run_end(&t);
}

static void test_held_data(void)
{
	held(TM_MSG_DATA, true);
}

static void test_held_sync(void)
{
	held(TM_MSG_SYNC, true);
}

/* The held bytes go the other way: the sender waits for them, the receiver for nothing. */
static void test_held_sync_ack(void)
{
	held(TM_MSG_SYNC_ACK, false);
}

static void test_held_state(void)
{
	held(TM_MSG_STATE, true);
}

static void test_held_end(void)
{
	held(TM_MSG_END, true);
}

/*
 * Without resume the session fails, saying what the path did, instead of waiting for good:
 * held before a frame of type on data channel 2, from the sender. The watchdog turns a held
 * connection that is never found into a failure of the test instead of a hang.
 */
static void held_no_resume(uint8_t type)
{
	run t;

	if (tls_dir) {
		g_test_skip("the proxy finds the message by its frame header: plaintext only");
		return;
	}
	rig_send_timeout_ms = rig_recv_timeout_ms = TIMEOUT_MS;
	tm_live_config lc = { .size = sizeof(lc), .no_resume = true };
	run_start(&t, &lc, 0);
	run_fill_state(&t);
	t.px.exact = true;
	t.px.half = t.px.half_recv = true;
	proxy_arm_frame(&t.px, DATA2, type, true);
	int64_t t0 = g_get_monotonic_time();
	watchdog wd;
	watchdog_start(&wd, t.s, NULL, 20, "test: the held connection was not found in 20 s");
	t.r = run_migrate(&t);
	watchdog_stop(&wd);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	rpeer_join(&t.p);
	rig_send_timeout_ms = rig_recv_timeout_ms = 20000;
	g_test_message("sender (%.2f s): %s", secs, t.err ? t.err->message : "no error");
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1);
	g_assert_cmpint(t.r, ==, -ETIMEDOUT);
	g_assert_nonnull(strstr(t.err->message, "channel 2: the receiver got "));
	g_assert_nonnull(strstr(t.err->message, " bytes fewer than this end's path acknowledged"));
	g_assert_nonnull(strstr(t.err->message, "something on the path holds them"));
	if (type == TM_MSG_SYNC)
		g_assert_nonnull(strstr(t.err->message, "the receiver got 24 bytes fewer"));
	/* timeout_ms of gap, up to two keepalive intervals to see it (quiet, then asked) */
	g_assert_cmpfloat(secs, <, 1.0 + 0.5 + 4.0);
	g_assert_cmpint(t.p.ret, <, 0);
	g_test_message("receiver (%.2f s): %s", t.p.secs, t.p.error->message);
	/* The sender's reason: its ERROR on control goes before it closes the data channels
	 * (through this proxy, which passes the receiver's half-close on as a close, an ERROR
	 * after them was lost about 1 run in 8). */
	g_assert_nonnull(strstr(t.p.error->message, "something on the path holds them"));
	run_end(&t);
}

static void test_held_no_resume(void)
{
	held_no_resume(TM_MSG_SYNC);
}

/*
 * After the sender's END on control: the data channel's END is held. The sender waits for
 * END_ACK, the receiver for that channel's END, and control's keepalive keeps both content; the
 * sender's questions after its END find it (issue 14).
 */
static void test_held_end_no_resume(void)
{
	held_no_resume(TM_MSG_END);
}

/*
 * The sender asks until END_ACK, so a question may cross it: here always (the hook asks about
 * channel 0 as READY arrives, which leaves the receiver with END_ACK). The receiver's close
 * reads past it to the sender's close (TLS: close_notify, plaintext: FIN) and both ends
 * complete; without that a TLS receiver took the question for data where close_notify must
 * come, a plaintext one could reset the connection under the sender's unread END_ACK.
 */
static void cross_end(bool no_resume)
{
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	run t;

	tm_live_config lc = { .size = sizeof(lc), .no_resume = no_resume };
	run_start(&t, &lc, no_resume ? 0 : 5000);
	run_fill_state(&t);
	unsigned before = tm_link_watch_test_crossed();
	tm_link_watch_test_cross(true);
	t.r = run_migrate(&t);
	tm_link_watch_test_cross(false);
	rpeer_join(&t.p);
	g_assert_cmpuint(tm_link_watch_test_crossed(), >, before);
	assert_done_whole(&t, 0);
#else
	(void)no_resume;
	g_test_skip("needs the library's test hooks (-Dtest_hooks=true)");
#endif
}

static void test_cross_end_no_resume(void)
{
	cross_end(true);
}

static void test_cross_end(void)
{
	cross_end(false);
}

/*
 * No cut: the receiver's VMM waits 3 timeouts before it reads device state, so its data
 * channels' windows close and the proxy holds what the sender sent meanwhile (acknowledged,
 * not delivered). That is a slow VMM, not a dead path: no reconnect.
 */
static void test_slow_vmm(void)
{
	run t;

	rig_send_timeout_ms = rig_recv_timeout_ms = TIMEOUT_MS;
	run_start(&t, NULL, 5000);
	run_fill_state(&t);
	t.p.state_delay_ms = 3 * TIMEOUT_MS;
	t.r = run_migrate(&t);
	rpeer_join(&t.p);
	rig_send_timeout_ms = rig_recv_timeout_ms = 20000;
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 0);
	assert_done_whole(&t, 3.0);
}

/*
 * Attach mode: the "VMMs" (this test) dial and accept the session's sockets themselves and hand
 * them over, and their reconnect hooks hand over each new one. With a preamble every socket
 * first carries bytes that are not the session's, as a VMM's may: the source VMM's request to
 * the proxy and the proxy's answer (an HTTP CONNECT: only the source's kernel counts them),
 * then a preamble each way between the VMMs (PRE_S, PRE_R), which both kernels count. LINK_CHECK
 * counts from where each end took the socket (tm_chan.base), so none of it is a gap.
 */
#define GREET_IN 64
#define GREET_OUT 19
#define PRE_S 100
#define PRE_R 37

static struct {
	run *t;
	bool preamble;
	unsigned dialled, accepted; /* connections the hooks handed over (atomics) */
	int unix_fds[4];            /* attach-unix: the destination's ends, else -1 */
} vmm;

static bool put(int fd, char c, size_t n)
{
	char buf[256];
	memset(buf, c, n);
	return send(fd, buf, n, MSG_NOSIGNAL) == (ssize_t)n;
}

/* n bytes of c from fd within timeout_ms (the peer wrote them before it waits for ours). */
static bool get(int fd, char c, size_t n, unsigned timeout_ms)
{
	char buf[256];
	struct pollfd pf = { .fd = fd, .events = POLLIN };
	if (poll(&pf, 1, (int)timeout_ms) != 1 || recv(fd, buf, n, MSG_WAITALL) != (ssize_t)n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (buf[i] != c)
			return false;
	return true;
}

/* The source VMM's connection through the proxy, its preamble exchanged. */
static int vmm_dial(unsigned timeout_ms)
{
	int fd = tm_net_connect("127.0.0.1", vmm.t->pport, timeout_ms, -1, NULL);
	if (fd < 0 || !vmm.preamble)
		return fd;
	if (!put(fd, 'C', GREET_IN) || !get(fd, 'G', GREET_OUT, timeout_ms) ||
	    !put(fd, 'S', PRE_S) || !get(fd, 'R', PRE_R, timeout_ms)) {
		close(fd);
		return -EIO;
	}
	return fd;
}

/* The destination VMM's next connection on its listener within timeout_ms, its preamble
 * exchanged. */
static int vmm_accept(int listen_fd, unsigned timeout_ms)
{
	struct pollfd pf = { .fd = listen_fd, .events = POLLIN };
	if (poll(&pf, 1, (int)timeout_ms) != 1)
		return -ETIMEDOUT;
	int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0 || !vmm.preamble)
		return fd < 0 ? -errno : fd;
	if (!put(fd, 'R', PRE_R) || !get(fd, 'S', PRE_S, 5000)) {
		close(fd);
		return -EIO;
	}
	return fd;
}

static int sender_hook(void *opaque, unsigned connection, unsigned timeout_ms)
{
	(void)opaque;
	(void)connection;
	int fd = vmm_dial(timeout_ms);
	if (fd >= 0)
		__atomic_add_fetch(&vmm.dialled, 1, __ATOMIC_RELAXED);
	return fd;
}

static int receiver_hook(void *opaque, unsigned connection, unsigned timeout_ms)
{
	rpeer *p = opaque;
	g_assert_cmpuint(connection, ==, TM_RECONNECT_ANY);
	int fd = vmm_accept(p->listen_fd, timeout_ms);
	if (fd >= 0)
		__atomic_add_fetch(&vmm.accepted, 1, __ATOMIC_RELAXED);
	return fd;
}

static void check_state(void *opaque, const char *name, const uint8_t *data, size_t len)
{
	rpeer *p = opaque;
	(void)name;
	p->states++;
	g_assert_cmpuint(len, ==, RIG_STATE_LEN);
	g_assert_true(memcmp(data, p->state, RIG_STATE_LEN) == 0);
}

/* The destination VMM: accepts the session's 4 connections itself, then attach, as rpeer. */
static gpointer vmm_receiver(gpointer data)
{
	rpeer *p = data;
	tm_receiver_config cfg = { .io_backend = recv_io, .tls_creds_dir = tls_dir,
				   .timeout_ms = rig_recv_timeout_ms };
	int fds[4];

	for (unsigned i = 0; i < 4; i++) {
		fds[i] = vmm.unix_fds[i] >= 0 ? vmm.unix_fds[i] : vmm_accept(p->listen_fd, 20000);
		g_assert_cmpint(fds[i], >=, 0);
	}
	p->ret = tm_receiver_new(&cfg, &p->r, &p->error);
	if (p->ret >= 0)
		p->ret = tm_receiver_set_live(p->r, &p->live, &p->error);
	if (p->ret >= 0)
		p->ret = tm_receiver_attach(p->r, fds, 4, &p->error);
	else
		for (unsigned i = 0; i < 4; i++)
			close(fds[i]);
	int64_t t0 = g_get_monotonic_time();
	if (p->ret >= 0)
		p->ret = tm_receiver_start(p->r, p->g->layout, p->g->tags, &p->error);
	while (p->ret >= 0) {
		p->ret = tm_receiver_wait(p->r, &p->error);
		if (p->ret != 1)
			break;
		if (p->state_delay_ms)
			g_usleep((gulong)p->state_delay_ms * 1000);
		p->ret = receiver_read_states(p->r, check_state, p, &p->error);
	}
	p->secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	return NULL;
}

/* run_start() in attach mode, both sides with the reconnect hook, or (unix_fds: the
 * destination's ends of socketpairs in the sender's setup order) without; the state to send
 * filled. */
static void attach_start(run *t, bool preamble, unsigned state_delay_ms, const int *unix_fds)
{
	static const block_spec spec[] = { { "pc.ram", RIG_RAM, 4096 } };
	g_autoptr(GError) err = NULL;
	unsigned port = 0;

	memset(t, 0, sizeof(*t));
	vmm.t = t;
	vmm.preamble = preamble;
	vmm.dialled = vmm.accepted = 0;
	for (unsigned i = 0; i < 4; i++)
		vmm.unix_fds[i] = unix_fds ? unix_fds[i] : -1;
	guest_init(&t->src, spec, 1, true);
	guest_init(&t->dst, spec, 1, true);
	guest_fill(&t->src);
	t->p.g = &t->dst;
	t->p.live = (tm_live_config){ .size = sizeof(t->p.live), .resume_deadline_ms = 5000,
				      .reconnect = unix_fds ? NULL : receiver_hook,
				      .reconnect_opaque = &t->p };
	t->p.listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(t->p.listen_fd, >=, 0);
	t->port = g_strdup_printf("%u", port);
	t->pport = proxy_start(&t->px, t->port);
	if (preamble) {
		g_mutex_lock(&t->px.lock);
		t->px.greet_in = GREET_IN;
		t->px.greet_out = GREET_OUT;
		t->px.pre_s = PRE_S;
		t->px.pre_r = PRE_R;
		g_mutex_unlock(&t->px.lock);
	}
	run_fill_state(t);
	t->p.state_delay_ms = state_delay_ms;
	t->p.thread = g_thread_new("receiver", vmm_receiver, &t->p);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir,
				 .tls_hostname = "127.0.0.1", .channels = 3,
				 .timeout_ms = rig_send_timeout_ms, .packet_size = 64u << 10 };
	/* Zero-copy sends forced: io_uring must still send plainly on a unix socket. */
	if (unix_fds)
		cfg.tuning.zerocopy = 1;
	tm_live_config lc = { .size = sizeof(lc), .reconnect = unix_fds ? NULL : sender_hook };
	g_assert_cmpint(tm_sender_new(t->src.layout, t->src.tags, &cfg, &t->s, &err), ==, 0);
	g_assert_cmpint(tm_sender_set_live(t->s, &lc, &err), ==, 0);
}

/* run_migrate() on sockets fds[] (the sender's order: data channels, control last); idle_ms
 * after the round's sync before it stops the guest (every connection quiet, everything read). */
static int migrate_on(run *t, int fds[4], unsigned idle_ms)
{
	int r = tm_sender_attach(t->s, fds, 4, &t->err);
	if (r == 0)
		r = run_queue_all(t);
	if (r == 0)
		r = tm_sender_sync(t->s, &t->err);
	if (r == 0 && idle_ms)
		g_usleep((gulong)idle_ms * 1000);
	if (r == 0)
		r = tm_sender_guest_stopped(t->s, &t->err);
	if (r == 0)
		r = tm_sender_put_state(t->s, "dev", t->state, RIG_STATE_LEN, 0, &t->err);
	if (r == 0)
		r = tm_sender_finish(t->s, &t->err);
	return r;
}

/* migrate_on() in attach mode: the source VMM dials in the sender's setup order (data 0,
 * control, data 1..: the proxy's indices are tm_sender_connect()'s), each once the proxy took
 * the one before. */
static int attach_migrate(run *t, unsigned idle_ms)
{
	int fds[4];
	for (unsigned k = 0; k < 4; k++) {
		unsigned idx = k == 0 ? 0 : k == 1 ? 3 : k - 1;
		unsigned before = proxy_get(&t->px, &t->px.accepted);
		fds[idx] = vmm_dial(5000);
		g_assert_cmpint(fds[idx], >=, 0);
		for (int w = 0; w < 5000 && proxy_get(&t->px, &t->px.accepted) == before; w++)
			g_usleep(1000);
	}
	return migrate_on(t, fds, idle_ms);
}

/* held() on a VMM's own sockets with a preamble: found and resumed through the hooks. */
static void held_attach(uint8_t type, bool from_sender)
{
	run t;

	if (tls_dir) {
		g_test_skip("the proxy finds the message by its frame header: plaintext only");
		return;
	}
	rig_send_timeout_ms = rig_recv_timeout_ms = TIMEOUT_MS;
	attach_start(&t, true, 0, NULL);
	t.px.exact = true;
	t.px.half = t.px.half_recv = true;
	proxy_arm_frame(&t.px, DATA2, type, from_sender);
	int64_t t0 = g_get_monotonic_time();
	watchdog wd;
	watchdog_start(&wd, t.s, NULL, 20, "test: the held connection was not found in 20 s");
	t.r = attach_migrate(&t, 0);
	watchdog_stop(&wd);
	rpeer_join(&t.p);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	rig_send_timeout_ms = rig_recv_timeout_ms = 20000;
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1);
	tm_live_stats ss, rs;
	run_assert_complete(&t, &ss, &rs);
	g_assert_cmpuint(t.p.states, ==, 1);
	g_test_message("%.2f s, reconnects %" G_GUINT64_FORMAT "/%" G_GUINT64_FORMAT
		       "; hooks: dialled %u, accepted %u",
		       secs, (guint64)ss.reconnects, (guint64)rs.reconnects, vmm.dialled,
		       vmm.accepted);
	g_assert_cmpuint(ss.reconnects, ==, 1);
	g_assert_cmpuint(rs.reconnects, ==, 1);
	g_assert_cmpuint(vmm.dialled, >=, 1);
	g_assert_cmpuint(vmm.accepted, >=, 1);
	g_assert_cmpfloat(secs, <, 1.0 + 0.5 + 4.0);
	run_end(&t);
}

static void test_attach_held_data(void)
{
	held_attach(TM_MSG_DATA, true);
}

static void test_attach_held_sync_ack(void)
{
	held_attach(TM_MSG_SYNC_ACK, false);
}

/*
 * slow-vmm on a VMM's own sockets with a preamble: the bytes before the session's (64 only the
 * source's kernel counts) are no gap, neither while the source VMM idles after the round (every
 * connection quiet and read: checked for 3 timeouts) nor while the destination VMM does not
 * read and the proxy holds bytes: no reconnect.
 */
static void test_attach_preamble(void)
{
	run t;

	rig_send_timeout_ms = rig_recv_timeout_ms = TIMEOUT_MS;
	attach_start(&t, true, 3 * TIMEOUT_MS, NULL);
	t.r = attach_migrate(&t, 3 * TIMEOUT_MS);
	rpeer_join(&t.p);
	rig_send_timeout_ms = rig_recv_timeout_ms = 20000;
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 0);
	assert_done_whole(&t, 3.0);
}

/*
 * A VMM's own unix socketpairs: LINK_CHECK is agreed (session-protocol's link-check-attach)
 * and no connection is checked (no TCP counts): with the source idle 3 timeouts after the round
 * (every connection quiet), no dead path is found (without a reconnect hook it would fail the
 * session) and nothing is an error.
 */
static void test_attach_unix(void)
{
	run t;
	int pair[4][2], fds[4], theirs[4];

	for (unsigned k = 0; k < 4; k++)
		g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair[k]), ==, 0);
	/* The destination takes them in the sender's setup order: data 0, control, data 1, 2. */
	const unsigned order[4] = { 0, 3, 1, 2 };
	for (unsigned k = 0; k < 4; k++) {
		fds[k] = pair[k][0];
		theirs[k] = pair[order[k]][1];
	}
	rig_send_timeout_ms = rig_recv_timeout_ms = TIMEOUT_MS;
	attach_start(&t, false, 0, theirs);
	t.r = migrate_on(&t, fds, 3 * TIMEOUT_MS);
	rpeer_join(&t.p);
	rig_send_timeout_ms = rig_recv_timeout_ms = 20000;
	assert_done_whole(&t, 0);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "link-check/held-data", test_held_data, false },
		{ "link-check/held-sync", test_held_sync, false },
		{ "link-check/held-sync-ack", test_held_sync_ack, false },
		{ "link-check/held-state", test_held_state, false },
		{ "link-check/held-end", test_held_end, false },
		{ "link-check/held-no-resume", test_held_no_resume, false },
		{ "link-check/held-end-no-resume", test_held_end_no_resume, false },
		{ "link-check/cross-end", test_cross_end, false },
		{ "link-check/cross-end-no-resume", test_cross_end_no_resume, false },
		{ "link-check/slow-vmm", test_slow_vmm, false },
		{ "link-check/attach-held-data", test_attach_held_data, false },
		{ "link-check/attach-held-sync-ack", test_attach_held_sync_ack, false },
		{ "link-check/attach-preamble", test_attach_preamble, false },
		{ "link-check/attach-unix", test_attach_unix, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
