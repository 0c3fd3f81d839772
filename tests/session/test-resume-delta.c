/* SPDX-License-Identifier: MIT */
/*
 * Resume of delta rounds and of the SYNC positions (docs/wire-format.md, "Resume"; cut-rig.h's
 * rig): a cut around a round whose DELTAs the destination refused (DELTA_NACK), before or after
 * its SYNC_ACK, or with a page queued twice; tm_sender_sync() returns only once the destination
 * equals the source, and the session ends bit for bit. A receiver whose RESUME_ACK names a SYNC
 * the channel never sent, or one below what it acknowledged, is refused (a test hook makes it
 * lie).
 */
#include <errno.h>
#include <string.h>

#include "codec/codec.h"
#include "cut-rig.h"
#include "session/resume.h"
#include "session/session-internal.h"

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
	for (uint64_t i = 0; i < CUT_RAM / 4096; i++)
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
	const uint64_t np = CUT_RAM / 4096;

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
	const uint64_t np = CUT_RAM / 4096, x = np - 1; /* its DELTAs in the round's last packets */

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
	uint64_t np = CUT_RAM / 4096, bm[np / 64];
	memset(bm, 0xff, sizeof(bm));
	int r = round_then_finish(&t, s, bm, &err);
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

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "resume/cut-after-refused-sync", test_cut_after_refused_sync, false },
		{ "resume/cut-before-refused-sync-ack", test_cut_before_refused_sync_ack, false },
		{ "resume/cut-redo-repeated-page", test_cut_redo_repeated_page, false },
		{ "resume/cut-redo-after-nack", test_cut_redo_after_nack, false },
		{ "resume/syncs-never-sent", test_syncs_never_sent, false },
		{ "resume/syncs-below-acked", test_syncs_below_acked, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
