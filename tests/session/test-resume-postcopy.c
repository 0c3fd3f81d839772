/* SPDX-License-Identifier: MIT */
/*
 * Resume after the switch to postcopy (docs/wire-format.md, "Resume in postcopy"): a proxy
 * between sender and receiver cuts data channel 0, data channel 2 or the urgent connection
 * while the destination runs: two "vCPU" threads touch pages, each touch of a missing page
 * blocks in its userfault until the page is placed, and the thread then checks the page's data
 * and tags against the source (which never changes; resume-pc-rig.h). The migration completes
 * bit-exact, both sides count the reconnect, and no vCPU ever saw a wrong page. The urgent cut
 * comes while requests are outstanding (plaintext: the proxy drops a PAGE_REQ and cuts; TLS: it
 * cuts in the middle of an URGENT) with the background held back, so the pages only come
 * because the receiver asks again. Without resume, or when the reconnect cannot come within
 * the deadline, the session pauses (TM_PHASE_POSTCOPY_PAUSED) naming the cause, as before
 * resume. The urgent connection's end is cut too (REQ_END lost, END_ACK lost, and REQ_END lost
 * with no reconnect getting through): the session completes without a hang. The urgent
 * connection cut before the switch: test-resume-urgent.c.
 *
 * Every test runs for each backend pair, plaintext and TLS (session-fixture.c); without
 * userfaultfd it skips with the reason.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "resume-pc-rig.h"
#include "session/postcopy-recv.h"
#include "session/postcopy-send.h"
#include "session/resume.h"

/*
 * Data channel ch is cut 32 KiB into the background, the vCPUs touching half the pages: the
 * other half only the background brings, so a lost background page that is never sent again
 * leaves the migration incomplete.
 */
static void cut_data(unsigned ch)
{
	if (!uffd_usable())
		return;
	run x;
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true };
	run_start(&x, &lc, 1u << 20, true, 2 * VCPUS, true);
	proxy_arm(&x.px, ch == 0 ? 0 : (int)ch + 1, 32u << 10);
	g_assert_cmpint(tm_sender_set_rate_limit(x.s, 1u << 20), ==, 0);
	run_join(&x);
	if (proxy_get(&x.px, &x.px.cuts) == 0 && x.ret == 0 && x.d.ret == 0) {
		/* Seen under load: the vCPUs fetched every page over the urgent connection
		 * before the channel's background went 32 KiB further. */
		assert_same(&x.src, &x.d.g);
		g_test_skip("the session completed before the cut: the vCPUs fetched every page "
			    "before the channel's background reached it");
		run_free(&x);
		return;
	}
	assert_resumed(&x, 1);
	run_free(&x);
}

static void test_cut_data0(void)
{
	cut_data(0);
}

static void test_cut_data2(void)
{
	cut_data(2);
}

/*
 * Data channel 0 breaks as it flushes precopy's last packet at the switch, before the switch is
 * committed (a test hook: the cut sweep found it 1 time in ~400, a half cut 1 MiB into data 0):
 * resumed as in precopy, the switch then takes what the receiver lacked. It failed the session
 * ("connection closed by the peer") before.
 */
static void test_break_at_switch(void)
{
#if !(defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS)
	g_test_skip("needs the library's test hooks (-Dtest_hooks=true)");
#else
	if (!uffd_usable())
		return;
	run x;
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true };
	unsigned before = tm_send_pc_test_broken_at_switch();
	tm_send_pc_test_break_at_switch(true);
	run_start(&x, &lc, 1u << 20, true, 2 * VCPUS, false);
	run_join(&x);
	tm_send_pc_test_break_at_switch(false);
	g_assert_cmpuint(tm_send_pc_test_broken_at_switch(), ==, before + 1);
	if (x.ret != 0 || x.d.ret != 0) {
		g_autofree char *st = run_state(&x);
		g_test_message("%s", st);
	}
	assert_resumed(&x, 0);
	run_free(&x);
#endif
}

