/* SPDX-License-Identifier: MIT */
/*
 * The convergence estimator and the rate limiter (session/converge.h) on a fake clock: round
 * figures in, bandwidth and advice out; packets against the token bucket with time advanced by
 * hand, so the bounds are exact, not timing-dependent.
 */
#include <glib.h>

#include "session/converge.h"

#define MiB (1024.0 * 1024.0)

static tm_round_stats round_of(uint64_t queued, uint64_t sent, uint64_t wire, double secs,
			       double busy, bool throttled)
{
	return (tm_round_stats){ .pages_queued = queued, .pages_sent = sent, .wire_bytes = wire,
				 .seconds = secs, .busy_seconds = busy, .throttled = throttled };
}

/* Busy time, not wall time; EWMA with alpha 0.5; small and short rounds left out. */
static void test_bandwidth_ewma(void)
{
	tm_estimator e = { 0 };
	g_assert_cmpuint(tm_estimator_bandwidth(&e, 0), ==, 0);

	/* 100 MB in 1 s busy out of 3 s: 100 MB/s, not 33. */
	tm_round_stats r = round_of(1000, 1000, 100000000, 3.0, 1.0, false);
	tm_estimator_round(&e, &r, 0);
	g_assert_cmpuint(tm_estimator_bandwidth(&e, 0), ==, 100000000);
	/* 200 MB/s next: the average of the two. */
	r = round_of(1000, 1000, 200000000, 1.0, 1.0, false);
	tm_estimator_round(&e, &r, 0);
	g_assert_cmpuint(tm_estimator_bandwidth(&e, 0), ==, 150000000);
	/* Under 1 MiB, or under 5 ms busy: ignored, whatever rate they suggest. */
	r = round_of(1, 1, TM_EST_MIN_BYTES - 1, 0.001, 0.0001, false);
	tm_estimator_round(&e, &r, 0);
	r = round_of(1000, 1000, 50 * TM_EST_MIN_BYTES, 0.004, 0.004, false);
	tm_estimator_round(&e, &r, 0);
	g_assert_cmpuint(tm_estimator_bandwidth(&e, 0), ==, 150000000);
	/* The override wins. */
	g_assert_cmpuint(tm_estimator_bandwidth(&e, 42), ==, 42);
}

/* Throttled rounds measure the limit: used only while nothing else is known. */
static void test_bandwidth_throttled(void)
{
	tm_estimator e = { 0 };
	tm_round_stats r = round_of(1000, 1000, 20000000, 1.0, 1.0, true);
	tm_estimator_round(&e, &r, 0);
	g_assert_cmpuint(tm_estimator_bandwidth(&e, 0), ==, 20000000);
	r = round_of(1000, 1000, 1000000000, 1.0, 1.0, false);
	tm_estimator_round(&e, &r, 0);
	g_assert_cmpuint(tm_estimator_bandwidth(&e, 0), ==, 1000000000);
	/* More throttled rounds do not drag the unthrottled estimate down. */
	r = round_of(1000, 1000, 20000000, 1.0, 1.0, true);
	tm_estimator_round(&e, &r, 0);
	g_assert_cmpuint(tm_estimator_bandwidth(&e, 0), ==, 1000000000);
}

