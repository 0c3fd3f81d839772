/* SPDX-License-Identifier: MIT */
/*
 * Cuts during setup (docs/wire-format.md, "Setup"): a proxy between sender and receiver cuts one
 * connection of the session's setup (data 0, control, a later data channel, the urgent
 * connection when postcopy is offered) before its HELLO, between its HELLO and its HELLO_ACK,
 * or in the middle of its TLS handshake. tm_sender_connect() succeeds, the migration completes
 * bit-exact on both sides and the sender counts the reconnect. With resume off the same cut
 * fails the setup with a clear error. Every test runs for each backend pair, plaintext and TLS
 * (session-fixture.c); the cut between HELLO and HELLO_ACK finds the HELLO_ACK by its frame
 * header (plaintext only), the mid-handshake cut is TLS only.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "codec/codec.h"
#include "fake-peer.h"
#include "resume-rig.h"
#include "session/resume.h"
#include "transport/transport.h"

/* The proxy's accept indexes with 3 channels: data 0, control, data 1, data 2, urgent. */
#define DATA0 0
#define CONTROL 1
#define DATA2 3
#define URGENT 4

/* ---- a receiver with live settings, in its own thread ---- */
/* Both sides completed, the copy is exact, the sender counted at least min reconnects. */
static void assert_done(run *t, uint64_t min)
{
	tm_live_stats ss, rs;
	run_assert_complete(t, &ss, &rs);
	g_assert_cmpuint(ss.reconnects, >=, min);
}

typedef enum { BEFORE_HELLO, BEFORE_ACK, MID_TLS } cut_point;

static void migrate(run *t)
{
	t->r = run_connect(t);
	if (t->r == 0)
		t->r = run_queue_all(t);
	if (t->r == 0)
		t->r = tm_sender_sync(t->s, &t->err);
	if (t->r == 0)
		t->r = tm_sender_finish(t->s, &t->err);
	rpeer_join(&t->p);
}

/* Connection conn (accept index) is cut at point; postcopy: the sender offers it (the receiver
 * declines: its VMM did not ask), so the urgent connection is part of the setup. */
static void setup_cut(int conn, cut_point point, bool postcopy)
{
	run t;
	tm_live_config lc = { .size = sizeof(lc), .postcopy = postcopy };

	if (point == BEFORE_ACK && tls_dir) {
		g_test_skip("the proxy finds the HELLO_ACK by its frame header: plaintext only");
		return;
	}
	if (point == MID_TLS && !tls_dir) {
		g_test_skip("a cut in the TLS handshake: TLS only");
		return;
	}
	run_start(&t, &lc, 0);
	if (point == BEFORE_ACK)
		proxy_arm_frame(&t.px, conn, TM_MSG_HELLO_ACK, false);
	else /* before a byte went through; in TLS once the ClientHello did */
		proxy_arm(&t.px, conn, point == MID_TLS ? 1 : 0);
	migrate(&t);
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1);
	/* A declined urgent connection whose HELLO_ACK is lost closes as it would have. */
	assert_done(&t, conn == URGENT && point == BEFORE_ACK ? 0 : 1);
	run_end(&t);
}

static void test_data0_before_hello(void) { setup_cut(DATA0, BEFORE_HELLO, false); }
static void test_data0_before_ack(void) { setup_cut(DATA0, BEFORE_ACK, false); }
static void test_data0_mid_tls(void) { setup_cut(DATA0, MID_TLS, false); }
static void test_control_before_hello(void) { setup_cut(CONTROL, BEFORE_HELLO, false); }
static void test_control_before_ack(void) { setup_cut(CONTROL, BEFORE_ACK, false); }
static void test_control_mid_tls(void) { setup_cut(CONTROL, MID_TLS, false); }
static void test_data2_before_hello(void) { setup_cut(DATA2, BEFORE_HELLO, false); }
static void test_data2_mid_tls(void) { setup_cut(DATA2, MID_TLS, false); }
static void test_urgent_before_hello(void) { setup_cut(URGENT, BEFORE_HELLO, true); }
static void test_urgent_before_ack(void) { setup_cut(URGENT, BEFORE_ACK, true); }
static void test_urgent_mid_tls(void) { setup_cut(URGENT, MID_TLS, true); }

