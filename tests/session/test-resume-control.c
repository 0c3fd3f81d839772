/* SPDX-License-Identifier: MIT */
/*
 * Resume of the control connection (docs/wire-format.md, "Resume of the control connection"): a
 * proxy between sender and receiver cuts the control connection during a round, during a SYNC
 * wait, during device state, or right before a given control message (END, READY + END_ACK, the
 * sender's last CTL_POS); the migration completes bit-exact on both sides and both count the
 * reconnect. A peer without RESUME_CONTROL fails as before and says so; a sender that cannot
 * come back fails within its deadline, and so does the receiver waiting for it. Every test runs
 * for each backend pair, plaintext and TLS (session-fixture.c); those that find a message by its
 * frame header are plaintext only.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "codec/codec.h"
#include "resume-rig.h"
#include "session/resume.h"
#include "session/session-internal.h"
#include "transport/transport.h"

#define CONTROL 1 /* the proxy's accept index of the first control connection */

/* Both sides completed, the copy is exact, each counted `reconnects` control reconnects (the
 * data channels had none) and every page was applied exactly once. */
static void assert_resumed(run *t, uint64_t reconnects)
{
	tm_live_stats ss, rs;
	run_assert_complete(t, &ss, &rs);
	g_assert_cmpuint(ss.reconnects, ==, reconnects);
	g_assert_cmpuint(rs.reconnects, ==, reconnects);
	g_assert_cmpuint(rs.resume_refused, ==, 0);
}

/* The control connection is cut while the first round is sent; sync and finish complete. */
static void test_cut_in_round(void)
{
	run t;

	run_start(&t, NULL, 0);
	g_assert_cmpint(run_connect(&t), ==, 0);
	g_assert_cmpint(run_queue_all(&t), ==, 0);
	proxy_arm(&t.px, CONTROL, 0);
	t.r = tm_sender_sync(t.s, &t.err);
	if (t.r == 0)
		t.r = tm_sender_finish(t.s, &t.err);
	rpeer_join(&t.p);
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1);
	assert_resumed(&t, 1);
	run_end(&t);
}

/* 300 ms on, cuts the control connection, then lets the round go at 8 MiB/s. */
static gpointer arm_later(gpointer data)
{
	run *t = data;
	g_usleep(300000);
	proxy_arm(&t->px, CONTROL, 0);
	for (unsigned ms = 0; proxy_cuts(&t->px) == 0 && ms < 10000; ms += 10)
		g_usleep(10000);
	g_assert_cmpint(tm_sender_set_rate_limit(t->s, 8u << 20), ==, 0);
	return NULL;
}

/*
 * A round at 8 MiB/s takes 2 s; 300 ms into tm_sender_sync() the control connection is cut. The
 * SYNC wait survives it: the round is acknowledged, then the migration finishes. The round is
 * held (1 B/s) until the cut came: timed alone, a thread that armed it late (starved 2 s) found
 * the round acknowledged already and cut nothing during the wait.
 */
static void test_cut_in_sync_wait(void)
{
	run t;
	tm_live_config lc = { .size = sizeof(lc), .rate_limit = 8u << 20 };

	run_start(&t, &lc, 0);
	g_assert_cmpint(run_connect(&t), ==, 0);
	g_assert_cmpint(tm_sender_set_rate_limit(t.s, 1), ==, 0);
	g_assert_cmpint(run_queue_all(&t), ==, 0);
	GThread *th = g_thread_new("arm", arm_later, &t);
	t.r = tm_sender_sync(t.s, &t.err);
	g_thread_join(th);
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1); /* during the wait, not after it */
	if (t.r == 0)
		t.r = tm_sender_finish(t.s, &t.err);
	rpeer_join(&t.p);
	assert_resumed(&t, 1);
	run_end(&t);
}

/* RAM acknowledged, guest stopped; the control connection is cut as 4 MiB of device state go. */
static void test_cut_in_state(void)
{
	run t;

	run_start(&t, NULL, 0);
	run_fill_state(&t);
	g_assert_cmpint(run_connect(&t), ==, 0);
	g_assert_cmpint(run_queue_all(&t), ==, 0);
	g_assert_cmpint(tm_sender_sync(t.s, &t.err), ==, 0);
	g_assert_cmpint(tm_sender_guest_stopped(t.s, &t.err), ==, 0);
	proxy_arm(&t.px, CONTROL, 0);
	t.r = tm_sender_put_state(t.s, "dev", t.state, RIG_STATE_LEN, 0, &t.err);
	if (t.r == 0)
		t.r = tm_sender_finish(t.s, &t.err);
	rpeer_join(&t.p);
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1);
	g_assert_cmpuint(t.p.states, ==, 1);
	assert_resumed(&t, 1);
	run_end(&t);
}

