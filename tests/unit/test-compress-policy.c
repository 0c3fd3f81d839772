/* SPDX-License-Identifier: MIT */
/*
 * The auto policy of compression (session/compress-policy.c) with made-up measurements, so each
 * rule is seen alone: raw until the link is known, raw on a link faster than the codecs, the
 * cheapest codec on a slow one, raw again for data that does not compress, a rate limit taken as
 * a slower link, samples only while a codec could pay, the fallback without TCP's figure.
 */
#include <glib.h>

#include "session/compress.h"

#define MIB (1024.0 * 1024.0)
#define PKT (512u * 1024u)

/* Feeds what a codec achieves on samples: cpu seconds per byte and ratio per candidate. */
typedef struct world {
	double cpu[TM_ZPOLICY_CANDIDATES];
	double ratio[TM_ZPOLICY_CANDIDATES];
} world;

/* lz4 ~500 MB/s at 0.5, zstd 1 ~250 MB/s at 0.3, zstd 3 ~100 MB/s at 0.2 (a slow core). */
static const world text = { { 0, 2e-9, 4e-9, 10e-9 }, { 1, 0.5, 0.3, 0.2 } };
static const world noise = { { 0, 1e-9, 2e-9, 5e-9 }, { 1, 1, 1, 1 } };

/* n packets with TCP's delivery rate link (bytes/s, app_limited as given). */
static void run(tm_zpolicy *p, const world *w, unsigned n, double link, bool app_limited,
		unsigned *ret_samples)
{
	for (unsigned i = 0; i < n; i++) {
		int k = tm_zpolicy_sample_due(p);
		if (k > 0) {
			uint64_t raw = TM_ZPOLICY_SAMPLE_PAGES * 4096;
			tm_zpolicy_sample(p, (unsigned)k, raw, (uint64_t)(raw * w->ratio[k]),
					  (int64_t)(raw * w->cpu[k] * 1e9));
			if (ret_samples)
				(*ret_samples)++;
		}
		unsigned c = p->cur;
		uint64_t wire = (uint64_t)(PKT * w->ratio[c]);
		tm_zpolicy_packet(p, PKT, wire, (int64_t)(PKT * w->cpu[c] * 1e9), 1000000, 500000);
		tm_zpolicy_link(p, true, (uint64_t)link, app_limited);
	}
}

static void test_raw_until_known(void)
{
	tm_zpolicy p;

	tm_zpolicy_init(&p, TM_FEATURE_LZ4 | TM_FEATURE_ZSTD);
	g_assert_cmpuint(p.ncand, ==, 4);
	g_assert_cmpuint(tm_zpolicy_choice(&p).codec, ==, TM_ZCODEC_NONE);
	/* Nothing measured about the link: raw, whatever the samples say. */
	for (unsigned i = 0; i < 8; i++) {
		int k = tm_zpolicy_sample_due(&p);
		if (k > 0)
			tm_zpolicy_sample(&p, (unsigned)k, 32768, 1000, 1000);
		tm_zpolicy_packet(&p, PKT, PKT, 0, 0, 0);
		g_assert_cmpuint(tm_zpolicy_choice(&p).codec, ==, TM_ZCODEC_NONE);
	}
	/* Only lz4 agreed: raw and lz4 are the candidates. */
	tm_zpolicy_init(&p, TM_FEATURE_LZ4);
	g_assert_cmpuint(p.ncand, ==, 2);
	tm_zpolicy_init(&p, 0);
	g_assert_cmpuint(p.ncand, ==, 1);
	g_assert_cmpint(tm_zpolicy_sample_due(&p), ==, -1);
}

