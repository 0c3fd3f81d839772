/* SPDX-License-Identifier: MIT */
/*
 * Delta encoding of re-sent pages (issue 15), side by side over loopback: the second round of a
 * guest that rewrote 5% of each page, sent whole and sent with a delta cache (DELTA). Both ends
 * run in this process (the receiver in a thread), through the public API only.
 *
 *   delta [--size 256M] [--channels 2] [--backend sockets|io_uring] [--rewrite 5] [--repeat 3]
 *
 * Per repeat, the three modes alternate (so a slow phase of a shared machine hits all): one
 * session over a guest of --size random pages (4 KiB), compression off (so the bytes are the
 * encoding's alone); round 1 sends every page; then the guest rewrites --rewrite percent of
 * each page (one 8-byte word in every 8 * 100 / rewrite bytes, at random within them) and
 * round 2 sends every page again. The destination is checked equal to the source. Modes:
 * whole (no cache), delta (DELTA), delta+zstd (zstd agreed too, so a DELTA whose deltas shrink
 * goes as a ZDELTA; whole pages go zstd-compressed where that pays, random ones raw).
 *
 * Output: CSV rows (host, kernel, cpus, backend, channels, page size, mode, round-2 wire bytes,
 * their share of the guest's bytes, round-2 seconds, GiB/s of guest RAM covered), the median of
 * the repeats per mode, and the goal: delta's round 2 sends <= 20% of the bytes of whole
 * pages.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "bench-session.h"

#define PAGE BENCH_PAGE

static uint64_t opt_size = 256ull << 20;
static unsigned opt_channels = 2;
static const char *opt_backend = "sockets";
static unsigned opt_rewrite = 5;
static unsigned opt_repeat = 3;

static double round_of(tm_sender *s, const uint64_t *all, uint64_t npages)
{
	GError *error = NULL;
	int64_t t0 = g_get_monotonic_time();
	if (tm_sender_queue_bitmap(s, 0, all, 0, npages, &error) < 0 ||
	    tm_sender_sync(s, &error) < 0)
		bench_die("round", error);
	return (double)(g_get_monotonic_time() - t0) / 1e6;
}

/* One session; returns round 2's wire bytes and seconds. */
static void run_one(bool delta, bool zstd, uint64_t *ret_bytes, double *ret_seconds)
{
	bench_side src, dst;
	bench_recv t;
	uint64_t npages = opt_size / PAGE;
	size_t words = (size_t)(npages + 63) / 64;
	g_autofree uint64_t *all = g_new(uint64_t, words);
	GError *error = NULL;

	memset(all, 0xff, words * 8);
	bench_side_init(&src, opt_size, false);
	bench_side_init(&dst, opt_size, false);
	for (size_t i = 0; i < opt_size; i += 8) {
		uint64_t v = bench_rnd();
		memcpy(src.ram + i, &v, 8);
	}
	tm_sender_config cfg = { .channels = opt_channels, .io_backend = opt_backend,
				 .timeout_ms = 60000 };
	/* Each channel holds its share of the guest, with room to spare. */
	uint64_t cache = MAX(1ull << 20, opt_size / opt_channels + (opt_size / opt_channels) / 8);
	/* TM_DELTA_ALWAYS: the encoding's bytes; auto would send whole pages on loopback, where
	 * the CPU, not the link, is the bottleneck (tests/net/test-delta.sh). */
	tm_live_config live = { .size = sizeof(live),
				.compress = zstd ? TM_COMPRESS_ZSTD : TM_COMPRESS_NONE,
				.delta_cache_bytes = delta ? cache : 0,
				.delta_policy = TM_DELTA_ALWAYS };
	tm_sender *s = bench_session_open(&t, &src, &dst, &cfg, &live);
	round_of(s, all, npages);
	/* The guest rewrites opt_rewrite % of each page: one word in every 100 / opt_rewrite. */
	unsigned every = 100 / opt_rewrite;
	for (uint64_t p = 0; p < npages; p++)
		for (unsigned w = 0; w < PAGE / 8; w += every) {
			uint64_t v = bench_rnd() | 1;
			unsigned at = w + (unsigned)(bench_rnd() % MIN(every, PAGE / 8 - w));
			memcpy(src.ram + p * PAGE + (size_t)at * 8, &v, 8);
		}
	tm_stats st;
	tm_sender_get_stats(s, &st);
	uint64_t before = st.wire_bytes;
	*ret_seconds = round_of(s, all, npages);
	tm_sender_get_stats(s, &st);
	*ret_bytes = st.wire_bytes - before;
	if (tm_sender_finish(s, &error) < 0)
		bench_die("finish", error);
	bench_session_close(&t, s);
	if (memcmp(src.ram, dst.ram, opt_size) != 0) {
		fprintf(stderr, "delta: the destination differs from the source\n");
		exit(1);
	}
	bench_side_fini(&src);
	bench_side_fini(&dst);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	bench_prog = "delta";
	g_autofree char *size = NULL;
	int channels = 2, rewrite = 5, repeat = 3;
	GOptionEntry entries[] = {
		{ "size", 0, 0, G_OPTION_ARG_STRING, &size, "Guest RAM (K/M/G; default 256M)", "SIZE" },
		{ "channels", 0, 0, G_OPTION_ARG_INT, &channels, "Data channels (default 2)", "N" },
		{ "backend", 0, 0, G_OPTION_ARG_STRING, &opt_backend,
		  "I/O backend of both sides (default sockets)", "NAME" },
		{ "rewrite", 0, 0, G_OPTION_ARG_INT, &rewrite,
		  "Percent of each page the guest rewrites between the rounds (1..50; default 5)", "PCT" },
		{ "repeat", 0, 0, G_OPTION_ARG_INT, &repeat, "Sessions per mode (default 3)", "N" },
		G_OPTION_ENTRY_NULL
	};
	g_autoptr(GOptionContext) ctx = g_option_context_new("- delta encoding's second round");
	GError *error = NULL;
	g_option_context_add_main_entries(ctx, entries, NULL);
	if (!g_option_context_parse(ctx, &argc, &argv, &error))
		bench_die("options", error);
	if (size) {
		char *end;
		double v = g_ascii_strtod(size, &end);
		uint64_t mul = *end == 'G' ? 1ull << 30 : *end == 'M' ? 1ull << 20 : *end == 'K' ? 1024 : 1;
		opt_size = (uint64_t)(v * (double)mul) / PAGE * PAGE;
	}
	if (opt_size < (1ull << 20) || channels < 1 || channels > 64 || rewrite < 1 || rewrite > 50 ||
	    repeat < 1)
		bench_die("options out of range", NULL);
	opt_channels = (unsigned)channels;
	opt_rewrite = (unsigned)rewrite;
	opt_repeat = (unsigned)repeat;

	struct utsname u;
	char host[64] = "";
	gethostname(host, sizeof(host) - 1);
	uname(&u);
	printf("host,kernel,cpus,backend,channels,page_size,mode,round2_wire_bytes,share_of_guest,"
	       "round2_seconds,round2_gib_per_s\n");
	static const char *const modes[3] = { "whole", "delta", "delta+zstd" };
	uint64_t bytes[3][64];
	double secs[3][64];
	opt_repeat = MIN(opt_repeat, 64u);
	for (unsigned r = 0; r < opt_repeat; r++)
		for (unsigned m = 0; m < 3; m++) {
			run_one(m >= 1, m == 2, &bytes[m][r], &secs[m][r]);
			printf("%s,%s %s,%ld,%s,%u,%u,%s,%" G_GUINT64_FORMAT ",%.4f,%.3f,%.3f\n", host,
			       u.sysname, u.release, sysconf(_SC_NPROCESSORS_ONLN), opt_backend,
			       opt_channels, PAGE, modes[m], bytes[m][r],
			       (double)bytes[m][r] / (double)opt_size, secs[m][r],
			       (double)opt_size / (1 << 30) / secs[m][r]);
			fflush(stdout);
		}
	uint64_t med[3];
	double smed[3];
	for (unsigned m = 0; m < 3; m++) {
		qsort(bytes[m], opt_repeat, sizeof(uint64_t), cmp_u64);
		qsort(secs[m], opt_repeat, sizeof(double), cmp_double);
		med[m] = bytes[m][opt_repeat / 2];
		smed[m] = secs[m][opt_repeat / 2];
		printf("# median %s: round 2 %" G_GUINT64_FORMAT " wire bytes (%.4f of the guest), "
		       "%.3f s\n", modes[m], med[m], (double)med[m] / (double)opt_size,
		       smed[m]);
	}
	double ratio = (double)med[1] / (double)med[0];
	printf("%s round 2 of a guest that rewrote %u%% of each page: delta sends %.3f of the bytes "
	       "of whole pages (goal <= 0.20); %.2fx the time of whole pages\n",
	       ratio <= 0.20 ? "MET" : "MISSED", opt_rewrite, ratio, smed[1] / smed[0]);
	printf("# delta+zstd: %.3f of the bytes of whole pages, %.3f of delta's\n",
	       (double)med[2] / (double)med[0], (double)med[2] / (double)med[1]);
	return 0;
}
