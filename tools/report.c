/* SPDX-License-Identifier: MIT */
/* What a command reports at its end, as one JSON object or one human line (report.h). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <sys/resource.h>

#include "json.h"
#include "report.h"

static double safe_div(double a, double b)
{
	return b > 0 ? a / b : 0;
}

#define GIB (1024.0 * 1024.0 * 1024.0)

double cli_cpu_seconds(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) < 0)
		return 0;
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

double cli_now(void)
{
	return (double)g_get_monotonic_time() / 1e6;
}

double cli_gib_per_s(uint64_t bytes, double seconds)
{
	return safe_div(bytes / GIB, seconds);
}

char *cli_format_bytes(uint64_t bytes)
{
	static const char *const units[] = { "bytes", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)bytes;
	unsigned u = 0;

	while (v >= 1024 && u + 1 < G_N_ELEMENTS(units)) {
		v /= 1024;
		u++;
	}
	return u ? g_strdup_printf("%.1f %s", v, units[u]) : g_strdup_printf("%" PRIu64 " bytes", bytes);
}

void cli_print_json(const cli_summary *s)
{
	const tm_stats *st = s->stats;
	g_autoptr(GString) out = g_string_new(NULL);
	json_writer w = { .out = out, .first = true };

	jw_open(&w, NULL);
	jw_str(&w, "command", s->command);
	jw_u64(&w, "bytes", s->bytes);
	jw_double(&w, "seconds", s->wall_seconds);
	jw_double(&w, "session_seconds", st->seconds);
	jw_double(&w, "gib_per_s", cli_gib_per_s(s->bytes, s->wall_seconds));
	jw_open(&w, "pages");
	jw_u64(&w, "total", st->pages);
	jw_u64(&w, "normal", st->pages_by_kind[TM_PAGE_NORMAL]);
	jw_u64(&w, "zero", st->pages_by_kind[TM_PAGE_ZERO]);
	jw_u64(&w, "zero_tagged", st->pages_by_kind[TM_PAGE_ZERO_TAGGED]);
	jw_close(&w);
	jw_open(&w, "tag_encodings");
	jw_u64(&w, "zero", st->pages_by_tag_enc[TM_TAGS_ZERO]);
	jw_u64(&w, "uniform", st->pages_by_tag_enc[TM_TAGS_UNIFORM]);
	jw_u64(&w, "packed", st->pages_by_tag_enc[TM_TAGS_PACKED]);
	jw_close(&w);
	jw_u64(&w, "packets", st->packets);
	jw_u64(&w, "syncs", st->syncs);
	jw_u64(&w, "data_bytes", st->data_bytes);
	jw_u64(&w, "tag_bytes", st->tag_bytes);
	jw_u64(&w, "wire_bytes", st->wire_bytes);
	jw_double(&w, "tag_pct_of_wire", safe_div(100.0 * st->tag_bytes, st->wire_bytes));
	jw_double(&w, "cpu_seconds", s->cpu_seconds);
	jw_double(&w, "cpu_s_per_gib", safe_div(s->cpu_seconds, s->bytes / GIB));
	jw_str(&w, "io_backend", st->io_backend);
	if (st->tls_cipher[0]) {
		jw_open(&w, "tls");
		jw_str(&w, "cipher", st->tls_cipher);
		jw_u64(&w, "full_handshakes", st->tls_full_handshakes);
		jw_u64(&w, "resumed_handshakes", st->tls_resumed_handshakes);
		jw_double(&w, "handshake_seconds", st->tls_handshake_seconds);
		jw_str(&w, "note", st->tls_note);
		jw_close(&w);
	}
	jw_str(&w, "io_note", st->io_note);
	jw_u64(&w, "io_submissions", st->io_submissions);
	jw_u64(&w, "io_completions", st->io_completions);
	jw_u64(&w, "zc_sends", st->zc_sends);
	jw_u64(&w, "zc_copied", st->zc_copied);
	jw_u64(&w, "channels", st->channels);
	jw_u64(&w, "blocks", s->blocks);
	if (s->live) {
		/* Broken data channels that came back (docs/api.md, "Resume"). */
		jw_open(&w, "resume");
		jw_u64(&w, "reconnects", s->live->reconnects);
		jw_u64(&w, "resent_bytes", s->live->resent_bytes);
		jw_u64(&w, "refused", s->live->resume_refused);
		jw_close(&w);
	}
	if (s->compress) {
		cli_compress_json(&w, s->compress);
		cli_delta_json(&w, &s->compress->delta);
	}
	if (s->verified >= 0) {
		jw_key(&w, "verified");
		g_string_append(out, s->verified ? "true" : "false");
	}
	jw_close(&w);
	g_string_append_c(out, '\n');
	fputs(out->str, stdout);
	fflush(stdout);
}

void cli_print_human_line(const cli_summary *s)
{
	const tm_stats *st = s->stats;
	g_autofree char *size = cli_format_bytes(s->bytes);
	g_autofree char *tags = cli_format_bytes(st->tag_bytes);
	g_autofree char *resumed = NULL;
	g_autofree char *zc = s->compress ? cli_compress_human(s->compress) : g_strdup("");
	g_autofree char *zd = s->compress ? cli_delta_human(&s->compress->delta) : g_strdup("");
	g_autofree char *z = g_strconcat(zc, zd, NULL);

	if (s->live && s->live->reconnects) {
		g_autofree char *again = cli_format_bytes(s->live->resent_bytes);
		resumed = g_strdup_printf(", %" PRIu64 " broken connection%s resumed (%s sent again)",
					  s->live->reconnects, s->live->reconnects == 1 ? "" : "s",
					  again);
	}
	fprintf(stderr,
		"tagmig %s: %s in %.2f s, %.2f GiB/s, %u channel%s (%s), %" PRIu64
		" pages (normal %" PRIu64 ", zero %" PRIu64 ", zero-tagged %" PRIu64
		"), tags %s (%.1f%% of wire), %.2f CPU s/GiB%s%s%s%s\n",
		s->command, size, s->wall_seconds, cli_gib_per_s(s->bytes, s->wall_seconds),
		st->channels, st->channels == 1 ? "" : "s", st->io_backend[0] ? st->io_backend : "?",
		st->pages, st->pages_by_kind[TM_PAGE_NORMAL], st->pages_by_kind[TM_PAGE_ZERO],
		st->pages_by_kind[TM_PAGE_ZERO_TAGGED], tags,
		safe_div(100.0 * st->tag_bytes, st->wire_bytes),
		safe_div(s->cpu_seconds, s->bytes / GIB), st->tls_cipher[0] ? ", TLS " : "",
		st->tls_cipher, resumed ? resumed : "", z);
}

void cli_report(const char *cmd, const tm_stats *st, const tm_live_stats *live, uint64_t bytes,
		double t0, double cpu0, unsigned blocks, const cli_compress *compress, bool json)
{
	cli_summary sum = {
		.command = cmd,
		.stats = st,
		.bytes = bytes,
		.wall_seconds = cli_now() - t0,
		.cpu_seconds = cli_cpu_seconds() - cpu0,
		.verified = -1,
		.blocks = blocks,
		.live = live,
		.compress = compress,
	};

	cli_print_io_note(st);
	if (json)
		cli_print_json(&sum);
	else
		cli_print_human_line(&sum);
}

void cli_print_io_note(const tm_stats *st)
{
	if (st->io_note[0])
		fprintf(stderr, "tagmig: note: %s\n", st->io_note);
}
