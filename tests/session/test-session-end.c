/* SPDX-License-Identifier: MIT */
/*
 * The end of a session decided once (docs/design/live-engine.md, step 4), against a receiver
 * whose data channels' END_ACKs count one page more than they applied (a test hook): the
 * sender must fail, and the receiver with it, or both complete; never one of each. With
 * hooks the sender reads those END_ACKs late, holds its decision or its report of it, or sends
 * a PING before END so that the control thread, not finish's, reads control's END_ACK; a
 * cancel after the decision is refused; a data channel's END_ACK lost on a silent path costs
 * the decision's one wait. The session is finish-rig.h's; every test runs for
 * each backend pair, plaintext and TLS (session-fixture.c), and skips without the library's
 * test hooks.
 */
#include <errno.h>
#include <string.h>

#include "cut-proxy.h"
#include "finish-rig.h"

/* Test hooks for one finish: how the receiver lies, how late the sender reads. */
typedef struct {
	bool busy;            /* every channel has a final round queued: their workers end them */
	int lie;              /* end_ack_lie: the channel whose END_ACK counts one page more */
	unsigned delay_ms;    /* end_ack_delay */
	unsigned close_ms;    /* close_delay */
	unsigned decided_ms;  /* decided_delay */
	bool ping;            /* ping_before_end */
} lie_plan;

/* A session through a full round, then finish with the plan's hooks on (all off again after)
 * and the receiver joined; *ret is the sender. finish's result. */
static int finish_lied_to(const lie_plan *pl, guest *src, guest *dst, peer *p, tm_sender **ret,
			  GError **err)
{
	const bool all[CHANNELS] = { true, true, true, true };
	tm_sender *s = parked_after_round(src, dst, p);

	if (pl->busy)
		dirty_channels(src, s, all);
	end_ack_lie(pl->lie);
	end_ack_delay(pl->delay_ms);
	close_delay(pl->close_ms);
	decided_delay(pl->decided_ms);
	ping_before_end(pl->ping);
	int r = tm_sender_finish(s, err);
	peer_join(p);
	end_ack_lie(-1);
	end_ack_delay(0);
	close_delay(0);
	decided_delay(0);
	ping_before_end(false);
	g_test_message("finish: %d (%s); receiver: %d (%s)", r, *err ? (*err)->message : "ok",
		       p->ret, p->error ? p->error->message : "ok");
	*ret = s;
	return r;
}

/* Both sides failed, the sender with a count that did not match (want: in its words). */
static void assert_both_failed(int r, const GError *err, const peer *p, const char *want)
{
	g_assert_cmpint(r, ==, -EPROTO);
	g_assert_nonnull(strstr(err->message, want));
	g_assert_cmpint(p->ret, <, 0);
	g_assert_nonnull(p->error);
}

/*
 * A data channel's END_ACK whose count is wrong (a hook makes the receiver's channel 2, or with
 * busy every channel, claim one page more) fails the session on both sides: the
 * acknowledgement of control's END_ACK (CTL_POS, or the close) commits the receiver, and it
 * waits until every data channel's END_ACK was checked, so the receiver gets the sender's
 * ERROR instead and does not complete.
 * busy: the channels have a final round queued when finish is called, so their workers end
 * them and the control thread reads control's END_ACK; else finish's thread does both. A hook
 * has the sender read each data channel's END_ACK 100 ms late: control's comes first.
 */
static void end_ack_wrong_fails_both(bool busy)
{
	if (!have_hooks())
		return;
	g_autoptr(GError) err = NULL;
	lie_plan pl = { .busy = busy, .lie = busy ? -2 : 2, .delay_ms = 100 };
	guest src, dst;
	peer p;
	tm_sender *s;

	int r = finish_lied_to(&pl, &src, &dst, &p, &s, &err);
	assert_both_failed(r, err, &p, busy ? ": receiver applied" : "channel 2: receiver applied");
	unsigned data, control, answered;
	ends(s, &p, &data, &control, &answered);
	/* busy: the workers ended most of them (one may have parked before finish came) */
	if (busy)
		g_assert_cmpuint(data, <, CHANNELS);
	else
		g_assert_cmpuint(data, ==, CHANNELS);
	teardown(s, &p, &src, &dst);
}

