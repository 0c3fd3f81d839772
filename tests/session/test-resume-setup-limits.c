/* SPDX-License-Identifier: MIT */
/*
 * Where a setup with cuts meets its limits (docs/wire-format.md, "Setup"; docs/api.md,
 * "Resume"): resume off, the sender's resume deadline, a receiver that gave up or is frozen,
 * the bound on setup redials, the most channels, a HELLO_ACK whose send fails. Each either
 * completes bit-exact or fails within its bound with an error that says why. Every test runs
 * for each backend pair, plaintext and TLS (session-fixture.c).
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "codec/codec.h"
#include "fake-peer.h"
#include "session/resume.h"
#include "setup-cuts.h"
#include "transport/transport.h"

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
	setup_silent_cut((int)TM_MAX_CHANNELS, tls_dir ? MID_TLS : BEFORE_HELLO, false, 10000);
	rig_channels = 3;
}

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
	setup_migrate(&t);
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

/* A receiver of raw_block (accept deadline timeout_ms) and data 0's HELLO for it, to send by
 * hand. */
typedef struct raw_rig {
	guest dst;
	peer p;
	char *port;
	fake_hello h;
} raw_rig;

static void raw_start(raw_rig *x, unsigned timeout_ms)
{
	guest_init(&x->dst, &raw_block, 1, false);
	x->port = peer_start_ex(&x->p, &x->dst, false, timeout_ms);
	x->h = raw_hello;
	x->h.role = TM_ROLE_DATA;
}

/* The receiver (joined) failed; its error must contain each of the NULL-ended wants. */
static void raw_end_failed(raw_rig *x, const char *const *wants)
{
	g_test_message("receiver: %s", x->p.error ? x->p.error->message : "ok");
	g_assert_cmpint(x->p.ret, <, 0);
	for (; *wants; wants++)
		g_assert_nonnull(strstr(x->p.error->message, *wants));
	peer_free(&x->p);
	guest_fini(&x->dst);
	g_free(x->port);
}

/*
 * Data 0's first connection sends its HELLO and breaks; the sender dials it again with the
 * same HELLO (epoch 0): the receiver, still accepting, takes it in place of the first, and every
 * connection of the session gets its HELLO_ACK (not "channel id 0 connected twice"); the
 * session then fails when the fake sender leaves.
 */
static void test_replace(void)
{
	raw_rig x;

	raw_start(&x, 5000);
	close(fake_connect(x.port, &x.h)); /* its HELLO arrives, then the close */
	fake_sender w;
	fake_sender_open(&w, x.port, &x.h); /* data 0 again, control, data 1; their HELLO_ACKs */
	g_assert_cmpuint(w.ack.features & TM_FEATURE_RESUME, !=, 0);
	for (int k = 0; k < FAKE_CONNS; k++)
		if (w.fd[k] >= 0)
			close(w.fd[k]);
	peer_join(&x.p);
	raw_end_failed(&x, (const char *const[]){ NULL });
}

/* Redials replace at most 64 + 2 per connection of the session times (tm_strangers_bound(): 70
 * for this one of 2 channels and control): the 70th ends the accept, with the reason. */
static void test_replace_bounded(void)
{
	raw_rig x;

	raw_start(&x, 10000);
	for (unsigned i = 0; i < 1 + 64 + 2 * 3; i++)
		close(fake_connect(x.port, &x.h));
	peer_join(&x.p);
	raw_end_failed(&x, (const char *const[]){ "the most a session tolerates", "dialled again",
						  NULL });
}

/* A second HELLO of another epoch is no setup redial: it ends the session as before, and
 * nothing is replaced. */
static void test_replace_epoch(void)
{
	raw_rig x;

	raw_start(&x, 5000);
	int first = fake_connect(x.port, &x.h);
	x.h.epoch = 1;
	int second = fake_connect(x.port, &x.h);
	peer_join(&x.p);
	close(first);
	close(second);
	raw_end_failed(&x, (const char *const[]){ "epoch differs", NULL });
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "resume-setup/many-channels-redial", test_many_channels_redial, false },
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
