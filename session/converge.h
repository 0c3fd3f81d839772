/* SPDX-License-Identifier: MIT */
/*
 * The sender's convergence arithmetic (docs/design/live-engine.md 3.6), without threads, locks or
 * clocks, so tests/unit/test-converge.c drives it with a fake clock:
 *
 *   tm_estimator   bandwidth EWMA over completed rounds, bytes per page, the switchover advice
 *   tm_ratelimit   one token bucket shared by every data channel (the caller holds a lock)
 *
 * rounds.c and ratelimit.c put them into the session. Not part of the API.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "tagmig/session.h"

/* Rounds that say nothing about the link: too small or too short to time. */
#define TM_EST_MIN_BYTES (1u << 20)
#define TM_EST_MIN_US 5000
/*
 * A round whose runs (contiguous pages handed over together) average fewer pages than this is
 * "scattered": a dirty log's pages, each its own cache and TLB miss on both sides. Such rounds
 * move 0.55-0.85x the bytes per second of a sequential one (bench/README.md, short rounds), and
 * a final round is one of them: until a scattered round has been timed, the switchover assumes
 * TM_EST_SCATTER_PRIOR of the sequential rounds' bandwidth.
 */
#define TM_EST_DENSE_RUN 16u
#define TM_EST_SCATTER_PRIOR 0.5

typedef struct tm_estimator {
	double bw_free;       /* EWMA (alpha 0.5) of unthrottled rounds, bytes/s; 0: none yet */
	double bw_throttled;  /* the same of rounds the rate limit held back */
	double bw_scattered;  /* EWMA of unthrottled scattered rounds (TM_EST_DENSE_RUN); 0: none */
	bool dense_only;      /* every round in bw_free was a timed sequential one (runs known) */
	/* the last completed round, whatever its size */
	bool have_last;
	uint64_t last_pages_queued;
	double last_seconds;
	uint64_t bytes_per_page; /* of the last round that sent pages; 0: none yet */
} tm_estimator;

/*
 * Takes a completed round's figures into the estimate; runs: how many runs its pages were
 * queued in (0: not known, the round counts as neither sequential nor scattered).
 */
void tm_estimator_round(tm_estimator *e, const tm_round_stats *rs, uint64_t runs);

/* The link's bandwidth: override if set, else unthrottled, else throttled. */
uint64_t tm_estimator_bandwidth(const tm_estimator *e, uint64_t override);

/*
 * What the final round of a dirty log will see: override if set; else the scattered rounds'
 * estimate; else, when only sequential rounds were timed, TM_EST_SCATTER_PRIOR of theirs; else
 * tm_estimator_bandwidth().
 */
uint64_t tm_estimator_switch_bandwidth(const tm_estimator *e, uint64_t override);

/* Wire bytes one page costs: the average of the last round that sent pages, else page_size. */
uint64_t tm_estimator_bytes_per_page(const tm_estimator *e, uint32_t page_size);

typedef struct tm_advise_in {
	uint64_t pending_pages;  /* queued, not yet sent */
	uint64_t dirty_pages;    /* the VMM's dirty log now */
	uint64_t state_bytes;    /* device state estimate */
	uint32_t page_size;      /* for bytes per page before any round completed */
	uint64_t switchover_bw;  /* tm_live_config.switchover_bandwidth, 0: estimate */
	uint64_t max_downtime_us;
	uint64_t rtt_us;         /* control connection round trip; 0 until it is measured */
} tm_advise_in;

/* Fills *ret from the estimate (docs/design/live-engine.md 3.6). */
void tm_estimator_advise(const tm_estimator *e, const tm_advise_in *in, tm_switch_advice *ret);

/* Microseconds to move bytes at bw bytes/s (UINT64_MAX without bw, 0 for nothing to move). */
uint64_t tm_transfer_us(uint64_t bytes, uint64_t bw);

/*
 * Token bucket. rate and lifted are read without the lock on the fast path (relaxed atomics);
 * tokens and last_us belong to whoever holds the caller's lock (the sender's s->lock).
 */
#define TM_RATELIMIT_BURST_US 10000 /* the bucket holds 10 ms of the rate */

typedef struct tm_ratelimit {
	uint64_t rate;   /* bytes/s, 0: unlimited (atomic) */
	bool lifted;     /* guest stopped: no limit any more (atomic) */
	double tokens;   /* bytes that may go now; negative: debt of the last packet */
	int64_t last_us; /* when tokens was last refilled; 0: never */
} tm_ratelimit;

/* Whether a packet must ask at all (the unlimited fast path, no lock needed). */
bool tm_ratelimit_active(const tm_ratelimit *rl);

/*
 * A packet of bytes wants to go at now_us. Returns 0 and charges it (tokens may go negative:
 * a packet larger than the burst still goes, and the next waits out the debt), or the
 * microseconds to wait before asking again. Unlimited: always 0.
 */
int64_t tm_ratelimit_debit(tm_ratelimit *rl, int64_t now_us, uint64_t bytes);
/* A packet that goes now whatever the bucket holds: charged (the debt delays the next). */
void tm_ratelimit_charge(tm_ratelimit *rl, int64_t now_us, uint64_t bytes);

/*
 * Sets the rate (0: unlimited); the bucket keeps its debt, its cap follows the new rate; from
 * unlimited it starts full. The caller holds the lock that guards tokens.
 */
void tm_ratelimit_set(tm_ratelimit *rl, uint64_t bytes_per_sec);

/* The guest stopped: no limit from now on. */
void tm_ratelimit_lift(tm_ratelimit *rl);

/* The rate in force: 0 when unlimited or lifted. */
uint64_t tm_ratelimit_rate(const tm_ratelimit *rl);