static void test_end_ack_wrong_fails_both(void)
{
	end_ack_wrong_fails_both(false);
}

static void test_end_ack_wrong_fails_both_busy(void)
{
	end_ack_wrong_fails_both(true);
}

/*
 * The end is decided once, by control's close, and finish() reports that decision. Every data
 * channel's END_ACK is wrong (a receiver hook) and read late by its worker (a sender hook);
 * the channels are busy, so the control thread reads control's END_ACK.
 * - decided_late: that thread is held 500 ms before it decides (as if preempted there), and
 *   the END_ACKs are read 1.2 s late: they fail within its 1 s wait, so both sides fail. When
 *   finish() kept a grace of its own from control's END_ACK, it returned 0 at 1 s while the
 *   receiver got the ERROR.
 * - else: the END_ACKs are read 2.2 s late, after the decision gave up on them at 1 s: the
 *   receiver completes, and so does finish(), though a hook holds it 1.7 s between the
 *   decision and its report, and the workers fail in that time. (The margins leave the
 *   receiver 1.2 s to take the final round after the workers sent it: 0.7 s was close under
 *   the sanitizers with another test beside.)
 * Either way both sides end alike.
 */
static void end_decided_once(bool decided_late)
{
	if (!have_hooks())
		return;
	g_autoptr(GError) err = NULL;
	lie_plan pl = { .busy = true, .lie = -2, .delay_ms = decided_late ? 1200 : 2200,
			.close_ms = decided_late ? 500 : 0, .decided_ms = decided_late ? 0 : 1700 };
	guest src, dst;
	peer p;
	tm_sender *s;

	int r = finish_lied_to(&pl, &src, &dst, &p, &s, &err);
	unsigned data, control, answered;
	ends(s, &p, &data, &control, &answered);
	/* One channel's worker may have parked before finish came: finish's thread then reads
	 * that END_ACK (late as well) before control's, and both sides fail at it. */
	if (decided_late || data > 0) {
		assert_both_failed(r, err, &p, ": receiver applied");
	} else {
		g_assert_no_error(err);
		g_assert_cmpint(r, ==, 0);
		g_assert_no_error(p.error);
		g_assert_cmpint(p.ret, ==, 0);
		g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_COMPLETE);
	}
	teardown(s, &p, &src, &dst);
}

static void test_end_decided_late(void)
{
	end_decided_once(true);
}

static void test_end_given_up(void)
{
	end_decided_once(false);
}

/*
 * Finish's thread hands control back before READY (the PONG of a PING sent just before END, a
 * hook), so the control thread reads control's END_ACK while finish's thread still awaits the
 * data channels it took, one of whose END_ACKs is wrong (channel 0's, read first) and each read
 * 150 ms late (hooks; four such reads stay well inside the decision's 1 s wait, even under
 * the sanitizers). The decision waits for those channels too: both sides fail. When it waited
 * only for the workers' channels, both completed and the wrong count went unseen.
 */
static void test_end_waits_for_claimed(void)
{
	if (!have_hooks())
		return;
	g_autoptr(GError) err = NULL;
	lie_plan pl = { .lie = 0, .delay_ms = 150, .ping = true };
	guest src, dst;
	peer p;
	tm_sender *s;

	int r = finish_lied_to(&pl, &src, &dst, &p, &s, &err);
	unsigned data, control, answered;
	g_assert_cmpuint(ends(s, &p, &data, &control, &answered), ==, 0); /* the thread's */
	g_assert_cmpuint(data, ==, CHANNELS);
	assert_both_failed(r, err, &p, "channel 0: receiver applied");
	teardown(s, &p, &src, &dst);
}

typedef struct {
	tm_sender *s;
	unsigned after_ms;
	int ret;
} canceller;

static gpointer cancel_fn(gpointer data)
{
	canceller *k = data;

	g_usleep(k->after_ms * 1000ul);
	k->ret = tm_sender_cancel(k->s, "too late");
	return NULL;
}

/*
 * A cancel once the end is decided (every channel parked: finish's thread decides as soon as
 * control's END_ACK is in) is refused with -EALREADY: the destination completes, and finish()
 * says so, though a hook holds it 800 ms after the decision and the cancel comes 300 ms in.
 * Taken, the cancel made finish() fail while the destination ran the guest.
 */
