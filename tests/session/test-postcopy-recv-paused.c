/* SPDX-License-Identifier: MIT */
/*
 * Postcopy at the destination when it stops short (docs/design/live-engine.md 3.4): the path
 * to the source breaks (POSTCOPY_PAUSED, blocked vCPUs wait, then SIGBUS at free where the
 * kernel poisons) and a cancel ends every thread of the receiver. Against the hand-made sender
 * of postcopy-dest.h.
 *
 * Without userfaultfd every case skips with the kernel's reason.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/uffd-internal.h"
#include "postcopy-dest.h"

/* A cancel in postcopy ends every thread of the receiver within a second (-ECANCELED). */
static void test_cancel(void)
{
	dest d = { 0 };
	fake_sender w;

	if (!dest_open(&d, &w))
		return;
	raw_switch_round0(&d, &w, false);
	int64_t t0 = g_get_monotonic_time();
	g_assert_cmpint(tm_receiver_cancel(d.r, "test"), ==, 0);
	dest_join(&d, "cancel");
	g_test_message("receiver: %s after %.0f ms", d.error ? d.error->message : "ok",
		       (g_get_monotonic_time() - t0) / 1e3);
	g_assert_cmpint(d.ret, ==, -ECANCELED);
	g_assert_cmpint(g_get_monotonic_time() - t0, <, G_USEC_PER_SEC);
	g_assert_cmpint(tm_receiver_phase(d.r), ==, TM_PHASE_FAILED);
	dest_close(&d, &w);
}

/*
 * A connection lost after the switch pauses postcopy (3.4): wait() says -ENOTCONN with the
 * cause, TM_EVENT_PAUSED, phase POSTCOPY_PAUSED; a vCPU on a missing page stays blocked (the
 * library never places what it did not receive); a cancel then gives up (FAILED).
 */
static void test_paused(void)
{
	dest d = { 0 };
	fake_sender w;

	if (!dest_open(&d, &w))
		return;
	raw_switch_round0(&d, &w, true);
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	sigaction(SIGBUS, &sa, &old);
	bus_vcpu v = { .page = d.g.ram[0] + 20 * PAGE };
	v.thread = g_thread_new("vcpu", bus_vcpu_thread, &v);
	while (!g_atomic_int_get(&v.started))
		g_usleep(1000);
	g_usleep(50000);
	close(w.fd[CH_DATA1]); /* the path to the source breaks */
	w.fd[CH_DATA1] = -1;
	dest_join(&d, "paused");
	g_test_message("receiver: %s", d.error ? d.error->message : "ok");
	g_assert_cmpint(d.ret, ==, -ENOTCONN);
	g_assert_nonnull(strstr(d.error->message, "postcopy paused: channel 1: "));
	g_assert_nonnull(strstr(d.error->message, "the source must stay paused"));
	g_assert_cmpint(tm_receiver_phase(d.r), ==, TM_PHASE_POSTCOPY_PAUSED);
	g_assert_cmpuint(tm_receiver_take_events(d.r) & TM_EVENT_PAUSED, ==, TM_EVENT_PAUSED);
	tm_live_stats st = { .size = sizeof(st) };
	g_assert_cmpint(tm_receiver_get_live_stats(d.r, &st), ==, 0);
	g_assert_cmpuint(st.phase, ==, TM_PHASE_POSTCOPY_PAUSED);
	g_usleep(200000);
	g_assert_false(tm_receiver_page_present(d.r, 0, 20));
	g_assert_false(v.sigbus); /* still inside its load */
	g_assert_cmpint(tm_receiver_cancel(d.r, "giving up"), ==, 0);
	g_assert_cmpint(tm_receiver_phase(d.r), ==, TM_PHASE_FAILED);
	/* Free poisons what is missing before it closes the userfaultfd: the straggler gets SIGBUS,
	 * not a zero page it would take for guest data (design 1.7), where the kernel has poison. */
	int probe;
	bool poison = tm_uffd_open(true, true, TM_UFFD_FEATURE_POISON, &probe, NULL, NULL) == 0;
	if (poison)
		close(probe);
	tm_receiver_free(d.r);
	d.r = NULL;
	g_thread_join(v.thread);
	sigaction(SIGBUS, &old, NULL);
	g_test_message("vCPU after free: %s", v.sigbus ? "SIGBUS" : "a zero page");
	g_assert_true(v.sigbus == poison);
	fake_sender_close(&w);
	g_clear_error(&d.error);
	guest_fini(&d.g);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "postcopy-cancel", test_cancel, true },
		{ "postcopy-paused", test_paused, true },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
