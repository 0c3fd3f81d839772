/* SPDX-License-Identifier: MIT */
/*
 * Shared pieces of the tagmig command-line tool: argument parsing (sizes, HOST:PORT, [NAME=]PATH),
 * mapping RAM and tag files, CPU time, the progress bar and the summary every command prints (one
 * human line or one JSON object). Only tools/ prints; the library never does.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <glib.h>

#include "tagmig/tagmig.h"

G_BEGIN_DECLS

/* Exit codes of every command. */
enum {
	CLI_EXIT_OK = 0,
	CLI_EXIT_FAILED = 1, /* the migration failed or was refused */
	CLI_EXIT_USAGE = 2,  /* bad or missing option */
};

/* ---- file descriptors: GLib 2.74 has no g_autofd ---- */

static inline void cli_closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* An int fd closed when it goes out of scope (if >= 0). Take it over with g_steal_fd()-like swaps. */
#define cli_autofd __attribute__((cleanup(cli_closep)))

static inline int cli_steal_fd(int *fd)
{
	int r = *fd;

	*fd = -1;
	return r;
}

/* ---- parsing ---- */

/*
 * Parses a byte count: digits with an optional suffix K, M, G or T (powers of 1024; "KiB", "kb"
 * and friends accepted too). Returns 0 and the value in *ret, or -EINVAL (untouched *ret).
 */
int cli_parse_size(const char *text, uint64_t *ret);

/* Parses an unsigned decimal in [min, max]. Returns 0 or -EINVAL. */
int cli_parse_uint(const char *text, uint64_t min, uint64_t max, uint64_t *ret);

/*
 * Splits "HOST:PORT" or "[V6ADDR]:PORT" (port 0..65535, numeric). Returns 0 with newly allocated
 * strings in *ret_host and *ret_port, or -EINVAL with the reason in *error.
 */
int cli_parse_hostport(const char *text, char **ret_host, char **ret_port, GError **error);

/* One --ram or --tags argument: [NAME=]PATH. name is NULL when not given. */
typedef struct cli_file_spec {
	char *name;
	char *path;
} cli_file_spec;

/*
 * Parses a list of [NAME=]PATH arguments (NULL: none). An empty name or path is -EINVAL with the
 * reason in *error. Returns 0 and a GPtrArray of cli_file_spec in *ret (freeing frees the specs).
 */
int cli_parse_file_specs(const char *option, char **args, GPtrArray **ret, GError **error);

/* Name of --ram spec index: its NAME, or "ram<index>" (newly allocated). */
char *cli_ram_name(const cli_file_spec *spec, unsigned index);

/*
 * Pairs --tags specs with --ram specs: a named --tags goes with the --ram of that name (given or
 * default), an unnamed one with the --ram at its position. Either every --ram gets exactly one
 * --tags or there are none. Fills ret_tags_of_ram[ram->len] with a --tags index, or -1 when no
 * --tags was given. Returns 0 or -EINVAL with the reason in *error.
 */
int cli_pair_tags(GPtrArray *ram, GPtrArray *tags, int *ret_tags_of_ram, GError **error);

/* ---- mapped files ---- */

typedef struct cli_map {
	char *path;
	void *addr;     /* NULL for an empty file */
	uint64_t size;
	bool writable;
} cli_map;

/*
 * Maps path MAP_SHARED, read-only or read-write, at an address aligned to 64 KiB (every page size). Returns 0 or -errno with a message naming the file
 * in *error. Free with cli_map_free() (unmaps).
 */
int cli_map_open(const char *path, bool writable, cli_map **ret, GError **error);

/* Size of path in bytes: 0 and *ret, -ENOENT when it does not exist, or another -errno (*error). */
int cli_file_size(const char *path, uint64_t *ret, GError **error);

/* Creates path (which must not exist) with size bytes of zeros. Returns 0 or -errno (*error). */
int cli_file_create(const char *path, uint64_t size, GError **error);

/*
 * Maps size bytes of anonymous zeroed memory, 64 KiB aligned (path "(anonymous)"); populate faults
 * it in now, so that a later measurement does not pay for it. Returns 0 or -errno (*error).
 */
int cli_map_anon(uint64_t size, bool populate, cli_map **ret, GError **error);

