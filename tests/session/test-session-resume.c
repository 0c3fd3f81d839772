/* SPDX-License-Identifier: MIT */
/*
 * Resume (docs/wire-format.md, "Resume"): a proxy between sender and receiver cuts one data
 * connection (closes both of its sockets) during a round, between rounds, while idle or during
 * device state, or loses the receiver's answer with it; the migration still completes bit-exact
 * on both sides and both count the reconnect. Also: without resume the cut fails the session as
 * before; a sender that cannot reconnect within its deadline fails with an error naming the
 * channel, and one cancelled while it reconnects stops at once. The rig is cut-rig.h's; the
 * cuts of delta rounds are in test-resume-delta.c, the strangers in test-resume-hijack.c.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "codec/codec.h"
#include "cut-rig.h"
#include "session/resume.h"
#include "session/session-internal.h"

/* A cut of data channel ch 2 MiB into the first round: completes, the lost packets re-sent. */
static void cut_in_round(unsigned ch)
{
	rig t;
	g_autoptr(GError) err = NULL;

	rig_start(&t, NULL, NULL);
	tm_sender *s = sender_new(&t.src, 3, NULL);
	proxy_arm(&t.px, conn_of(ch), (2u << 20) / 3);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", t.pport, &err), ==, 0);
	queue_all(s);
	int r = tm_sender_sync(s, &err);
	if (r == 0)
		r = tm_sender_finish(s, &err);
	peer_join(&t.p);
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1);
	assert_resumed(s, &t.p, &t.src, &t.dst, r, err, CUT_RAM / 4096);
	rig_free(&t, s);
}

static void test_cut_first_in_round(void)
{
	cut_in_round(0);
}

static void test_cut_later_in_round(void)
{
	cut_in_round(2);
}

/*
 * Only the sender's side of data channel 1 closes; the receiver's connection stays open and
 * silent (a path that died without a reset): the sender's reconnect shuts the old one down so
 * that the receiver's worker, still waiting on it, takes the new one.
 */
enum { SENDER_SIDE, RECEIVER_SIDE, FROZEN };

static void cut_one_side(int how)
{
	rig t;
	g_autoptr(GError) err = NULL;

	/* Frozen mid-packet: the receiver's body deadline finds it; the sender, which sees nothing,
	 * learns it through CONN_LOST. */
	bool frozen = how == FROZEN;
	cut_recv_timeout_ms = frozen ? 2000 : 0;
	cut_send_timeout_ms = frozen ? 2000 : 20000;
	rig_start(&t, NULL, NULL);
	t.px.half = how != RECEIVER_SIDE;
	t.px.half_recv = how != SENDER_SIDE;
	tm_sender *s = sender_new(&t.src, 3, NULL);
	cut_recv_timeout_ms = 0;
	cut_send_timeout_ms = 20000;
	proxy_arm(&t.px, conn_of(1), (2u << 20) / 3);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", t.pport, &err), ==, 0);
	int64_t t0 = g_get_monotonic_time();
	queue_all(s);
	int r = tm_sender_sync(s, &err);
	if (r == 0)
		r = tm_sender_finish(s, &err);
	peer_join(&t.p);
	/* At once, not when the half packet's body deadline (5 s grace) ends the old read; frozen,
	 * once that deadline ended it. */
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	g_test_message("completed in %.2f s", secs);
	g_assert_cmpfloat(secs, <, frozen ? 15.0 : 4.0);
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1);
	assert_resumed(s, &t.p, &t.src, &t.dst, r, err, CUT_RAM / 4096);
	rig_free(&t, s);
}

static void test_cut_sender_side(void)
{
	cut_one_side(SENDER_SIDE);
}

/*
 * Only the receiver's side of data channel 1 closes; the sender's stays open and silent (the
 * proxy reads nothing more from it): the sender, which sees no break, must still learn it.
 */
static void test_cut_receiver_side(void)
{
	cut_one_side(RECEIVER_SIDE);
}

/* Both ends kept open, nothing forwarded any more, in the middle of a packet: the receiver's
 * body deadline ends its read, and the sender, which sees no break, learns it on control. */
static void test_cut_frozen(void)
{
	cut_one_side(FROZEN);
}