static void test_fast_link_raw(void)
{
	tm_zpolicy p;
	unsigned samples = 0;

	tm_zpolicy_init(&p, TM_FEATURE_LZ4 | TM_FEATURE_ZSTD);
	/* 2 GB/s per channel: faster than any codec compresses. */
	run(&p, &text, 200, 2000 * MIB, false, &samples);
	g_assert_cmpuint(tm_zpolicy_choice(&p).codec, ==, TM_ZCODEC_NONE);
	/* One sample (lz4, the cheapest) showed no codec can pay: no more. */
	g_assert_cmpuint(samples, ==, 1);
}

static void test_slow_link_codec(void)
{
	tm_zpolicy p;

	/* 12.5 MB/s (100 Mbit/s): zstd 3 costs 10 + 0.2 * 80 ns per byte, raw 80. */
	tm_zpolicy_init(&p, TM_FEATURE_LZ4 | TM_FEATURE_ZSTD);
	run(&p, &text, 10, 12.5 * MIB, false, NULL);
	tm_zchoice c = tm_zpolicy_choice(&p);
	g_assert_cmpuint(c.codec, ==, TM_ZCODEC_ZSTD);
	g_assert_cmpint(c.level, ==, 3);
	/* 1 Gbit/s (125 MB/s, 8 ns per byte): lz4, max(2, 0.5 * 8), ties zstd 1, max(4, 0.3 * 8);
	 * a tie goes to the codec cheaper in CPU (compress.h: compressing overlaps the link). */
	tm_zpolicy_init(&p, TM_FEATURE_LZ4 | TM_FEATURE_ZSTD);
	run(&p, &text, 10, 125 * MIB, false, NULL);
	g_assert_cmpuint(tm_zpolicy_choice(&p).codec, ==, TM_ZCODEC_LZ4);
	/* Without lz4 agreed: zstd 1 (max(4, 2.4) < 8 * 0.9). */
	tm_zpolicy_init(&p, TM_FEATURE_ZSTD);
	run(&p, &text, 10, 125 * MIB, false, NULL);
	c = tm_zpolicy_choice(&p);
	g_assert_cmpuint(c.codec, ==, TM_ZCODEC_ZSTD);
	g_assert_cmpint(c.level, ==, 1);
}

static void test_incompressible_raw(void)
{
	tm_zpolicy p;

	tm_zpolicy_init(&p, TM_FEATURE_LZ4 | TM_FEATURE_ZSTD);
	run(&p, &noise, 50, 12.5 * MIB, false, NULL);
	g_assert_cmpuint(tm_zpolicy_choice(&p).codec, ==, TM_ZCODEC_NONE);
	/* Text, then noise: the codec in use measures ratio 1 on its own packets and gives up. */
	tm_zpolicy_init(&p, TM_FEATURE_LZ4 | TM_FEATURE_ZSTD);
	run(&p, &text, 10, 12.5 * MIB, false, NULL);
	g_assert_cmpuint(tm_zpolicy_choice(&p).codec, !=, TM_ZCODEC_NONE);
	run(&p, &noise, 40, 12.5 * MIB, false, NULL);
	g_assert_cmpuint(tm_zpolicy_choice(&p).codec, ==, TM_ZCODEC_NONE);
}

static void test_app_limited_lower_bound(void)
{
	tm_zpolicy p;

	/* A measured 12.5 MB/s, then app-limited samples of 2 GB/s: the link is at least that. */
	tm_zpolicy_init(&p, TM_FEATURE_LZ4 | TM_FEATURE_ZSTD);
	run(&p, &text, 10, 12.5 * MIB, false, NULL);
	g_assert_cmpuint(tm_zpolicy_choice(&p).codec, !=, TM_ZCODEC_NONE);
	run(&p, &text, 1, 2000 * MIB, true, NULL);
	g_assert_cmpuint(tm_zpolicy_choice(&p).codec, ==, TM_ZCODEC_NONE);
	/* App-limited samples below the estimate do not lower it. */
	tm_zpolicy_init(&p, TM_FEATURE_LZ4 | TM_FEATURE_ZSTD);
	run(&p, &text, 10, 2000 * MIB, false, NULL);
	run(&p, &text, 10, 1 * MIB, true, NULL);
	g_assert_cmpuint(tm_zpolicy_choice(&p).codec, ==, TM_ZCODEC_NONE);
}