static void test_advise(void)
{
	tm_estimator e = { 0 };
	tm_switch_advice a;
	tm_advise_in in = { .pending_pages = 10, .dirty_pages = 90, .state_bytes = 0,
			    .page_size = 4096, .max_downtime_us = 300000 };

	/* No round yet: page size per page, no bandwidth, no switch, not converging. */
	tm_estimator_advise(&e, &in, &a);
	g_assert_cmpuint(a.pending_bytes, ==, 10 * 4096);
	g_assert_cmpuint(a.dirty_bytes, ==, 90 * 4096);
	g_assert_cmpuint(a.bandwidth, ==, 0);
	g_assert_cmpuint(a.expected_downtime_us, ==, UINT64_MAX);
	g_assert_false(a.switch_now);
	g_assert_false(a.converging);
	/* Nothing to send: no downtime even without an estimate. */
	tm_advise_in none = { .page_size = 4096, .max_downtime_us = 1 };
	tm_estimator_advise(&e, &none, &a);
	g_assert_cmpuint(a.expected_downtime_us, ==, 0);
	g_assert_true(a.switch_now);

	/* 1000 pages at 2000 wire bytes each (half of them zero pages, say) in 1 s busy,
	 * 2 s wall: 2 MB/s; 1000 pages dirtied in 2 s at 2000 bytes = 1 MB/s: converging. */
	tm_round_stats r = round_of(1000, 1000, 2000000, 2.0, 1.0, false);
	tm_estimator_round(&e, &r, 0);
	g_assert_cmpuint(tm_estimator_bytes_per_page(&e, 4096), ==, 2000);
	in.state_bytes = 100000;
	tm_estimator_advise(&e, &in, &a);
	g_assert_cmpuint(a.bandwidth, ==, 2000000);
	g_assert_cmpuint(a.pending_bytes, ==, 20000);
	g_assert_cmpuint(a.dirty_bytes, ==, 180000);
	/* (20000 + 180000 + 100000) / 2 MB/s = 150 ms */
	g_assert_cmpuint(a.expected_downtime_us, ==, 150000);
	g_assert_true(a.switch_now);
	g_assert_true(a.converging);
	/* Exactly at the target still switches; 1 us below it does not. */
	in.max_downtime_us = 150000;
	tm_estimator_advise(&e, &in, &a);
	g_assert_true(a.switch_now);
	in.max_downtime_us = 149999;
	tm_estimator_advise(&e, &in, &a);
	g_assert_false(a.switch_now);
	/* The round trip counts twice. */
	in.rtt_us = 500;
	in.max_downtime_us = 300000;
	tm_estimator_advise(&e, &in, &a);
	g_assert_cmpuint(a.expected_downtime_us, ==, 151000);

	/* A round of barriers alone keeps the last known cost of a page. */
	r = round_of(0, 0, 200, 0.001, 0.001, false);
	tm_estimator_round(&e, &r, 0);
	g_assert_cmpuint(tm_estimator_bytes_per_page(&e, 4096), ==, 2000);

	/* The guest dirtied 3000 pages in 2 s: 3 MB/s against 2 MB/s: not converging. */
	r = round_of(3000, 1000, 2000000, 2.0, 1.0, false);
	tm_estimator_round(&e, &r, 0);
	tm_estimator_advise(&e, &in, &a);
	g_assert_false(a.converging);

	/* Absurd counts saturate instead of wrapping into a small downtime. */
	tm_advise_in huge = { .dirty_pages = UINT64_MAX / 2, .state_bytes = UINT64_MAX,
			      .page_size = 4096, .max_downtime_us = 1000000000000ull };
	tm_estimator_advise(&e, &huge, &a);
	g_assert_cmpuint(a.dirty_bytes, ==, UINT64_MAX);
	g_assert_false(a.switch_now);
}

/*
 * A final round is a scattered dirty log: after sequential rounds alone the switchover expects
 * TM_EST_SCATTER_PRIOR of their bandwidth; once a scattered round is timed, its bandwidth.
 * Rounds whose runs are not known change nothing (the behaviour before runs were counted).
 */
