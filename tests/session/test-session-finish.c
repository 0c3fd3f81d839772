/* SPDX-License-Identifier: MIT */
/*
 * The end of a round and of a session (issue 16). A round (tm_sender_sync) on parked channels:
 * the caller sends the SYNCs and reads the SYNC_ACKs itself. A session (tm_sender_finish): the
 * migration thread ends the data channels whose workers are parked and sends the control END
 * itself, all before it reads any answer; a busy channel's worker ends its own behind its
 * work; the receiver's last data worker answers the control END (READY, END_ACK) without
 * handing over to its control thread. Every test runs for each backend pair, plaintext and TLS
 * (session-fixture.c). Which thread did what is read through test hooks (-Dtest_hooks=true);
 * the round trips themselves are timed by test-session-rtt.c through a delaying relay. A
 * receiver whose END_ACKs lie, and the end decided once: test-session-end.c.
 */
#include <errno.h>
#include <string.h>

#include "cut-proxy.h"
#include "finish-rig.h"

/*
 * Channels 0 and 1 have a large final round queued when finish is called, 2 and 3 are parked:
 * finish ends 2 and 3 itself, 0 and 1 end behind their pages, and the destination is the source
 * bit for bit. The control END reaches the receiver long before the busy channels end there,
 * so the last of them answers it.
 */
static void test_parked_and_busy(void)
{
	if (!have_hooks())
		return;
	g_autoptr(GError) err = NULL;
	const bool busy[CHANNELS] = { true, true, false, false };
	guest src, dst;
	peer p;

	tm_sender *s = parked_after_round(&src, &dst, &p);
	uint64_t again = dirty_channels(&src, s, busy);
	finish_checked(s, &p, &src, &dst, GUEST / PAGE + again);

	unsigned data, control, answered;
	/* Finish's thread waits for the parked two: it reads control's answers as well. */
	g_assert_cmpuint(ends(s, &p, &data, &control, &answered), ==, 1);
	/* The parked two at least; on a loaded machine a busy worker may have sent its whole
	 * round and parked before finish was called (seen once at load 6: 3), and then the
	 * receiver's control thread may read END before the last data channel ends. */
	g_assert_cmpuint(data, >=, 2);
	g_assert_cmpuint(data, <=, CHANNELS);
	g_assert_cmpuint(control, ==, 1);
	g_assert_cmpuint(answered, <=, 1);
	if (data == 2)
		g_assert_cmpuint(answered, ==, 1);
	/* Once, per session: a second finish is refused and sends nothing. */
	unsigned first = data;
	g_assert_cmpint(tm_sender_finish(s, NULL), ==, -EBADFD);
	sender_ends(s, &data, &control);
	g_assert_cmpuint(data, ==, first);
	g_assert_cmpuint(control, ==, 1);
	teardown(s, &p, &src, &dst);
}

typedef struct state_seen {
	unsigned sections;
	size_t bytes;
	uint8_t first;
} state_seen;

static void on_state(peer *p, const char *name, const uint8_t *data, size_t len)
{
	state_seen *st = p->opaque;

	g_assert_true(g_str_has_prefix(name, "dev"));
	if (st->sections++ == 0 && len)
		st->first = data[0];
	st->bytes += len;
}

/*
 * Every channel parked, device state put before finish (its chunks and END_OF_STATE go in the
 * batches finish sends itself, behind RAM_END): finish ends all four channels and control, and
 * the destination has the RAM and every section.
 */
static void test_all_parked_with_state(void)
{
	if (!have_hooks())
		return;
	g_autoptr(GError) err = NULL;
	state_seen st = { 0 };
	guest src, dst;
	peer p = { .opaque = &st };
	uint8_t dev[3 * CHUNK + 5];

	for (size_t i = 0; i < sizeof(dev); i++)
		dev[i] = (uint8_t)(i * 7 + 1);
	guests_init(&src, &dst);
	g_autofree char *port = peer_start_state(&p, &dst, false, 0, on_state, &st);
	tm_sender *s = source(&src, port);
	full_round(s);
	await_parked(s, CHANNELS);
	g_assert_cmpint(tm_sender_guest_stopped(s, &err), ==, 0);
	/* put_state hands its chunks to the workers, which wake and park again */
	g_assert_cmpint(tm_sender_put_state(s, "dev0", dev, sizeof(dev), 0, &err), ==, 0);
	g_assert_cmpint(tm_sender_put_state(s, "dev1", dev, 1, TM_STATE_COPY, &err), ==, 0);
	await_parked(s, CHANNELS);
	finish_checked(s, &p, &src, &dst, GUEST / PAGE);
	g_assert_cmpuint(st.sections, ==, 2);
	g_assert_cmpuint(st.bytes, ==, sizeof(dev) + 1);
	g_assert_cmpuint(st.first, ==, 1);

	unsigned data, control, answered;
	g_assert_cmpuint(ends(s, &p, &data, &control, &answered), ==, 1);
	g_assert_cmpuint(data, ==, CHANNELS);
	g_assert_cmpuint(control, ==, 1);
	/* Which side of the receiver answers depends on whether its control thread read END
	 * before the last data channel ended: both are correct, the session completed. */
	g_assert_cmpuint(answered, <=, 1);
	teardown(s, &p, &src, &dst);
}

