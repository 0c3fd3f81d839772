/* SPDX-License-Identifier: MIT */
/*
 * Shared by fuzz-postcopy and gen-corpus: the postcopy session (fuzz_data_session() in protocol 2
 * with POSTCOPY) and what the target derives from a frame's seq, so that the seeds gen-corpus
 * writes are valid messages for it.
 */
#pragma once

#include "fuzz.h"

#define FUZZ_MAX_OUTSTANDING 256u

static inline void fuzz_postcopy_session(tm_hello *h)
{
	fuzz_data_session(h);
	h->version = TM_WIRE_VERSION_2;
	h->features |= TM_FEATURE_POSTCOPY;
}

/* PAGE_REQ: the window the target decodes with, from the frame's seq. */
static inline tm_req_window fuzz_req_window(uint32_t seq)
{
	return (tm_req_window){
		.next_id = 1 + (seq & 0xffff),
		.outstanding = (seq >> 16) % (FUZZ_MAX_OUTSTANDING + 2),
		.max_outstanding = FUZZ_MAX_OUTSTANDING,
	};
}

/*
 * URGENT: the request outstanding under req_id (false: none is). Odd ids ask for one page of
 * "ram1"; even ids for 1..16 pages of "ram0".
 */
static inline bool fuzz_urgent_request(uint64_t req_id, tm_page_req *ret)
{
	if (req_id == 0 || req_id > 100000)
		return false;
	ret->req_id = req_id;
	if (req_id % 2) {
		ret->block = 1;
		ret->count = 1;
		ret->page = (uint32_t)(req_id / 2 % 4);
	} else {
		ret->block = 0;
		ret->count = (uint16_t)(1 + req_id / 2 % 16);
		ret->page = (uint32_t)(req_id / 32 % (64u - ret->count + 1));
	}
	return true;
}