/*
 * Round 1 is acknowledged, then data channel 1 is cut while nobody sends; round 2 (every other
 * page, changed) finds it broken, reconnects and completes.
 */
static void test_cut_between_rounds(void)
{
	rig t;
	g_autoptr(GError) err = NULL;

	tm_sender *s = cut_after_round_one(&t, 0);
	uint64_t np = CUT_RAM / 4096, bm[np / 64];
	memset(bm, 0x55, sizeof(bm));
	for (uint64_t i = 0; i < np; i += 2)
		fill_page(&t.src, 0, i, (unsigned)i + 1);
	int r = round_then_finish(&t, s, bm, &err);
	idle_wake_on();
	assert_resumed(s, &t.p, &t.src, &t.dst, r, err, CUT_RAM / 4096 * 3 / 2);
	rig_free(&t, s);
}

/*
 * Data channel 1 is cut while nobody sends, and nothing is queued after: its worker, parked,
 * resumes it at once, not at the next round, which may be the last (the guest's downtime). Both
 * sides cut: the receiver's CONN_LOST wakes it. Only the sender's side (the receiver's stays open
 * and silent, and says nothing): the control thread's look at the idle connections at its next
 * keepalive tick (a second, with timeout_ms 4000) does. The session then ends bit for bit after
 * that one reconnect. With round_meanwhile, the woken worker waits 300 ms (test hook) before it
 * looks: a round with nothing queued, ended once the break was seen and before its resume,
 * goes to the network and completes after the resume, not at once (the destination may be gone).
 */
static void cut_idle(bool sender_side_only, bool round_meanwhile)
{
	rig t;
	g_autoptr(GError) err = NULL;

	rig_start(&t, NULL, NULL);
	t.px.half = sender_side_only;
	cut_send_timeout_ms = 4000;
	tm_sender *s = sender_new(&t.src, 3, NULL);
	cut_send_timeout_ms = 20000;
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", t.pport, &err), ==, 0);
	queue_all(s);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	tm_resume_test_idle_wake_delay(round_meanwhile ? 300 : 0);
#else
	if (round_meanwhile) {
		g_test_skip("needs test hooks (-Dtest_hooks=true)");
		rig_free(&t, s);
		return;
	}
#endif
	proxy_arm(&t.px, conn_of(1), 0);
	while (proxy_cuts(&t.px) == 0)
		g_usleep(1000);
	if (round_meanwhile) {
		/* The break seen (the receiver's CONN_LOST woke the worker), not yet resumed. */
		bool seen = false;
		for (int i = 0; i < 10000 && !seen; i++, g_usleep(1000)) {
			g_mutex_lock(&s->lock);
			seen = s->chans[1].check_link;
			g_mutex_unlock(&s->lock);
		}
		g_assert_true(seen);
		uint64_t round = 0;
		g_assert_cmpint(tm_sender_end_round(s, &round, &err), ==, 0);
		g_assert_cmpint(tm_sender_round_done(s, round, &err), ==, 0);
		int64_t t0 = g_get_monotonic_time();
		while (tm_sender_round_done(s, round, &err) == 0 &&
		       g_get_monotonic_time() - t0 < 10 * G_USEC_PER_SEC)
			g_usleep(1000);
		g_assert_cmpint(tm_sender_round_done(s, round, &err), ==, 1);
		tm_live_stats ls = { .size = sizeof(ls) };
		g_assert_cmpint(tm_sender_get_live_stats(s, &ls), ==, 0);
		g_assert_cmpuint(ls.reconnects, ==, 1); /* complete after the resume */
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
		tm_resume_test_idle_wake_delay(0);
#endif
	}
	tm_live_stats ss = { .size = sizeof(ss) };
	int64_t t0 = g_get_monotonic_time();
	while (tm_sender_get_live_stats(s, &ss) == 0 && ss.reconnects == 0 &&
	       g_get_monotonic_time() - t0 < 10 * G_USEC_PER_SEC)
		g_usleep(2000);
	g_test_message("reconnected while idle %.3f s after the cut",
		       (double)(g_get_monotonic_time() - t0) / 1e6);
	g_assert_cmpuint(ss.reconnects, ==, 1);
	int r = tm_sender_finish(s, &err);
	peer_join(&t.p);
	assert_resumed(s, &t.p, &t.src, &t.dst, r, err, CUT_RAM / 4096);
	rig_free(&t, s);
}

