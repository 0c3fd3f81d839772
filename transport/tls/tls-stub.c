/* SPDX-License-Identifier: MIT */
/*
 * TLS in a build without it (meson -Dtls=disabled, or no OpenSSL 3 with -Dtls=auto): a session
 * that asks for TLS is refused at setup with the reason (-EOPNOTSUPP); nothing else changes.
 * No TLS handle ever exists, so the calls on handles have nothing to do.
 */
#include <errno.h>

#include "tagmig/error.h"
#include "transport/tls/tls.h"

int tm_tls_available(GError **error)
{
	g_set_error(error, TM_ERROR, EOPNOTSUPP, "TLS is not available: this libtagmig was built "
		    "without TLS (meson -Dtls=disabled, or OpenSSL 3 missing at build time)");
	return -EOPNOTSUPP;
}

int tm_tls_ctx_new(tm_tls_role role, const char *creds_dir, const char *hostname,
		   tm_tls_ctx **ret, GError **error)
{
	g_set_error(error, TM_ERROR, EOPNOTSUPP,
		    "TLS (credentials %s) is not available: this libtagmig was built without TLS "
		    "(meson -Dtls=disabled, or OpenSSL 3 missing at build time)",
		    creds_dir ? creds_dir : "none");
	return -EOPNOTSUPP;
}

void tm_tls_ctx_free(tm_tls_ctx *ctx)
{
}

int tm_tls_ctx_set_authz(tm_tls_ctx *ctx, const char *const *subjects, GError **error)
{
	return tm_tls_available(error);
}

void tm_tls_ctx_tune(tm_tls_ctx *ctx, const tm_tuning *t)
{
}

int tm_tls_wrap(tm_tls_ctx *ctx, tm_io **io, GError **error)
{
	g_set_error(error, TM_ERROR, EOPNOTSUPP, "this libtagmig was built without TLS");
	return -EOPNOTSUPP;
}

int tm_tls_shutdown(tm_io *io, GError **error)
{
	return 0;
}

int tm_tls_close_notify(tm_io *io, GError **error)
{
	return 0;
}

bool tm_tls_active(const tm_io *io)
{
	return false;
}

void tm_tls_fill_stats(const tm_tls_ctx *ctx, const tm_io *io, tm_stats *ret)
{
}
