/* SPDX-License-Identifier: MIT */
/* A progress bar on stderr while a migration runs, drawn only when stderr is a terminal. */
#pragma once

#include <stdint.h>

#include <glib.h>

G_BEGIN_DECLS

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

G_END_DECLS
