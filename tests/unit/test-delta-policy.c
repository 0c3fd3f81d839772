/* SPDX-License-Identifier: MIT */
/*
 * The delta choice (session/delta-policy.c, TM_DELTA_AUTO) on made-up measurements of the
 * compression policy (link, stretch k, send CPU s) and of a delta (CPU and ratio per page
 * byte), each rule alone: whole until the link and a delta are measured; deltas on a slow link;
 * whole on loopback, where sending is the worker's own CPU and the link term is a fraction of
 * it, even when a delta would cost less CPU than the bytes it saves; whole when the delta does
 * not shrink the page; a rate limit taken as a slower link; TM_DELTA_ALWAYS never measures.
 */
#include <glib.h>

#include "session/compress.h"
#include "session/delta.h"

/* A channel's compression policy that measured a link of rate bytes/s, raw, k and s as given. */
static void zpol(tm_zpolicy *z, double rate, double k, double s)
{
	tm_zpolicy_init(z, 0);
	z->link = rate;
	z->stretch = k;
	z->send_cpu = s;
}

/* n samples of pages whose delta takes ratio of the page at cpu seconds per page byte. */
static void samples(tm_dpolicy *p, unsigned n, double ratio, double cpu)
{
	for (unsigned i = 0; i < n * TM_DPOLICY_SAMPLE_EVERY; i++)
		if (tm_dpolicy_sample_due(p))
			tm_dpolicy_sample(p, 4096, (uint64_t)(4096 * ratio), (int64_t)(4096 * cpu * 1e9));
}

static void test_unmeasured(void)
{
	tm_dpolicy p;
	tm_zpolicy z;

	tm_dpolicy_init(&p, TM_DELTA_AUTO);
	g_assert_false(p.use);
	g_assert_cmpuint(p.reason, ==, TM_DELTA_REASON_NONE);
	/* No link measured: whole, whatever the deltas would take. */
	zpol(&z, 0, 1, 1e-9);
	samples(&p, 4, 0.07, 1e-9);
	g_assert_false(tm_dpolicy_decide(&p, &z, 1.0));
	g_assert_cmpuint(p.reason, ==, TM_DELTA_REASON_UNMEASURED);
	/* A slow link but no delta measured yet: whole. */
	tm_dpolicy_init(&p, TM_DELTA_AUTO);
	zpol(&z, 12.5e6, 1, 1e-9);
	g_assert_false(tm_dpolicy_decide(&p, &z, 1.0));
	g_assert_cmpuint(p.reason, ==, TM_DELTA_REASON_UNMEASURED);
	g_assert_true(p.keep); /* copies kept, so that the next round has bases to sample */
	/* The first page with a copy is sampled at once, then one in SAMPLE_EVERY. */
	g_assert_true(tm_dpolicy_sample_due(&p));
	tm_dpolicy_sample(&p, 4096, 300, 4000);
	unsigned due = 0;
	for (unsigned i = 0; i < 10 * TM_DPOLICY_SAMPLE_EVERY; i++)
		due += tm_dpolicy_sample_due(&p);
	g_assert_cmpuint(due, ==, 10);
}

static void test_slow_link(void)
{
	tm_dpolicy p;
	tm_zpolicy z;

	/* 100 Mbit/s over 4 channels (~3 MB/s each), a loaded CPU (k 4): deltas. */
	tm_dpolicy_init(&p, TM_DELTA_AUTO);
	zpol(&z, 3.1e6, 4, 1.1e-9);
	samples(&p, 4, 0.073, 1.2e-9);
	g_assert_true(tm_dpolicy_decide(&p, &z, 1.0));
	g_assert_cmpuint(p.reason, ==, TM_DELTA_REASON_LINK);
	g_assert_true(p.keep);
	/* 1 Gbit/s per channel and a quiet CPU: still the link. */
	zpol(&z, 125e6, 1, 0.3e-9);
	g_assert_true(tm_dpolicy_decide(&p, &z, 1.0));
	/* Pages the guest rewrote whole: the delta does not pay (ratio 1): whole, the CPU's. */
	tm_dpolicy_init(&p, TM_DELTA_AUTO);
	zpol(&z, 3.1e6, 4, 1.1e-9);
	samples(&p, 4, 1.0, 1.2e-9);
	g_assert_false(tm_dpolicy_decide(&p, &z, 1.0));
	g_assert_cmpuint(p.reason, ==, TM_DELTA_REASON_CPU);
	/* Page data that compresses to 5%: whole and compressed is as small as a delta. */
	tm_dpolicy_init(&p, TM_DELTA_AUTO);
	samples(&p, 4, 0.073, 1.2e-9);
	g_assert_false(tm_dpolicy_decide(&p, &z, 0.05));
}

static void test_loopback(void)
{
	tm_dpolicy p;
	tm_zpolicy z;

	/* Measured on loopback (tests/net/test-delta.sh's numbers): TCP says 2-16 GB/s per
	 * channel, k 3-4, s ~1.1 ns/B, a delta ~1.2 ns/B at 0.073: whole, the CPU's. */
	tm_dpolicy_init(&p, TM_DELTA_AUTO);
	zpol(&z, 4.7e9, 3.6, 1.1e-9);
	samples(&p, 4, 0.073, 1.2e-9);
	g_assert_false(tm_dpolicy_decide(&p, &z, 1.0));
	g_assert_cmpuint(p.reason, ==, TM_DELTA_REASON_CPU);
	g_assert_false(p.keep); /* nor copies: they cost the CPU that bounds the channel */
	/* Even a delta far cheaper than sending: the link is not what pages wait for. */
	tm_dpolicy_init(&p, TM_DELTA_AUTO);
	samples(&p, 4, 0.073, 0.1e-9);
	g_assert_false(tm_dpolicy_decide(&p, &z, 1.0));
	g_assert_cmpuint(p.reason, ==, TM_DELTA_REASON_CPU);
	/* The same channel under a 100 MB/s rate limit (its share 25 MB/s): deltas. */
	tm_zpolicy_cap(&z, 25e6);
	g_assert_true(tm_dpolicy_decide(&p, &z, 1.0));
	g_assert_true(p.keep);
	g_assert_cmpuint(p.reason, ==, TM_DELTA_REASON_LINK);
}

static void test_always(void)
{
	tm_dpolicy p;
	tm_zpolicy z;

	tm_dpolicy_init(&p, TM_DELTA_ALWAYS);
	g_assert_true(p.use);
	g_assert_cmpuint(p.reason, ==, TM_DELTA_REASON_ALWAYS);
	for (unsigned i = 0; i < 100; i++)
		g_assert_false(tm_dpolicy_sample_due(&p));
	zpol(&z, 4.7e9, 3.6, 1.1e-9);
	g_assert_true(tm_dpolicy_decide(&p, &z, 1.0));
	g_assert_cmpuint(p.reason, ==, TM_DELTA_REASON_ALWAYS);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/delta-policy/unmeasured", test_unmeasured);
	g_test_add_func("/delta-policy/slow-link", test_slow_link);
	g_test_add_func("/delta-policy/loopback", test_loopback);
	g_test_add_func("/delta-policy/always", test_always);
	return g_test_run();
}