/*
 * After the switch, every data channel's END_ACK counts one page more than it was sent (a test
 * hook in the receiver). Before the switch that fails both sides (test-session-finish.c,
 * end-ack-wrong); after it the source can never run the guest again, and control's END_ACK
 * comes only once the destination checked that it has every page, so the end completes:
 * pausing would leave the guest running nowhere, and a resume would meet the same counts. The
 * sender counts each such channel (tm_live_stats.end_count_mismatches) and keeps the first
 * one's words (end_count_mismatch). It paused both sides before.
 */
static void test_end_count_differs(void)
{
#if !(defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS)
	g_test_skip("needs the library's test hooks (-Dtest_hooks=true)");
#else
	if (!uffd_usable())
		return;
	run x;
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true };
	tm_receiver_test_end_ack_lie(-2);
	run_start(&x, &lc, 1u << 20, true, 2 * VCPUS, false);
	run_join(&x);
	tm_receiver_test_end_ack_lie(-1);
	if (x.ret != 0 || x.d.ret != 0) {
		g_autofree char *st = run_state(&x);
		g_error("%s", st);
	}
	assert_same(&x.src, &x.d.g);
	g_assert_cmpint(tm_sender_phase(x.s), ==, TM_PHASE_COMPLETE);
	g_assert_cmpint(tm_receiver_phase(x.d.r), ==, TM_PHASE_COMPLETE);
	tm_live_stats ss = { .size = sizeof(ss) }, rs = { .size = sizeof(rs) };
	g_assert_cmpint(tm_sender_get_live_stats(x.s, &ss), ==, 0);
	g_assert_cmpint(tm_receiver_get_live_stats(x.d.r, &rs), ==, 0);
	g_assert_cmpuint(ss.end_count_mismatches, ==, NCH);
	g_assert_cmpuint(rs.end_count_mismatches, ==, 0);
	/* The first one in the words the failure used to have: one page more than sent. */
	g_test_message("first: %s", ss.end_count_mismatch);
	unsigned ch;
	guint64 applied, chunks, sent, sent_chunks;
	g_assert_cmpint(sscanf(ss.end_count_mismatch,
			       "channel %u: receiver applied %" G_GUINT64_FORMAT " pages and %"
			       G_GUINT64_FORMAT " state chunks, %" G_GUINT64_FORMAT " and %"
			       G_GUINT64_FORMAT " were sent",
			       &ch, &applied, &chunks, &sent, &sent_chunks), ==, 5);
	g_assert_cmpuint(ch, <, NCH);
	g_assert_cmpuint(applied, ==, sent + 1);
	g_assert_cmpuint(chunks, ==, sent_chunks);
	g_assert_cmpstr(rs.end_count_mismatch, ==, "");
	run_free(&x);
#endif
}

/*
 * The urgent connection is cut while requests are outstanding (plaintext: instead of passing on
 * a PAGE_REQ; TLS: in the middle of an URGENT). Once the destination runs the background is
 * held back (a debt of hours) until every vCPU touched every page: a page it lacks comes
 * through a request, and the ones outstanding at the cut only because the receiver asks again
 * on the new connection.
 */
/* How cut_urgent() cuts: both ends closed, one of them kept open and silent, or both kept
 * (a frozen path: neither end ever sees a break). */
enum { CUT_BOTH, CUT_HALF, CUT_HALF_RECV, CUT_FREEZE };

static void cut_urgent(int how)
{
	if (!uffd_usable())
		return;
	run x;
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true };
	/* Frozen: only the destination's silence rule (timeout_ms) can find it. */
	dest_timeout_ms = how == CUT_FREEZE ? 2000 : 20000;
	/* The background held from before device state: every page the vCPUs lack comes
	 * through a request, however long the destination took to start. */
	if (run_open(&x, &lc, true, VCPUS, URG_NONE) < 0)
		g_error("connect: %s", x.error->message);
	dest_timeout_ms = 20000;
	/* Armed before the switch, as cut_end_how(): nothing but the HELLO went on the urgent
	 * connection yet, and the vCPUs may be done soon after the destination runs. */
	g_mutex_lock(&x.px.lock);
	x.px.half = how == CUT_HALF || how == CUT_FREEZE;
	x.px.half_recv = how == CUT_HALF_RECV || how == CUT_FREEZE;
	g_mutex_unlock(&x.px.lock);
	if (tls_dir)
		proxy_arm(&x.px, URGENT_CONN, 40u << 10);
	else
		proxy_arm_frame(&x.px, URGENT_CONN, TM_MSG_PAGE_REQ, false);
	run_switch(&x, 256u << 10, true);
	bool done = false;
	for (unsigned ms = 0; !done && ms < 20000; ms += 10) {
		done = true;
		for (unsigned i = 0; i < VCPUS; i++)
			done &= __atomic_load_n(&x.d.v[i].done, __ATOMIC_ACQUIRE);
		if (!done)
			g_usleep(10000);
	}
	if (!done)
		g_error("the vCPUs are still blocked 20 s after the urgent cut (sender: %s; "
			"receiver: %s)", x.error ? x.error->message : "running",
			x.d.error ? x.d.error->message : "running");
	release_background(&x);
	run_join(&x);
	assert_resumed(&x, 1);
	run_free(&x);
}

