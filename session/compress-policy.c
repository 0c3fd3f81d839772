/* SPDX-License-Identifier: MIT */
/*
 * The auto policy of compression (compress.h): per channel, whether none, lz4, zstd 1 or zstd 3
 * moves page data fastest, from the link's measured throughput, each codec's measured CPU time
 * per byte and ratio, and how much CPU the worker gets. Raw is the default and wins every tie:
 * a fast link is never made slower for a guess.
 */
#include "session/compress.h"

/* Weight of a new measurement in the running averages. */
#define EWMA 0.25
/* Worst case of a codec never measured: it cannot win before a sample. */
#define UNKNOWN_COST 1.0

void tm_zpolicy_init(tm_zpolicy *p, uint32_t features)
{
	*p = (tm_zpolicy){ 0 };
	p->cand[p->ncand++] = (tm_zchoice){ TM_ZCODEC_NONE, 0 };
	if (features & TM_FEATURE_LZ4)
		p->cand[p->ncand++] = (tm_zchoice){ TM_ZCODEC_LZ4, 0 };
	if (features & TM_FEATURE_ZSTD) {
		p->cand[p->ncand++] = (tm_zchoice){ TM_ZCODEC_ZSTD, 1 };
		p->cand[p->ncand++] = (tm_zchoice){ TM_ZCODEC_ZSTD, 3 };
	}
	p->ratio[0] = 1.0;
	p->known[0] = true;
	p->next_sample = 1;
	p->stretch = 1.0;
	p->win_raw = true;
}

tm_zchoice tm_zpolicy_choice(const tm_zpolicy *p)
{
	return p->cand[p->cur];
}

void tm_zpolicy_idle(tm_zpolicy *p)
{
	p->win_ns = p->win_cpu_ns = p->win_zcpu_ns = 0;
	p->win_packets = 0;
	p->win_wire = 0;
	p->win_raw = true;
}

/* What the channel can put on the wire: the link as measured, or less under a rate limit. */
static double link_of(const tm_zpolicy *p)
{
	if (p->cap > 0 && (p->link <= 0 || p->cap < p->link))
		return p->cap;
	return p->link;
}

double tm_zpolicy_link_rate(const tm_zpolicy *p)
{
	return link_of(p);
}

/* Seconds per raw byte sent raw: the worker's own sending, or the link, whichever is slower. */
static double raw_cost(const tm_zpolicy *p)
{
	return MAX(p->stretch * p->send_cpu, 1.0 / link_of(p));
}

int tm_zpolicy_sample_due(tm_zpolicy *p)
{
	if (p->ncand < 2)
		return -1;
	/* The first packets sample every codec once; then one every SAMPLE_EVERY packets. */
	bool all_known = true;
	for (unsigned k = 1; k < p->ncand; k++)
		all_known = all_known && p->known[k];
	if (all_known && p->packets % TM_ZPOLICY_SAMPLE_EVERY != TM_ZPOLICY_SAMPLE_EVERY - 1)
		return -1;
	/*
	 * Raw faster than the cheapest codec known compresses (seconds per byte, on the CPU the
	 * worker gets) leaves no codec a chance, whatever its ratio: no more samples while it
	 * stays so (a fast link pays nothing for them).
	 */
	double cheapest = 0;
	for (unsigned k = 1; k < p->ncand; k++)
		if (p->known[k] && (cheapest == 0 || p->cpu[k] < cheapest))
			cheapest = p->cpu[k];
	if (link_of(p) > 0 && cheapest > 0 && p->stretch * cheapest > raw_cost(p))
		return -1;
	for (unsigned i = 0; i < p->ncand - 1; i++) {
		unsigned k = 1 + (p->next_sample - 1 + i) % (p->ncand - 1);
		if (k == p->cur)
			continue; /* measured on every packet anyway */
		p->next_sample = 1 + k % (p->ncand - 1);
		return (int)k;
	}
	return -1;
}

static void update(tm_zpolicy *p, unsigned k, uint64_t raw, uint64_t out, int64_t cpu_ns)
{
	if (raw == 0)
		return;
	double cpu = (double)(cpu_ns > 0 ? cpu_ns : 0) / 1e9 / (double)raw;
	double ratio = (double)out / (double)raw;
	if (!p->known[k]) {
		p->cpu[k] = cpu;
		p->ratio[k] = ratio;
		p->known[k] = true;
	} else {
		p->cpu[k] += EWMA * (cpu - p->cpu[k]);
		p->ratio[k] += EWMA * (ratio - p->ratio[k]);
	}
}

void tm_zpolicy_sample(tm_zpolicy *p, unsigned k, uint64_t raw, uint64_t out, int64_t cpu_ns)
{
	if (k > 0 && k < p->ncand)
		update(p, k, raw, out, cpu_ns);
	p->win_zcpu_ns += cpu_ns > 0 ? cpu_ns : 0; /* not the cost of sending (send_cpu) */
}

