/* SPDX-License-Identifier: MIT */
/*
 * tagmig: command-line front end. Dispatches to one command; each command has its own
 * GOptionContext, so `tagmig CMD --help` lists that command's options.
 */
#include <locale.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
} commands[] = {
	{ "demo", cli_cmd_demo, "migrate a synthetic guest over loopback in one process and verify it" },
	{ "send", cli_cmd_send, "send RAM image files (and tag files) to a receiver" },
	{ "recv", cli_cmd_recv, "receive a migration into RAM image files (and tag files)" },
};

static void print_help(FILE *out)
{
	fprintf(out,
		"Usage: tagmig COMMAND [OPTION...]\n"
		"       tagmig --help | --version\n"
		"\n"
		"Live migration of guest RAM and its arm64 MTE memory tags over parallel channels.\n"
		"\n"
		"Commands:\n");
	for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
		fprintf(out, "  %-6s %s\n", commands[i].name, commands[i].summary);
	fprintf(out,
		"\n"
		"Run 'tagmig COMMAND --help' for the options of a command.\n"
		"\n"
		"Exit status: 0 success, 1 migration failed or refused, 2 usage error.\n");
}

int main(int argc, char **argv)
{
	setlocale(LC_ALL, "");

	if (argc < 2)
		return cli_usage_error(NULL, "missing command");
	const char *cmd = argv[1];
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
		if (strcmp(cmd, "help") == 0 && argc > 2) {
			/* `tagmig help send` is `tagmig send --help`. */
			char *help_argv[] = { argv[2], (char *)"--help", NULL };
			for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
				if (strcmp(argv[2], commands[i].name) == 0)
					return commands[i].run(2, help_argv);
			return cli_usage_error(NULL, "unknown command '%s'", argv[2]);
		}
		print_help(stdout);
		return CLI_EXIT_OK;
	}
	if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
		printf("tagmig %s (library %s, wire format versions %u..%u)\n", TAGMIG_VERSION,
		       tm_version(), TM_WIRE_VERSION_MIN, TM_WIRE_VERSION);
		return CLI_EXIT_OK;
	}
	for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
		if (strcmp(cmd, commands[i].name) == 0)
			return commands[i].run(argc - 1, argv + 1);
	}
	if (cmd[0] == '-')
		return cli_usage_error(NULL, "unknown option '%s' (options follow the command)", cmd);
	return cli_usage_error(NULL, "unknown command '%s'", cmd);
}