/*
 * A one-sided cut (the proxy's half_recv): the receiver's side of connection conn closes at
 * point, the sender's stays open and silent, so the sender hears nothing more on it: its TLS
 * handshake (MID_TLS) or its wait for a HELLO_ACK (BEFORE_HELLO: the receiver never got the
 * HELLO and waits for that role; BEFORE_ACK: only the HELLO_ACK was lost) would last until its
 * deadline. The sender dials the connection again (or resumes it, once a HELLO_ACK agreed the
 * session): both sides return 0, bit-exact, within a few handshake deadlines of the sender
 * (2 s here), long before the receiver's accept deadline (10 s).
 */
static void silent_cut_ex2(int conn, cut_point point, bool freeze, unsigned recv_ms)
{
	run t;

	if (point != MID_TLS && tls_dir) {
		g_test_skip("the proxy finds HELLO and HELLO_ACK by their frame headers: plaintext only");
		return;
	}
	if (point == MID_TLS && !tls_dir) {
		g_test_skip("a cut in the TLS handshake: TLS only");
		return;
	}
	rig_send_timeout_ms = 2000;
	rig_recv_timeout_ms = recv_ms;
	run_start(&t, NULL, 0);
	t.px.half_recv = true;
	t.px.half = freeze; /* the receiver's side too is kept open and silent */
	if (point == BEFORE_HELLO)
		proxy_arm_frame(&t.px, conn, TM_MSG_HELLO, true);
	else if (point == BEFORE_ACK)
		proxy_arm_frame(&t.px, conn, TM_MSG_HELLO_ACK, false);
	else /* once the ClientHello went through */
		proxy_arm(&t.px, conn, 1);
	int64_t t0 = g_get_monotonic_time();
	migrate(&t);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	rig_send_timeout_ms = 20000;
	rig_recv_timeout_ms = 20000;
	g_test_message("%.1f s; sender: %s; receiver: %s", secs, t.err ? t.err->message : "ok",
		       t.p.error ? t.p.error->message : "ok");
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1);
	assert_done(&t, 1);
	g_assert_cmpfloat(secs, <, 9.0);
	run_end(&t);
}

static void silent_cut_ex(int conn, cut_point point, bool freeze)
{
	silent_cut_ex2(conn, point, freeze, 10000);
}
static void silent_cut(int conn, cut_point point) { silent_cut_ex(conn, point, false); }

static void test_data2_silent_tls(void) { silent_cut(DATA2, MID_TLS); }
static void test_control_silent_tls(void) { silent_cut(CONTROL, MID_TLS); }
static void test_data0_silent_tls(void) { silent_cut(DATA0, MID_TLS); }
static void test_data2_silent_hello(void) { silent_cut(DATA2, BEFORE_HELLO); }
static void test_control_silent_hello(void) { silent_cut(CONTROL, BEFORE_HELLO); }
static void test_data0_silent_hello(void) { silent_cut(DATA0, BEFORE_HELLO); }
static void test_data2_silent_ack(void) { silent_cut(DATA2, BEFORE_ACK); }
static void test_control_silent_ack(void) { silent_cut(CONTROL, BEFORE_ACK); }
static void test_data0_silent_ack(void) { silent_cut(DATA0, BEFORE_ACK); }

/*
 * Frozen: both sides of the connection are kept open and silent (a dead path, or a peer that
 * stopped in the middle of its handshake). The receiver handshakes other connections while it
 * waits for that one (its deadline is 10 s here, the whole accept), so the sender's redial of it
 * gets through: both sides return 0, bit-exact, within a few of the sender's handshake deadlines.
 */
static void test_data2_frozen_tls(void) { silent_cut_ex(DATA2, MID_TLS, true); }
static void test_control_frozen_tls(void) { silent_cut_ex(CONTROL, MID_TLS, true); }
static void test_data2_frozen_hello(void) { silent_cut_ex(DATA2, BEFORE_HELLO, true); }
static void test_control_frozen_hello(void) { silent_cut_ex(CONTROL, BEFORE_HELLO, true); }

/*
 * The same cuts with equal timeouts on both sides (2 s, the default is equal too): the sender
 * hears nothing for its timeout_ms, about when the receiver's first accept deadline ends, so
 * that receiver keeps accepting while the sender is at work (each connection placed or
 * replaced moves its deadline to 1.5 timeouts later), and the sender's TLS handshakes at setup
 * end within half the receiver's handshake deadline. Both sides return 0, bit-exact (issue 14's
 * cut sweep).
 */
static void test_data2_silent_hello_equal(void) { silent_cut_ex2(DATA2, BEFORE_HELLO, false, 2000); }
static void test_control_silent_hello_equal(void)
{
	silent_cut_ex2(CONTROL, BEFORE_HELLO, false, 2000);
}
static void test_data0_frozen_hello_equal(void) { silent_cut_ex2(DATA0, BEFORE_HELLO, true, 2000); }
static void test_data0_silent_tls_equal(void) { silent_cut_ex2(DATA0, MID_TLS, false, 2000); }

