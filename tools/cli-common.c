/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli-common.h"

/* ---- parsing ---- */

int cli_parse_size(const char *text, uint64_t *ret)
{
	static const struct {
		const char *suffix;
		unsigned shift;
	} suffixes[] = {
		{ "", 0 },     { "b", 0 },    { "k", 10 },   { "kb", 10 },  { "kib", 10 },
		{ "m", 20 },   { "mb", 20 },  { "mib", 20 }, { "g", 30 },   { "gb", 30 },
		{ "gib", 30 }, { "t", 40 },   { "tb", 40 },  { "tib", 40 },
	};
	char *end = NULL;

	if (!text || !g_ascii_isdigit(text[0]))
		return -EINVAL;
	errno = 0;
	guint64 v = g_ascii_strtoull(text, &end, 10);
	if (errno || end == text)
		return -EINVAL;
	for (size_t i = 0; i < G_N_ELEMENTS(suffixes); i++) {
		if (g_ascii_strcasecmp(end, suffixes[i].suffix) != 0)
			continue;
		if (suffixes[i].shift && v > (UINT64_MAX >> suffixes[i].shift))
			return -EINVAL;
		*ret = v << suffixes[i].shift;
		return 0;
	}
	return -EINVAL;
}

int cli_parse_uint(const char *text, uint64_t min, uint64_t max, uint64_t *ret)
{
	guint64 v = 0;

	if (!text || !g_ascii_string_to_unsigned(text, 10, min, max, &v, NULL))
		return -EINVAL;
	*ret = v;
	return 0;
}

int cli_parse_hostport(const char *text, char **ret_host, char **ret_port, GError **error)
{
	g_autofree char *host = NULL;
	const char *port;
	guint64 v = 0;

	if (!text || !*text) {
		g_set_error(error, TM_ERROR, EINVAL, "empty address, expected HOST:PORT");
		return -EINVAL;
	}
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (!close || close[1] != ':') {
			g_set_error(error, TM_ERROR, EINVAL, "'%s' is not [ADDRESS]:PORT", text);
			return -EINVAL;
		}
		host = g_strndup(text + 1, (gsize)(close - text - 1));
		port = close + 2;
	} else {
		const char *colon = strrchr(text, ':');
		if (!colon || strchr(text, ':') != colon) {
			g_set_error(error, TM_ERROR, EINVAL,
				    "'%s' is not HOST:PORT (write IPv6 addresses as [ADDRESS]:PORT)",
				    text);
			return -EINVAL;
		}
		host = g_strndup(text, (gsize)(colon - text));
		port = colon + 1;
	}
	if (!*host) {
		g_set_error(error, TM_ERROR, EINVAL, "'%s' has an empty host", text);
		return -EINVAL;
	}
	if (!g_ascii_string_to_unsigned(port, 10, 0, 65535, &v, NULL)) {
		g_set_error(error, TM_ERROR, EINVAL, "'%s': port '%s' is not a number 0..65535", text,
			    port);
		return -EINVAL;
	}
	*ret_host = g_steal_pointer(&host);
	*ret_port = g_strdup_printf("%" G_GUINT64_FORMAT, v);
	return 0;
}

static void file_spec_free(gpointer p)
{
	cli_file_spec *spec = p;

	g_free(spec->name);
	g_free(spec->path);
	g_free(spec);
}

int cli_parse_file_specs(const char *option, char **args, GPtrArray **ret, GError **error)
{
	g_autoptr(GPtrArray) specs = g_ptr_array_new_with_free_func(file_spec_free);

	for (size_t i = 0; args && args[i]; i++) {
		const char *eq = strchr(args[i], '=');
		cli_file_spec *spec = g_new0(cli_file_spec, 1);

		g_ptr_array_add(specs, spec);
		if (eq) {
			spec->name = g_strndup(args[i], (gsize)(eq - args[i]));
			spec->path = g_strdup(eq + 1);
		} else {
			spec->path = g_strdup(args[i]);
		}
		if ((spec->name && !*spec->name) || !*spec->path) {
			g_set_error(error, TM_ERROR, EINVAL, "%s '%s': expected [NAME=]PATH", option,
				    args[i]);
			return -EINVAL;
		}
		if (spec->name && strlen(spec->name) > TM_MAX_BLOCK_NAME) {
			g_set_error(error, TM_ERROR, EINVAL, "%s '%s': name longer than %u bytes",
				    option, args[i], TM_MAX_BLOCK_NAME);
			return -EINVAL;
		}
	}
	*ret = g_steal_pointer(&specs);
	return 0;
}

