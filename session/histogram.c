/* SPDX-License-Identifier: MIT */
/* Log-linear latency histogram: see histogram.h. */
#include "session/histogram.h"

/* v < 16: bucket v. Else e = floor(log2 v) >= 4 and the 3 bits below the top one pick the sub-bucket. */
static unsigned bucket_of(uint64_t v)
{
	if (v < 16)
		return (unsigned)v;
	unsigned e = 63u - (unsigned)__builtin_clzll(v);
	unsigned b = (e - 2u) * 8u + (unsigned)((v >> (e - 3u)) & 7u);
	return b < TM_HIST_BUCKETS ? b : TM_HIST_BUCKETS - 1u;
}

static uint64_t bucket_upper(unsigned b)
{
	if (b < 16)
		return b;
	unsigned e = b / 8u + 2u, sub = b % 8u;
	return ((uint64_t)(8u + sub) << (e - 3u)) + (1ull << (e - 3u)) - 1u;
}

void tm_histogram_record(tm_histogram *h, uint64_t us)
{
	atomic_fetch_add_explicit(&h->count[bucket_of(us)], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->total, 1, memory_order_relaxed);
	uint64_t m = atomic_load_explicit(&h->max, memory_order_relaxed);
	while (us > m && !atomic_compare_exchange_weak_explicit(&h->max, &m, us, memory_order_relaxed,
								 memory_order_relaxed))
		;
}

uint64_t tm_histogram_percentile(tm_histogram *h, double p)
{
	uint64_t n = 0;
	for (unsigned b = 0; b < TM_HIST_BUCKETS; b++)
		n += atomic_load_explicit(&h->count[b], memory_order_relaxed);
	if (n == 0)
		return 0;
	/* ceil(p * n), at least 1, without libm */
	double x = p * (double)n;
	uint64_t want = (uint64_t)x, seen = 0;
	if ((double)want < x || want == 0)
		want++;
	uint64_t max = atomic_load_explicit(&h->max, memory_order_relaxed);
	for (unsigned b = 0; b < TM_HIST_BUCKETS; b++) {
		seen += atomic_load_explicit(&h->count[b], memory_order_relaxed);
		if (seen >= want) {
			uint64_t up = bucket_upper(b);
			return up < max ? up : max;
		}
	}
	return max;
}

uint64_t tm_histogram_total(tm_histogram *h)
{
	return atomic_load_explicit(&h->total, memory_order_relaxed);
}

uint64_t tm_histogram_max(tm_histogram *h)
{
	return atomic_load_explicit(&h->max, memory_order_relaxed);
}