/*
 * The most channels (64): the last data channel (the last connection the sender sets up)
 * cut on the receiver's side before its HELLO (TLS: in its handshake), so the receiver waits
 * for it and answers no connection; the sender then dials every connection again in the setup
 * order, and the receiver replaces the 64 it had before the lost one comes: a redial round of a
 * large session is no stranger flood, and the migration completes.
 */
static void test_many_channels_redial(void)
{
	rig_channels = TM_MAX_CHANNELS;
	silent_cut((int)TM_MAX_CHANNELS, tls_dir ? MID_TLS : BEFORE_HELLO); /* data 63 */
	rig_channels = 3;
}
static void test_control_frozen_tls_equal(void) { silent_cut_ex2(CONTROL, MID_TLS, true, 2000); }

/*
 * The receiver's send of a connection's HELLO_ACK fails (the test hook shuts the connection
 * down first: a send into a dead socket would succeed, and the failure path never run). The
 * receiver goes on, the sender sees the connection close before its HELLO_ACK and resumes it
 * at position 0 (control: with RESUME_CONTROL; a data channel: as any broken one, by its
 * worker): the migration completes bit-exact, both sides counting the reconnect.
 */
static void ack_send_fails(int which)
{
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	run t;

	tm_setup_test_fail_ack(which);
	run_start(&t, NULL, 0);
	migrate(&t);
	tm_setup_test_fail_ack(0);
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 0);
	tm_live_stats ss, rs;
	run_assert_complete(&t, &ss, &rs);
	g_assert_cmpuint(ss.reconnects, >=, 1);
	g_assert_cmpuint(rs.reconnects, >=, 1);
	run_end(&t);
#else
	(void)which;
	g_test_skip("needs -Dtest_hooks=true (a HELLO_ACK send that fails)");
#endif
}

static void test_control_ack_send_fails(void) { ack_send_fails(TM_SETUP_TEST_ACK_CONTROL); }
static void test_data_ack_send_fails(void) { ack_send_fails(TM_SETUP_TEST_ACK_DATA); }

/* Resume off on the sender: a cut before HELLO fails the setup, naming the connection. */
static void test_no_resume(void)
{
	run t;
	tm_live_config lc = { .size = sizeof(lc), .no_resume = true };

	rig_recv_timeout_ms = 3000; /* it waits for the connection that never comes */
	run_start(&t, &lc, 0);
	proxy_arm(&t.px, CONTROL, 0);
	t.r = run_connect(&t);
	g_assert_cmpint(t.r, <, 0);
	g_test_message("sender: %s", t.err->message);
	tm_sender_free(t.s);
	t.s = NULL;
	rpeer_join(&t.p);
	rig_recv_timeout_ms = 20000;
	g_assert_cmpint(t.p.ret, <, 0);
	g_test_message("receiver: %s", t.p.error->message);
	/* At once, naming the control connection; not the receiver's accept deadline later. */
	g_assert_true(g_str_has_prefix(t.err->message, "handshake: control: ") ||
		      g_str_has_prefix(t.err->message, "control: TLS handshake: "));
	run_end(&t);
}

/*
 * A receiver with a shorter timeout than the sender's (1 s and 3 s) gives up before the
 * sender's redials of a control connection cut on the receiver's side only: it refuses the
 * connections it placed, naming the one it lacked, and the sender fails at once quoting that,
 * not after resume_deadline_ms of redials that blame channel 0.
 */
static void test_receiver_gave_up(void)
{
	run t;

	if (tls_dir) {
		g_test_skip("the proxy finds the HELLO by its frame header: plaintext only");
		return;
	}
	rig_send_timeout_ms = 3000;
	rig_recv_timeout_ms = 1000;
	run_start(&t, NULL, 0);
	t.px.half_recv = true;
	proxy_arm_frame(&t.px, CONTROL, TM_MSG_HELLO, true);
	int64_t t0 = g_get_monotonic_time();
	t.r = run_connect(&t);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	tm_sender_free(t.s);
	t.s = NULL;
	rpeer_join(&t.p);
	rig_send_timeout_ms = 20000;
	rig_recv_timeout_ms = 20000;
	g_assert_cmpint(t.r, ==, -ETIMEDOUT);
	g_test_message("sender (%.1f s): %s", secs, t.err->message);
	g_test_message("receiver: %s", t.p.error->message);
	g_assert_cmpint(t.p.ret, ==, -ETIMEDOUT);
	g_assert_nonnull(strstr(t.p.error->message, "(missing: control)"));
	g_assert_true(g_str_has_prefix(t.err->message, "handshake: channel 0: receiver refused: "));
	g_assert_nonnull(strstr(t.err->message, "(missing: control)"));
	g_assert_cmpfloat(secs, <, 3.0); /* before the sender's own silence (3 s) */
	run_end(&t);
}