static void test_cut_idle(void)
{
	cut_idle(false, false);
}

static void test_cut_idle_sender_side(void)
{
	cut_idle(true, false);
}

static void test_cut_idle_round(void)
{
	cut_idle(false, true);
}

/*
 * CUT_RAM is acknowledged, then data channel 0 is reset while idle. Its next batch (put_state's
 * RAM_END) is held in the channel's cork (tm_chan_cork), so the first send that fails is the
 * batch's uncork, after the worker emptied its work list: the reconnect must send it again from
 * its log, on the new connection's sequence numbers, before the STATE chunk behind it.
 */
static void test_cut_corked(void)
{
	rig t;
	g_autoptr(GError) err = NULL;
	uint8_t state[100];

	memset(state, 0x5a, sizeof(state));
	rig_start(&t, NULL, NULL);
	t.px.reset = true;
	tm_sender *s = sender_new(&t.src, 3, NULL);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", t.pport, &err), ==, 0);
	queue_all(s);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
	g_assert_cmpint(tm_sender_guest_stopped(s, &err), ==, 0);
	proxy_arm(&t.px, conn_of(0), 0);
	while (proxy_cuts(&t.px) == 0)
		g_usleep(1000);
	g_usleep(50000); /* the reset arrived; the receiver saw its close */
	int r = tm_sender_put_state(s, "dev", state, sizeof(state), 0, &err);
	if (r == 0)
		r = tm_sender_finish(s, &err);
	peer_join(&t.p);
	g_assert_cmpuint(t.p.states, ==, 1);
	assert_resumed(s, &t.p, &t.src, &t.dst, r, err, CUT_RAM / 4096);
	rig_free(&t, s);
}

/*
 * The receiver's answer is lost with the connection: its SYNC_ACK of round 1 (the reconnect's
 * RESUME_ACK says the SYNC was answered: not sent again) or its END_ACK (the channel had ended:
 * the listener answers for it).
 */
static void answer_lost_how(uint8_t type, bool half_recv)
{
	rig t;
	g_autoptr(GError) err = NULL;

	if (tls_dir) {
		g_test_skip("the proxy reads the receiver's frames: plaintext only");
		return;
	}
	rig_start(&t, NULL, NULL);
	t.px.half_recv = half_recv;
	tm_sender *s = sender_new(&t.src, 3, NULL);
	proxy_arm_frame(&t.px, conn_of(1), type, false);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", t.pport, &err), ==, 0);
	queue_all(s);
	int r = tm_sender_sync(s, &err);
	if (r == 0)
		r = tm_sender_finish(s, &err);
	peer_join(&t.p);
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1);
	if (half_recv) {
		/* The receiver's end broke after its END_ACK went: it had ended the channel and
		 * says nothing; the sender never sees the break, and control's END_ACK ends its
		 * wait. Nothing is reconnected. */
		g_assert_cmpint(r, ==, 0);
		g_assert_cmpint(t.p.ret, ==, 0);
		assert_same(&t.src, &t.dst);
		g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_COMPLETE);
		rig_free(&t, s);
		return;
	}
	/* A lost END_ACK: control's END_ACK (sent once every data channel's END was applied)
	 * ends the sender's wait for it 1 s later (docs/wire-format.md), which on a loaded machine
	 * may come before the channel's reconnect: then nothing was reconnected, and the session
	 * still completes. A lost SYNC_ACK is always reconnected. */
	assert_resumed_n(s, &t.p, &t.src, &t.dst, r, err, CUT_RAM / 4096,
			 type == TM_MSG_END_ACK ? 0 : 1);
	tm_live_stats ss = { .size = sizeof(ss) };
	g_assert_cmpint(tm_sender_get_live_stats(s, &ss), ==, 0);
	g_assert_cmpuint(ss.resent_bytes, ==, 0); /* everything had arrived */
	g_assert_cmpuint(ss.rounds, ==, 1);
	rig_free(&t, s);
}

