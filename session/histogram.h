/* SPDX-License-Identifier: MIT */
/*
 * Latency histogram for the postcopy statistics (docs/design/live-engine.md 1.6): log-linear,
 * 8 sub-buckets per power of two from 1 us to about 30 s (192 counters), so a percentile is its
 * bucket's upper bound, at most 12.5 % high. Values 0..15 us are exact. Recording is lock-free
 * (relaxed atomics) and safe from any thread; reading gives a consistent enough snapshot for
 * statistics (counts recorded meanwhile may or may not be in it). Not part of the API.
 */
#pragma once

#include <stdatomic.h>
#include <stdint.h>

#define TM_HIST_BUCKETS 192u

typedef struct tm_histogram {
	_Atomic uint64_t count[TM_HIST_BUCKETS];
	_Atomic uint64_t total;
	_Atomic uint64_t max;
} tm_histogram;

/* Zeroed memory is an empty histogram. Records one value (microseconds). Any thread. */
void tm_histogram_record(tm_histogram *h, uint64_t us);

/*
 * The p-th percentile (0 < p <= 1) of what was recorded, as the upper bound of its bucket (never
 * more than the maximum recorded), or 0 when nothing was. Any thread.
 */
uint64_t tm_histogram_percentile(tm_histogram *h, double p);

/* Values recorded and the largest of them. Any thread. */
uint64_t tm_histogram_total(tm_histogram *h);
uint64_t tm_histogram_max(tm_histogram *h);