/* The proxy refuses every connection after the cut: the sender gives up within its deadline
 * (1 s) and says it could not connect again. */
static void test_deadline(void)
{
	run t;
	tm_live_config lc = { .size = sizeof(lc), .resume_deadline_ms = 1000 };

	rig_recv_timeout_ms = 3000;
	run_start(&t, &lc, 0);
	t.px.refuse_after = true;
	proxy_arm(&t.px, DATA2, 0);
	int64_t t0 = g_get_monotonic_time();
	t.r = run_connect(&t);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	g_assert_cmpint(t.r, <, 0);
	g_test_message("sender (%.1f s): %s", secs, t.err->message);
	g_assert_nonnull(strstr(t.err->message, "could not connect again within"));
	g_assert_cmpfloat(secs, <, 10.0);
	tm_sender_free(t.s);
	t.s = NULL;
	rpeer_join(&t.p);
	rig_recv_timeout_ms = 20000;
	g_assert_cmpint(t.p.ret, <, 0);
	run_end(&t);
}

/* ---- the receiver's side, by hand (plaintext) ---- */
/*
 * A frozen receiver (as SIGSTOPped: its kernel completes every TCP connect, nothing answers):
 * the sender dials its unanswered connections again, and fails when resume_deadline_ms (1.5 s)
 * has passed since the first redial, saying so, within a handshake deadline (1 s) more.
 */
static void test_frozen_receiver(void)
{
	guest src;
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;
	unsigned port;

	const block_spec a = { "pc.ram", 1 << 20, 4096 };
	guest_init(&src, &a, 1, false);
	int lfd = tm_listen("127.0.0.1", "0", &port, NULL); /* never accepted */
	g_assert_cmpint(lfd, >=, 0);
	g_autofree char *ports = g_strdup_printf("%u", port);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 2,
				 .timeout_ms = 1000 };
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &cfg, &s, &err), ==, 0);
	tm_live_config lc = { .size = sizeof(lc), .resume_deadline_ms = 1500 };
	g_assert_cmpint(tm_sender_set_live(s, &lc, &err), ==, 0);
	int64_t t0 = g_get_monotonic_time();
	int r = tm_sender_connect(s, "127.0.0.1", ports, &err);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	close(lfd);
	g_assert_cmpint(r, ==, -ETIMEDOUT);
	g_test_message("sender (%.1f s): %s", secs, err->message);
	g_assert_nonnull(strstr(err->message, "could not connect again within 1.5 s"));
	g_assert_nonnull(strstr(err->message, tls_dir ? "TLS handshake" : "no answer to its HELLO"));
	g_assert_cmpfloat(secs, >=, 1.5);
	g_assert_cmpfloat(secs, <, 5.0);
	guest_fini(&src);
}


static const block_spec raw_block = { "pc.ram", 4 << 20, 4096 };
static const fake_hello raw_hello = { .version = 2, .channel_count = 2, .packet_size = 64 << 10,
				      .chunk_size = 64 << 10, .block = { "pc.ram", 4 << 20, 4096 },
				      .sid = 7, .features = TM_FEATURE_RESUME };

/*
 * Data 0's first connection sends its HELLO and breaks; the sender dials it again with the
 * same HELLO (epoch 0): the receiver, still accepting, takes it in place of the first, and every
 * connection of the session gets its HELLO_ACK (not "channel id 0 connected twice").
 */
static void test_replace(void)
{
	guest dst;
	peer p;

	guest_init(&dst, &raw_block, 1, false);
	g_autofree char *port = peer_start_ex(&p, &dst, false, 5000);
	fake_hello h = raw_hello;
	h.role = TM_ROLE_DATA;
	close(fake_connect(port, &h)); /* its HELLO arrives, then the close */
	fake_sender w;
	fake_sender_open(&w, port, &h); /* data 0 again, control, data 1; their HELLO_ACKs */
	g_assert_cmpuint(w.ack.features & TM_FEATURE_RESUME, !=, 0);
	for (int k = 0; k < FAKE_CONNS; k++)
		if (w.fd[k] >= 0)
			close(w.fd[k]);
	peer_join(&p);
	g_test_message("receiver, after the fake sender left: %s",
		       p.error ? p.error->message : "ok");
	g_assert_cmpint(p.ret, <, 0);
	peer_free(&p);
	guest_fini(&dst);
}