char *cli_ram_name(const cli_file_spec *spec, unsigned index)
{
	return spec->name ? g_strdup(spec->name) : g_strdup_printf("ram%u", index);
}

int cli_pair_tags(GPtrArray *ram, GPtrArray *tags, int *ret_tags_of_ram, GError **error)
{
	g_autofree int *pairs = g_new(int, ram->len ? ram->len : 1);

	for (unsigned i = 0; i < ram->len; i++)
		pairs[i] = -1;
	for (unsigned t = 0; t < tags->len; t++) {
		const cli_file_spec *ts = g_ptr_array_index(tags, t);
		int r = -1;

		if (ts->name) {
			for (unsigned i = 0; i < ram->len && r < 0; i++) {
				g_autofree char *name = cli_ram_name(g_ptr_array_index(ram, i), i);
				if (strcmp(name, ts->name) == 0)
					r = (int)i;
			}
			if (r < 0) {
				g_set_error(error, TM_ERROR, EINVAL,
					    "--tags %s=%s: no --ram is called '%s'", ts->name,
					    ts->path, ts->name);
				return -EINVAL;
			}
		} else {
			if (t >= ram->len) {
				g_set_error(error, TM_ERROR, EINVAL,
					    "--tags %s is number %u but there are only %u --ram",
					    ts->path, t + 1, ram->len);
				return -EINVAL;
			}
			r = (int)t;
		}
		if (pairs[r] >= 0) {
			g_autofree char *name = cli_ram_name(g_ptr_array_index(ram, (guint)r), (unsigned)r);
			g_set_error(error, TM_ERROR, EINVAL, "two --tags for RAM block '%s'", name);
			return -EINVAL;
		}
		pairs[r] = (int)t;
	}
	for (unsigned i = 0; tags->len && i < ram->len; i++) {
		if (pairs[i] < 0) {
			g_autofree char *name = cli_ram_name(g_ptr_array_index(ram, i), i);
			g_set_error(error, TM_ERROR, EINVAL,
				    "--tags given for some RAM blocks but not for '%s' (%s)", name,
				    ((cli_file_spec *)g_ptr_array_index(ram, i))->path);
			return -EINVAL;
		}
	}
	memcpy(ret_tags_of_ram, pairs, ram->len * sizeof(int));
	return 0;
}

/* ---- mapped files ---- */

int cli_file_size(const char *path, uint64_t *ret, GError **error)
{
	struct stat st;

	if (stat(path, &st) < 0) {
		int err = errno;
		if (err != ENOENT)
			g_set_error(error, TM_ERROR, err, "%s: %s", path, g_strerror(err));
		return -err;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		g_set_error(error, TM_ERROR, EINVAL, "%s: not a regular file", path);
		return -EINVAL;
	}
	*ret = (uint64_t)st.st_size;
	return 0;
}

int cli_file_create(const char *path, uint64_t size, GError **error)
{
	cli_autofd int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

	if (fd < 0) {
		int err = errno;
		g_set_error(error, TM_ERROR, err, "cannot create %s: %s", path, g_strerror(err));
		return -err;
	}
	if (ftruncate(fd, (off_t)size) < 0) {
		int err = errno;
		g_set_error(error, TM_ERROR, err, "cannot size %s to %" PRIu64 " bytes: %s", path,
			    size, g_strerror(err));
		return -err;
	}
	return 0;
}

/*
 * Guest RAM must be aligned to its page size, up to 64 KiB; mmap() only promises the host's. So
 * reserve len + 2 MiB of address space, place the real mapping at the aligned address inside it
 * with MAP_FIXED, and give back the slack on both sides. 2 MiB, not 64 KiB: huge pages (THP, a
 * tmpfs mounted with huge=) are mapped whole only at 2 MiB-aligned addresses, and a VMM backs
 * guest RAM with them. Measured on this project's VMs: the first touch of each 4 KiB mapping
 * costs as much as the data transfer (bench/README.md).
 */
#define CLI_MAP_ALIGN (2u << 20)