/*
 * The control connection breaks right before a control message at the end, which is lost with
 * it: the sender's END, or the receiver's READY and END_ACK (one segment). The reconnect's
 * counts say what is missing, and only that is sent again.
 */
static void message_lost(uint8_t type, bool from_sender)
{
	run t;

	if (tls_dir) {
		g_test_skip("the proxy finds the message by its frame header: plaintext only");
		return;
	}
	run_start(&t, NULL, 0);
	proxy_arm_frame(&t.px, CONTROL, type, from_sender);
	g_assert_cmpint(run_connect(&t), ==, 0);
	g_assert_cmpint(run_queue_all(&t), ==, 0);
	t.r = tm_sender_sync(t.s, &t.err);
	if (t.r == 0)
		t.r = tm_sender_finish(t.s, &t.err);
	rpeer_join(&t.p);
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1);
	assert_resumed(&t, 1);
	run_end(&t);
}

static void test_end_lost(void)
{
	message_lost(TM_MSG_END, true);
}

static void test_end_ack_lost(void)
{
	message_lost(TM_MSG_READY, false);
}

/*
 * The sender's CTL_POS after END_ACK is lost: the sender has its END_ACK and is done; the
 * receiver waits for a reconnect that does not come (timeout_ms 2 s, as the sender may see the
 * break only as silence, + resume_deadline_ms 1.5 s), then ends with success anyway
 * (everything was applied and checked before its END_ACK).
 */
static void test_last_pos_lost(void)
{
	run t;

	if (tls_dir) {
		g_test_skip("the proxy finds the message by its frame header: plaintext only");
		return;
	}
	rig_recv_timeout_ms = 2000; /* read by the receiver's thread: reset after the join */
	run_start(&t, NULL, 1500);
	proxy_arm_frame(&t.px, CONTROL, TM_MSG_CTL_POS, true);
	g_assert_cmpint(run_connect(&t), ==, 0);
	g_assert_cmpint(run_queue_all(&t), ==, 0);
	t.r = tm_sender_sync(t.s, &t.err);
	if (t.r == 0)
		t.r = tm_sender_finish(t.s, &t.err);
	rpeer_join(&t.p);
	rig_recv_timeout_ms = 20000;
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1);
	g_test_message("receiver ended after %.2f s", t.p.secs);
	g_assert_cmpfloat(t.p.secs, >=, 3.5);
	assert_resumed(&t, 0);
	run_end(&t);
}

/*
 * A cut only one end sees (K2 of issue 14): the proxy closes the receiver's side of the control
 * connection and keeps the sender's open and silent (half_recv), or freezes both sides (freeze).
 * The sender sees nothing but silence, like a frozen receiver's; after timeout_ms (2 s here) it
 * tries a new control connection, which the receiver answers: the path was dead, not the peer.
 * The receiver waits timeout_ms + resume_deadline_ms for it. before: cut right before that frame
 * of the receiver's (plaintext), else at the sender's next control bytes during the round.
 */
static void one_sided(bool freeze, uint8_t before)
{
	run t;

	if (before && tls_dir) {
		g_test_skip("the proxy finds the message by its frame header: plaintext only");
		return;
	}
	rig_send_timeout_ms = rig_recv_timeout_ms = 2000;
	run_start(&t, NULL, 1000);
	t.px.half_recv = true;
	t.px.half = freeze;
	if (before)
		proxy_arm_frame(&t.px, CONTROL, before, false);
	g_assert_cmpint(run_connect(&t), ==, 0);
	g_assert_cmpint(run_queue_all(&t), ==, 0);
	if (!before)
		proxy_arm(&t.px, CONTROL, 0);
	int64_t t0 = g_get_monotonic_time();
	t.r = tm_sender_sync(t.s, &t.err);
	if (t.r == 0)
		t.r = tm_sender_finish(t.s, &t.err);
	rpeer_join(&t.p);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	rig_send_timeout_ms = rig_recv_timeout_ms = 20000;
	g_test_message("sender after %.2f s: %s", secs, t.err ? t.err->message : "done");
	g_test_message("receiver: %s", t.p.error ? t.p.error->message : "done");
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1);
	assert_resumed(&t, 1);
	g_assert_cmpfloat(secs, <, 10.0);
	run_end(&t);
}

