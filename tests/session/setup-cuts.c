/* SPDX-License-Identifier: MIT */
/* Cuts during setup, shared by the resume-setup tests (setup-cuts.h). */
#include "setup-cuts.h"

#include "codec/codec.h"

void setup_assert_done(run *t, uint64_t min)
{
	tm_live_stats ss, rs;
	run_assert_complete(t, &ss, &rs);
	g_assert_cmpuint(ss.reconnects, >=, min);
}

void setup_migrate(run *t)
{
	t->r = run_connect(t);
	if (t->r == 0)
		t->r = run_queue_all(t);
	if (t->r == 0)
		t->r = tm_sender_sync(t->s, &t->err);
	if (t->r == 0)
		t->r = tm_sender_finish(t->s, &t->err);
	rpeer_join(&t->p);
}

double setup_migrate_timed(run *t)
{
	int64_t t0 = g_get_monotonic_time();
	setup_migrate(t);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	rig_send_timeout_ms = rig_recv_timeout_ms = 20000;
	g_test_message("%.2f s; sender: %s; receiver: %s", secs, t->err ? t->err->message : "ok",
		       t->p.error ? t->p.error->message : "ok");
	return secs;
}

void setup_cut(int conn, cut_point point, bool postcopy)
{
	run t;
	tm_live_config lc = { .size = sizeof(lc), .postcopy = postcopy };

	if (point == BEFORE_ACK && tls_dir) {
		g_test_skip("the proxy finds the HELLO_ACK by its frame header: plaintext only");
		return;
	}
	if (point == MID_TLS && !tls_dir) {
		g_test_skip("a cut in the TLS handshake: TLS only");
		return;
	}
	run_start(&t, &lc, 0);
	if (point == BEFORE_ACK)
		proxy_arm_frame(&t.px, conn, TM_MSG_HELLO_ACK, false);
	else /* before a byte went through; in TLS once the ClientHello did */
		proxy_arm(&t.px, conn, point == MID_TLS ? 1 : 0);
	setup_migrate(&t);
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1);
	/* A declined urgent connection whose HELLO_ACK is lost closes as it would have. */
	setup_assert_done(&t, conn == URGENT && point == BEFORE_ACK ? 0 : 1);
	run_end(&t);
}

/*
 * A one-sided cut (the proxy's half_recv): the receiver's side of connection conn closes at
 * point, the sender's stays open and silent, so the sender hears nothing more on it: its TLS
 * handshake (MID_TLS) or its wait for a HELLO_ACK (BEFORE_HELLO: the receiver never got the
 * HELLO and waits for that role; BEFORE_ACK: only the HELLO_ACK was lost) would last until its
 * deadline. The sender dials the connection again (or resumes it, once a HELLO_ACK agreed the
 * session): both sides return 0, bit-exact, within a few handshake deadlines of the sender
 * (2 s here), long before the receiver's accept deadline where that is longer (recv_ms).
 */
void setup_silent_cut(int conn, cut_point point, bool freeze, unsigned recv_ms)
{
	run t;

	if (point != MID_TLS && tls_dir) {
		g_test_skip("the proxy finds HELLO and HELLO_ACK by their frame headers: plaintext only");
		return;
	}
	if (point == MID_TLS && !tls_dir) {
		g_test_skip("a cut in the TLS handshake: TLS only");
		return;
	}
	rig_send_timeout_ms = 2000;
	rig_recv_timeout_ms = recv_ms;
	run_start(&t, NULL, 0);
	t.px.half_recv = true;
	t.px.half = freeze; /* the receiver's side too is kept open and silent */
	if (point == BEFORE_HELLO)
		proxy_arm_frame(&t.px, conn, TM_MSG_HELLO, true);
	else if (point == BEFORE_ACK)
		proxy_arm_frame(&t.px, conn, TM_MSG_HELLO_ACK, false);
	else /* once the ClientHello went through */
		proxy_arm(&t.px, conn, 1);
	double secs = setup_migrate_timed(&t);
	g_assert_cmpuint(proxy_cuts(&t.px), ==, 1);
	setup_assert_done(&t, 1);
	g_assert_cmpfloat(secs, <, 9.0);
	run_end(&t);
}
