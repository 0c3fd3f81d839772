/* SPDX-License-Identifier: MIT */
/*
 * Cuts during setup (setup-cuts.h) in attach mode (resume-rig.h, rig_attach): the VMMs' own
 * sockets, the reconnect hook on both sides. The sender dials again through its hook, the
 * receiver takes the redial through its own while it still handshakes the attached sockets, in
 * place of the one it placed where there is one (silent cuts: every unanswered connection is
 * dialled again). Every test runs for each backend pair, plaintext and TLS (session-fixture.c).
 */
#include "setup-cuts.h"

static void attach_cut(int conn, cut_point point)
{
	rig_attach = true;
	setup_cut(conn, point, false);
	rig_attach = false;
}

/* A one-sided cut (freeze: both sides kept silent), the receiver's timeout recv_ms. */
static void attach_silent(int conn, cut_point point, bool freeze, unsigned recv_ms)
{
	rig_attach = true;
	setup_silent_cut(conn, point, freeze, recv_ms);
	rig_attach = false;
}

static void test_attach_data0_before_hello(void) { attach_cut(DATA0, BEFORE_HELLO); }
static void test_attach_control_before_hello(void) { attach_cut(CONTROL, BEFORE_HELLO); }
static void test_attach_data2_before_hello(void) { attach_cut(DATA2, BEFORE_HELLO); }
static void test_attach_data0_mid_tls(void) { attach_cut(DATA0, MID_TLS); }
static void test_attach_data2_silent_hello(void)
{
	attach_silent(DATA2, BEFORE_HELLO, false, 10000);
}
static void test_attach_control_silent_hello_equal(void)
{
	attach_silent(CONTROL, BEFORE_HELLO, false, 2000);
}
static void test_attach_data0_silent_tls(void) { attach_silent(DATA0, MID_TLS, false, 10000); }
static void test_attach_data2_frozen_hello(void)
{
	attach_silent(DATA2, BEFORE_HELLO, true, 10000);
}
static void test_attach_data0_frozen_hello_equal(void)
{
	attach_silent(DATA0, BEFORE_HELLO, true, 2000);
}

/*
 * Attach mode, equal timeouts (2 s): data 0 is cut at once on the sender's side only, its
 * receiver's side stays open and silent. The receiver's attached socket for it waits for a
 * HELLO until its deadline (2 s after attach began), but it holds neither the others nor the
 * sender's redial of it (through both hooks), so the session completes long before that, and
 * before the sender's redials run out (resume_deadline_ms, 2 s after the cut).
 */
static void test_attach_data0_half_equal(void)
{
	run t;

	rig_attach = true;
	rig_send_timeout_ms = rig_recv_timeout_ms = 2000;
	tm_live_config lc = { .size = sizeof(lc), .resume_deadline_ms = 2000 };
	run_start(&t, &lc, 2000);
	t.px.half = true;
	proxy_arm(&t.px, DATA0, 0);
	double secs = setup_migrate_timed(&t);
	rig_attach = false;
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1);
	setup_assert_done(&t, 1);
	g_assert_cmpfloat(secs, <, 1.5);
	run_end(&t);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "resume-setup/attach/data0-before-hello", test_attach_data0_before_hello, false },
		{ "resume-setup/attach/control-before-hello", test_attach_control_before_hello,
		  false },
		{ "resume-setup/attach/data2-before-hello", test_attach_data2_before_hello, false },
		{ "resume-setup/attach/data0-mid-tls", test_attach_data0_mid_tls, false },
		{ "resume-setup/attach/data2-silent-hello", test_attach_data2_silent_hello, false },
		{ "resume-setup/attach/control-silent-hello-equal",
		  test_attach_control_silent_hello_equal, false },
		{ "resume-setup/attach/data0-silent-tls", test_attach_data0_silent_tls, false },
		{ "resume-setup/attach/data2-frozen-hello", test_attach_data2_frozen_hello, false },
		{ "resume-setup/attach/data0-frozen-hello-equal",
		  test_attach_data0_frozen_hello_equal, false },
		{ "resume-setup/attach/data0-half-equal", test_attach_data0_half_equal, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
