/* SPDX-License-Identifier: MIT */
#include "env.h"

const char *cli_env_io_backend(const char *configured)
{
	if (configured && *configured)
		return configured;
	const char *env = g_getenv("TAGMIG_IO");
	return env && *env ? env : NULL;
}

void cli_env_sender_config(tm_sender_config *cfg)
{
	cfg->io_backend = cli_env_io_backend(cfg->io_backend);
}

void cli_env_receiver_config(tm_receiver_config *cfg)
{
	cfg->io_backend = cli_env_io_backend(cfg->io_backend);
}
