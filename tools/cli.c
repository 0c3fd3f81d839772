/* SPDX-License-Identifier: MIT */
/*
 * How a command says why it failed: one line on stderr and its exit status (cli.h). Every line
 * goes through tm_escape_untrusted(): messages quote the peer (its ERROR, its block names).
 */
#include <stdarg.h>
#include <stdio.h>

#include "cli.h"
#include "common/escape.h"

int cli_fail(const GError *error)
{
	g_autofree char *shown = tm_escape_untrusted(error ? error->message : "unknown error");
	fprintf(stderr, "tagmig: %s\n", shown);
	return CLI_EXIT_FAILED;
}

int cli_failf(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	g_autofree char *msg = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	g_autofree char *shown = tm_escape_untrusted(msg);
	fprintf(stderr, "tagmig: %s\n", shown);
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