static void test_cancel_after_decision(void)
{
	if (!have_hooks())
		return;
	g_autoptr(GError) err = NULL;
	guest src, dst;
	peer p;

	tm_sender *s = parked_after_round(&src, &dst, &p);
	canceller k = { .s = s, .after_ms = 300, .ret = 1 };
	decided_delay(800);
	GThread *t = g_thread_new("cancel", cancel_fn, &k);
	int r = tm_sender_finish(s, &err);
	g_thread_join(t);
	decided_delay(0);
	peer_join(&p);
	g_test_message("cancel: %d; finish: %d (%s); receiver: %d (%s)", k.ret, r,
		       err ? err->message : "ok", p.ret, p.error ? p.error->message : "ok");
	g_assert_cmpint(k.ret, ==, -EALREADY);
	g_assert_no_error(err);
	g_assert_cmpint(r, ==, 0);
	g_assert_no_error(p.error);
	g_assert_cmpint(p.ret, ==, 0);
	assert_same(&src, &dst);
	teardown(s, &p, &src, &dst);
}

/*
 * Finish's thread hands control back (the PONG of a PING sent just before END, a hook), so the
 * control thread reads control's END_ACK and decides, while finish's thread awaits the data
 * channels it took. Data channel 1's END_ACK is lost on a path that then stays open and silent
 * (the proxy drops it and closes neither side; plaintext: it finds the frame by its header).
 * The decision gives that channel up TM_URGENT_END_GRACE_MS (1 s) after control's END_ACK,
 * and finish() returns 0 at that decision: the receiver had every page, and completes. When
 * finish() kept a grace of its own on top of the decision's, this took 2 s.
 */
static void test_end_ack_lost(void)
{
	if (!have_hooks())
		return;
	if (tls_dir) {
		g_test_skip("the proxy finds END_ACK by its plaintext frame header");
		return;
	}
	g_autoptr(GError) err = NULL;
	guest src, dst;
	peer p;
	cut_proxy px;

	guests_init(&src, &dst);
	g_autofree char *port = peer_start(&p, &dst);
	g_autofree char *pport = proxy_start(&px, port);
	px.half = px.half_recv = true; /* before any connection: read by the proxy under its lock */
	tm_sender *s = source(&src, pport);
	full_round(s);
	await_parked(s, CHANNELS);
	proxy_arm_frame(&px, 2, TM_MSG_END_ACK, false); /* data channel 1: accept index 2 */
	ping_before_end(true);
	int64_t t0 = g_get_monotonic_time();
	int r = tm_sender_finish(s, &err);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	ping_before_end(false);
	peer_join(&p);
	g_test_message("finish: %d (%s) in %.2f s; receiver: %d (%s)", r,
		       err ? err->message : "ok", secs, p.ret, p.error ? p.error->message : "ok");
	g_assert_cmpuint(proxy_cuts(&px), ==, 1);
	g_assert_no_error(err);
	g_assert_cmpint(r, ==, 0);
	g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_COMPLETE);
	g_assert_no_error(p.error);
	g_assert_cmpint(p.ret, ==, 0);
	assert_same(&src, &dst);
	unsigned data, control, answered;
	g_assert_cmpuint(ends(s, &p, &data, &control, &answered), ==, 0); /* the thread's */
	g_assert_cmpuint(data, ==, CHANNELS);
	/* The decision's one wait, not two: 1 s, and well short of 2 s even under the sanitizers. */
	g_assert_cmpfloat(secs, >=, 0.9);
	g_assert_cmpfloat(secs, <, 1.7);
	teardown(s, &p, &src, &dst);
	proxy_stop(&px);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "finish/end-ack-wrong-fails-both", test_end_ack_wrong_fails_both, false },
		{ "finish/end-ack-wrong-fails-both-busy", test_end_ack_wrong_fails_both_busy, false },
		{ "finish/end-decided-late", test_end_decided_late, false },
		{ "finish/end-given-up", test_end_given_up, false },
		{ "finish/end-waits-for-claimed", test_end_waits_for_claimed, false },
		{ "finish/cancel-after-decision", test_cancel_after_decision, false },
		{ "finish/end-ack-lost", test_end_ack_lost, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
