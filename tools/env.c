/* SPDX-License-Identifier: MIT */
#include "env.h"

const char *cli_env_io_backend(const char *configured)
{
	if (configured && *configured)
		return configured;
	const char *env = g_getenv("TAGMIG_IO");
	return env && *env ? env : NULL;
}

void cli_env_tuning(tm_tuning *t)
{
	const char *zc = g_getenv("TAGMIG_ZEROCOPY");
	if (g_strcmp0(zc, "0") == 0)
		t->zerocopy = -1;
	else if (g_strcmp0(zc, "1") == 0)
		t->zerocopy = 1;
	if (g_strcmp0(g_getenv("TAGMIG_TLS_RECORDS"), "openssl") == 0)
		t->tls_openssl_records = true;
	if (g_strcmp0(g_getenv("TAGMIG_KTLS"), "0") == 0)
		t->no_ktls = true;
}

void cli_env_sender_config(tm_sender_config *cfg)
{
	cfg->io_backend = cli_env_io_backend(cfg->io_backend);
	cli_env_tuning(&cfg->tuning);
}

void cli_env_receiver_config(tm_receiver_config *cfg)
{
	cfg->io_backend = cli_env_io_backend(cfg->io_backend);
	cli_env_tuning(&cfg->tuning);
}
