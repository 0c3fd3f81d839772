/* SPDX-License-Identifier: MIT */
/* Built when liburing was not found: the backend exists by name and says why it cannot run. */
#include <errno.h>

#include "tagmig/error.h"
#include "transport/transport.h"

static int probe(GError **error)
{
	g_set_error(error, TM_ERROR, EOPNOTSUPP,
		    "io_uring cannot run: this build of tagmig has no liburing (install liburing-dev "
		    "and rebuild)");
	return -EOPNOTSUPP;
}

static int no_io(tm_io *io, const struct iovec *iov, unsigned n, size_t len)
{
	return -EOPNOTSUPP;
}

const tm_transport_ops tm_transport_io_uring = {
	.name = "io_uring",
	.probe = probe,
	.send = no_io,
	.recv = no_io,
};
