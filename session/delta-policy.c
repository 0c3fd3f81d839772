/* SPDX-License-Identifier: MIT */
/*
 * The sender's choice between a delta and the whole page (delta.h, TM_DELTA_AUTO): deltas only
 * while the link, not the sender's CPU, is what a re-sent page waits for, on the compression
 * policy's measurements of the link and the worker's CPU, and its own of what a delta costs.
 * Whole wins every tie: a fast link is never made slower for a guess.
 */
#include "session/compress.h"
#include "session/delta.h"

void tm_dpolicy_init(tm_dpolicy *p, uint32_t policy)
{
	*p = (tm_dpolicy){ 0 };
	p->always = policy == TM_DELTA_ALWAYS;
	p->use = p->always;
	p->keep = true;
	p->reason = p->always ? TM_DELTA_REASON_ALWAYS : TM_DELTA_REASON_NONE;
}

bool tm_dpolicy_sample_due(tm_dpolicy *p)
{
	if (p->always)
		return false;
	/* The first page with a copy is measured at once: no choice is made without it. */
	if (!p->known || ++p->since >= TM_DPOLICY_SAMPLE_EVERY) {
		p->since = 0;
		return true;
	}
	return false;
}

void tm_dpolicy_sample(tm_dpolicy *p, uint32_t page_size, uint64_t out, int64_t cpu_ns)
{
	if (page_size == 0)
		return;
	double cpu = (double)(cpu_ns > 0 ? cpu_ns : 0) / 1e9 / page_size;
	double ratio = (double)MIN(out, (uint64_t)page_size) / page_size;
	if (!p->known) {
		p->cpu = cpu;
		p->ratio = ratio;
		p->known = true;
	} else {
		p->cpu += TM_DPOLICY_EWMA * (cpu - p->cpu);
		p->ratio += TM_DPOLICY_EWMA * (ratio - p->ratio);
	}
}

bool tm_dpolicy_decide(tm_dpolicy *p, const tm_zpolicy *z, double zratio)
{
	double link = tm_zpolicy_link_rate(z);

	if (p->always)
		return true;
	p->use = false;
	p->keep = true;
	p->reason = TM_DELTA_REASON_UNMEASURED;
	if (link <= 0)
		return false;
	double k = z->stretch, s = z->send_cpu;
	/* The page whole, as the channel sends it now (its codec's CPU when one is chosen). */
	double zcpu = z->cur > 0 && z->known[z->cur] ? z->cpu[z->cur] : 0;
	double whole_cpu = k * (zcpu + zratio * s), whole_link = zratio / link;
	if (whole_link <= whole_cpu) {
		/* The worker's CPU bounds whole pages: a delta only adds to it, and so would
		 * the copies kept for one. */
		p->keep = false;
		p->reason = TM_DELTA_REASON_CPU;
		return false;
	}
	if (!p->known)
		return false;
	double delta = MAX(k * (p->cpu + p->ratio * s), p->ratio / link);
	p->use = delta < whole_link * TM_DPOLICY_MARGIN;
	p->reason = p->use ? TM_DELTA_REASON_LINK : TM_DELTA_REASON_CPU;
	return p->use;
}