/*
 * Finish's thread sleeps until control's READY and END_ACK: the receiver sends them only after
 * every data channel's END_ACK, so those wait in their sockets and are read after control's,
 * without a wake-up each. Here the receiver holds its answer 100 ms after the data channels'
 * END_ACKs went (a test hook): none is read before it, and the session completes bit for bit.
 */
static void test_end_acks_after_control(void)
{
	if (!have_hooks())
		return;
	guest src, dst;
	peer p;

	tm_sender *s = parked_after_round(&src, &dst, &p);
	answer_delay(100);
	int64_t t0 = g_get_monotonic_time();
	finish_checked(s, &p, &src, &dst, GUEST / PAGE);
	int64_t took_us = g_get_monotonic_time() - t0;
	answer_delay(0);

	unsigned data, control, answered;
	g_assert_cmpuint(ends(s, &p, &data, &control, &answered), ==, 1);
	g_assert_cmpuint(data, ==, CHANNELS);
	g_test_message("finish took %" G_GINT64_FORMAT " us; data END_ACKs read before control's: "
		       "%" G_GUINT64_FORMAT, took_us, early_end_acks(s));
	g_assert_cmpint(took_us, >=, 100000); /* the delay was where the test says */
	g_assert_cmpuint(early_end_acks(s), ==, 0);
	teardown(s, &p, &src, &dst);
}


/*
 * Finish's thread reads control's READY and END_ACK itself, and leaves everything else to the
 * control thread: here the PONG to a PING sent just before END (a test hook), which reaches
 * finish's thread first. The thread takes it (with its header, already read) and the rest of
 * the end after it; the session completes bit for bit, the END_ACK read by the control thread.
 */
static void test_pong_handed_back(void)
{
	if (!have_hooks())
		return;
	g_autoptr(GError) err = NULL;
	guest src, dst;
	peer p;

	tm_sender *s = parked_after_round(&src, &dst, &p);
	tm_live_stats before = { .size = sizeof(before) };
	g_assert_cmpint(tm_sender_get_live_stats(s, &before), ==, 0);
	ping_before_end(true);
	finish_checked(s, &p, &src, &dst, GUEST / PAGE);
	ping_before_end(false);
	unsigned data, control, answered;
	g_assert_cmpuint(ends(s, &p, &data, &control, &answered), ==, 0);
	g_assert_cmpuint(data, ==, CHANNELS);
	g_assert_cmpuint(control, ==, 1);
	tm_live_stats after = { .size = sizeof(after) };
	g_assert_cmpint(tm_sender_get_live_stats(s, &after), ==, 0);
	g_assert_cmpuint(after.keepalives, >=, before.keepalives + 1); /* the hook's PING */
	teardown(s, &p, &src, &dst);
}

/* Threads of this process named exactly name, or prefix followed by a digit (data workers). */
static unsigned threads_named(const char *name, const char *prefix)
{
	g_autoptr(GDir) dir = g_dir_open("/proc/self/task", 0, NULL);
	const char *tid;
	unsigned n = 0;

	g_assert_nonnull(dir);
	while ((tid = g_dir_read_name(dir))) {
		g_autofree char *path = g_strdup_printf("/proc/self/task/%s/comm", tid);
		g_autofree char *comm = NULL;
		if (!g_file_get_contents(path, &comm, NULL, NULL))
			continue; /* it exited meanwhile */
		g_strchomp(comm);
		if (g_str_equal(comm, name) ||
		    (g_str_has_prefix(comm, prefix) && g_ascii_isdigit(comm[strlen(prefix)])))
			n++;
	}
	return n;
}

/*
 * The threads that end a session exit in free(), not at the end: a thread's exit costs tens of
 * microseconds of a CPU, which on a host with few would delay the threads still ending it (the
 * sender's finish, the receiver's last data worker). After finish and the receiver's wait both
 * returned 0, the sender's control thread, the receiver's and its data workers are all still
 * there; each side's free() ends its own.
 */