static void test_scattered(void)
{
	tm_estimator e = { 0 };
	tm_switch_advice a;
	tm_advise_in in = { .dirty_pages = 1000, .page_size = 4096, .max_downtime_us = 50000 };

	/* Round 1: 262144 pages in 512 runs (one per chunk), 1 GB in 0.5 s: 2 GB/s. */
	tm_round_stats r = round_of(262144, 262144, 1000000000, 0.5, 0.5, false);
	tm_estimator_round(&e, &r, 512);
	g_assert_cmpuint(tm_estimator_bandwidth(&e, 0), ==, 2000000000);
	g_assert_cmpuint(tm_estimator_switch_bandwidth(&e, 0), ==, 1000000000);
	tm_estimator_advise(&e, &in, &a);
	g_assert_cmpuint(a.bandwidth, ==, 2000000000); /* the link, as before */
	/* 1000 pages at 3814 bytes (1e9 / 262144, truncated) at 1 GB/s */
	g_assert_cmpuint(a.expected_downtime_us, ==, 3814);
	/* The override wins over both. */
	g_assert_cmpuint(tm_estimator_switch_bandwidth(&e, 42), ==, 42);

	/* Round 2: 20000 pages in 19000 runs, 80 MB in 0.05 s: 1.6 GB/s, scattered. */
	r = round_of(20000, 20000, 80000000, 0.06, 0.05, false);
	tm_estimator_round(&e, &r, 19000);
	g_assert_cmpuint(tm_estimator_switch_bandwidth(&e, 0), ==, 1600000000);
	g_assert_cmpuint(tm_estimator_bandwidth(&e, 0), ==, 1800000000);
	/* A later sequential round does not bring the prior back. */
	r = round_of(262144, 262144, 1000000000, 0.5, 0.5, false);
	tm_estimator_round(&e, &r, 512);
	g_assert_cmpuint(tm_estimator_switch_bandwidth(&e, 0), ==, 1600000000);

	/* Runs not known: no class, no prior (the estimate is the link's). */
	tm_estimator u = { 0 };
	r = round_of(262144, 262144, 1000000000, 0.5, 0.5, false);
	tm_estimator_round(&u, &r, 0);
	g_assert_cmpuint(tm_estimator_switch_bandwidth(&u, 0), ==, 2000000000);
	/* A throttled scattered round measures the limit, not the link's scattered rate. */
	tm_estimator t = { 0 };
	tm_estimator_round(&t, &r, 512);
	r = round_of(20000, 20000, 20000000, 1.0, 1.0, true);
	tm_estimator_round(&t, &r, 19000);
	g_assert_cmpuint(tm_estimator_switch_bandwidth(&t, 0), ==, 1000000000);
}

/*
 * Packets of pkt bytes sent as fast as the bucket lets them from fake time t0 to t1 (a sender
 * that retries exactly when told); returns the bytes that went.
 */
static uint64_t drive(tm_ratelimit *rl, int64_t *t, int64_t t1, uint64_t pkt, bool *waited)
{
	uint64_t sent = 0;
	while (*t < t1) {
		int64_t w = tm_ratelimit_debit(rl, *t, pkt);
		if (w == 0) {
			sent += pkt;
			continue;
		}
		g_assert_cmpint(w, >, 0);
		if (waited)
			*waited = true;
		*t += w;
	}
	return sent;
}

static void test_ratelimit(void)
{
	tm_ratelimit rl = { 0 };
	const uint64_t pkt = 512 * 1024, rate = 20000000;
	int64_t t = 1000000;
	bool waited = false;

	/* Unlimited: never waits. */
	g_assert_false(tm_ratelimit_active(&rl));
	g_assert_cmpint(tm_ratelimit_debit(&rl, t, 1ull << 40), ==, 0);

	/* 20 MB/s for 2 s: within one packet plus the 10 ms burst of 40 MB. */
	tm_ratelimit_set(&rl, rate);
	g_assert_true(tm_ratelimit_active(&rl));
	g_assert_cmpuint(tm_ratelimit_rate(&rl), ==, rate);
	uint64_t sent = drive(&rl, &t, t + 2000000, pkt, &waited);
	g_assert_true(waited);
	g_assert_cmpuint(sent, >=, 2 * rate - pkt);
	g_assert_cmpuint(sent, <=, 2 * rate + rate / 100 + pkt);

	/* Raised to 100 MB/s: the next second carries five times as much. */
	tm_ratelimit_set(&rl, 5 * rate);
	int64_t t0 = t;
	sent = drive(&rl, &t, t0 + 1000000, pkt, NULL);
	g_assert_cmpuint(sent, >=, 5 * rate - 2 * pkt);
	g_assert_cmpuint(sent, <=, 5 * rate + 5 * rate / 100 + 2 * pkt);

	/* An idle gap does not save up more than the burst. */
	t += 10000000;
	sent = 0;
	while (tm_ratelimit_debit(&rl, t, pkt) == 0)
		sent += pkt;
	g_assert_cmpuint(sent, <=, 5 * rate / 100 + pkt);

	/* Set to 0 (unlimited) while in debt: the next packet goes at once. */
	tm_ratelimit_set(&rl, 0);
	g_assert_cmpint(tm_ratelimit_debit(&rl, t, pkt), ==, 0);
	g_assert_cmpuint(tm_ratelimit_rate(&rl), ==, 0);

	/* Lifted (guest stopped): no limit, and a later rate does not bring it back. */
	tm_ratelimit_set(&rl, 1000);
	g_assert_cmpint(tm_ratelimit_debit(&rl, t, pkt), ==, 0);
	g_assert_cmpint(tm_ratelimit_debit(&rl, t, pkt), >, 0);
	tm_ratelimit_lift(&rl);
	g_assert_cmpint(tm_ratelimit_debit(&rl, t, pkt), ==, 0);
	tm_ratelimit_set(&rl, 1000);
	g_assert_false(tm_ratelimit_active(&rl));
	g_assert_cmpuint(tm_ratelimit_rate(&rl), ==, 0);
	g_assert_cmpint(tm_ratelimit_debit(&rl, t, pkt), ==, 0);
}

