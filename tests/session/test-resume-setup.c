/* SPDX-License-Identifier: MIT */
/*
 * Cuts during setup (docs/wire-format.md, "Setup"): a proxy between sender and receiver cuts one
 * connection of the session's setup (data 0, control, a later data channel, the urgent
 * connection when postcopy is offered) before its HELLO, between its HELLO and its HELLO_ACK,
 * or in the middle of its TLS handshake, both ways or on one side. tm_sender_connect()
 * succeeds, the migration completes bit-exact on both sides and the sender counts the
 * reconnect. Every test runs for each backend pair, plaintext and TLS (session-fixture.c); the
 * cuts at a HELLO or HELLO_ACK find it by its frame header (plaintext only), the
 * mid-handshake cut is TLS only. The same in attach mode: test-resume-setup-attach.c; where a
 * setup with cuts must fail: test-resume-setup-limits.c.
 */
#include "setup-cuts.h"

static void test_data0_before_hello(void) { setup_cut(DATA0, BEFORE_HELLO, false); }
static void test_data0_before_ack(void) { setup_cut(DATA0, BEFORE_ACK, false); }
static void test_data0_mid_tls(void) { setup_cut(DATA0, MID_TLS, false); }
static void test_control_before_hello(void) { setup_cut(CONTROL, BEFORE_HELLO, false); }
static void test_control_before_ack(void) { setup_cut(CONTROL, BEFORE_ACK, false); }
static void test_control_mid_tls(void) { setup_cut(CONTROL, MID_TLS, false); }
static void test_data2_before_hello(void) { setup_cut(DATA2, BEFORE_HELLO, false); }
static void test_data2_mid_tls(void) { setup_cut(DATA2, MID_TLS, false); }
static void test_urgent_before_hello(void) { setup_cut(URGENT, BEFORE_HELLO, true); }
static void test_urgent_before_ack(void) { setup_cut(URGENT, BEFORE_ACK, true); }
static void test_urgent_mid_tls(void) { setup_cut(URGENT, MID_TLS, true); }

/* One-sided cuts (setup_silent_cut()), the receiver's accept deadline 10 s. */
static void silent_cut_ex(int conn, cut_point point, bool freeze)
{
	setup_silent_cut(conn, point, freeze, 10000);
}
static void silent_cut(int conn, cut_point point) { silent_cut_ex(conn, point, false); }

static void test_data2_silent_tls(void) { silent_cut(DATA2, MID_TLS); }
static void test_control_silent_tls(void) { silent_cut(CONTROL, MID_TLS); }
static void test_data0_silent_tls(void) { silent_cut(DATA0, MID_TLS); }
static void test_data2_silent_hello(void) { silent_cut(DATA2, BEFORE_HELLO); }
static void test_control_silent_hello(void) { silent_cut(CONTROL, BEFORE_HELLO); }
static void test_data0_silent_hello(void) { silent_cut(DATA0, BEFORE_HELLO); }
static void test_data2_silent_ack(void) { silent_cut(DATA2, BEFORE_ACK); }
static void test_control_silent_ack(void) { silent_cut(CONTROL, BEFORE_ACK); }
static void test_data0_silent_ack(void) { silent_cut(DATA0, BEFORE_ACK); }

/*
 * Frozen: both sides of the connection are kept open and silent (a dead path, or a peer that
 * stopped in the middle of its handshake). The receiver handshakes other connections while it
 * waits for that one (its deadline is 10 s here, the whole accept), so the sender's redial of it
 * gets through: both sides return 0, bit-exact, within a few of the sender's handshake deadlines.
 */
static void test_data2_frozen_tls(void) { silent_cut_ex(DATA2, MID_TLS, true); }
static void test_control_frozen_tls(void) { silent_cut_ex(CONTROL, MID_TLS, true); }
static void test_data2_frozen_hello(void) { silent_cut_ex(DATA2, BEFORE_HELLO, true); }
static void test_control_frozen_hello(void) { silent_cut_ex(CONTROL, BEFORE_HELLO, true); }

/*
 * The same cuts with equal timeouts on both sides (2 s, the default is equal too): the sender
 * hears nothing for its timeout_ms, about when the receiver's first accept deadline ends, so
 * that receiver keeps accepting while the sender is at work (each connection placed or
 * replaced moves its deadline to 1.5 timeouts later), and the sender's TLS handshakes at setup
 * end within half the receiver's handshake deadline. Both sides return 0, bit-exact (issue 14's
 * cut sweep).
 */
static void equal_cut(int conn, cut_point point, bool freeze)
{
	setup_silent_cut(conn, point, freeze, 2000);
}
static void test_data2_silent_hello_equal(void) { equal_cut(DATA2, BEFORE_HELLO, false); }
static void test_control_silent_hello_equal(void) { equal_cut(CONTROL, BEFORE_HELLO, false); }
static void test_data0_frozen_hello_equal(void) { equal_cut(DATA0, BEFORE_HELLO, true); }
static void test_data0_silent_tls_equal(void) { equal_cut(DATA0, MID_TLS, false); }
static void test_control_frozen_tls_equal(void) { equal_cut(CONTROL, MID_TLS, true); }

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "resume-setup/data0-before-hello", test_data0_before_hello, false },
		{ "resume-setup/data0-before-ack", test_data0_before_ack, false },
		{ "resume-setup/data0-mid-tls", test_data0_mid_tls, false },
		{ "resume-setup/control-before-hello", test_control_before_hello, false },
		{ "resume-setup/control-before-ack", test_control_before_ack, false },
		{ "resume-setup/control-mid-tls", test_control_mid_tls, false },
		{ "resume-setup/data2-before-hello", test_data2_before_hello, false },
		{ "resume-setup/data2-mid-tls", test_data2_mid_tls, false },
		{ "resume-setup/urgent-before-hello", test_urgent_before_hello, false },
		{ "resume-setup/urgent-before-ack", test_urgent_before_ack, false },
		{ "resume-setup/urgent-mid-tls", test_urgent_mid_tls, false },
		{ "resume-setup/data2-silent-tls", test_data2_silent_tls, false },
		{ "resume-setup/control-silent-tls", test_control_silent_tls, false },
		{ "resume-setup/data0-silent-tls", test_data0_silent_tls, false },
		{ "resume-setup/data2-silent-hello", test_data2_silent_hello, false },
		{ "resume-setup/control-silent-hello", test_control_silent_hello, false },
		{ "resume-setup/data0-silent-hello", test_data0_silent_hello, false },
		{ "resume-setup/data2-silent-ack", test_data2_silent_ack, false },
		{ "resume-setup/control-silent-ack", test_control_silent_ack, false },
		{ "resume-setup/data0-silent-ack", test_data0_silent_ack, false },
		{ "resume-setup/data2-frozen-tls", test_data2_frozen_tls, false },
		{ "resume-setup/control-frozen-tls", test_control_frozen_tls, false },
		{ "resume-setup/data2-frozen-hello", test_data2_frozen_hello, false },
		{ "resume-setup/control-frozen-hello", test_control_frozen_hello, false },
		{ "resume-setup/data2-silent-hello-equal", test_data2_silent_hello_equal, false },
		{ "resume-setup/control-silent-hello-equal", test_control_silent_hello_equal, false },
		{ "resume-setup/data0-frozen-hello-equal", test_data0_frozen_hello_equal, false },
		{ "resume-setup/data0-silent-tls-equal", test_data0_silent_tls_equal, false },
		{ "resume-setup/control-frozen-tls-equal", test_control_frozen_tls_equal, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
