/* SPDX-License-Identifier: MIT */
/* The resume tests' rig (cut-rig.h). */
#include <string.h>

#include "cut-rig.h"
#include "session/resume.h"
#include "session/session-internal.h"

int conn_of(unsigned ch)
{
	return ch == 0 ? 0 : (int)ch + 1;
}

const block_spec cut_spec[1] = { { "pc.ram", CUT_RAM, 4096 } };
unsigned cut_send_timeout_ms = 20000, cut_recv_timeout_ms;

void rig_start(rig *t, peer_state_fn fn, void *opaque)
{
	guest_init(&t->src, cut_spec, 1, true);
	guest_init(&t->dst, cut_spec, 1, true);
	guest_fill(&t->src);
	t->port = peer_start_state(&t->p, &t->dst, false, cut_recv_timeout_ms, fn, opaque);
	t->pport = proxy_start(&t->px, t->port);
	g_mutex_lock(&t->px.lock);
	t->px.exact = true;
	g_mutex_unlock(&t->px.lock);
}

void rig_free(rig *t, tm_sender *s)
{
	tm_sender_free(s);
	peer_free(&t->p);
	proxy_stop(&t->px);
	guest_fini(&t->src);
	guest_fini(&t->dst);
	g_free(t->port);
	g_free(t->pport);
}

tm_sender *sender_new(guest *src, unsigned channels, const tm_live_config *lc)
{
	g_autoptr(GError) err = NULL;
	tm_sender *s = NULL;
	/* Small packets: many in flight, so that a cut loses some. */
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir,
				 .channels = channels, .timeout_ms = cut_send_timeout_ms,
				 .packet_size = 64u << 10 };
	g_assert_cmpint(tm_sender_new(src->layout, src->tags, &cfg, &s, &err), ==, 0);
	if (lc)
		g_assert_cmpint(tm_sender_set_live(s, lc, &err), ==, 0);
	return s;
}

void queue_all(tm_sender *s)
{
	g_autoptr(GError) err = NULL;
	uint64_t np = CUT_RAM / 4096, bm[np / 64];
	memset(bm, 0xff, sizeof(bm));
	g_assert_cmpint(tm_sender_queue_bitmap(s, 0, bm, 0, np, &err), ==, 0);
}

void assert_resumed_n(tm_sender *s, peer *p, guest *src, guest *dst, int r, GError *err,
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

void assert_resumed(tm_sender *s, peer *p, guest *src, guest *dst, int r, GError *err,
		    uint64_t queued)
{
	assert_resumed_n(s, p, src, dst, r, err, queued, 1);
}

void idle_wake_on(void)
{
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	tm_resume_test_no_idle_wake(false);
#endif
}

tm_sender *cut_after_round_one(rig *t, int64_t skew)
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

int round_then_finish(rig *t, tm_sender *s, const uint64_t *bm, GError **error)
{
	int r = tm_sender_queue_bitmap(s, 0, bm, 0, CUT_RAM / 4096, error);
	if (r == 0)
		r = tm_sender_sync(s, error);
	if (r == 0)
		r = tm_sender_finish(s, error);
	peer_join(&t->p);
	return r;
}