static void test_threads_exit_in_free(void)
{
	g_autoptr(GError) err = NULL;
	guest src, dst;
	peer p = { 0 };

	guests_init(&src, &dst);
	g_autofree char *port = peer_start(&p, &dst);
	tm_sender *s = source(&src, port);
	full_round(s);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	peer_join(&p);
	g_assert_no_error(p.error);
	g_assert_cmpint(p.ret, ==, 0);
	assert_same(&src, &dst);
	/* Time for an exit that would come at the end to be over. */
	g_usleep(200 * 1000);
	g_assert_cmpuint(threads_named("tm-send-ctl", "tm-send-"), ==, 1 + CHANNELS);
	g_assert_cmpuint(threads_named("tm-recv-ctl", "tm-recv-"), ==, 1 + CHANNELS);
	tm_sender_free(s);
	g_assert_cmpuint(threads_named("tm-send-ctl", "tm-send-"), ==, 0);
	g_assert_cmpuint(threads_named("tm-recv-ctl", "tm-recv-"), ==, 1 + CHANNELS);
	peer_free(&p);
	g_assert_cmpuint(threads_named("tm-recv-ctl", "tm-recv-"), ==, 0);
	guest_fini(&src);
	guest_fini(&dst);
}

/*
 * A session whose receiver fails at the end (a page it never got: incomplete) still fails on
 * the sender when finish ended the channels itself: the receiver's ERROR on control is the
 * answer, and finish reports it.
 * reset_first: that ERROR, read by finish's thread and handed back to the control thread, comes
 * when the session has quit on a reset of ours before that thread takes it (a hook forces the
 * order): the frame is still taken first, so finish reports the receiver's reason, which
 * outranks the reset, and the drain after a reset does not read the rest of the frame as a
 * header.
 */
static void incomplete_fails(bool reset_first)
{
	if (!have_hooks())
		return;
	/*
	 * reset_first needs finish's thread to be the one that reads the ERROR (it may see a data
	 * connection close first, and the control thread reads the ERROR itself: the order the
	 * hook forces does not arise then, 1 run in 10 on a loaded machine). Such a run must fail
	 * with the receiver's words too; the test runs again until the hook has fired, 20 times at
	 * most.
	 */
	for (unsigned attempt = 1;; attempt++) {
		g_autoptr(GError) err = NULL;
		guest src, dst;
		peer p;

		guests_init(&src, &dst);
		g_autofree char *port = peer_start(&p, &dst);
		tm_sender *s = source(&src, port);
		uint64_t one = 0;
		g_assert_cmpint(tm_sender_queue_pages(s, 0, &one, 1, &err), ==, 0);
		g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
		await_parked(s, CHANNELS);
		unsigned resets = reset_first ? reset_before_held(true) : 0;
		int r = tm_sender_finish(s, &err);
		bool fired = reset_first && reset_before_held(false) == resets + 1; /* ERROR went back */
		g_assert_cmpint(r, <, 0);
		g_assert_nonnull(err);
		g_test_message("finish: %s", err->message);
		g_assert_nonnull(strstr(err->message, "incomplete"));
		if (reset_first)
			g_assert_cmpint(err->code, !=, ECONNRESET);
		peer_join(&p);
		g_assert_cmpint(p.ret, <, 0);
		if (!reset_first) {
			unsigned data, control;
			sender_ends(s, &data, &control);
			g_assert_cmpuint(data, ==, CHANNELS);
		}
		teardown(s, &p, &src, &dst);
		if (!reset_first || fired)
			break;
		g_test_message("attempt %u: finish's thread did not read the ERROR; again", attempt);
		g_assert_cmpuint(attempt, <, 20);
	}
}

static void test_incomplete_fails(void)
{
	incomplete_fails(false);
}

static void test_reason_after_reset(void)
{
	incomplete_fails(true);
}

/*
 * Every channel parked, device state in four chunks (one per channel) put before finish, and
 * data channel 1's bytes held by the proxy from then on until its END went by: what came before
 * the STATE chunk passes, then the connection is cut. finish's thread has sent every END and
 * waits for the END_ACKs; the receiver holds channel 0's until device state is complete, which
 * needs the chunk lost on channel 1. Only a wait that watches every channel at once sees that
 * break and resumes channel 1 (a read of channel 0's END_ACK first never returns).
 * half_recv: only the receiver's side is closed, the sender's kept open and silent; the sender
 * sees no break and learns it from the receiver's CONN_LOST on control, whose handler shuts the
 * connection down: that must wake the same wait.
 */
