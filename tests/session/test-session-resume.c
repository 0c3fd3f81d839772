/* SPDX-License-Identifier: MIT */
/*
 * Resume (docs/wire-format.md, "Resume"): a proxy between sender and receiver cuts one data
 * connection (closes both of its sockets) during a round, between rounds or during device state;
 * the migration still completes bit-exact on both sides and both count the reconnect. Also: a
 * stranger with the session's id and a wrong secret is refused and counted while the session goes
 * on; without resume the cut fails the session as before; a sender that cannot reconnect within
 * its deadline fails with an error naming the channel. Every test runs for each backend pair,
 * plaintext and TLS (session-fixture.c).
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "codec/codec.h"
#include "cut-proxy.h"
#include "fake-peer.h"
#include "session-fixture.h"
#include "session/resume.h"
#include "session/session-internal.h"
#include "transport/tls/tls.h"
#include "transport/transport.h"

/* The proxy's accept index of data channel ch (data 0, control, data 1..). */
static int conn_of(unsigned ch)
{
	return ch == 0 ? 0 : (int)ch + 1;
}

#define RAM (16u << 20)
static const block_spec spec[] = { { "pc.ram", RAM, 4096 } };

/* One migration through the proxy: the guests, the receiver and the proxy between them. */
typedef struct rig {
	guest src, dst;
	peer p;
	cut_proxy px;
	char *port, *pport; /* the receiver's, the proxy's (the sender connects there) */
} rig;

/*
 * The source filled, the receiver (handing each device-state section to fn, if set) and the
 * proxy, its cuts by bytes exact: a cut n bytes into a channel falls there, not a read later.
 */
/* Both sides' timeout_ms, 0 for the receiver's default (a test of a frozen path lowers it). */
static unsigned send_timeout_ms = 20000, recv_timeout_ms;

static void rig_start(rig *t, peer_state_fn fn, void *opaque)
{
	guest_init(&t->src, spec, 1, true);
	guest_init(&t->dst, spec, 1, true);
	guest_fill(&t->src);
	t->port = peer_start_state(&t->p, &t->dst, false, recv_timeout_ms, fn, opaque);
	t->pport = proxy_start(&t->px, t->port);
	g_mutex_lock(&t->px.lock);
	t->px.exact = true;
	g_mutex_unlock(&t->px.lock);
}

/* Frees the sender s, then the rig. */
static void rig_free(rig *t, tm_sender *s)
{
	tm_sender_free(s);
	peer_free(&t->p);
	proxy_stop(&t->px);
	guest_fini(&t->src);
	guest_fini(&t->dst);
	g_free(t->port);
	g_free(t->pport);
}

static tm_sender *sender_new(guest *src, unsigned channels, const tm_live_config *lc)
{
	g_autoptr(GError) err = NULL;
	tm_sender *s = NULL;
	/* Small packets: many in flight, so that a cut loses some. */
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir,
				 .channels = channels, .timeout_ms = send_timeout_ms,
				 .packet_size = 64u << 10 };
	g_assert_cmpint(tm_sender_new(src->layout, src->tags, &cfg, &s, &err), ==, 0);
	if (lc)
		g_assert_cmpint(tm_sender_set_live(s, lc, &err), ==, 0);
	return s;
}

static void queue_all(tm_sender *s)
{
	g_autoptr(GError) err = NULL;
	uint64_t np = RAM / 4096, bm[np / 64];
	memset(bm, 0xff, sizeof(bm));
	g_assert_cmpint(tm_sender_queue_bitmap(s, 0, bm, 0, np, &err), ==, 0);
}

/*
 * Both sides completed, the copy is exact, each counted the reconnect, and only what the receiver
 * lacked was sent again: it applied each queued page exactly once (queued pages in all rounds).
 */