static void test_rate_limit_cap(void)
{
	tm_zpolicy p;

	tm_zpolicy_init(&p, TM_FEATURE_LZ4 | TM_FEATURE_ZSTD);
	run(&p, &text, 10, 2000 * MIB, true, NULL);
	g_assert_cmpuint(tm_zpolicy_choice(&p).codec, ==, TM_ZCODEC_NONE);
	/* A limit of 4 MB/s on this channel: compress (samples resume as the link is slow). */
	tm_zpolicy_cap(&p, 4 * MIB);
	run(&p, &text, 40, 2000 * MIB, true, NULL);
	g_assert_cmpuint(tm_zpolicy_choice(&p).codec, ==, TM_ZCODEC_ZSTD);
	/* Lifted: raw again. */
	tm_zpolicy_cap(&p, 0);
	g_assert_cmpuint(tm_zpolicy_choice(&p).codec, ==, TM_ZCODEC_NONE);
}

static void test_windows_without_tcp(void)
{
	tm_zpolicy p;

	tm_zpolicy_init(&p, TM_FEATURE_LZ4);
	tm_zpolicy_sample(&p, 1, 32768, 16384, 32768 * 2); /* lz4: 2 ns per byte, ratio 0.5 */
	/* Windows of 4 packets of 512 KiB in 100 ms busy, the worker computing 10% of it: the
	 * link carries 20 MiB/s, and lz4 pays. */
	bool ended = false;
	for (unsigned i = 0; i < TM_ZPOLICY_WINDOW_PACKETS; i++) {
		ended = tm_zpolicy_packet(&p, PKT, PKT, 0, 25000000, 2500000);
		if (ended)
			tm_zpolicy_link(&p, false, 0, false);
	}
	g_assert_true(ended);
	g_assert_cmpfloat(p.link, >, 19 * MIB);
	g_assert_cmpfloat(p.link, <, 21 * MIB);
	g_assert_cmpuint(tm_zpolicy_choice(&p).codec, ==, TM_ZCODEC_LZ4);
	/* A busy worker (90% CPU) at the same rate: the link is only at least that fast. */
	tm_zpolicy_init(&p, TM_FEATURE_LZ4);
	for (unsigned i = 0; i < TM_ZPOLICY_WINDOW_PACKETS; i++)
		if (tm_zpolicy_packet(&p, PKT, PKT, 0, 25000000, 22500000))
			tm_zpolicy_link(&p, false, 0, false);
	g_assert_cmpfloat(p.link, >, 19 * MIB);
	/* Idle time drops the window: nothing is credited. */
	tm_zpolicy_init(&p, TM_FEATURE_LZ4);
	for (unsigned i = 0; i < TM_ZPOLICY_WINDOW_PACKETS - 1; i++)
		g_assert_false(tm_zpolicy_packet(&p, PKT, PKT, 0, 25000000, 2500000));
	tm_zpolicy_idle(&p);
	g_assert_false(tm_zpolicy_packet(&p, PKT, PKT, 0, 25000000, 2500000));
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/compress-policy/raw-until-known", test_raw_until_known);
	g_test_add_func("/compress-policy/fast-link-raw", test_fast_link_raw);
	g_test_add_func("/compress-policy/slow-link-codec", test_slow_link_codec);
	g_test_add_func("/compress-policy/incompressible-raw", test_incompressible_raw);
	g_test_add_func("/compress-policy/app-limited-lower-bound", test_app_limited_lower_bound);
	g_test_add_func("/compress-policy/rate-limit-cap", test_rate_limit_cap);
	g_test_add_func("/compress-policy/windows-without-tcp", test_windows_without_tcp);
	return g_test_run();
}