static void cut_while_ending(bool half_recv)
{
	if (!have_hooks())
		return;
	if (tls_dir) {
		g_test_skip("the proxy reads the sender's frames: plaintext only");
		return;
	}
	g_autoptr(GError) err = NULL;
	state_seen st = { 0 };
	guest src, dst;
	peer p = { .opaque = &st };
	cut_proxy px;
	uint8_t dev[3 * CHUNK + 5];

	for (size_t i = 0; i < sizeof(dev); i++)
		dev[i] = (uint8_t)(i * 7 + 1);
	guests_init(&src, &dst);
	g_autofree char *port = peer_start_state(&p, &dst, false, 0, on_state, &st);
	g_autofree char *pport = proxy_start(&px, port);
	px.half_recv = half_recv; /* before any connection: read by the proxy under its lock */
	tm_sender *s = source(&src, pport);
	full_round(s);
	await_parked(s, CHANNELS);
	proxy_arm_hold_to_end(&px, 2); /* data channel 1: accept index 2 (data 0, control, 1..) */
	g_assert_cmpint(tm_sender_guest_stopped(s, &err), ==, 0);
	g_assert_cmpint(tm_sender_put_state(s, "dev0", dev, sizeof(dev), 0, &err), ==, 0);
	await_parked(s, CHANNELS);
	watchdog w;
	watchdog_start(&w, s, &p.r, 15, "hung 15 s after the cut");
	int r = tm_sender_finish(s, &err);
	bool fired = watchdog_stop(&w);
	peer_join(&p);
	if (r != 0)
		g_test_message("finish: %s", err->message);
	g_assert_false(fired);
	g_assert_cmpint(r, ==, 0);
	g_assert_no_error(p.error);
	g_assert_cmpint(p.ret, ==, 0);
	g_assert_cmpuint(proxy_cuts(&px), ==, 1);
	assert_same(&src, &dst);
	assert_counts(s, &p, GUEST / PAGE);
	g_assert_cmpuint(st.sections, ==, 1);
	g_assert_cmpuint(st.bytes, ==, sizeof(dev));
	unsigned data, control, answered;
	ends(s, &p, &data, &control, &answered);
	g_assert_cmpuint(data, ==, CHANNELS);
	tm_live_stats ss = { .size = sizeof(ss) };
	g_assert_cmpint(tm_sender_get_live_stats(s, &ss), ==, 0);
	g_assert_cmpuint(ss.reconnects, ==, 1);
	tm_sender_free(s);
	peer_free(&p);
	proxy_stop(&px);
	guest_fini(&src);
	guest_fini(&dst);
}

static void test_cut_while_ending(void)
{
	cut_while_ending(false);
}

static void test_cut_recv_side_while_ending(void)
{
	cut_while_ending(true);
}

/* Round round's figures: pages sent in it, and bytes moved (its pages and SYNCs; none for an
 * empty round, which sends no SYNC). */
static void assert_round(tm_sender *s, uint64_t round, uint64_t pages)
{
	tm_round_stats rs;

	g_assert_cmpint(tm_sender_get_round(s, round, &rs), ==, 0);
	g_assert_cmpuint(rs.round, ==, round);
	g_assert_cmpuint(rs.pages_queued, ==, pages);
	g_assert_cmpuint(rs.pages_sent, ==, pages);
	if (pages)
		g_assert_cmpuint(rs.wire_bytes, >, 0);
	else
		g_assert_cmpuint(rs.wire_bytes, ==, 0);
}

/*
 * The end of a round (tm_sender_sync) on parked channels: the caller sends the SYNCs and reads
 * the SYNC_ACKs itself, and the channels go back to their workers. An empty round sends no SYNC
 * at all (nothing is outstanding, so it completes at once); a round with pages on channels 0 and
 * 1 syncs directly only on the parked two (the busy
 * workers sync theirs behind their pages, or had parked already); the next round's pages still
 * go (the workers took their channels back), and the session completes bit for bit.
 */
static void test_sync_direct(void)
{
	if (!have_hooks())
		return;
	g_autoptr(GError) err = NULL;
	const bool busy[CHANNELS] = { true, true, false, false };
	const bool all[CHANNELS] = { true, true, true, true };
	guest src, dst;
	peer p;

	tm_sender *s = parked_after_round(&src, &dst, &p);
	uint64_t before = direct_syncs(s);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
	g_assert_cmpuint(direct_syncs(s) - before, ==, 0);
	assert_round(s, 2, 0);

	await_parked(s, CHANNELS);
	before = direct_syncs(s);
	uint64_t again = dirty_channels(&src, s, busy);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
	uint64_t n = direct_syncs(s) - before;
	g_test_message("a round with pages on 2 channels: %" G_GUINT64_FORMAT " synced directly",
		       n);
	g_assert_cmpuint(n, >=, 2);
	g_assert_cmpuint(n, <=, CHANNELS);
	assert_round(s, 3, again);

	/* Every channel's worker sends again after a direct sync. */
	await_parked(s, CHANNELS);
	uint64_t last = dirty_channels(&src, s, all);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
	assert_round(s, 4, last);
	finish_complete(s, &p, &src, &dst, GUEST / PAGE + again + last);
}

