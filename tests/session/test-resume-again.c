/* SPDX-License-Identifier: MIT */
/*
 * Resume cases the other resume tests leave out: a connection that is itself a reconnect is
 * cut again (data channel 2 and the control connection, once streaming and once before its
 * resume handshake), and the control connection is cut after the switch to postcopy while the
 * background runs (docs/wire-format.md, "Resume of the control connection"). Each completes
 * bit-exact on both sides, and both sides count the reconnects. Every test runs for each backend
 * pair, plaintext and TLS (session-fixture.c); the postcopy one skips without userfaultfd.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "cut-proxy.h"
#include "session-fixture.h"
#include "transport/transport.h"

#define NCH 3u
#define CONTROL 1 /* the proxy's accept index of the first control connection */
#define DATA2 3   /* ... of data channel 2; the first reconnect through it is index 4 */
#define RECONNECT 4
#define RAM (16u << 20)
#define PAGE 4096u
#define STATE_LEN 4096u

static const block_spec spec[] = { { "pc.ram", RAM, PAGE } };

/* ---- a receiver in its own thread (postcopy when asked), reading device state ---- */
typedef struct rpeer {
	guest g;
	int listen_fd;
	bool postcopy;
	tm_receiver *r;
	GError *error;
	int ret;
	uint8_t state[STATE_LEN];
	bool state_seen;
	GThread *thread;
} rpeer;

static gpointer rpeer_thread(gpointer data)
{
	rpeer *p = data;
	tm_receiver_config cfg = { .io_backend = recv_io, .tls_creds_dir = tls_dir,
				   .timeout_ms = 20000 };
	tm_live_config lc = { .size = sizeof(lc), .postcopy = p->postcopy,
			      .uffd_user_mode_only = p->postcopy };
	tm_state_info info;

	p->ret = tm_receiver_new(&cfg, &p->r, &p->error);
	if (p->ret >= 0)
		p->ret = tm_receiver_set_live(p->r, &lc, &p->error);
	if (p->ret >= 0)
		p->ret = tm_receiver_accept(p->r, p->listen_fd, &p->error);
	if (p->ret >= 0)
		p->ret = tm_receiver_start(p->r, p->g.layout, p->g.tags, &p->error);
	while (p->ret >= 0 && (p->ret = tm_receiver_wait(p->r, &p->error)) == 1) {
		while ((p->ret = tm_receiver_next_state(p->r, &info, &p->error)) == 1) {
			g_autofree uint8_t *buf = g_malloc(info.length + 1);
			if ((p->ret = tm_receiver_read_state(p->r, buf, info.length, &p->error)) < 0)
				break;
			if (info.length == STATE_LEN) {
				memcpy(p->state, buf, STATE_LEN);
				p->state_seen = true;
			}
		}
	}
	return NULL;
}

/* ---- one migration through the cutting proxy ---- */
typedef struct run {
	guest src;
	rpeer p;
	cut_proxy px;
	char *port, *pport;
	tm_sender *s;
	GError *err;
	int r;
	uint8_t state[STATE_LEN];
} run;

static void run_start(run *t, bool postcopy, uint64_t rate)
{
	g_autoptr(GError) err = NULL;
	unsigned port = 0;

	memset(t, 0, sizeof(*t));
	guest_init(&t->src, spec, 1, true);
	guest_fill(&t->src);
	guest_init(&t->p.g, spec, 1, true);
	t->p.postcopy = postcopy;
	t->p.listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(t->p.listen_fd, >=, 0);
	t->port = g_strdup_printf("%u", port);
	t->p.thread = g_thread_new("receiver", rpeer_thread, &t->p);
	t->pport = proxy_start(&t->px, t->port);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = NCH,
				 .timeout_ms = 20000, .packet_size = 64u << 10,
				 .chunk_size = 64u << 10 };
	tm_live_config lc = { .size = sizeof(lc), .postcopy = postcopy };
	g_assert_cmpint(tm_sender_new(t->src.layout, t->src.tags, &cfg, &t->s, &err), ==, 0);
	g_assert_cmpint(tm_sender_set_live(t->s, &lc, &err), ==, 0);
	if (tm_sender_connect(t->s, "127.0.0.1", t->pport, &err) < 0)
		g_error("connect: %s", err->message);
	g_assert_cmpint(tm_sender_set_rate_limit(t->s, rate), ==, 0);
	for (unsigned i = 0; i < STATE_LEN; i++)
		t->state[i] = (uint8_t)rnd();
}

/* Every page queued: the round starts. */
static void run_queue(run *t)
{
	g_autoptr(GError) err = NULL;
	uint64_t bm[RAM / PAGE / 64];

	memset(bm, 0xff, sizeof(bm));
	g_assert_cmpint(tm_sender_queue_bitmap(t->s, 0, bm, 0, RAM / PAGE, &err), ==, 0);
}

static void run_end(run *t)
{
	tm_sender_free(t->s);
	tm_receiver_free(t->p.r);
	g_clear_error(&t->p.error);
	close(t->p.listen_fd);
	proxy_stop(&t->px);
	guest_fini(&t->src);
	guest_fini(&t->p.g);
	g_free(t->port);
	g_free(t->pport);
	g_clear_error(&t->err);
}

/* Both sides completed bit-exact with the device state, each counted at least `reconnects`
 * and the sender at most one per cut. */