/* A wait is never 0 while in debt (a caller would spin), and never longer than the debt. */
static void test_ratelimit_wait_bounds(void)
{
	tm_ratelimit rl = { 0 };
	tm_ratelimit_set(&rl, 1000000); /* 1 MB/s: 10 ms burst = 10000 bytes */
	g_assert_cmpint(tm_ratelimit_debit(&rl, 1, 1000000), ==, 0); /* 1 MB of debt */
	int64_t w = tm_ratelimit_debit(&rl, 1, 1);
	g_assert_cmpint(w, >=, 990000);
	g_assert_cmpint(w, <=, 990002);
	/* After exactly that wait the next packet goes. */
	g_assert_cmpint(tm_ratelimit_debit(&rl, 1 + w, 1), ==, 0);
}

/* A packet charged whatever the bucket holds (precopy's last at the switch) adds to the debt
 * the next one waits out; unlimited or lifted, a charge costs nothing. */
static void test_ratelimit_charge(void)
{
	tm_ratelimit rl = { 0 };
	tm_ratelimit_charge(&rl, 1, 1000000); /* unlimited: no debt */
	tm_ratelimit_set(&rl, 1000000);         /* 1 MB/s, starts full (10000 bytes) */
	g_assert_cmpint(tm_ratelimit_debit(&rl, 1, 1000000), ==, 0); /* 990000 bytes of debt */
	tm_ratelimit_charge(&rl, 1, 1000000);                        /* 1990000 */
	int64_t w = tm_ratelimit_debit(&rl, 1, 1);
	g_assert_cmpint(w, >=, 1990000);
	g_assert_cmpint(w, <=, 1990002);
	/* The refill counts up to the charge: half a second later, half a megabyte less. */
	tm_ratelimit_charge(&rl, 500001, 0);
	w = tm_ratelimit_debit(&rl, 500001, 1);
	g_assert_cmpint(w, >=, 1490000);
	g_assert_cmpint(w, <=, 1490002);
	tm_ratelimit_lift(&rl);
	tm_ratelimit_charge(&rl, 500001, 1000000);
	g_assert_cmpint(tm_ratelimit_debit(&rl, 500001, 1), ==, 0);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/converge/bandwidth-ewma", test_bandwidth_ewma);
	g_test_add_func("/converge/bandwidth-throttled", test_bandwidth_throttled);
	g_test_add_func("/converge/advise", test_advise);
	g_test_add_func("/converge/scattered", test_scattered);
	g_test_add_func("/ratelimit/bucket", test_ratelimit);
	g_test_add_func("/ratelimit/wait-bounds", test_ratelimit_wait_bounds);
	g_test_add_func("/ratelimit/charge", test_ratelimit_charge);
	return g_test_run();
}
