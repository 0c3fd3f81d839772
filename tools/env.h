/* SPDX-License-Identifier: MIT */
/*
 * The environment variables the tools honour. The library reads none (configuration enters
 * through its config structs); the tools, and the tests that stand in for them, map each
 * variable onto its config field here, in one place:
 *
 *   TAGMIG_IO            io_backend of the sender and receiver configs, when the command line
 *                        named none
 *   TAGMIG_ZEROCOPY      0: tuning.zerocopy = -1 (never), 1: tuning.zerocopy = 1 (always)
 *   TAGMIG_TLS_RECORDS   openssl: tuning.tls_openssl_records
 *   TAGMIG_KTLS          0: tuning.no_ktls
 */
#pragma once

#include "tagmig/tagmig.h"

/* The I/O backend to configure: configured (a command-line choice) if set, else $TAGMIG_IO. */
const char *cli_env_io_backend(const char *configured);

/* The tuning switches of the environment (TAGMIG_ZEROCOPY, TAGMIG_TLS_RECORDS, TAGMIG_KTLS). */
void cli_env_tuning(tm_tuning *t);

/* Applies the environment to a config the command line filled: fields it left unset only. */
void cli_env_sender_config(tm_sender_config *cfg);
void cli_env_receiver_config(tm_receiver_config *cfg);