static void test_sync_ack_lost(void)
{
	answer_lost_how(TM_MSG_SYNC_ACK, false);
}

static void test_end_ack_lost(void)
{
	answer_lost_how(TM_MSG_END_ACK, false);
}

/* The same END_ACK lost where only the receiver's end of the path broke. */
static void test_end_ack_lost_half_recv(void)
{
	answer_lost_how(TM_MSG_END_ACK, true);
}

/* The destination checks the 4 MiB section it reads against the source's. */
static void check_state(peer *p, const char *name, const uint8_t *data, size_t len)
{
	const uint8_t *want = p->opaque;
	g_assert_cmpstr(name, ==, "dev");
	g_assert_cmpuint(len, ==, 4u << 20);
	g_assert_true(memcmp(data, want, len) == 0);
}

/* Data channel 2 is cut 256 KiB into device state (CUT_RAM was acknowledged before). */
static void test_cut_in_state(void)
{
	rig t;
	g_autoptr(GError) err = NULL;
	g_autofree uint8_t *state = g_malloc(4u << 20);

	for (size_t i = 0; i < (4u << 20) / 8; i++)
		((uint64_t *)state)[i] = rnd();
	rig_start(&t, check_state, state);
	tm_sender *s = sender_new(&t.src, 3, NULL);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", t.pport, &err), ==, 0);
	queue_all(s);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
	g_assert_cmpint(tm_sender_guest_stopped(s, &err), ==, 0);
	proxy_arm(&t.px, conn_of(2), 256u << 10);
	int r = tm_sender_put_state(s, "dev", state, 4u << 20, 0, &err);
	if (r == 0)
		r = tm_sender_finish(s, &err);
	peer_join(&t.p);
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1);
	g_assert_cmpuint(t.p.states, ==, 1);
	assert_resumed(s, &t.p, &t.src, &t.dst, r, err, CUT_RAM / 4096);
	rig_free(&t, s);
}

/* Without resume (no_resume), a cut fails the session on both sides, naming the channel. */
static void test_cut_without_resume(void)
{
	rig t;
	g_autoptr(GError) err = NULL;

	rig_start(&t, NULL, NULL);
	tm_live_config lc = { .size = sizeof(lc), .no_resume = true };
	tm_sender *s = sender_new(&t.src, 3, &lc);
	proxy_arm(&t.px, conn_of(1), 1u << 20);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", t.pport, &err), ==, 0);
	queue_all(s);
	int r = tm_sender_sync(s, &err);
	if (r == 0)
		r = tm_sender_finish(s, &err);
	peer_join(&t.p);
	g_assert_cmpint(r, <, 0);
	g_test_message("sender: %s", err->message);
	g_assert_cmpint(t.p.ret, <, 0);
	g_test_message("receiver: %s", t.p.error->message);
	/* The old failure, naming the channel; nobody tried to come back (3 channels and control,
	 * no fifth connection). */
	g_assert_nonnull(strstr(err->message, "channel 1"));
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1);
	g_mutex_lock(&t.px.lock);
	g_assert_cmpuint(t.px.accepted, ==, 4);
	g_mutex_unlock(&t.px.lock);
	tm_live_stats ss = { .size = sizeof(ss) };
	g_assert_cmpint(tm_sender_get_live_stats(s, &ss), ==, 0);
	g_assert_cmpuint(ss.reconnects, ==, 0);
	rig_free(&t, s);
}

