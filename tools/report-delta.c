/* SPDX-License-Identifier: MIT */
/* The delta-encoding part of a command's summary (report.h): re-sent pages sent as deltas. */
#include <inttypes.h>

#include "json.h"
#include "tagmig/session.h"
#include "report.h"

void cli_delta_collect(tm_delta_stats *ret, tm_sender *s, tm_receiver *r, unsigned channels)
{
	*ret = (tm_delta_stats){ .size = sizeof(*ret) };
	for (unsigned i = 0; i < channels; i++) {
		tm_delta_stats c = { .size = sizeof(c) };
		if ((s ? tm_sender_get_delta_stats(s, i, &c) : tm_receiver_get_delta_stats(r, i, &c)) < 0)
			break;
		ret->agreed |= c.agreed;
		ret->cache_bytes += c.cache_bytes;
		ret->pages += c.pages;
		ret->page_bytes += c.page_bytes;
		ret->wire_bytes += c.wire_bytes;
		ret->refused += c.refused;
		ret->windows_delta += c.windows_delta;
		ret->windows_whole += c.windows_whole;
		ret->skipped += c.skipped;
		ret->zdelta_packets += c.zdelta_packets;
		ret->policy = c.policy;
		/* The channels' last reasons: the link when any chose deltas last. */
		if (c.reason == TM_DELTA_REASON_LINK || ret->reason == 0 ||
		    (ret->reason != TM_DELTA_REASON_LINK && c.reason > ret->reason))
			ret->reason = c.reason;
	}
}

const char *cli_delta_reason_name(uint32_t reason)
{
	switch (reason) {
	case TM_DELTA_REASON_ALWAYS: return "always";
	case TM_DELTA_REASON_UNMEASURED: return "unmeasured";
	case TM_DELTA_REASON_LINK: return "link";
	case TM_DELTA_REASON_CPU: return "cpu";
	default: return "none";
	}
}

void cli_delta_json(struct json_writer *w, const tm_delta_stats *d)
{
	jw_open(w, "delta");
	jw_bool(w, "agreed", d->agreed != 0);
	jw_u64(w, "cache_bytes", d->cache_bytes);
	jw_u64(w, "pages", d->pages);
	jw_u64(w, "page_bytes", d->page_bytes);
	jw_u64(w, "delta_bytes", d->wire_bytes);
	jw_double(w, "ratio", d->page_bytes ? (double)d->wire_bytes / (double)d->page_bytes : 0);
	jw_u64(w, "refused", d->refused);
	jw_str(w, "policy", d->policy == TM_DELTA_ALWAYS ? "always" : "auto");
	jw_u64(w, "windows_delta", d->windows_delta);
	jw_u64(w, "windows_whole", d->windows_whole);
	jw_u64(w, "skipped", d->skipped);
	jw_u64(w, "zdelta_packets", d->zdelta_packets);
	jw_str(w, "reason", cli_delta_reason_name(d->reason));
	jw_close(w);
}

char *cli_delta_human(const tm_delta_stats *d)
{
	if (!d->pages && !d->refused)
		return g_strdup("");
	return g_strdup_printf(", %" PRIu64 " pages as deltas (%.2f of their size), %" PRIu64
			       " refused and re-sent whole",
			       d->pages, d->page_bytes ? (double)d->wire_bytes / d->page_bytes : 0,
			       d->refused);
}