/* msync()s the mapping. Returns 0 or -errno (*error). */
int cli_map_sync(cli_map *map, GError **error);

void cli_map_free(cli_map *map);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(cli_map, cli_map_free)

/*
 * Parses the options of command cmd with one GOptionContext (so `tagmig CMD --help` shows them):
 * argv[0] is the command name. Returns 0, or CLI_EXIT_USAGE after printing the error and a hint.
 * Positional arguments are refused.
 */
int cli_parse_options(const char *cmd, const char *summary, const char *description,
		      const GOptionEntry *entries, int *argc, char ***argv);

/* ---- reporting ---- */

/* User + system CPU seconds of the whole process so far. */
double cli_cpu_seconds(void);

/* Monotonic seconds. */
double cli_now(void);

/* "1.5 GiB": IEC units, ASCII only (g_format_size() uses a no-break space). Newly allocated. */
char *cli_format_bytes(uint64_t bytes);

/* Prints "tagmig: MESSAGE" on stderr and returns CLI_EXIT_FAILED. */
int cli_fail(const GError *error);

/* Prints "tagmig: MESSAGE" on stderr and returns CLI_EXIT_FAILED. */
int cli_failf(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

/* Prints "tagmig CMD: MESSAGE" and a hint to --help on stderr; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/* What a command reports at its end; shared by the JSON and the human output. */
typedef struct cli_summary {
	const char *command;  /* "demo", "send", "recv" */
	const tm_stats *stats;
	uint64_t bytes;       /* guest bytes migrated (every round counted) */
	double wall_seconds;  /* migration time seen by the tool */
	double cpu_seconds;   /* process CPU time spent on the migration */
	int verified;         /* 1 yes, 0 no, -1 not checked (left out of the output) */
	unsigned blocks;
} cli_summary;

/* Appends s to out as a JSON string literal (quotes and escapes included). */
void cli_json_append_string(GString *out, const char *s);

/* Writes the summary as one JSON object and a newline to stdout. */
void cli_print_json(const cli_summary *s);

/* Writes the one-line human summary to stderr. */
void cli_print_human_line(const cli_summary *s);

/* ---- progress bar ---- */

/* Fills *done and *total (total 0: unknown). Called from the progress thread. */
typedef void (*cli_progress_fn)(void *opaque, uint64_t *done, uint64_t *total, uint64_t *bytes);

typedef struct cli_progress cli_progress;

/*
 * Starts a thread that redraws a progress bar on stderr about ten times a second, if stderr is a
 * terminal; otherwise does nothing and returns NULL. fn must stay callable until cli_progress_stop.
 */
cli_progress *cli_progress_start(const char *label, cli_progress_fn fn, void *opaque);

/* Stops the thread, clears the bar line. NULL: no-op. */
void cli_progress_stop(cli_progress *progress);

/* ---- commands ---- */

int cli_cmd_demo(int argc, char **argv);
int cli_cmd_send(int argc, char **argv);
int cli_cmd_recv(int argc, char **argv);

/* A usage error (exit 2) unless io is NULL or a backend name the library knows. */
int cli_check_io(const char *cmd, const char *io);

/*
 * The end of a send or recv: the io note, then the JSON object (json) or the human line, for
 * bytes of RAM moved since t0 (cli_now()) with cpu0 (cli_cpu_seconds()) at that time.
 */
void cli_report(const char *cmd, const tm_stats *st, uint64_t bytes, double t0, double cpu0,
		unsigned blocks, bool json);

/* Says on stderr why the default I/O backend was not used, if it was not. */
void cli_print_io_note(const tm_stats *st);

#define CLI_IO_HELP                                                                               \
	"I/O backend: io_uring (or uring) or sockets; default io_uring where the kernel allows it, " \
	"else sockets (also $TAGMIG_IO)"

/*
 * Writes a throwaway CA, a server certificate for localhost and a client certificate into dir
 * (the layout of docs/tls.md), for `tagmig demo --tls`. Returns 0 or -errno.
 */
int cli_make_tls_creds(const char *dir, GError **error);

/* A temporary directory removed with its files (one level) when it goes out of scope. */
typedef char cli_tmpdir;
void cli_tmpdir_free(char *dir);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(cli_tmpdir, cli_tmpdir_free)

G_END_DECLS