/* Redials replace at most 64 + 2 per connection of the session times (tm_strangers_bound(): 70
 * for this one of 2 channels and control): the 70th ends the accept, with the reason. */
static void test_replace_bounded(void)
{
	guest dst;
	peer p;

	guest_init(&dst, &raw_block, 1, false);
	g_autofree char *port = peer_start_ex(&p, &dst, false, 10000);
	fake_hello h = raw_hello;
	h.role = TM_ROLE_DATA;
	for (unsigned i = 0; i < 1 + 64 + 2 * 3; i++)
		close(fake_connect(port, &h));
	peer_join(&p);
	g_assert_cmpint(p.ret, <, 0);
	g_test_message("receiver: %s", p.error->message);
	g_assert_nonnull(strstr(p.error->message, "the most a session tolerates"));
	g_assert_nonnull(strstr(p.error->message, "dialled again"));
	peer_free(&p);
	guest_fini(&dst);
}

/* A second HELLO of another epoch is no setup redial: it ends the session as before, and
 * nothing is replaced. */
static void test_replace_epoch(void)
{
	guest dst;
	peer p;

	guest_init(&dst, &raw_block, 1, false);
	g_autofree char *port = peer_start_ex(&p, &dst, false, 5000);
	fake_hello h = raw_hello;
	h.role = TM_ROLE_DATA;
	int first = fake_connect(port, &h);
	h.epoch = 1;
	int second = fake_connect(port, &h);
	peer_join(&p);
	close(first);
	close(second);
	g_assert_cmpint(p.ret, <, 0);
	g_test_message("receiver: %s", p.error->message);
	g_assert_nonnull(strstr(p.error->message, "epoch differs"));
	peer_free(&p);
	guest_fini(&dst);
}

/*
 * The same cuts in attach mode (resume-rig.h, rig_attach): the VMMs' own sockets, the reconnect
 * hook on both sides. The sender dials again through its hook, the receiver takes the redial
 * through its own while it still handshakes the attached sockets, in place of the one it
 * placed where there is one (silent cuts: every unanswered connection is dialled again).
 */
static void in_attach_mode(void (*fn)(void))
{
	rig_attach = true;
	fn();
	rig_attach = false;
}

static void test_attach_data0_before_hello(void) { in_attach_mode(test_data0_before_hello); }
static void test_attach_control_before_hello(void) { in_attach_mode(test_control_before_hello); }
static void test_attach_data2_before_hello(void) { in_attach_mode(test_data2_before_hello); }
static void test_attach_data0_mid_tls(void) { in_attach_mode(test_data0_mid_tls); }
static void test_attach_data2_silent_hello(void) { in_attach_mode(test_data2_silent_hello); }
static void test_attach_control_silent_hello_equal(void)
{
	in_attach_mode(test_control_silent_hello_equal);
}
static void test_attach_data0_silent_tls(void) { in_attach_mode(test_data0_silent_tls); }
static void test_attach_data2_frozen_hello(void) { in_attach_mode(test_data2_frozen_hello); }
static void test_attach_data0_frozen_hello_equal(void)
{
	in_attach_mode(test_data0_frozen_hello_equal);
}

/*
 * Attach mode, equal timeouts (2 s): data 0 is cut at once on the sender's side only, its
 * receiver's side stays open and silent. The receiver's attached socket for it waits for a
 * HELLO until its deadline (2 s after attach began), but it holds neither the others nor the
 * sender's redial of it (through both hooks), so the session completes long before that, and
 * before the sender's redials run out (resume_deadline_ms, 2 s after the cut).
 */