static void test_cut_urgent(void)
{
	cut_urgent(CUT_BOTH);
}

/* The sender's end closed, the destination's open and silent: the sender reconnects. */
static void test_cut_urgent_half(void)
{
	cut_urgent(CUT_HALF);
}

/* The destination's end closed, the sender's open and silent: the sender sees nothing; the
 * destination's URGENT_LOST on control tells it. */
static void test_cut_urgent_half_recv(void)
{
	cut_urgent(CUT_HALF_RECV);
}

/* Both ends open and silent: the destination's requests go unanswered for its timeout_ms
 * (2 s here); it takes that as a break and says URGENT_LOST. */
static void test_cut_urgent_freeze(void)
{
	cut_urgent(CUT_FREEZE);
}


/*
 * The urgent connection is cut at its end, REQ_END / END_ACK (docs/wire-format.md, "Resume in
 * postcopy"): the vCPUs request every page (the background held back), so the receiver sends
 * REQ_END once the last one is placed, and the proxy cuts
 *  - end_ack: instead of passing on the sender's END_ACK: the sender is done with the
 *    connection and never comes back, so the receiver must take the break as the end;
 *  - req_end: instead of passing on REQ_END: the sender reconnects and the receiver, done
 *    already, answers it with REQ_END at once; with refuse, no reconnect gets through and the
 *    sender's urgent connection ends with control's END_ACK, long before the resume deadline.
 * Plaintext only: the proxy finds the messages by their frame headers.
 */
static void cut_end_how(bool end_ack, bool refuse, int how)
{
	bool half = how == CUT_HALF, half_recv = how == CUT_HALF_RECV;

	if (!uffd_usable())
		return;
	if (tls_dir) {
		g_test_skip("the proxy finds REQ_END / END_ACK by their plaintext frame headers");
		return;
	}
	run x;
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true,
			      .resume_deadline_ms = refuse ? 60000 : 0 };
	/* Half: only the destination's silence rule (timeout_ms) ends its wait for END_ACK. */
	dest_timeout_ms = half ? 2000 : 20000;
	if (run_open(&x, &lc, true, VCPUS, URG_NONE) < 0)
		g_error("connect: %s", x.error->message);
	dest_timeout_ms = 20000;
	/* Armed before the switch: the vCPUs may fetch every page, and the receiver send REQ_END,
	 * before this thread runs again once the destination runs (seen in CI). */
	g_mutex_lock(&x.px.lock);
	x.px.half = half;
	x.px.half_recv = half_recv;
	x.px.cut_conn = URGENT_CONN;
	if (end_ack)
		x.px.cut_reply_to = TM_MSG_REQ_END;
	else
		x.px.cut_before = TM_MSG_REQ_END;
	x.px.refuse_after = refuse;
	g_mutex_unlock(&x.px.lock);
	run_switch(&x, 256u << 10, true); /* held, as test_cut_urgent */
	await_vcpus(&x, "the switch");
	for (unsigned ms = 0; proxy_get(&x.px, &x.px.cuts) == 0 && ms < 10000; ms += 10)
		g_usleep(10000);
	g_assert_cmpuint(proxy_get(&x.px, &x.px.cuts), ==, 1);
	/* REQ_END lost where only the destination's end broke: it takes the break as the end
	 * (REQ_END went), the sender sees nothing and no reconnect comes; its wait for REQ_END
	 * ends TM_URGENT_END_GRACE_MS after control's END_ACK. */
	bool reconnect = !end_ack && !refuse && !half_recv;
	if (reconnect) {
		/* The background is still held: only the urgent reconnect can end the sender's
		 * urgent connection now, and both count it. */
		for (unsigned ms = 0; (reconnects(&x, true) == 0 || reconnects(&x, false) == 0) &&
		     ms < 10000; ms += 10)
			g_usleep(10000);
		g_assert_cmpuint(reconnects(&x, true), ==, 1);
		g_assert_cmpuint(reconnects(&x, false), ==, 1);
	}
	int64_t t0 = g_get_monotonic_time();
	release_background(&x);
	await_complete(&x);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	g_test_message("completed %.2f s after the background was released", secs);
	g_assert_cmpuint(reconnects(&x, true), ==, reconnect);
	g_assert_cmpuint(reconnects(&x, false), ==, reconnect);
	if (refuse) {
		/* Every page is present once REQ_END goes, so control's END_ACK may come before the
		 * sender's return thread tried a reconnect at all (a starved thread under load):
		 * what must hold is that no attempt waits for the resume deadline. */
		g_test_message("reconnects refused by the proxy: %u",
			       proxy_get(&x.px, &x.px.refused));
		g_assert_cmpfloat(secs, <, 20.0); /* not the 60 s resume deadline */
	} else if (end_ack) {
		g_assert_cmpuint(proxy_get(&x.px, &x.px.accepted), ==, NCH + 2);
	}
	run_free(&x);
}

