/* SPDX-License-Identifier: MIT */
/*
 * tm_live_config (docs/design/live-engine.md, section 1.1): the size-prefixed settings of
 * protocol 2, read the way the kernel reads perf_event_attr: only the bytes the caller knows,
 * the rest zero, so the struct can grow without breaking callers built against a shorter one.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "session/resume.h"
#include "session/delta.h"
#include "session/session-internal.h"
#include "tagmig/error.h"

#define LIVE_MIN_SIZE (offsetof(tm_live_config, wire_version) + sizeof(uint32_t))

int tm_live_config_load(const tm_live_config *in, bool sender, tm_live_config *ret,
			GError **error)
{
	tm_live_config c = { 0 };

	if (!in) {
		g_set_error(error, TM_ERROR, EINVAL, "live config: NULL");
		return -EINVAL;
	}
	if (in->size < LIVE_MIN_SIZE) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "live config: size %u, at least %zu (set size = sizeof(tm_live_config))",
			    in->size, LIVE_MIN_SIZE);
		return -EINVAL;
	}
	memcpy(&c, in, MIN((size_t)in->size, sizeof(c)));
	c.size = sizeof(c);

	if (sender && c.wire_version > TM_WIRE_VERSION_2) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "live config: wire_version %u (0 or 2: protocol 2; 1: protocol 1)",
			    c.wire_version);
		return -EINVAL;
	}
	if (c.max_outstanding > TM_MAX_OUTSTANDING) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "live config: max_outstanding %u over the maximum %u", c.max_outstanding,
			    TM_MAX_OUTSTANDING);
		return -EINVAL;
	}
	if (c.max_state_section > TM_STATE_SECTION_MAX) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "live config: max_state_section %" G_GUINT64_FORMAT
			    " over the maximum %llu",
			    (guint64)c.max_state_section, TM_STATE_SECTION_MAX);
		return -EINVAL;
	}
	if (c.max_state_total > TM_STATE_TOTAL_MAX) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "live config: max_state_total %" G_GUINT64_FORMAT " over the maximum %llu",
			    (guint64)c.max_state_total, TM_STATE_TOTAL_MAX);
		return -EINVAL;
	}
	if (!c.wire_version)
		c.wire_version = TM_WIRE_VERSION_2;
	if (!c.max_downtime_us)
		c.max_downtime_us = 300000;
	if (!c.max_outstanding)
		c.max_outstanding = TM_MAX_OUTSTANDING_DEFAULT;
	if (!c.max_state_section)
		c.max_state_section = MIN(TM_STATE_SECTION_DEFAULT,
					  c.max_state_total ? c.max_state_total : UINT64_MAX);
	if (!c.max_state_total)
		c.max_state_total = MAX(TM_STATE_TOTAL_DEFAULT, c.max_state_section);
	if (c.max_state_total < c.max_state_section) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "live config: max_state_total %" G_GUINT64_FORMAT
			    " below max_state_section %" G_GUINT64_FORMAT,
			    (guint64)c.max_state_total, (guint64)c.max_state_section);
		return -EINVAL;
	}
	if (!c.resume_deadline_ms)
		c.resume_deadline_ms = TM_RESUME_DEADLINE_DEFAULT_MS;
	int r = sender ? tm_compress_config_check(&c, error) : 0;
	if (r < 0)
		return r;
	if (sender && c.delta_cache_bytes &&
	    (c.delta_cache_bytes < TM_DELTA_CACHE_MIN || c.delta_cache_bytes > TM_DELTA_CACHE_MAX)) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "live config: delta_cache_bytes %" G_GUINT64_FORMAT
			    " outside 1 MiB..1 TiB (0: off)",
			    (guint64)c.delta_cache_bytes);
		return -EINVAL;
	}
	if (sender && c.delta_policy > TM_DELTA_ALWAYS) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "live config: delta_policy %u (0 auto, 1 always)", c.delta_policy);
		return -EINVAL;
	}
	if (!c.vcpu_pause != !c.vcpu_resume) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "live config: vcpu_pause and vcpu_resume go together (one is NULL)");
		return -EINVAL;
	}
	c.state_names = NULL; /* the receiver copies them (state.c); never kept borrowed */
	if (!c.uffd_borrow)
		c.uffd = -1; /* meaningful only when borrowed (tm_pc_recv_setup() takes it) */
	*ret = c;
	return 0;
}