/* The proxy refuses every reconnect: the sender gives up after its deadline, naming the channel. */
static void test_resume_deadline(void)
{
	rig t;
	g_autoptr(GError) err = NULL;

	rig_start(&t, NULL, NULL);
	t.px.refuse_after = true;
	tm_live_config lc = { .size = sizeof(lc), .resume_deadline_ms = 1000 };
	tm_sender *s = sender_new(&t.src, 3, &lc);
	proxy_arm(&t.px, conn_of(1), 1u << 20);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", t.pport, &err), ==, 0);
	int64_t t0 = g_get_monotonic_time();
	queue_all(s);
	int r = tm_sender_sync(s, &err);
	if (r == 0)
		r = tm_sender_finish(s, &err);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	peer_join(&t.p);
	g_assert_cmpint(r, ==, -ETIMEDOUT);
	g_test_message("sender (%.1f s): %s", secs, err->message);
	g_assert_nonnull(strstr(err->message, "channel 1: could not resume within"));
	g_assert_cmpfloat(secs, <, 10.0);
	g_assert_cmpuint(t.px.refused, >, 0);
	/* The receiver learns why on the control connection. */
	g_assert_cmpint(t.p.ret, <, 0);
	g_test_message("receiver: %s", t.p.error->message);
	g_assert_nonnull(strstr(t.p.error->message, "could not resume"));
	rig_free(&t, s);
}

typedef struct canceller {
	tm_sender *s;
	cut_proxy *px;
} canceller;

/* Once the sender's reconnect is held by the proxy, cancels the sender. */
static gpointer cancel_thread(gpointer data)
{
	canceller *c = data;
	for (;;) {
		g_mutex_lock(&c->px->lock);
		unsigned held = c->px->refused;
		g_mutex_unlock(&c->px->lock);
		if (held)
			break;
		g_usleep(1000);
	}
	g_usleep(200000);
	g_assert_cmpint(tm_sender_cancel(c->s, "operator"), ==, 0);
	return NULL;
}

/*
 * A reconnect whose answer never comes (the proxy holds it) is ended by a cancel at once, not
 * after the handshake deadline.
 */
static void test_cancel_while_resuming(void)
{
	rig t;
	g_autoptr(GError) err = NULL;

	rig_start(&t, NULL, NULL);
	t.px.hold_after = true;
	tm_sender *s = sender_new(&t.src, 3, NULL);
	proxy_arm(&t.px, conn_of(1), 1u << 20);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", t.pport, &err), ==, 0);
	canceller cc = { s, &t.px };
	GThread *th = g_thread_new("canceller", cancel_thread, &cc);
	int64_t t_start = g_get_monotonic_time();
	queue_all(s);
	int r = tm_sender_sync(s, &err);
	int64_t t_end = g_get_monotonic_time();
	g_thread_join(th);
	/* The attempt's handshake deadline is 10 s: the cancel ended it long before. */
	g_test_message("sync returned after %.2f s", (double)(t_end - t_start) / 1e6);
	g_assert_cmpint(t_end - t_start, <, 5 * G_USEC_PER_SEC);
	g_assert_cmpint(r, ==, -ECANCELED);
	g_test_message("sender: %s", err->message);
	peer_join(&t.p);
	g_assert_cmpint(t.p.ret, <, 0);
	int64_t t0 = g_get_monotonic_time();
	tm_sender_free(s);
	/* Cancelled 200 ms after the attempt began; the handshake deadline is 10 s. */
	g_assert_cmpint(g_get_monotonic_time() - t0, <, 2 * G_USEC_PER_SEC);
	rig_free(&t, NULL); /* the sender went above, timed */
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "resume/cut-first-in-round", test_cut_first_in_round, false },
		{ "resume/cut-later-in-round", test_cut_later_in_round, false },
		{ "resume/cut-sender-side", test_cut_sender_side, false },
		{ "resume/cut-receiver-side", test_cut_receiver_side, false },
		{ "resume/cut-frozen", test_cut_frozen, false },
		{ "resume/sync-ack-lost", test_sync_ack_lost, false },
		{ "resume/end-ack-lost", test_end_ack_lost, false },
		{ "resume/end-ack-lost-half-recv", test_end_ack_lost_half_recv, false },
		{ "resume/cut-between-rounds", test_cut_between_rounds, false },
		{ "resume/cut-idle", test_cut_idle, false },
		{ "resume/cut-idle-sender-side", test_cut_idle_sender_side, false },
		{ "resume/cut-idle-round", test_cut_idle_round, false },
		{ "resume/cut-in-state", test_cut_in_state, false },
		{ "resume/cut-corked", test_cut_corked, false },
		{ "resume/off", test_cut_without_resume, false },
		{ "resume/deadline", test_resume_deadline, false },
		{ "resume/cancel-while-resuming", test_cancel_while_resuming, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
