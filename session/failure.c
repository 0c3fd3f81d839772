/* SPDX-License-Identifier: MIT */
/*
 * Which failure explains a session's end: the first one, unless the peer's own ERROR message
 * arrives, which says more than the broken connection it leaves behind.
 */
#include "session/session-internal.h"

bool tm_failure_record(tm_failure *f, GError *err, bool from_peer)
{
	if (!f->error || (from_peer && !f->from_peer && !f->cancelled)) {
		g_clear_error(&f->error);
		f->error = err;
		f->from_peer = from_peer;
		return true;
	}
	g_error_free(err);
	return false;
}
