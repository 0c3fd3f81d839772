/* SPDX-License-Identifier: MIT */
/*
 * Throwaway TLS credentials for `tagmig demo --tls`, in a temporary directory that goes away with
 * its files. The certificates come from common/testing/tls-creds.c, which the tests share.
 */
#pragma once

#include <stdbool.h>

#include <glib.h>

G_BEGIN_DECLS

/*
 * Writes a throwaway CA, a server certificate for localhost and a client certificate into dir
 * (the layout of docs/tls.md), for `tagmig demo --tls`. Returns 0 or -errno (*error).
 */
int cli_make_tls_creds(const char *dir, GError **error);

/* A temporary directory removed with its files (one level) when it goes out of scope. */
typedef char cli_tmpdir;
void cli_tmpdir_free(char *dir);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(cli_tmpdir, cli_tmpdir_free)

/* With tls: a new temporary directory holding throwaway credentials (cli_make_tls_creds) in
 * *ret; without: *ret = NULL. Returns 0 or -errno (*error). */
int cli_demo_creds(bool tls, cli_tmpdir **ret, GError **error);

G_END_DECLS
