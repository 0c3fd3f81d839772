/* SPDX-License-Identifier: MIT */
/*
 * The summary every command prints at its end (one JSON object on stdout with --json, else one
 * human line on stderr) and the measurements behind it: wall time, process CPU time, rates.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "tagmig/tagmig.h"

G_BEGIN_DECLS

/* User + system CPU seconds of the whole process so far. */
double cli_cpu_seconds(void);

/* Monotonic seconds. */
double cli_now(void);

/* GiB (2^30 bytes) per second; 0 when seconds is not positive. */
double cli_gib_per_s(uint64_t bytes, double seconds);

/* "1.5 GiB": IEC units, ASCII only (g_format_size() uses a no-break space). Newly allocated. */
char *cli_format_bytes(uint64_t bytes);

/* What a command reports at its end; shared by the JSON and the human output. */
/* Compression statistics of every channel of one side (report-compress.c). */
typedef struct cli_compress {
	bool sender;
	unsigned channels;
	tm_compress_stats stats[TM_MAX_CHANNELS];
	tm_delta_stats delta; /* delta encoding, all channels summed (report-delta.c) */
} cli_compress;

/* Reads them from the sender s or the receiver r (the other NULL) after the migration. */
void cli_compress_collect(cli_compress *z, tm_sender *s, tm_receiver *r, unsigned channels);
/* Delta statistics of all channels of the sender s or the receiver r, summed (report-delta.c). */
void cli_delta_collect(tm_delta_stats *ret, tm_sender *s, tm_receiver *r, unsigned channels);
/* The "delta" object of --json. */
struct json_writer;
void cli_delta_json(struct json_writer *w, const tm_delta_stats *d);
/* tm_delta_reason as --json says it: none, always, unmeasured, link, cpu. */
const char *cli_delta_reason_name(uint32_t reason);
/* ", N pages as deltas (0.07 of their size), M refused and re-sent whole" or "". */
char *cli_delta_human(const tm_delta_stats *d);
/* Sums of all channels (mode and ratio of the whole). */
void cli_compress_totals(const cli_compress *z, tm_compress_stats *ret);
/* ", compression auto: 0.31 of the page data (...)" or "" when nothing was agreed. */
char *cli_compress_human(const cli_compress *z);

typedef struct cli_summary {
	const char *command;  /* "demo", "send", "recv" */
	const tm_stats *stats;
	uint64_t bytes;       /* guest bytes migrated (every round counted) */
	double wall_seconds;  /* migration time seen by the tool */
	double cpu_seconds;   /* process CPU time spent on the migration */
	int verified;         /* 1 yes, 0 no, -1 not checked (left out of the output) */
	unsigned blocks;
	const tm_live_stats *live; /* protocol 2 figures (resume), or NULL: left out */
	const cli_compress *compress; /* NULL: left out */
} cli_summary;

/* Writes the summary as one JSON object and a newline to stdout. */
void cli_print_json(const cli_summary *s);

/* Writes the one-line human summary to stderr. */
void cli_print_human_line(const cli_summary *s);

/* Says on stderr why the default I/O backend was not used, if it was not. */
void cli_print_io_note(const tm_stats *st);

/*
 * The end of a send or recv: the io note, then the JSON object (json) or the human line, for
 * bytes of RAM moved since t0 (cli_now()) with cpu0 (cli_cpu_seconds()) at that time.
 */
void cli_report(const char *cmd, const tm_stats *st, const tm_live_stats *live, uint64_t bytes,
		double t0, double cpu0, unsigned blocks, const cli_compress *compress, bool json);

G_END_DECLS