static void test_half_recv(void)
{
	one_sided(false, 0);
}

static void test_freeze(void)
{
	one_sided(true, 0);
}

static void test_end_ack_lost_half_recv(void)
{
	one_sided(false, TM_MSG_READY);
}

/*
 * The control path freezes and every new connection is held unanswered, as a frozen receiver's
 * listener would (its kernel completes the TCP handshake): the sender gives up as "peer
 * unresponsive" once its new connection went unanswered (tm_ctl_resume_answer_ms: 1 s here),
 * the receiver after waiting a keepalive interval more for it; no reconnect is counted.
 */
static void test_freeze_unanswered(void)
{
	run t;

	rig_send_timeout_ms = rig_recv_timeout_ms = 2000;
	run_start(&t, NULL, 1000);
	t.px.half_recv = t.px.half = true;
	t.px.hold_after = true;
	g_assert_cmpint(run_connect(&t), ==, 0);
	g_assert_cmpint(run_queue_all(&t), ==, 0);
	proxy_arm(&t.px, CONTROL, 0);
	int64_t t0 = g_get_monotonic_time();
	t.r = tm_sender_sync(t.s, &t.err);
	if (t.r == 0)
		t.r = tm_sender_finish(t.s, &t.err);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	rpeer_join(&t.p);
	rig_send_timeout_ms = rig_recv_timeout_ms = 20000;
	g_assert_cmpint(t.r, ==, -ETIMEDOUT);
	g_test_message("sender (%.2f s): %s", secs, t.err->message);
	g_assert_nonnull(strstr(t.err->message, "control: peer unresponsive: nothing from the "
						"receiver for"));
	g_assert_nonnull(strstr(t.err->message, "a new control connection got no answer"));
	g_assert_cmpuint(proxy_get(&t.px, &t.px.refused), >=, 1);
	/* timeout_ms, up to one keepalive interval to notice, then answer_ms: 2 + 0.5 + 1 s */
	g_assert_cmpfloat(secs, <, 3.5 + 2.0);
	g_assert_cmpint(t.p.ret, ==, -ETIMEDOUT);
	g_test_message("receiver (%.2f s): %s", t.p.secs, t.p.error->message);
	g_assert_nonnull(strstr(t.p.error->message, "control: peer unresponsive"));
	tm_live_stats ss = { .size = sizeof(ss) };
	g_assert_cmpint(tm_sender_get_live_stats(t.s, &ss), ==, 0);
	g_assert_cmpuint(ss.reconnects, ==, 0);
	run_end(&t);
}

/*
 * A peer without RESUME_CONTROL (an earlier version: the test hook stands for it): the control
 * cut fails both sides as before, and the error says the control connection is not resumed.
 */
static void without_feature(int which)
{
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	run t;

	tm_ctl_resume_test_without(which);
	run_start(&t, NULL, 0);
	g_assert_cmpint(run_connect(&t), ==, 0);
	g_assert_cmpint(run_queue_all(&t), ==, 0);
	proxy_arm(&t.px, CONTROL, 0);
	t.r = tm_sender_sync(t.s, &t.err);
	if (t.r == 0)
		t.r = tm_sender_finish(t.s, &t.err);
	rpeer_join(&t.p);
	tm_ctl_resume_test_without(0);
	g_assert_cmpint(t.r, <, 0);
	g_assert_cmpint(t.p.ret, <, 0);
	g_test_message("sender: %s", t.err->message);
	g_test_message("receiver: %s", t.p.error->message);
	g_assert_true(strstr(t.err->message, "control connection is not resumed") ||
		      strstr(t.p.error->message, "control connection is not resumed"));
	tm_live_stats ss = { .size = sizeof(ss) };
	g_assert_cmpint(tm_sender_get_live_stats(t.s, &ss), ==, 0);
	g_assert_cmpuint(ss.reconnects, ==, 0);
	run_end(&t);
#else
	g_test_skip("needs -Dtest_hooks=true (a peer without RESUME_CONTROL)");
#endif
}

static void test_receiver_without(void)
{
	without_feature(TM_CTL_RESUME_TEST_NO_ACCEPT);
}

static void test_sender_without(void)
{
	without_feature(TM_CTL_RESUME_TEST_NO_OFFER);
}

/*
 * A session whose proxy lets no connection through once it cut one: the sender's resume deadline
 * 1 s, the receiver's 3 s + its timeout_ms 2 s (reset by unreachable_end). Connected, every page
 * queued.
 */
