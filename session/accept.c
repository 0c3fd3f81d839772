/* SPDX-License-Identifier: MIT */
/*
 * The receiver's listener: connections arrive until the session has all of its own, and any
 * other connection (a port scan, garbage, an immediate close, a failed TLS authentication, a
 * handshake that trickles past its deadline) is dropped without ending the session, up to
 * TM_MAX_STRANGERS of them and within the accept deadline. Connections are handshaken one at a
 * time and the dropped ones leave a count and the first reason: O(1) memory however many come.
 */
#include <errno.h>

#include "session/session-internal.h"
#include "tagmig/error.h"

int64_t tm_handshake_deadline(unsigned timeout_ms)
{
	unsigned ms = timeout_ms ? MIN(timeout_ms, TM_HANDSHAKE_DEADLINE_MS) : TM_HANDSHAKE_DEADLINE_MS;
	return tm_now_us() + (int64_t)ms * 1000;
}

int64_t tm_receiver_handshake_deadline(const tm_receiver *r, int64_t accept_deadline_us)
{
	int64_t d = tm_handshake_deadline(r->cfg.timeout_ms);
	return accept_deadline_us ? MIN(d, accept_deadline_us) : d;
}

void tm_strangers_clear(tm_strangers *st)
{
	g_clear_pointer(&st->first, g_free);
	st->dropped = 0;
}

int tm_receiver_accept_one(tm_receiver *r, int listen_fd, int64_t deadline_us,
			   tm_strangers *st, GError **error)
{
	for (;;) {
		int64_t left_ms = (deadline_us - tm_now_us()) / 1000;
		if (left_ms <= 0)
			return -ETIMEDOUT;
		int fd = tm_net_accept(listen_fd, (unsigned)MIN(left_ms, (int64_t)G_MAXUINT),
				       r->events.cancel_fd, error);
		if (fd < 0) {
			if (fd == -ETIMEDOUT)
				g_clear_error(error);
			return fd;
		}
		g_autoptr(GError) local = NULL;
		bool stranger = false;
		int ret = tm_receiver_place_cancellable(r, fd,
							tm_receiver_handshake_deadline(r, deadline_us),
							&stranger, &local);
		if (ret == 0)
			return 0;
		if (ret > 0) /* a setup redial replaced a broken connection: counted (resume.h) */
			g_set_error_literal(&local, TM_ERROR, ECONNRESET,
					    "a connection broke during setup and was dialled again");
		else if (!stranger) {
			g_propagate_error(error, g_steal_pointer(&local));
			return ret;
		}
		/* The first reason explains the most: a sender refused by TLS closes its other
		 * channels, and those closes come after. */
		if (!st->dropped++)
			st->first = g_strdup(local->message);
		if (st->dropped >= TM_MAX_STRANGERS) {
			g_set_error(error, TM_ERROR, ret > 0 ? ECONNRESET : -ret,
				    "%u connections failed their handshake, the most a session "
				    "tolerates (the first: %s)",
				    st->dropped, st->first);
			return ret > 0 ? -ECONNRESET : ret;
		}
	}
}

void tm_strangers_explain(const tm_strangers *st, GError **error)
{
	if (!st->dropped || !error || !*error)
		return;
	g_autofree char *msg = (*error)->message;
	(*error)->message = g_strdup_printf("%s; %u other connection%s dropped, the first: %s",
					    msg, st->dropped, st->dropped == 1 ? "" : "s", st->first);
}
