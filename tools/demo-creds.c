/* SPDX-License-Identifier: MIT */
/*
 * Throwaway TLS credentials for `tagmig demo --tls`: a CA, a server certificate for localhost
 * (and 127.0.0.1, ::1) and a client certificate, valid until tomorrow, written in the layout of
 * docs/tls.md. The certificates themselves come from common/testing/tls-creds.c, which the tests
 * share. Real deployments make theirs with scripts/make-tls-creds.sh or their own PKI.
 */
#include <errno.h>

#include <glib/gstdio.h>

#include "demo-creds.h"
#include "tagmig/error.h"

#ifndef TAGMIG_NO_TLS
#include "common/testing/tls-creds.h"

int cli_make_tls_creds(const char *dir, GError **error)
{
	g_autoptr(tls_cred) ca = NULL;
	g_autoptr(tls_cred) server = NULL;
	g_autoptr(tls_cred) client = NULL;
	/* Valid from yesterday: a peer whose clock lags a little still accepts them. */
	int r = tls_cred_new("tagmig demo CA", NULL, NULL, NULL, -1, 1, &ca, error);
	if (r >= 0)
		r = tls_cred_new("localhost", ca, "serverAuth", "DNS:localhost,IP:127.0.0.1,IP:::1",
				 -1, 1, &server, error);
	if (r >= 0)
		r = tls_cred_new("tagmig demo sender", ca, "clientAuth", NULL, -1, 1, &client,
				 error);
	if (r >= 0)
		r = tls_cred_write(ca, dir, "ca", error);
	if (r >= 0)
		r = tls_cred_write(server, dir, "server", error);
	if (r >= 0)
		r = tls_cred_write(client, dir, "client", error);
	if (r < 0)
		g_prefix_error(error, "cannot create TLS credentials in %s: ", dir);
	return r;
}
#else
int cli_make_tls_creds(const char *dir, GError **error)
{
	g_set_error(error, TM_ERROR, EOPNOTSUPP,
		    "--tls: this tagmig was built without TLS (meson -Dtls=disabled)");
	return -EOPNOTSUPP;
}
#endif

void cli_tmpdir_free(char *dir)
{
	if (!dir)
		return;
	g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
	const char *name;
	while (d && (name = g_dir_read_name(d))) {
		g_autofree char *path = g_build_filename(dir, name, NULL);
		g_unlink(path);
	}
	g_rmdir(dir);
	g_free(dir);
}

int cli_demo_creds(bool tls, cli_tmpdir **ret, GError **error)
{
	g_autoptr(cli_tmpdir) dir = NULL;
	int rc;

	*ret = NULL;
	if (!tls)
		return 0;
	dir = g_dir_make_tmp("tagmig-demo-tls-XXXXXX", error);
	if (!dir)
		return -EIO;
	if ((rc = cli_make_tls_creds(dir, error)) < 0)
		return rc;
	*ret = g_steal_pointer(&dir);
	return 0;
}