static void unreachable_start(run *t)
{
	tm_live_config lc = { .size = sizeof(lc), .resume_deadline_ms = 1000 };

	rig_recv_timeout_ms = 2000; /* read by the receiver's thread: reset after the join */
	run_start(t, &lc, 3000);
	t->px.refuse_after = true;
	g_assert_cmpint(run_connect(t), ==, 0);
	g_assert_cmpint(run_queue_all(t), ==, 0);
}

/* The sender failed (t->r) within 10 s of t0, its deadline passed; the receiver joined. */
static void unreachable_end(run *t, int64_t t0)
{
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	rpeer_join(&t->p);
	rig_recv_timeout_ms = 20000;
	g_assert_cmpint(t->r, <, 0);
	g_test_message("sender (%.2f s): %s", secs, t->err->message);
	g_assert_nonnull(strstr(t->err->message, "could not resume within"));
	g_assert_cmpfloat(secs, <, 10.0);
}

/*
 * The proxy refuses every connection after the cut: the sender gives up after its deadline
 * (1 s), naming the control connection; the receiver after its own (3 s) + its timeout_ms (2 s).
 */
static void test_deadline(void)
{
	run t;

	unreachable_start(&t);
	int64_t t0 = g_get_monotonic_time();
	proxy_arm(&t.px, CONTROL, 0);
	t.r = tm_sender_sync(t.s, &t.err);
	if (t.r == 0)
		t.r = tm_sender_finish(t.s, &t.err);
	unreachable_end(&t, t0);
	g_assert_nonnull(strstr(t.err->message, "control: could not resume within"));
	g_assert_cmpuint(t.px.refused, >, 0);
	g_assert_cmpint(t.p.ret, <, 0);
	g_test_message("receiver (%.1f s): %s", t.p.secs, t.p.error->message);
	g_assert_cmpfloat(t.p.secs, <, 15.0);
	run_end(&t);
}

/*
 * The destination becomes unreachable between rounds (the control connection and data channel 0
 * are cut, and no connection gets through again) while the sender has nothing to send: the next
 * round has nothing queued, yet it must not complete at once on a link that may be gone (a VMM
 * would go on to pause its guest for a switchover that cannot happen). It goes to the network and
 * fails in precopy, within the sender's deadline, naming what could not resume.
 */
static void test_empty_round_while_resuming(void)
{
	run t;

	unreachable_start(&t);
	g_assert_cmpint(tm_sender_sync(t.s, &t.err), ==, 0);
	proxy_arm_next(&t.px, 0, 0); /* data 0 right after control */
	proxy_arm(&t.px, CONTROL, 0);
	while (proxy_cuts(&t.px) < 2)
		g_usleep(1000);
	/* The sender's control thread saw its close and is reconnecting (or already gave up, and
	 * the session failed: the round fails the same way). */
	while (!__atomic_load_n(&t.s->links_down, __ATOMIC_ACQUIRE) &&
	       tm_sender_phase(t.s) != TM_PHASE_FAILED)
		g_usleep(1000);
	int64_t t0 = g_get_monotonic_time();
	t.r = tm_sender_sync(t.s, &t.err);
	unreachable_end(&t, t0);
	run_end(&t);
}

/*
 * The sender cancels while the receiver's tick sends a PING (test hook): its ERROR and close
 * arrive before the receiver reads, and the PING fails on the closed connection. The receiver
 * fails with the sender's reason at once; it does not take the close for a break and wait
 * (30 s here) for a sender that will not come back.
 */
static void test_error_before_ping(void)
{
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	run t;

	run_start(&t, NULL, 30000);
	g_assert_cmpint(run_first_round(&t), ==, 0);
	tm_control_test_send_before_read(true);
	int64_t t0 = g_get_monotonic_time();
	g_assert_cmpint(tm_sender_cancel(t.s, "operator said so"), ==, 0);
	rpeer_join(&t.p);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	g_assert_false(tm_control_test_send_before_read(false)); /* it ran */
	g_assert_cmpint(t.p.ret, <, 0);
	g_test_message("receiver (%.2f s after the cancel): %s", secs, t.p.error->message);
	g_assert_nonnull(strstr(t.p.error->message, "operator said so"));
	g_assert_cmpfloat(secs, <, 10.0);
	run_end(&t);
#else
	g_test_skip("needs test hooks (-Dtest_hooks=true)");
#endif
}

