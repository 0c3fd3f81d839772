/* SPDX-License-Identifier: MIT */
/*
 * Which failure explains a session's end: the first one, unless the peer's own ERROR message
 * arrives, which says more than the broken connection it leaves behind, or the first was only a
 * broken connection and a failure with a reason follows.
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
	/*
	 * And a broken connection recorded first is a consequence, not a cause, when a reason of
	 * its own follows: the peer reacting (closing everything) to what another channel of ours
	 * told it, e.g. a TLS alert, can reach this side before that channel records why.
	 */
	bool had_echo = f->error && !f->cancelled &&
			(f->error->code == ECONNRESET || f->error->code == EPIPE);
	/*
	 * But not by "channel 2: stopped": a worker that stopped because the session had quit
	 * (ECANCELED) says nothing of why. A cancel is never recorded after another failure (the
	 * session has quit then: tm_*_cancel() returns -EALREADY), so this is no cancel.
	 */
	bool stopped = err->code == ECANCELED && !from_peer;
	if (!f->error || (from_peer && !echo && !f->from_peer && !f->cancelled) ||
	    (had_echo && !echo && !stopped)) {
		g_clear_error(&f->error);
		f->error = err;
		f->from_peer = from_peer;
		return true;
	}
	g_error_free(err);
	return false;
}