/*
 * A direct sync whose SYNC_ACK on data channel 1 is lost with the connection: the caller's
 * wait sees the break, resumes the channel (the reconnect's RESUME_ACK says the SYNC was
 * answered) and returns. half_recv: only the receiver's side is closed; the sender learns it
 * from the receiver's CONN_LOST on control, whose shutdown must wake the same wait. An empty
 * round comes first: it sends no SYNC, so round numbers and SYNC ids on the wire part (round 3
 * is SYNC 2), and the resume must count the receiver's answered SYNCs by their wire ids.
 */
static void sync_ack_lost(bool half_recv)
{
	if (!have_hooks())
		return;
	if (tls_dir) {
		g_test_skip("the proxy reads the receiver's frames: plaintext only");
		return;
	}
	g_autoptr(GError) err = NULL;
	guest src, dst;
	peer p;
	cut_proxy px;

	guests_init(&src, &dst);
	g_autofree char *port = peer_start(&p, &dst);
	g_autofree char *pport = proxy_start(&px, port);
	px.half_recv = half_recv; /* before any connection: read by the proxy under its lock */
	tm_sender *s = source(&src, pport);
	full_round(s);
	await_parked(s, CHANNELS);
	uint64_t before = direct_syncs(s);
	tm_stats st0, st1;
	tm_sender_get_stats(s, &st0);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, 0); /* round 2: empty */
	tm_sender_get_stats(s, &st1);
	g_assert_cmpuint(direct_syncs(s), ==, before);
	g_assert_cmpuint(st1.wire_bytes, ==, st0.wire_bytes);
	g_assert_cmpint(tm_sender_round_done(s, 2, &err), ==, 1);
	proxy_arm_frame(&px, 2, TM_MSG_SYNC_ACK, false); /* data channel 1: accept index 2 */
	/* One page, on data channel 0: an empty round would send no SYNC at all. Channel 0's
	 * worker may take its SYNC behind the page; the others sync directly. */
	const uint64_t page = 0;
	g_assert_cmpint(tm_sender_queue_pages(s, 0, &page, 1, &err), ==, 0);
	watchdog w;
	watchdog_start(&w, s, &p.r, 15, "hung 15 s after the cut");
	int r = tm_sender_sync(s, &err);
	bool fired = watchdog_stop(&w);
	if (r != 0)
		g_test_message("sync: %s", err->message);
	g_assert_false(fired);
	g_assert_cmpint(r, ==, 0);
	g_assert_cmpuint(direct_syncs(s) - before, >=, CHANNELS - 1);
	g_assert_cmpuint(direct_syncs(s) - before, <=, CHANNELS);
	g_assert_cmpuint(proxy_cuts(&px), ==, 1);
	tm_live_stats ss = { .size = sizeof(ss) };
	g_assert_cmpint(tm_sender_get_live_stats(s, &ss), ==, 0);
	g_assert_cmpuint(ss.reconnects, ==, 1);
	g_assert_cmpuint(ss.resent_bytes, ==, 0); /* everything had arrived */
	finish_complete(s, &p, &src, &dst, GUEST / PAGE + 1);
	proxy_stop(&px);
}

static void test_sync_ack_lost(void)
{
	sync_ack_lost(false);
}

static void test_sync_ack_lost_recv_side(void)
{
	sync_ack_lost(true);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "finish/parked-and-busy", test_parked_and_busy, false },
		{ "finish/all-parked-with-state", test_all_parked_with_state, false },
		{ "finish/incomplete-fails", test_incomplete_fails, false },
		{ "finish/reason-after-reset", test_reason_after_reset, false },
		{ "finish/threads-exit-in-free", test_threads_exit_in_free, false },
		{ "finish/pong-handed-back", test_pong_handed_back, false },
		{ "finish/end-acks-after-control", test_end_acks_after_control, false },
		{ "finish/cut-while-ending", test_cut_while_ending, false },
		{ "finish/cut-recv-side-while-ending", test_cut_recv_side_while_ending, false },
		{ "sync/direct", test_sync_direct, false },
		{ "sync/direct-ack-lost", test_sync_ack_lost, false },
		{ "sync/direct-ack-lost-recv-side", test_sync_ack_lost_recv_side, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
