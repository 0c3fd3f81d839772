/* SPDX-License-Identifier: MIT */
/*
 * Which failure explains a session's end: the first one, unless the peer's own ERROR message
 * arrives, which says more than the broken connection it leaves behind.
 */
#include <errno.h>

#include "session/session-internal.h"

bool tm_failure_record(tm_failure *f, GError *err, bool from_peer)
{
	/*
	 * A peer whose only complaint is a broken connection explains nothing more: when this side
	 * failed first, that is this side's own shutdown coming back (an echo, possibly read on
	 * another connection than the one that failed).
	 */
	bool echo = err->code == ECONNRESET || err->code == EPIPE;
	if (!f->error || (from_peer && !echo && !f->from_peer && !f->cancelled)) {
		g_clear_error(&f->error);
		f->error = err;
		f->from_peer = from_peer;
		return true;
	}
	g_error_free(err);
	return false;
}