/*
 * Seconds per raw byte of candidate k (compress.h): the worker's CPU for it, on the share of a
 * CPU it gets, overlapped with the link carrying what was handed over before.
 */
static double cost(const tm_zpolicy *p, unsigned k)
{
	if (!p->known[k])
		return UNKNOWN_COST;
	if (k == 0)
		return raw_cost(p);
	return MAX(p->stretch * (p->cpu[k] + p->ratio[k] * p->send_cpu), p->ratio[k] / link_of(p));
}

static void decide(tm_zpolicy *p)
{
	unsigned best = 0;

	if (link_of(p) <= 0) {
		p->cur = 0;
		return;
	}
	double best_cost = cost(p, 0) * TM_ZPOLICY_MARGIN;
	for (unsigned k = 1; k < p->ncand; k++) {
		double c = cost(p, k);
		if (c < best_cost) {
			best = k;
			best_cost = c;
		}
	}
	p->cur = best;
}

void tm_zpolicy_cap(tm_zpolicy *p, double cap)
{
	if (cap == p->cap)
		return;
	p->cap = cap;
	decide(p);
}

void tm_zpolicy_sched(tm_zpolicy *p, int64_t cpu_ns, int64_t wait_ns)
{
	if (p->last_ns <= 0 || cpu_ns <= 0)
		return;
	double wait = wait_ns > 0 ? (double)wait_ns : 0;
	p->last_busy = ((double)cpu_ns + wait) / (double)p->last_ns;
	if (wait_ns >= 0)
		p->stretch += EWMA * (((double)cpu_ns + wait) / (double)cpu_ns - p->stretch);
	/* What sending costs the worker itself, from windows with no compression in them. */
	if (p->last_raw && p->last_wire > 0 && cpu_ns > p->last_zcpu_ns) {
		double s = (double)(cpu_ns - p->last_zcpu_ns) / 1e9 / (double)p->last_wire;
		p->send_cpu = p->send_cpu > 0 ? p->send_cpu + EWMA * (s - p->send_cpu) : s;
	}
}

void tm_zpolicy_link(tm_zpolicy *p, bool have_rate, uint64_t rate, bool app_limited)
{
	double r = have_rate ? (double)rate : p->last_wire_rate;
	/* A worker that used (or waited for) the CPU nearly all the window limited it itself. */
	bool cpu_bound = p->last_busy >= TM_ZPOLICY_LINK_BOUND;
	bool limit = have_rate ? !app_limited && !cpu_bound : !cpu_bound;

	if (r <= 0)
		return;
	if (limit)
		p->link = p->link > 0 ? p->link + EWMA * (r - p->link) : r;
	else
		p->link = MAX(p->link, r); /* the link carries at least this */
	decide(p);
}

/* A packet's share of the window; true when the window ended. */
static bool window_add(tm_zpolicy *p, bool raw, uint64_t wire, int64_t zcpu_ns, int64_t busy_ns,
		       int64_t thread_ns)
{
	if (busy_ns <= 0)
		return false; /* the first packet after idle: no time to credit */
	p->win_ns += busy_ns;
	p->win_cpu_ns += thread_ns > 0 ? thread_ns : 0;
	p->win_zcpu_ns += zcpu_ns > 0 ? zcpu_ns : 0;
	p->win_packets++;
	p->win_wire += wire;
	p->win_raw = p->win_raw && raw;
	if (p->win_packets < TM_ZPOLICY_WINDOW_PACKETS || p->win_ns < TM_ZPOLICY_WINDOW_NS)
		return false;
	p->last_wire_rate = (double)p->win_wire * 1e9 / (double)p->win_ns;
	p->last_busy = (double)p->win_cpu_ns / (double)p->win_ns;
	p->last_ns = p->win_ns;
	p->last_zcpu_ns = p->win_zcpu_ns;
	p->last_wire = p->win_wire;
	p->last_raw = p->win_raw;
	tm_zpolicy_idle(p);
	return true;
}

bool tm_zpolicy_packet(tm_zpolicy *p, uint64_t raw, uint64_t wire, int64_t zcpu_ns,
		       int64_t busy_ns, int64_t thread_ns)
{
	p->packets++;
	if (p->cur > 0)
		update(p, p->cur, raw, wire, zcpu_ns);
	return window_add(p, wire == raw, wire, zcpu_ns, busy_ns, thread_ns);
}

bool tm_zpolicy_other(tm_zpolicy *p, uint64_t wire, int64_t busy_ns)
{
	return window_add(p, false, wire, 0, busy_ns, 0);
}