static void *mmap_aligned(size_t len, int prot, int flags, int fd)
{
	size_t span = len + CLI_MAP_ALIGN;
	uint8_t *base = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			     -1, 0);

	if (base == MAP_FAILED)
		return MAP_FAILED;
	uint8_t *aligned = (uint8_t *)(((uintptr_t)base + CLI_MAP_ALIGN - 1) &
				       ~(uintptr_t)(CLI_MAP_ALIGN - 1));
	void *addr = mmap(aligned, len, prot, flags | MAP_FIXED, fd, 0);
	if (addr == MAP_FAILED) {
		int err = errno;
		munmap(base, span);
		errno = err;
		return MAP_FAILED;
	}
	if (aligned > base)
		munmap(base, (size_t)(aligned - base));
	size_t tail = (size_t)(base + span - (aligned + len));
	if (tail)
		munmap(aligned + len, tail);
	/* Huge pages where the memory allows them (anonymous THP in "madvise" mode); a hint. */
	madvise(addr, len, MADV_HUGEPAGE);
	return addr;
}

int cli_map_open(const char *path, bool writable, cli_map **ret, GError **error)
{
	cli_autofd int fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0) {
		int err = errno;
		g_set_error(error, TM_ERROR, err, "cannot open %s: %s", path, g_strerror(err));
		return -err;
	}
	if (!S_ISREG(st.st_mode)) {
		g_set_error(error, TM_ERROR, EINVAL, "%s: not a regular file", path);
		return -EINVAL;
	}
	g_autoptr(cli_map) map = g_new0(cli_map, 1);
	map->path = g_strdup(path);
	map->size = (uint64_t)st.st_size;
	map->writable = writable;
	if (map->size) {
		void *addr = mmap_aligned(map->size,
					  writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED,
					  fd);
		if (addr == MAP_FAILED) {
			int err = errno;
			g_set_error(error, TM_ERROR, err, "cannot map %s: %s", path, g_strerror(err));
			return -err;
		}
		map->addr = addr;
	}
	/* The mapping keeps the file; the fd closes here. */
	*ret = g_steal_pointer(&map);
	return 0;
}

int cli_map_anon(uint64_t size, bool populate, cli_map **ret, GError **error)
{
	void *addr = mmap_aligned(size, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS | (populate ? 0 : MAP_NORESERVE), -1);

	/* Populated after MADV_HUGEPAGE (in mmap_aligned), so that it gets huge pages. */
	if (addr != MAP_FAILED && populate && madvise(addr, size, MADV_POPULATE_WRITE) < 0 &&
	    errno != EINVAL) {
		int err = errno;
		munmap(addr, size);
		errno = err;
		addr = MAP_FAILED;
	}
	if (addr == MAP_FAILED) {
		int err = errno;
		g_set_error(error, TM_ERROR, err, "cannot map %" PRIu64 " bytes of memory: %s", size,
			    g_strerror(err));
		return -err;
	}
	cli_map *map = g_new0(cli_map, 1);
	map->path = g_strdup("(anonymous)");
	map->addr = addr;
	map->size = size;
	map->writable = true;
	*ret = map;
	return 0;
}

int cli_map_sync(cli_map *map, GError **error)
{
	if (!map->addr || !map->writable)
		return 0;
	if (msync(map->addr, map->size, MS_SYNC) < 0) {
		int err = errno;
		g_set_error(error, TM_ERROR, err, "msync %s: %s", map->path, g_strerror(err));
		return -err;
	}
	return 0;
}

void cli_map_free(cli_map *map)
{
	if (!map)
		return;
	if (map->addr)
		munmap(map->addr, map->size);
	g_free(map->path);
	g_free(map);
}

int cli_parse_options(const char *cmd, const char *summary, const char *description,
		      const GOptionEntry *entries, int *argc, char ***argv)
{
	g_autofree char *prgname = g_strdup_printf("tagmig %s", cmd);
	g_autoptr(GOptionContext) ctx = g_option_context_new(NULL);
	g_autoptr(GError) error = NULL;

	/* The usage line GLib prints reads "tagmig CMD [OPTION...]". */
	g_set_prgname(prgname);
	g_option_context_set_summary(ctx, summary);
	if (description)
		g_option_context_set_description(ctx, description);
	g_option_context_add_main_entries(ctx, entries, NULL);
	if (!g_option_context_parse(ctx, argc, argv, &error))
		return cli_usage_error(cmd, "%s", error->message);
	for (int i = 1; i < *argc; i++) {
		if (strcmp((*argv)[i], "--") != 0)
			return cli_usage_error(cmd, "unexpected argument '%s'", (*argv)[i]);
	}
	return 0;
}