static void assert_resumed_n(tm_sender *s, peer *p, guest *src, guest *dst, int r, GError *err,
			     uint64_t queued, uint64_t min_reconnects)
{
	if (r != 0)
		g_test_message("sender: %s", err->message);
	g_assert_cmpint(r, ==, 0);
	if (p->ret != 0)
		g_test_message("receiver: %s", p->error->message);
	g_assert_cmpint(p->ret, ==, 0);
	assert_same(src, dst);
	tm_live_stats ss = { .size = sizeof(ss) }, rs = { .size = sizeof(rs) };
	g_assert_cmpint(tm_sender_get_live_stats(s, &ss), ==, 0);
	g_assert_cmpint(tm_receiver_get_live_stats(p->r, &rs), ==, 0);
	g_test_message("reconnects: sender %" G_GUINT64_FORMAT ", receiver %" G_GUINT64_FORMAT
		       "; re-sent %" G_GUINT64_FORMAT " bytes",
		       ss.reconnects, rs.reconnects, ss.resent_bytes);
	g_assert_cmpuint(ss.reconnects, >=, min_reconnects);
	g_assert_cmpuint(ss.reconnects, <=, 1);
	g_assert_cmpuint(rs.reconnects, ==, ss.reconnects);
	g_assert_cmpuint(rs.resume_refused, ==, 0);
	/* Whether the cut caught bytes in flight depends on timing (a slow, sanitized sender may
	 * have sent nothing past the cut point yet), so re-sent bytes are only reported: what must
	 * hold is every page applied exactly once (below) and a bit-exact copy (above). */
	g_assert_cmpuint(ss.phase, ==, TM_PHASE_COMPLETE);
	tm_stats st;
	tm_receiver_get_stats(p->r, &st);
	g_assert_cmpuint(st.pages, ==, queued);
	tm_sender_get_stats(s, &st);
	g_assert_cmpuint(st.pages, ==, queued);
}

static void assert_resumed(tm_sender *s, peer *p, guest *src, guest *dst, int r, GError *err,
			   uint64_t queued)
{
	assert_resumed_n(s, p, src, dst, r, err, queued, 1);
}

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
	assert_resumed(s, &t.p, &t.src, &t.dst, r, err, RAM / 4096);
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
	recv_timeout_ms = frozen ? 2000 : 0;
	send_timeout_ms = frozen ? 2000 : 20000;
	rig_start(&t, NULL, NULL);
	t.px.half = how != RECEIVER_SIDE;
	t.px.half_recv = how != SENDER_SIDE;
	tm_sender *s = sender_new(&t.src, 3, NULL);
	recv_timeout_ms = 0;
	send_timeout_ms = 20000;
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
	assert_resumed(s, &t.p, &t.src, &t.dst, r, err, RAM / 4096);
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
/* The rig started, a sender of 3 channels connected and round 1 acknowledged; from then on the
 * receiver's RESUME_ACKs say skew more SYNCs (a test hook; 0: the truth); then data channel 1
 * is cut while nobody sends, its parked worker not woken for it (test hook; idle_wake_on() after).
 * Returns the sender. */
/* Parked workers resume a broken connection at once again (after cut_after_round_one). */
static void idle_wake_on(void)
{
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	tm_resume_test_no_idle_wake(false);
#endif
}

static tm_sender *cut_after_round_one(rig *t, int64_t skew)
{
	g_autoptr(GError) err = NULL;

	rig_start(t, NULL, NULL);
	tm_sender *s = sender_new(&t->src, 3, NULL);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", t->pport, &err), ==, 0);
	queue_all(s);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	tm_receiver_test_syncs_skew(skew);
	/* Round 2 finds the break: the parked worker is not woken for it (cut-idle is that). */
	tm_resume_test_no_idle_wake(true);
#else
	g_assert_cmpint(skew, ==, 0);
#endif
	proxy_arm(&t->px, conn_of(1), 0);
	while (proxy_cuts(&t->px) == 0)
		g_usleep(1000);
	g_usleep(50000); /* the receiver sees the close first */
	return s;
}

