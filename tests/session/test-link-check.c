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
#include <string.h>

#include "resume-rig.h"

#define DATA2 3 /* the proxy's accept index of data channel 2 (0 data 0, 1 control, k + 1 data k) */
#define TIMEOUT_MS 1000u

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

/* Without resume the session fails, saying what the path did, instead of waiting for good. */
static void test_held_no_resume(void)
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
	proxy_arm_frame(&t.px, DATA2, TM_MSG_SYNC, true);
	int64_t t0 = g_get_monotonic_time();
	t.r = run_migrate(&t);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	rpeer_join(&t.p);
	rig_send_timeout_ms = rig_recv_timeout_ms = 20000;
	g_assert_cmpint(t.r, ==, -ETIMEDOUT);
	g_test_message("sender (%.2f s): %s", secs, t.err->message);
	g_assert_nonnull(strstr(t.err->message, "channel 2: the receiver got 24 bytes fewer than "
						"this end's path acknowledged"));
	g_assert_nonnull(strstr(t.err->message, "something on the path holds them"));
	g_assert_cmpfloat(secs, <, 1.0 + 0.5 + 4.0);
	g_assert_cmpint(t.p.ret, <, 0);
	g_test_message("receiver (%.2f s): %s", t.p.secs, t.p.error->message);
	/* Usually the sender's reason; about 1 run in 8 the sender's close of its data channels
	 * reaches the receiver and its drain misses the ERROR that follows on control (a race of
	 * the failure reports, not of LINK_CHECK: left in issue 14's note). */
	g_assert_true(strstr(t.p.error->message, "something on the path holds them") ||
		      strstr(t.p.error->message, "connection closed by the peer"));
	run_end(&t);
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
	tm_live_stats ss = { .size = sizeof(ss) }, rs = { .size = sizeof(rs) };
	run_assert_complete(&t, &ss, &rs);
	g_assert_cmpuint(t.p.states, ==, 1);
	g_assert_cmpfloat(t.p.secs, >=, 3.0);
	g_assert_cmpuint(ss.reconnects, ==, 0);
	g_assert_cmpuint(rs.reconnects, ==, 0);
	run_end(&t);
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
		{ "link-check/slow-vmm", test_slow_vmm, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