/* ---- reporting ---- */

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

int cli_check_io(const char *cmd, const char *io)
{
	if (io && strcmp(io, "io_uring") != 0 && strcmp(io, "uring") != 0 &&
	    strcmp(io, "sockets") != 0)
		return cli_usage_error(cmd, "--io '%s' is not io_uring, uring or sockets", io);
	return 0;
}

void cli_report(const char *cmd, const tm_stats *st, uint64_t bytes, double t0, double cpu0,
		unsigned blocks, bool json)
{
	cli_summary sum = {
		.command = cmd,
		.stats = st,
		.bytes = bytes,
		.wall_seconds = cli_now() - t0,
		.cpu_seconds = cli_cpu_seconds() - cpu0,
		.verified = -1,
		.blocks = blocks,
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

int cli_fail(const GError *error)
{
	fprintf(stderr, "tagmig: %s\n", error ? error->message : "unknown error");
	return CLI_EXIT_FAILED;
}

int cli_failf(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	g_autofree char *msg = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	fprintf(stderr, "tagmig: %s\n", msg);
	return CLI_EXIT_FAILED;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	g_autofree char *msg = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	if (cmd) {
		fprintf(stderr, "tagmig %s: %s\nTry 'tagmig %s --help' for more information.\n", cmd,
			msg, cmd);
	} else {
		fprintf(stderr, "tagmig: %s\nTry 'tagmig --help' for more information.\n", msg);
	}
	return CLI_EXIT_USAGE;
}

void cli_json_append_string(GString *out, const char *s)
{
	g_string_append_c(out, '"');
	for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
		switch (*p) {
		case '"':
			g_string_append(out, "\\\"");
			break;
		case '\\':
			g_string_append(out, "\\\\");
			break;
		case '\n':
			g_string_append(out, "\\n");
			break;
		case '\r':
			g_string_append(out, "\\r");
			break;
		case '\t':
			g_string_append(out, "\\t");
			break;
		default:
			if (*p < 0x20 || *p == 0x7f)
				g_string_append_printf(out, "\\u%04x", *p);
			else
				g_string_append_c(out, (char)*p);
		}
	}
	g_string_append_c(out, '"');
}

/*
 * A small JSON object writer: members are separated by commas as they come, objects nest with
 * jw_open/jw_close. Numbers are locale-independent and never NaN or infinity (not JSON).
 */
typedef struct json_writer {
	GString *out;
	bool first; /* no member yet in the innermost open object */
} json_writer;

static void jw_key(json_writer *w, const char *key)
{
	if (!w->first)
		g_string_append_c(w->out, ',');
	w->first = false;
	cli_json_append_string(w->out, key);
	g_string_append_c(w->out, ':');
}

static void jw_open(json_writer *w, const char *key)
{
	if (key)
		jw_key(w, key);
	g_string_append_c(w->out, '{');
	w->first = true;
}

static void jw_close(json_writer *w)
{
	g_string_append_c(w->out, '}');
	w->first = false;
}

static void jw_u64(json_writer *w, const char *key, uint64_t v)
{
	jw_key(w, key);
	g_string_append_printf(w->out, "%" PRIu64, v);
}

static void jw_double(json_writer *w, const char *key, double v)
{
	char buf[G_ASCII_DTOSTR_BUF_SIZE];

	jw_key(w, key);
	g_string_append(w->out, g_ascii_formatd(buf, sizeof(buf), "%.6g", isfinite(v) ? v : 0));
}

static void jw_str(json_writer *w, const char *key, const char *v)
{
	jw_key(w, key);
	cli_json_append_string(w->out, v);
}

static double safe_div(double a, double b)
{
	return b > 0 ? a / b : 0;
}

#define GIB (1024.0 * 1024.0 * 1024.0)

void cli_print_json(const cli_summary *s)
{
	const tm_stats *st = s->stats;
	g_autoptr(GString) out = g_string_new(NULL);
	json_writer w = { .out = out };

	jw_open(&w, NULL);
	jw_str(&w, "command", s->command);
	jw_u64(&w, "bytes", s->bytes);
	jw_double(&w, "seconds", s->wall_seconds);
	jw_double(&w, "session_seconds", st->seconds);
	jw_double(&w, "gib_per_s", safe_div(s->bytes / GIB, s->wall_seconds));
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

	fprintf(stderr,
		"tagmig %s: %s in %.2f s, %.2f GiB/s, %u channel%s (%s), %" PRIu64
		" pages (normal %" PRIu64 ", zero %" PRIu64 ", zero-tagged %" PRIu64
		"), tags %s (%.1f%% of wire), %.2f CPU s/GiB%s%s\n",
		s->command, size, s->wall_seconds, safe_div(s->bytes / GIB, s->wall_seconds),
		st->channels, st->channels == 1 ? "" : "s", st->io_backend[0] ? st->io_backend : "?",
		st->pages, st->pages_by_kind[TM_PAGE_NORMAL], st->pages_by_kind[TM_PAGE_ZERO],
		st->pages_by_kind[TM_PAGE_ZERO_TAGGED], tags,
		safe_div(100.0 * st->tag_bytes, st->wire_bytes),
		safe_div(s->cpu_seconds, s->bytes / GIB), st->tls_cipher[0] ? ", TLS " : "",
		st->tls_cipher);
}

/* ---- progress bar ---- */

struct cli_progress {
	/* read-only after setup */
	char *label;
	cli_progress_fn fn;
	void *opaque;
	double start;
	GThread *thread;
	/* protected by ->lock */
	GMutex lock;
	GCond cond;
	bool stop;
};

#define PROGRESS_WIDTH 30

static void progress_draw(cli_progress *p)
{
	uint64_t done = 0, total = 0, bytes = 0;
	double elapsed = cli_now() - p->start;
	char bar[PROGRESS_WIDTH + 1];

	p->fn(p->opaque, &done, &total, &bytes);
	double frac = total ? (double)MIN(done, total) / (double)total : 0;
	unsigned fill = (unsigned)(frac * PROGRESS_WIDTH);
	for (unsigned i = 0; i < PROGRESS_WIDTH; i++)
		bar[i] = i < fill ? '#' : '-';
	bar[PROGRESS_WIDTH] = '\0';
	if (total) {
		fprintf(stderr, "\r\033[K%s [%s] %5.1f%% %" PRIu64 "/%" PRIu64 " pages %.2f GiB/s",
			p->label, bar, 100 * frac, done, total, safe_div(bytes / GIB, elapsed));
	} else {
		fprintf(stderr, "\r\033[K%s %" PRIu64 " pages %.2f GiB/s", p->label, done,
			safe_div(bytes / GIB, elapsed));
	}
	fflush(stderr);
}

static gpointer progress_thread(gpointer data)
{
	cli_progress *p = data;

	g_mutex_lock(&p->lock);
	while (!p->stop) {
		gint64 deadline = g_get_monotonic_time() + G_TIME_SPAN_SECOND / 10;
		while (!p->stop && g_cond_wait_until(&p->cond, &p->lock, deadline))
			;
		if (p->stop)
			break;
		g_mutex_unlock(&p->lock);
		progress_draw(p);
		g_mutex_lock(&p->lock);
	}
	g_mutex_unlock(&p->lock);
	return NULL;
}

cli_progress *cli_progress_start(const char *label, cli_progress_fn fn, void *opaque)
{
	if (!isatty(STDERR_FILENO))
		return NULL;
	cli_progress *p = g_new0(cli_progress, 1);
	p->label = g_strdup(label);
	p->fn = fn;
	p->opaque = opaque;
	p->start = cli_now();
	g_mutex_init(&p->lock);
	g_cond_init(&p->cond);
	p->thread = g_thread_new("progress", progress_thread, p);
	return p;
}

void cli_progress_stop(cli_progress *p)
{
	if (!p)
		return;
	g_mutex_lock(&p->lock);
	p->stop = true;
	g_cond_signal(&p->cond);
	g_mutex_unlock(&p->lock);
	g_thread_join(p->thread);
	fputs("\r\033[K", stderr);
	fflush(stderr);
	g_mutex_clear(&p->lock);
	g_cond_clear(&p->cond);
	g_free(p->label);
	g_free(p);
}