static void cut_end(bool end_ack, bool refuse)
{
	cut_end_how(end_ack, refuse, CUT_BOTH);
}

static void test_end_ack_lost(void)
{
	cut_end(true, false);
}

/* END_ACK lost on a path whose destination end stays open and silent: no break ever comes
 * there; its silence rule (timeout_ms, 2 s here) ends the connection after REQ_END. */
static void test_end_ack_lost_half(void)
{
	cut_end_how(true, false, CUT_HALF);
}

/* REQ_END lost on a path whose sender end stays open and silent: the destination takes the
 * break after REQ_END as the end; the sender, which sees nothing, stops waiting for REQ_END
 * once control ended (TM_URGENT_END_GRACE_MS later). */
static void test_req_end_lost_half_recv(void)
{
	cut_end_how(false, false, CUT_HALF_RECV);
}

static void test_req_end_lost(void)
{
	cut_end(false, false);
}

static void test_req_end_lost_refused(void)
{
	cut_end(false, true);
}

/*
 * Resume off, or a reconnect that cannot come within the deadline: the session pauses as it
 * did before resume (both sides -ENOTCONN "postcopy paused: <cause>", TM_PHASE_POSTCOPY_PAUSED),
 * and can only be cancelled.
 */
static void cut_paused(bool no_resume)
{
	if (!uffd_usable())
		return;
	run x;
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true, .no_resume = no_resume,
			      .resume_deadline_ms = 1000 };
	run_start(&x, &lc, 512u << 10, false, VCPUS, true);
	g_mutex_lock(&x.px.lock);
	x.px.refuse_after = true; /* once the cut happened, no reconnect gets through */
	g_mutex_unlock(&x.px.lock);
	proxy_arm(&x.px, 2, 32u << 10); /* data channel 1 */
	int64_t t0 = g_get_monotonic_time();
	g_assert_cmpint(tm_sender_set_rate_limit(x.s, 512u << 10), ==, 0);
	g_thread_join(x.finisher);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	g_test_message("sender (%.1f s): %s", secs, x.error ? x.error->message : "ok");
	g_mutex_lock(&x.px.lock);
	unsigned cuts = x.px.cuts;
	uint64_t cut_at = x.px.cut_at, fwd = x.px.fwd[2];
	g_mutex_unlock(&x.px.lock);
	if (cuts != 1 && x.ret == 0) {
		/* On a loaded machine the vCPUs may fetch every page over the urgent connection
		 * before channel 1's background reaches the cut: then the session completed. */
		g_thread_join(x.d.thread);
		for (unsigned i = 0; x.d.vcpus && i < VCPUS; i++) {
			g_thread_join(x.d.v[i].thread);
			g_assert_cmpuint(x.d.v[i].bad, ==, 0);
		}
		g_assert_cmpint(x.d.ret, ==, 0);
		g_test_skip("the session completed before the cut: the vCPUs fetched every page "
			    "before channel 1's background reached it");
		run_free(&x);
		return;
	}
	if (cuts != 1)
		g_error("the cut %" G_GUINT64_FORMAT " bytes into data channel 1 never came: %"
			G_GUINT64_FORMAT " forwarded (sender: %s)", cut_at, fwd,
			x.error ? x.error->message : "ok");
	g_assert_cmpint(x.ret, ==, -ENOTCONN);
	g_assert_nonnull(strstr(x.error->message, "postcopy paused"));
	if (no_resume) {
		/* Nobody came back: the cause is the cut (or the receiver's word on it, or its
		 * urgent connection closed as it paused: whichever the sender saw first). */
		g_assert_cmpuint(proxy_get(&x.px, &x.px.refused), ==, 0);
		g_assert_cmpuint(proxy_get(&x.px, &x.px.accepted), ==, NCH + 2);
	} else {
		g_assert_nonnull(strstr(x.error->message, "channel 1: could not resume within"));
		g_assert_cmpuint(proxy_get(&x.px, &x.px.refused), >, 0);
		g_assert_cmpfloat(secs, <, 10.0);
	}
	g_assert_cmpint(tm_sender_phase(x.s), ==, TM_PHASE_POSTCOPY_PAUSED);
	g_assert_cmpuint(tm_sender_take_events(x.s) & TM_EVENT_PAUSED, ==, TM_EVENT_PAUSED);
	/* The destination learns it on control, paused too. */
	for (unsigned ms = 0; tm_receiver_phase(x.d.r) != TM_PHASE_POSTCOPY_PAUSED && ms < 10000;
	     ms++)
		g_usleep(1000);
	g_assert_cmpint(tm_receiver_phase(x.d.r), ==, TM_PHASE_POSTCOPY_PAUSED);
	g_thread_join(x.d.thread); /* its wait() returned: paused */
	g_test_message("receiver: %s", x.d.error ? x.d.error->message : "ok");
	g_assert_cmpint(x.d.ret, ==, -ENOTCONN);
	g_assert_nonnull(strstr(x.d.error->message, "postcopy paused"));
	g_assert_cmpint(tm_receiver_cancel(x.d.r, "the operator gives up"), ==, 0);
	tm_live_stats ss = { .size = sizeof(ss) };
	g_assert_cmpint(tm_sender_get_live_stats(x.s, &ss), ==, 0);
	g_assert_cmpuint(ss.reconnects, ==, 0);
	g_assert_cmpint(tm_sender_cancel(x.s, "the operator gives up"), ==, 0);
	run_free(&x);
}