static void test_cut_between_rounds(void)
{
	rig t;
	g_autoptr(GError) err = NULL;

	tm_sender *s = cut_after_round_one(&t, 0);
	uint64_t np = RAM / 4096, bm[np / 64];
	memset(bm, 0x55, sizeof(bm));
	for (uint64_t i = 0; i < np; i += 2)
		fill_page(&t.src, 0, i, (unsigned)i + 1);
	int r = tm_sender_queue_bitmap(s, 0, bm, 0, np, &err);
	if (r == 0)
		r = tm_sender_sync(s, &err);
	if (r == 0)
		r = tm_sender_finish(s, &err);
	peer_join(&t.p);
	idle_wake_on();
	assert_resumed(s, &t.p, &t.src, &t.dst, r, err, RAM / 4096 * 3 / 2);
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
	send_timeout_ms = 4000;
	tm_sender *s = sender_new(&t.src, 3, NULL);
	send_timeout_ms = 20000;
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
	assert_resumed(s, &t.p, &t.src, &t.dst, r, err, RAM / 4096);
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

/* The rig started, a sender of one channel with deltas always on connected, round 1
 * acknowledged, and round 2's change (8 bytes of every page) made in the source. */
static tm_sender *delta_round_two(rig *t)
{
	g_autoptr(GError) err = NULL;

	rig_start(t, NULL, NULL);
	tm_live_config lc = { .size = sizeof(lc), .delta_cache_bytes = 32u << 20,
			      .delta_policy = TM_DELTA_ALWAYS };
	tm_sender *s = sender_new(&t->src, 1, &lc);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", t->pport, &err), ==, 0);
	queue_all(s);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
	for (uint64_t i = 0; i < RAM / 4096; i++)
		t->src.ram[0][i * 4096 + 64 + i % 3000] ^= 0xa5;
	return s;
}

/* Round 2 queued, the cut armed: its sync must return with the destination equal to the source,
 * after one cut; the session then ends bit for bit after one reconnect, and s is freed with the
 * rig. *ds: the sender's delta statistics when sync returned. */
static void sync_through_cut(rig *t, tm_sender *s, tm_delta_stats *ds)
{
	g_autoptr(GError) err = NULL;

	int r = tm_sender_sync(s, &err);
	if (r != 0)
		g_test_message("sender: %s", err->message);
	g_assert_cmpint(r, ==, 0);
	g_test_message("sync returned: the destination must hold round 2");
	assert_same(&t->src, &t->dst); /* what sync promised, before anything else is sent */
	g_assert_cmpuint(proxy_cuts(&t->px), ==, 1);
	*ds = (tm_delta_stats){ .size = sizeof(*ds) };
	g_assert_cmpint(tm_sender_get_delta_stats(s, 0, ds), ==, 0);
	g_test_message("%" G_GUINT64_FORMAT " pages sent as deltas, %" G_GUINT64_FORMAT " refused",
		       (guint64)ds->pages, (guint64)ds->refused);
	r = tm_sender_finish(s, &err);
	peer_join(&t->p);
	if (r != 0)
		g_test_message("sender: %s", err->message);
	g_assert_cmpint(r, ==, 0);
	g_assert_cmpint(t->p.ret, ==, 0);
	assert_same(&t->src, &t->dst);
	tm_live_stats ss = { .size = sizeof(ss) };
	g_assert_cmpint(tm_sender_get_live_stats(s, &ss), ==, 0);
	g_assert_cmpuint(ss.reconnects, ==, 1);
	rig_free(t, s);
}

/*
 * Deltas on, one channel. Round 2 changes 8 bytes of every page, and the destination's copy of
 * some pages is no longer their base, so their DELTAs are refused (DELTA_NACK) while the sender
 * waits for SYNC 2's answer: it re-sends them whole and repeats SYNC 2. after_ack: the last 8
 * pages are refused, and the connection is cut right after the first SYNC_ACK 2 went, before
 * the re-sent pages. Else every 16th page is (so that every DELTA message has a refusal, and
 * none is unanswered once the NACKs are read), and the cut comes right before SYNC_ACK 2. Either
 * way the reconnect's RESUME_ACK says SYNC 2 was answered, yet refused pages are not at the
 * destination. tm_sender_sync() must still return only once they are: the destination equals
 * the source the moment it returns.
 */
static void cut_refused_sync(bool after_ack)
{
	rig t;
	tm_delta_stats ds;
	const uint64_t np = RAM / 4096;

	if (tls_dir) {
		g_test_skip("the proxy finds the SYNC_ACK by its frame header: plaintext only");
		return;
	}
	tm_sender *s = delta_round_two(&t);
	for (uint64_t i = after_ack ? np - 8 : 0; i < np; i += after_ack ? 1 : 16)
		t.dst.ram[0][i * 4096 + 7] ^= 0x5a;
	if (after_ack)
		proxy_arm_reply(&t.px, conn_of(0), TM_MSG_SYNC_ACK);
	else
		proxy_arm_frame(&t.px, conn_of(0), TM_MSG_SYNC_ACK, false);
	queue_all(s);
	sync_through_cut(&t, s, &ds);
	g_assert_cmpuint(ds.refused, >=, 1);
}

static void test_cut_after_refused_sync(void)
{
	cut_refused_sync(true);
}

static void test_cut_before_refused_sync_ack(void)
{
	cut_refused_sync(false);
}

/*
 * Deltas on, one channel. Round 2 changes every page and queues page X a second time behind the
 * whole block (its last page: both of its DELTAs leave at the round's end), and the destination's
 * copy of X is not its base, so both are refused. nack_read false: the connection is cut right
 * before the receiver's first DELTA_NACK, so the sender resumes with DELTAs unanswered and sends
 * every page of the round whole again (the redo), X twice among them. nack_read true: the first
 * DELTA_NACK reaches the sender (X waits to be re-sent, or went) and the sender's next bytes are
 * the cut, so the replay meets a refusal already taken and X's whole copy in the log (a redo when
 * DELTAs were still unanswered, else not). Either way tm_sender_sync() must return only with the
 * destination equal to the source, and the session must end bit for bit.
 */
static void cut_redo_repeated_page(bool nack_read)
{
	rig t;
	tm_delta_stats ds;
	g_autoptr(GError) err = NULL;
	const uint64_t np = RAM / 4096, x = np - 1; /* its DELTAs in the round's last packets */

	if (tls_dir) {
		g_test_skip("the proxy finds the DELTA_NACK by its frame header: plaintext only");
		return;
	}
	tm_sender *s = delta_round_two(&t);
	t.dst.ram[0][x * 4096 + 7] ^= 0x5a;
	if (nack_read)
		proxy_arm_reply(&t.px, conn_of(0), TM_MSG_DELTA_NACK);
	else
		proxy_arm_frame(&t.px, conn_of(0), TM_MSG_DELTA_NACK, false);
	queue_all(s);
	g_assert_cmpint(tm_sender_queue_pages(s, 0, &x, 1, &err), ==, 0);
	sync_through_cut(&t, s, &ds);
	g_assert_cmpuint(ds.pages, >=, np + 1); /* the round, X twice, went before the cut */
	if (nack_read)
		g_assert_cmpuint(ds.refused, >=, 1); /* the NACK that passed was read */
}

static void test_cut_redo_repeated_page(void)
{
	cut_redo_repeated_page(false);
}

static void test_cut_redo_after_nack(void)
{
	cut_redo_repeated_page(true);
}

/*
 * Round 1 is acknowledged (SYNC 1), data channel 1 is cut between rounds, and the receiver's
 * RESUME_ACK (to the idle worker's reconnect, or round 2's) then names a SYNC the channel never sent (skew +5: SYNC 6) or not the one it
 * acknowledged (skew -1: SYNC 0). The sender refuses the position, naming it, rather than take
 * an unanswered SYNC as answered (a test hook of the library makes the receiver lie).
 */
static void syncs_out_of_range(int64_t skew)
{
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	rig t;
	g_autoptr(GError) err = NULL;

	tm_sender *s = cut_after_round_one(&t, skew);
	/* The parked worker resumes the channel at once, or at this round: either refuses. */
	uint64_t np = RAM / 4096, bm[np / 64];
	memset(bm, 0xff, sizeof(bm));
	int r = tm_sender_queue_bitmap(s, 0, bm, 0, np, &err);
	if (r == 0)
		r = tm_sender_sync(s, &err);
	if (r == 0)
		r = tm_sender_finish(s, &err);
	peer_join(&t.p);
	tm_receiver_test_syncs_skew(0);
	idle_wake_on();
	g_assert_cmpint(r, <, 0);
	g_test_message("sender: %s", err->message);
	g_assert_nonnull(strstr(err->message, "channel 1: RESUME_ACK says"));
	g_assert_nonnull(strstr(err->message, skew > 0 ? "SYNC 6 answered" : "SYNC 0 answered"));
	g_assert_nonnull(strstr(err->message, "SYNCs up to"));
	g_assert_cmpint(t.p.ret, <, 0);
	rig_free(&t, s);
#else
	(void)skew;
	g_test_skip("needs the library's test hooks (-Dtest_hooks=true)");
#endif
}

static void test_syncs_never_sent(void)
{
	syncs_out_of_range(5);
}

static void test_syncs_below_acked(void)
{
	syncs_out_of_range(-1);
}

/*
 * RAM is acknowledged, then data channel 0 is reset while idle. Its next batch (put_state's
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
	assert_resumed(s, &t.p, &t.src, &t.dst, r, err, RAM / 4096);
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
	assert_resumed_n(s, &t.p, &t.src, &t.dst, r, err, RAM / 4096,
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

/* Data channel 2 is cut 256 KiB into device state (RAM was acknowledged before). */
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
	assert_resumed(s, &t.p, &t.src, &t.dst, r, err, RAM / 4096);
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

/*
 * A stranger's reconnect as data channel 0 of this session (its id, epoch 1) with token: HELLO
 * and RESUME, inside TLS when the session uses it (the stranger then has a certificate of the
 * CA: only the secret stops it). Returns what came back before the close (at most one frame).
 */
static size_t hijack(const char *port, const uint8_t id[16], guest *g, unsigned channels,
		     uint8_t role, uint64_t token, uint8_t *ret, size_t cap, int *ret_err)
{
	int fd = tm_net_connect("127.0.0.1", port, 5000, -1, NULL);
	g_assert_cmpint(fd, >=, 0);
	tm_io *io = NULL;
	g_autoptr(tm_tls_ctx) tls = NULL;
	tm_io_config ioc = { .timeout_ms = 5000, .depth = 1 }; /* no answer must not hang us */
	g_assert_cmpint(tm_io_open(fd, 0, &tm_transport_socket, &ioc, &io, NULL), ==, 0);
	if (tls_dir) {
		g_assert_cmpint(tm_tls_ctx_new(TM_TLS_CLIENT, tls_dir, "127.0.0.1", &tls, NULL), ==, 0);
		g_assert_cmpint(tm_tls_wrap(tls, &io, NULL), ==, 0);
	}
	/* An urgent connection: postcopy offered, epoch 0 (the codec allows no other) */
	bool urgent = role == TM_ROLE_URGENT;
	tm_ram_block_info bi;
	tm_ram_layout_block(g->layout, 0, &bi);
	const fake_hello h = { .version = 2, .channel_count = (uint16_t)channels,
			       .features = TM_FEATURE_TAGS_MTE4 | TM_FEATURE_RESUME |
					   TM_FEATURE_RESUME_CONTROL | TM_FEATURE_CONN_LOST |
					   TM_FEATURE_LINK_CHECK | (urgent ? TM_FEATURE_POSTCOPY : 0),
			       .role = role, .epoch = urgent ? 0 : 1, .packet_size = 64u << 10,
			       .chunk_size = 2u << 20, .block = { "pc.ram", RAM, 4096 },
			       .guest_base = bi.guest_base, .id = id };
	size_t n;
	g_autofree uint8_t *buf = fake_hello_bytes(&h, 64, &n);
	n += tm_resume_encode(buf + n, 1, token);
	struct iovec v = { .iov_base = buf, .iov_len = n };
	g_assert_cmpint(tm_io_send(io, &v, 1, n), ==, 0);
	/* The answer: a frame header, then its body (an ERROR is at most cap bytes). */
	size_t got = 0;
	tm_frame f;
	struct iovec hv = { .iov_base = ret, .iov_len = TM_FRAME_HDR_LEN };
	*ret_err = -tm_io_recv(io, &hv, 1, TM_FRAME_HDR_LEN);
	if (*ret_err == 0) {
		got = TM_FRAME_HDR_LEN;
		if (tm_frame_decode(ret, got, 2, 0, &f, NULL) == 0 && got + f.body_len <= cap) {
			struct iovec bv = { .iov_base = ret + got, .iov_len = f.body_len };
			if ((*ret_err = -tm_io_recv(io, &bv, 1, f.body_len)) == 0)
				got += f.body_len;
		}
	}
	tm_io_free(io);
	return got;
}

/*
 * A stranger that knows the session id (and, with TLS, has a certificate of the CA) but not the
 * secret connects mid-session as channel 0's reconnect: it gets an ERROR and nothing else, is
 * counted, and the session completes.
 */
static void hijack_refused(bool urgent)
{
	guest src, dst;
	peer p;
	g_autoptr(GError) err = NULL;
	uint8_t id[16];

	guest_init(&src, spec, 1, true);
	guest_init(&dst, spec, 1, true);
	guest_fill(&src);
	g_autofree char *port = peer_start(&p, &dst);
	/* No compression, so the session's features are exactly what hijack() offers (MTE4 and
	 * RESUME): the stranger knows everything but the secret. */
	tm_live_config lc = { .size = sizeof(lc), .compress = TM_COMPRESS_NONE };
	tm_sender *s = sender_new(&src, 3, &lc);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", port, &err), ==, 0);
	tm_sender_get_session_id(s, id);
	queue_all(s);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
	uint8_t rb[TM_FRAME_HDR_LEN + TM_ERROR_FIXED_LEN + TM_MAX_ERROR_MESSAGE];
	int rerr = 0;
	size_t got = hijack(port, id, &src, 3, urgent ? TM_ROLE_URGENT : TM_ROLE_DATA,
			    0x1234567890abcdefull, rb, sizeof(rb), &rerr);
	tm_frame f;
	if (got == 0) {
		/*
		 * Closed without an answer: a refusal too (seen once in a loaded full-suite run,
		 * not reproduced: the receiver's I/O handle for the connection could not be made,
		 * e.g. io_uring out of memory). The count and the session's end below still hold.
		 */
		g_test_message("stranger: closed without an answer (%s)", g_strerror(rerr));
	} else {
		g_assert_cmpint(tm_frame_decode(rb, got, 2, 0, &f, NULL), ==, 0);
		g_assert_cmpuint(f.type, ==, TM_MSG_ERROR);
		g_assert_cmpuint(got, ==, TM_FRAME_HDR_LEN + f.body_len);
		int code;
		g_autofree char *msg = NULL;
		g_assert_cmpint(tm_error_decode(rb + TM_FRAME_HDR_LEN, f.body_len, &code, &msg, NULL),
				==, 0);
		g_test_message("stranger told: %s", msg);
		if (urgent) {
			/* an urgent connection of epoch 0 mid-session (a reconnect needs an epoch) */
			g_assert_cmpint(code, ==, EPROTO);
			g_assert_nonnull(strstr(msg, "not an urgent connection of epoch 0"));
		} else {
			g_assert_cmpint(code, ==, EACCES);
			g_assert_nonnull(strstr(msg, "wrong secret"));
		}
	}
	/* The session goes on, untouched. */
	int r = tm_sender_finish(s, &err);
	peer_join(&p);
	g_assert_cmpint(r, ==, 0);
	g_assert_cmpint(p.ret, ==, 0);
	assert_same(&src, &dst);
	tm_live_stats rs = { .size = sizeof(rs) };
	g_assert_cmpint(tm_receiver_get_live_stats(p.r, &rs), ==, 0);
	g_assert_cmpuint(rs.resume_refused, ==, 1);
	g_assert_cmpuint(rs.reconnects, ==, 0);
	tm_sender_free(s);
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

static void test_hijack_refused(void)
{
	hijack_refused(false);
}

static void test_urgent_reconnect_refused(void)
{
	hijack_refused(true);
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
		{ "resume/cut-after-refused-sync", test_cut_after_refused_sync, false },
		{ "resume/cut-before-refused-sync-ack", test_cut_before_refused_sync_ack, false },
		{ "resume/cut-redo-repeated-page", test_cut_redo_repeated_page, false },
		{ "resume/cut-redo-after-nack", test_cut_redo_after_nack, false },
		{ "resume/syncs-never-sent", test_syncs_never_sent, false },
		{ "resume/syncs-below-acked", test_syncs_below_acked, false },
		{ "resume/cut-in-state", test_cut_in_state, false },
		{ "resume/cut-corked", test_cut_corked, false },
		{ "resume/off", test_cut_without_resume, false },
		{ "resume/deadline", test_resume_deadline, false },
		{ "resume/cancel-while-resuming", test_cancel_while_resuming, false },
		{ "resume/hijack-refused", test_hijack_refused, false },
		{ "resume/urgent-refused", test_urgent_reconnect_refused, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
