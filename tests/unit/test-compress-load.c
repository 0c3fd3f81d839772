/* SPDX-License-Identifier: MIT */
/*
 * The auto policy of compression (session/compress-policy.c) on a machine whose CPU is the
 * scarce thing, with made-up measurements per window, each rule alone: compressing overlaps the
 * link (a codec pays when either is faster than raw, not only their sum), the worker's own cost
 * of sending counts (loopback: the link is the worker's CPU), a worker that waits for a shared
 * CPU pays its codec's CPU that many times over, and a window the worker's CPU limited never
 * lowers the link's estimate, whatever TCP says.
 */
#include <glib.h>

#include "session/compress.h"

#define MIB (1024.0 * 1024.0)
#define PKT (512u * 1024u)
#define NS_PER_S 1e9

/* What each candidate achieves: CPU seconds per byte and ratio (none, lz4, zstd 1, zstd 3). */
typedef struct world {
	double cpu[TM_ZPOLICY_CANDIDATES];
	double ratio[TM_ZPOLICY_CANDIDATES];
} world;

static const world text = { { 0, 2e-9, 4e-9, 10e-9 }, { 1, 0.5, 0.3, 0.2 } };

/* Every codec known from one sample each, as the first packets of a channel measure them. */
static void know(tm_zpolicy *p, const world *w)
{
	uint64_t raw = TM_ZPOLICY_SAMPLE_PAGES * 4096;

	for (unsigned k = 1; k < p->ncand; k++)
		tm_zpolicy_sample(p, k, raw, (uint64_t)(raw * w->ratio[k]),
				  (int64_t)(raw * w->cpu[k] * NS_PER_S));
}

/*
 * One window: TM_ZPOLICY_WINDOW_PACKETS packets sent with the current choice over wall_ns in
 * all, the worker's CPU outside compression send_cpu seconds per wire byte, and wait for a CPU
 * (wait_x times its CPU); then TCP's delivery rate. The first packet after idle is not credited,
 * so the window starts with one.
 */
static void window(tm_zpolicy *p, const world *w, double wall_s, double send_cpu, double wait_x,
		   double rate, bool app_limited)
{
	int64_t cpu = 0;
	uint64_t wire_all = 0;
	bool ended = false;
	unsigned c = p->cur;
	uint64_t wire = (uint64_t)(PKT * w->ratio[c]);
	int64_t zcpu = c ? (int64_t)(PKT * w->cpu[c] * NS_PER_S) : 0;

	tm_zpolicy_idle(p);
	tm_zpolicy_packet(p, PKT, wire, zcpu, 0, 0);
	for (unsigned i = 0; i < TM_ZPOLICY_WINDOW_PACKETS && !ended; i++) {
		ended = tm_zpolicy_packet(p, PKT, wire, zcpu,
					  (int64_t)(wall_s / TM_ZPOLICY_WINDOW_PACKETS * NS_PER_S), 0);
		cpu += zcpu;
		wire_all += wire;
	}
	g_assert_true(ended);
	cpu += (int64_t)((double)wire_all * send_cpu * NS_PER_S);
	tm_zpolicy_sched(p, cpu, (int64_t)((double)cpu * wait_x));
	tm_zpolicy_link(p, true, (uint64_t)rate, app_limited);
}

static void test_overlap(void)
{
	/* One codec: 6 ns per byte at ratio 0.5, on a link of 125 MiB/s (8 ns per byte raw). */
	static const world slow_codec = { { 0, 6e-9, 0, 0 }, { 1, 0.5, 1, 1 } };
	tm_zpolicy p;

	tm_zpolicy_init(&p, TM_FEATURE_LZ4);
	know(&p, &slow_codec);
	/* The link busy while the next packet is compressed: max(6, 4) ns < 0.9 * 8. (Both in
	 * turn, 6 + 4, would lose to raw.) */
	window(&p, &slow_codec, 0.05, 0, 0, 125 * MIB, false);
	g_assert_cmpuint(tm_zpolicy_choice(&p).codec, ==, TM_ZCODEC_LZ4);
}