static void test_deadline_pauses(void)
{
	cut_paused(false);
}

static void test_off_pauses(void)
{
	cut_paused(true);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "resume-postcopy/cut-data0", test_cut_data0, false },
		{ "resume-postcopy/cut-data2", test_cut_data2, false },
		{ "resume-postcopy/break-at-switch", test_break_at_switch, false },
		{ "resume-postcopy/end-count-differs", test_end_count_differs, false },
		{ "resume-postcopy/cut-urgent", test_cut_urgent, false },
		{ "resume-postcopy/cut-urgent-half", test_cut_urgent_half, false },
		{ "resume-postcopy/cut-urgent-half-recv", test_cut_urgent_half_recv, false },
		{ "resume-postcopy/cut-urgent-freeze", test_cut_urgent_freeze, false },
		{ "resume-postcopy/end-ack-lost", test_end_ack_lost, false },
		{ "resume-postcopy/end-ack-lost-half", test_end_ack_lost_half, false },
		{ "resume-postcopy/req-end-lost-half-recv", test_req_end_lost_half_recv, false },
		{ "resume-postcopy/req-end-lost", test_req_end_lost, false },
		{ "resume-postcopy/req-end-lost-refused", test_req_end_lost_refused, false },
		{ "resume-postcopy/deadline-pauses", test_deadline_pauses, false },
		{ "resume-postcopy/off-pauses", test_off_pauses, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
