/* SPDX-License-Identifier: MIT */
/*
 * What every command of the tagmig tool shares: its exit statuses, how it says why it failed (one
 * line on stderr), an auto-closing fd, and the entry point of each command. The rest lives in one
 * file per idea: args.h (options), map.h (RAM and tag files), report.h (the summary and the
 * measurements behind it), progress.h (the progress bar), demo-creds.h (`demo --tls`).
 *
 * The tool uses the library's public API only (include/tagmig/), like any VMM. Only tools/ prints;
 * the library never does.
 */
#pragma once

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

/* ---- failing (cli.c) ---- */

/* Prints "tagmig: MESSAGE" on stderr and returns CLI_EXIT_FAILED. */
int cli_fail(const GError *error);

/* Prints "tagmig: MESSAGE" on stderr and returns CLI_EXIT_FAILED. */
int cli_failf(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

/*
 * Prints "tagmig CMD: MESSAGE" and a hint to --help on stderr (cmd NULL: "tagmig: MESSAGE" and
 * the hint to `tagmig --help`); returns CLI_EXIT_USAGE.
 */
int cli_usage_error(const char *cmd, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/* ---- commands: argv[0] is the command name; each returns an exit code ---- */

int cli_cmd_demo(int argc, char **argv);
int cli_cmd_send(int argc, char **argv);
int cli_cmd_recv(int argc, char **argv);

G_END_DECLS