static void test_send_cpu(void)
{
	/* lz4 at 1.2 ns per byte and ratio 0.5; a loopback of 500 MiB/s per channel (1.9 ns). */
	static const world fast = { { 0, 1.2e-9, 0, 0 }, { 1, 0.5, 1, 1 } };
	double ns = 1.0 / (500 * MIB);
	tm_zpolicy p;

	/* Sending costs the worker nearly nothing (a NIC's link): lz4 pays, max(1.2, 0.95). */
	tm_zpolicy_init(&p, TM_FEATURE_LZ4);
	know(&p, &fast);
	window(&p, &fast, 0.05, 0.05 * ns, 0, 500 * MIB, false);
	g_assert_cmpuint(tm_zpolicy_choice(&p).codec, ==, TM_ZCODEC_LZ4);
	/* The link is the worker's own CPU (raw windows: 1.9 ns of CPU per wire byte): lz4 comes
	 * on top of its half of that, 1.2 + 0.95 > 0.9 * 1.9: raw. */
	tm_zpolicy_init(&p, TM_FEATURE_LZ4);
	know(&p, &fast);
	window(&p, &fast, 0.05, ns, 0, 500 * MIB, true);
	g_assert_cmpfloat(p.send_cpu, >, 0.9 * ns);
	g_assert_cmpuint(tm_zpolicy_choice(&p).codec, ==, TM_ZCODEC_NONE);
}

static void test_stretch(void)
{
	tm_zpolicy p;
	double share = 31 * MIB; /* a quarter of 1 Gbit/s: 32 ns per byte raw */

	/* A CPU of its own: zstd 1, max(4, 0.3 * 32) ns, beats lz4's max(2, 16). */
	tm_zpolicy_init(&p, TM_FEATURE_LZ4 | TM_FEATURE_ZSTD);
	know(&p, &text);
	for (unsigned i = 0; i < 16; i++)
		window(&p, &text, 0.1, 0, 0, share, false);
	g_assert_cmpfloat(p.stretch, <, 1.01);
	tm_zchoice c = tm_zpolicy_choice(&p);
	g_assert_cmpuint(c.codec, ==, TM_ZCODEC_ZSTD);
	g_assert_cmpint(c.level, ==, 1);
	/* Runnable 4x as long as it runs (a loaded machine): each CPU second costs 5; lz4,
	 * max(5 * 2, 16), beats zstd 1, max(5 * 4, 9.6). */
	for (unsigned i = 0; i < 16; i++)
		window(&p, &text, 0.1, 0, 4, share, false);
	g_assert_cmpfloat(p.stretch, >, 4.5);
	g_assert_cmpuint(tm_zpolicy_choice(&p).codec, ==, TM_ZCODEC_LZ4);
}

static void test_cpu_bound_window(void)
{
	tm_zpolicy p;

	tm_zpolicy_init(&p, TM_FEATURE_LZ4 | TM_FEATURE_ZSTD);
	know(&p, &text);
	/* Windows limited by the link: 31 MiB/s (a quarter of 1 Gbit/s). */
	for (unsigned i = 0; i < 4; i++)
		window(&p, &text, 0.05, 0, 0, 31 * MIB, false);
	g_assert_cmpfloat(p.link, >, 30 * MIB);
	/* Then the worker compresses and the CPU limits it (it ran or waited for the CPU 95% of
	 * the window): TCP, with a congestion window left small, samples 5 MiB/s without saying
	 * app-limited. That measures the worker, not the link: the estimate stays. */
	tm_zchoice before = tm_zpolicy_choice(&p);
	g_assert_cmpuint(before.codec, !=, TM_ZCODEC_NONE);
	for (unsigned i = 0; i < 8; i++) {
		/* CPU of the window: wall 0.05 s * 0.95, as compression and waiting */
		unsigned c = p.cur;
		g_assert_cmpuint(c, >, 0);
		double cpu = TM_ZPOLICY_WINDOW_PACKETS * PKT * text.cpu[c];
		double wait_x = 0.05 * 0.95 / cpu - 1;
		window(&p, &text, 0.05, 0, wait_x, 5 * MIB, false);
		g_assert_cmpfloat(p.last_busy, >, 0.9);
	}
	g_assert_cmpfloat(p.link, >, 30 * MIB);
	/* A window the link limited (the worker idle most of it) lowers it. */
	window(&p, &text, 0.05, 0, 0, 5 * MIB, false);
	g_assert_cmpfloat(p.link, <, 25 * MIB);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/compress-load/overlap", test_overlap);
	g_test_add_func("/compress-load/send-cpu", test_send_cpu);
	g_test_add_func("/compress-load/stretch", test_stretch);
	g_test_add_func("/compress-load/cpu-bound-window", test_cpu_bound_window);
	return g_test_run();
}
