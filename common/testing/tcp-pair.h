/* SPDX-License-Identifier: MIT */
/* Loopback sockets for tests and benchmarks that drive channels without a session. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/*
 * A connected TCP pair over 127.0.0.1 on a port the kernel picks, both ends close-on-exec and
 * blocking. Returns 0 with both fds (the caller closes them), or -errno with error naming the
 * step that failed and the out-parameters untouched. Thread-safe.
 */
int tcp_pair(int *ret_client, int *ret_server, GError **error);

G_END_DECLS