/*
 * A cut during setup (docs/wire-format.md, "Setup"): data channel 2 breaks right before its
 * HELLO_ACK, after the receiver agreed the session (the other connections' HELLO_ACKs carry the
 * secret). tm_sender_connect() succeeds; the channel's worker resumes it at its first I/O.
 */
static void test_setup_cut(void)
{
	run t;

	if (tls_dir) {
		g_test_skip("the proxy finds the message by its frame header: plaintext only");
		return;
	}
	run_start(&t, NULL, 0);
	proxy_arm_frame(&t.px, 3, TM_MSG_HELLO_ACK, false); /* data 0, control, data 1, data 2 */
	t.r = run_connect(&t);
	if (t.r == 0)
		t.r = run_queue_all(&t);
	if (t.r == 0)
		t.r = tm_sender_sync(t.s, &t.err);
	if (t.r == 0)
		t.r = tm_sender_finish(t.s, &t.err);
	rpeer_join(&t.p);
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1);
	assert_resumed(&t, 1);
	run_end(&t);
}


/*
 * DELTA with resume: a delta the receiver refuses (its copy of page 1 changed behind the
 * sender's back) is answered by DELTA_NACK, and data connection 0 (page 1's channel) is cut
 * right before that NACK would reach the sender. The receiver counted the refused page as
 * applied; the sync must still mean the page is there, and the end must find it.
 */
static void test_delta_nack_lost(void)
{
	run t;
	tm_live_config lc = { .size = sizeof(lc), .delta_cache_bytes = 8u << 20,
			      .delta_policy = TM_DELTA_ALWAYS };
	tm_delta_stats ds = { .size = sizeof(ds) };
	uint64_t page = 1;

	if (tls_dir) {
		g_test_skip("the proxy finds frames in plaintext only");
		return;
	}
	run_start(&t, &lc, 0);
	g_assert_cmpint(run_connect(&t), ==, 0);
	g_assert_cmpint(run_queue_all(&t), ==, 0);
	g_assert_cmpint(tm_sender_sync(t.s, &t.err), ==, 0);
	for (unsigned i = 0; i < 100; i++)
		t.src.ram[0][page * 4096 + i * 16] ^= 0x5a;
	memset(t.dst.ram[0] + page * 4096, 0xee, 64);
	proxy_arm_frame(&t.px, 0, TM_MSG_DELTA_NACK, false);
	g_assert_cmpint(tm_sender_queue_pages(t.s, 0, &page, 1, &t.err), ==, 0);
	g_assert_cmpint(tm_sender_sync(t.s, &t.err), ==, 0);
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1);
	g_assert_cmpint(tm_sender_get_delta_stats(t.s, 0, &ds), ==, 0);
	g_assert_cmpuint(ds.pages, ==, 1); /* it went as a delta */
	g_assert_cmpmem(t.dst.ram[0] + page * 4096, 4096, t.src.ram[0] + page * 4096, 4096);
	t.r = tm_sender_finish(t.s, &t.err);
	g_assert_no_error(t.err);
	g_assert_cmpint(t.r, ==, 0);
	rpeer_join(&t.p);
	g_assert_no_error(t.p.error);
	g_assert_cmpint(t.p.ret, ==, 0);
	assert_same(&t.src, &t.dst);
	run_end(&t);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "resume-control/cut-in-round", test_cut_in_round, false },
		{ "resume-control/delta-nack-lost", test_delta_nack_lost, false },
		{ "resume-control/cut-in-sync-wait", test_cut_in_sync_wait, false },
		{ "resume-control/cut-in-state", test_cut_in_state, false },
		{ "resume-control/end-lost", test_end_lost, false },
		{ "resume-control/end-ack-lost", test_end_ack_lost, false },
		{ "resume-control/last-pos-lost", test_last_pos_lost, false },
		{ "resume-control/half-recv", test_half_recv, false },
		{ "resume-control/freeze", test_freeze, false },
		{ "resume-control/end-ack-lost-half-recv", test_end_ack_lost_half_recv, false },
		{ "resume-control/freeze-unanswered", test_freeze_unanswered, false },
		{ "resume-control/receiver-without", test_receiver_without, false },
		{ "resume-control/sender-without", test_sender_without, false },
		{ "resume-control/deadline", test_deadline, false },
		{ "resume-control/empty-round-while-resuming", test_empty_round_while_resuming, false },
		{ "resume-control/error-before-ping", test_error_before_ping, false },
		{ "resume-setup/hello-ack-lost", test_setup_cut, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
