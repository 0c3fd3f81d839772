/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>

#include "tagmig/error.h"
#include "transport.h"

static const tm_transport_ops *const backends[] = {
	&tm_transport_io_uring,
	&tm_transport_socket,
};

static const tm_transport_ops *find(const char *name)
{
	if (g_strcmp0(name, "uring") == 0)
		name = "io_uring";
	for (size_t i = 0; i < G_N_ELEMENTS(backends); i++)
		if (g_strcmp0(backends[i]->name, name) == 0)
			return backends[i];
	return NULL;
}

static int probe(const tm_transport_ops *ops, GError **error)
{
	return ops->probe ? ops->probe(error) : 0;
}

const char *tm_io_backend_default(void)
{
	/* io_uring's probe answers once per process (the hook's contract, transport.h). */
	return probe(&tm_transport_io_uring, NULL) == 0 ? tm_transport_io_uring.name
							: tm_transport_socket.name;
}

int tm_io_backend_probe(const char *name, GError **error)
{
	const tm_transport_ops *ops = find(name);
	if (!ops) {
		g_set_error(error, TM_ERROR, ENOENT,
			    "unknown I/O backend '%s' (io_uring, sockets)", name ? name : "(null)");
		return -ENOENT;
	}
	return probe(ops, error);
}

int tm_transport_lookup(const char *name, const tm_transport_ops **ret, char **ret_note,
			GError **error)
{
	/* No environment here: the tools map $TAGMIG_IO onto the config (tools/env.c). */
	const char *want = name;

	if (want && *want) {
		/* Asked for by name: it runs or the caller learns why not. */
		const tm_transport_ops *ops = find(want);
		if (!ops) {
			g_set_error(error, TM_ERROR, ENOENT,
				    "unknown I/O backend '%s' (io_uring, sockets)", want);
			return -ENOENT;
		}
		int r = probe(ops, error);
		if (r < 0)
			return r;
		*ret = ops;
		return 0;
	}
	g_autoptr(GError) why = NULL;
	if (probe(&tm_transport_io_uring, &why) == 0) {
		*ret = &tm_transport_io_uring;
		return 0;
	}
	if (ret_note)
		*ret_note = g_strdup_printf("io_uring unavailable, using sockets: %s", why->message);
	*ret = &tm_transport_socket;
	return 0;
}