static void test_attach_data0_half_equal(void)
{
	run t;

	rig_attach = true;
	rig_send_timeout_ms = rig_recv_timeout_ms = 2000;
	tm_live_config lc = { .size = sizeof(lc), .resume_deadline_ms = 2000 };
	run_start(&t, &lc, 2000);
	t.px.half = true;
	proxy_arm(&t.px, DATA0, 0);
	int64_t t0 = g_get_monotonic_time();
	migrate(&t);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	rig_attach = false;
	rig_send_timeout_ms = rig_recv_timeout_ms = 20000;
	g_test_message("%.2f s; sender: %s; receiver: %s", secs, t.err ? t.err->message : "ok",
		       t.p.error ? t.p.error->message : "ok");
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1);
	assert_done(&t, 1);
	g_assert_cmpfloat(secs, <, 1.5);
	run_end(&t);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "resume-setup/data0-before-hello", test_data0_before_hello, false },
		{ "resume-setup/many-channels-redial", test_many_channels_redial, false },
		{ "resume-setup/attach/data0-before-hello", test_attach_data0_before_hello, false },
		{ "resume-setup/attach/control-before-hello", test_attach_control_before_hello,
		  false },
		{ "resume-setup/attach/data2-before-hello", test_attach_data2_before_hello, false },
		{ "resume-setup/attach/data0-mid-tls", test_attach_data0_mid_tls, false },
		{ "resume-setup/attach/data2-silent-hello", test_attach_data2_silent_hello, false },
		{ "resume-setup/attach/control-silent-hello-equal",
		  test_attach_control_silent_hello_equal, false },
		{ "resume-setup/attach/data0-silent-tls", test_attach_data0_silent_tls, false },
		{ "resume-setup/attach/data2-frozen-hello", test_attach_data2_frozen_hello, false },
		{ "resume-setup/attach/data0-frozen-hello-equal",
		  test_attach_data0_frozen_hello_equal, false },
		{ "resume-setup/attach/data0-half-equal", test_attach_data0_half_equal, false },
		{ "resume-setup/data0-before-ack", test_data0_before_ack, false },
		{ "resume-setup/data0-mid-tls", test_data0_mid_tls, false },
		{ "resume-setup/control-before-hello", test_control_before_hello, false },
		{ "resume-setup/control-before-ack", test_control_before_ack, false },
		{ "resume-setup/control-mid-tls", test_control_mid_tls, false },
		{ "resume-setup/data2-before-hello", test_data2_before_hello, false },
		{ "resume-setup/data2-mid-tls", test_data2_mid_tls, false },
		{ "resume-setup/urgent-before-hello", test_urgent_before_hello, false },
		{ "resume-setup/urgent-before-ack", test_urgent_before_ack, false },
		{ "resume-setup/urgent-mid-tls", test_urgent_mid_tls, false },
		{ "resume-setup/data2-silent-tls", test_data2_silent_tls, false },
		{ "resume-setup/control-silent-tls", test_control_silent_tls, false },
		{ "resume-setup/data0-silent-tls", test_data0_silent_tls, false },
		{ "resume-setup/data2-silent-hello", test_data2_silent_hello, false },
		{ "resume-setup/control-silent-hello", test_control_silent_hello, false },
		{ "resume-setup/data0-silent-hello", test_data0_silent_hello, false },
		{ "resume-setup/data2-silent-ack", test_data2_silent_ack, false },
		{ "resume-setup/control-silent-ack", test_control_silent_ack, false },
		{ "resume-setup/data0-silent-ack", test_data0_silent_ack, false },
		{ "resume-setup/data2-frozen-tls", test_data2_frozen_tls, false },
		{ "resume-setup/control-frozen-tls", test_control_frozen_tls, false },
		{ "resume-setup/data2-frozen-hello", test_data2_frozen_hello, false },
		{ "resume-setup/control-frozen-hello", test_control_frozen_hello, false },
		{ "resume-setup/data2-silent-hello-equal", test_data2_silent_hello_equal, false },
		{ "resume-setup/control-silent-hello-equal", test_control_silent_hello_equal, false },
		{ "resume-setup/data0-frozen-hello-equal", test_data0_frozen_hello_equal, false },
		{ "resume-setup/data0-silent-tls-equal", test_data0_silent_tls_equal, false },
		{ "resume-setup/control-frozen-tls-equal", test_control_frozen_tls_equal, false },
		{ "resume-setup/control-ack-send-fails", test_control_ack_send_fails, false },
		{ "resume-setup/data-ack-send-fails", test_data_ack_send_fails, false },
		{ "resume-setup/no-resume", test_no_resume, false },
		{ "resume-setup/deadline", test_deadline, false },
		{ "resume-setup/receiver-gave-up", test_receiver_gave_up, false },
		{ "resume-setup/frozen-receiver", test_frozen_receiver, false },
		{ "resume-setup/replace", test_replace, true },
		{ "resume-setup/replace-bounded", test_replace_bounded, true },
		{ "resume-setup/replace-epoch", test_replace_epoch, true },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
