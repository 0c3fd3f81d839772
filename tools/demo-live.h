/* SPDX-License-Identifier: MIT */
/*
 * `tagmig demo --live`: a running guest migrated by precopy inside one process (cmd-demo-live.c).
 * cmd-demo.c parses the options and hands them over.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

typedef struct demo_live_opts {
	uint64_t size;            /* guest RAM ("pc.ram", 4 KiB pages) */
	unsigned channels;
	const char *io;           /* NULL: the library's default */
	unsigned timeout_s;
	bool tls;
	bool json;
	uint64_t dirty_rate;      /* bytes/s the guest's writers write */
	uint64_t max_downtime_us; /* the switchover target */
	unsigned max_rounds;      /* precopy rounds before the switch is forced */
	uint64_t rate_limit;      /* bytes/s, 0: none */
	uint32_t compress;        /* tm_compress_mode */
	int32_t compress_level;
	uint64_t delta_cache;     /* tm_live_config.delta_cache_bytes */
	uint32_t delta_policy;    /* tm_live_config.delta_policy */
	int postcopy_after;       /* precopy rounds (0 allowed) before the switch to postcopy;
				   * -1: precopy only */
} demo_live_opts;

/* Runs it; returns the tool's exit status (cli.h). */
int cli_demo_live(const demo_live_opts *o);