static void assert_resumed(run *t, uint64_t reconnects)
{
	if (t->r != 0)
		g_test_message("sender: %s", t->err->message);
	g_assert_cmpint(t->r, ==, 0);
	if (t->p.ret != 0)
		g_test_message("receiver: %s", t->p.error->message);
	g_assert_cmpint(t->p.ret, ==, 0);
	assert_same(&t->src, &t->p.g);
	g_assert_true(t->p.state_seen);
	g_assert_true(memcmp(t->p.state, t->state, STATE_LEN) == 0);
	tm_live_stats ss = { .size = sizeof(ss) }, rs = { .size = sizeof(rs) };
	g_assert_cmpint(tm_sender_get_live_stats(t->s, &ss), ==, 0);
	g_assert_cmpint(tm_receiver_get_live_stats(t->p.r, &rs), ==, 0);
	g_test_message("reconnects: sender %" G_GUINT64_FORMAT ", receiver %" G_GUINT64_FORMAT
		       " (refused %" G_GUINT64_FORMAT "); cuts %u",
		       ss.reconnects, rs.reconnects, rs.resume_refused, proxy_cuts(&t->px));
	g_assert_cmpuint(ss.reconnects, >=, reconnects);
	g_assert_cmpuint(rs.reconnects, >=, reconnects);
	g_assert_cmpuint(ss.reconnects, <=, proxy_cuts(&t->px));
	g_assert_cmpuint(ss.phase, ==, TM_PHASE_COMPLETE);
}

/* Waits (30 s at most) until the proxy made n cuts. */
static void await_cuts(run *t, unsigned n)
{
	for (unsigned ms = 0; proxy_cuts(&t->px) < n && ms < 30000; ms += 5)
		g_usleep(5000);
	if (proxy_cuts(&t->px) != n) {
		g_mutex_lock(&t->px.lock);
		for (unsigned i = 0; i < t->px.accepted; i++)
			g_test_message("connection %u: %" G_GUINT64_FORMAT " bytes", i, t->px.fwd[i]);
		g_mutex_unlock(&t->px.lock);
	}
	g_assert_cmpuint(proxy_cuts(&t->px), ==, n);
}

/*
 * Connection first is cut `after` bytes into the round (16 MiB at 8 MiB/s), and then its
 * reconnect: `second` bytes after it came up (streaming; control: once its resume handshake went
 * through), or at once (before its HELLO and RESUME: an attempt that fails and is tried again).
 * The round, device state and the end complete. Both cuts are armed before the round starts,
 * the second by the proxy as it makes the first: armed by a thread of the test's, each came too
 * late under load (data 2 had sent its share of the round, or its reconnect the rest of it) and
 * never came at all.
 */
static void again(int first, uint64_t after, uint64_t second, uint64_t reconnects)
{
	run t;

	run_start(&t, false, 8u << 20);
	proxy_arm_next(&t.px, RECONNECT, second);
	proxy_arm(&t.px, first, after);
	run_queue(&t);
	t.r = tm_sender_sync(t.s, &t.err);
	await_cuts(&t, 2);
	if (t.r == 0)
		t.r = tm_sender_guest_stopped(t.s, &t.err);
	if (t.r == 0)
		t.r = tm_sender_put_state(t.s, "cpu0", t.state, STATE_LEN, TM_STATE_COPY, &t.err);
	if (t.r == 0)
		t.r = tm_sender_finish(t.s, &t.err);
	g_thread_join(t.p.thread);
	assert_resumed(&t, reconnects);
	run_end(&t);
}

static void test_data_twice(void)
{
	again(DATA2, 256u << 10, 128u << 10, 2);
}

static void test_data_reconnect_cut(void)
{
	again(DATA2, 256u << 10, 0, 1);
}

static void test_control_twice(void)
{
	/* Control carries little: cut at once, and its reconnect once it sent its first bytes. */
	again(CONTROL, 0, 1, 1);
}

static void test_control_reconnect_cut(void)
{
	again(CONTROL, 0, 0, 1);
}

/*
 * The control connection is cut after the switch to postcopy, while the background runs at
 * 2 MiB/s: the control thread reconnects (CTL_RESUME), and the background, device state and
 * the end complete.
 */
static void test_control_after_switch(void)
{
	run t;

	if (!uffd_usable())
		return;
	run_start(&t, true, 2u << 20);
	run_queue(&t);
	t.r = tm_sender_start_postcopy(t.s, &t.err);
	if (t.r == 0)
		t.r = tm_sender_put_state(t.s, "cpu0", t.state, STATE_LEN, TM_STATE_COPY, &t.err);
	for (unsigned ms = 0; t.r == 0 && ms < 10000 &&
			      tm_receiver_phase(t.p.r) != TM_PHASE_POSTCOPY;
	     ms++)
		g_usleep(1000);
	g_assert_cmpint(tm_sender_phase(t.s), ==, TM_PHASE_POSTCOPY);
	proxy_arm(&t.px, CONTROL, 0);
	await_cuts(&t, 1);
	if (t.r == 0)
		t.r = tm_sender_finish(t.s, &t.err);
	g_thread_join(t.p.thread);
	assert_resumed(&t, 1);
	run_end(&t);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "resume-again/data-twice", test_data_twice, false },
		{ "resume-again/data-reconnect-cut", test_data_reconnect_cut, false },
		{ "resume-again/control-twice", test_control_twice, false },
		{ "resume-again/control-reconnect-cut", test_control_reconnect_cut, false },
		{ "resume-again/control-after-switch", test_control_after_switch, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
