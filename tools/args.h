/* SPDX-License-Identifier: MIT */
/*
 * The tool's command-line options: one GOptionContext per command, and the values options take
 * (sizes, HOST:PORT, [NAME=]PATH lists, I/O backend names). Bad values are usage errors (exit 2).
 */
#pragma once

#include <stdint.h>

#include <glib.h>

G_BEGIN_DECLS

/*
 * Parses the options of command cmd with one GOptionContext (so `tagmig CMD --help` shows them):
 * argv[0] is the command name. Returns 0, or CLI_EXIT_USAGE after printing the error and a hint.
 * Positional arguments are refused.
 */
int cli_parse_options(const char *cmd, const char *summary, const char *description,
		      const GOptionEntry *entries, int *argc, char ***argv);

/*
 * Parses a byte count: digits with an optional suffix K, M, G or T (powers of 1024; "KiB", "kb"
 * and friends accepted too). Returns 0 and the value in *ret, or -EINVAL (untouched *ret).
 */
int cli_parse_size(const char *text, uint64_t *ret);

/* A rate: a size (cli_parse_size) per second, "/s" optional ("100M/s", "1G"). 0 or -EINVAL. */
int cli_parse_rate(const char *text, uint64_t *ret);

/*
 * A duration in microseconds: a number with a unit us, ms or s ("50ms", "0.5s"); a bare number
 * is milliseconds. At most one hour. Returns 0 or -EINVAL (untouched *ret).
 */
int cli_parse_duration_us(const char *text, uint64_t *ret);

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

/* A usage error (exit 2) unless io is NULL or a backend name the library knows. */
int cli_check_io(const char *cmd, const char *io);

#define CLI_IO_HELP                                                                               \
	"I/O backend: io_uring (or uring) or sockets; default io_uring where the kernel allows it, " \
	"else sockets (also $TAGMIG_IO)"

#define CLI_COMPRESS_HELP                                                                         \
	"Page data compression: auto (default: per channel whatever moves data fastest), none, "   \
	"lz4, zstd or zstd:LEVEL (-7..19); agreed with the receiver, protocol 2 only"

#define CLI_DELTA_CACHE_HELP                                                                      \
	"Bytes of last-sent page copies kept per channel, so that a page sent again goes as a "   \
	"delta against its last copy when that is much smaller (protocol 2, not with postcopy; "  \
	"0: off; else 1M..1T)"

/*
 * --delta-cache SIZE of command cmd: 0 (off) or 1 MiB..1 TiB into *ret. Returns 0, or the usage
 * error's exit status.
 */
int cli_parse_delta_cache(const char *cmd, const char *text, uint64_t *ret);

#define CLI_DELTA_POLICY_HELP                                                                     \
	"When a re-sent page goes as a delta: auto (default: per channel, only while the link, "  \
	"not this host's CPU, is the bottleneck) or always (whenever the delta is small enough)"

/* --delta-policy auto|always of command cmd into *ret (TM_DELTA_*). Returns 0, or the usage
 * error's exit status. */
int cli_parse_delta_policy(const char *cmd, const char *text, uint32_t *ret);

G_END_DECLS
