/* SPDX-License-Identifier: MIT */
/*
 * Cancel from any thread, and the getters a monitor thread may call (docs/design/live-engine.md
 * 1.5, 3.1). A cancel records its reason as the session's failure (nothing replaces it), sets
 * quit and wakes every waiter: condition variables, the control thread, a connect or accept
 * (their cancel eventfd). The control thread tells the peer (ERROR on control); then, after at
 * most 200 ms, every socket is shut down, which ends every blocked send and receive. Sockets are
 * shut down, never closed: only free closes, after joining the threads that use them.
 */
#include <errno.h>
#include <sys/socket.h>

#include "session/postcopy-recv.h"
#include "session/session-internal.h"
#include "tagmig/error.h"

/* How long a cancel waits for the control thread to send the reason before the sockets go. */
#define CANCEL_GRACE_MS 200u

static bool terminal(tm_events *e)
{
	tm_phase p = tm_events_phase(e);
	return p == TM_PHASE_COMPLETE || p == TM_PHASE_FAILED;
}

static GError *cancel_error(const char *side, const char *reason)
{
	return g_error_new(TM_ERROR, ECANCELED, "%s cancelled: %s", side,
			   reason && *reason ? reason : "cancelled");
}

static void shut(int fd)
{
	if (fd >= 0)
		shutdown(fd, SHUT_RDWR);
}

int tm_sender_cancel(tm_sender *s, const char *reason)
{
	g_mutex_lock(&s->lock);
	/* A paused postcopy has quit already; cancel is what gives it up (FAILED). */
	bool paused = tm_events_phase(&s->events) == TM_PHASE_POSTCOPY_PAUSED;
	/* Too late once the end is decided with RESUME_CONTROL (control.h): the destination
	 * completes whatever follows, and a cancel would only make finish() say otherwise.
	 * (Without it, the close that commits the destination may still fail: a cancel meanwhile
	 * is taken, and gives a paused postcopy up, as before the decision.) */
	if ((s->quit && !paused) || terminal(&s->events) ||
	    (s->control.committed && s->control.resume)) {
		g_mutex_unlock(&s->lock);
		return -EALREADY;
	}
	tm_failure_record(&s->failure, cancel_error("sender", reason), false);
	s->failure.cancelled = true;
	s->quit = true;
	tm_sender_wake_all(s);
	g_mutex_unlock(&s->lock);
	tm_events_set_phase(&s->events, TM_PHASE_FAILED);

	g_mutex_lock(&s->lock);
	tm_control_await_error_locked(&s->control, CANCEL_GRACE_MS);
	/* Setup included: what connect/attach opened so far is visible under the lock. */
	for (unsigned i = 0; i < s->nch; i++) {
		shut(s->chans[i].ch.fd);
		if (s->chans[i].ch.io)
			tm_io_cancel(s->chans[i].ch.io);
	}
	shut(s->ctl.fd);
	shut(s->pc.urg.fd); /* the return thread may be blocked in a send */
	g_mutex_unlock(&s->lock);
	return 0;
}

int tm_receiver_cancel(tm_receiver *r, const char *reason)
{
	g_mutex_lock(&r->lock);
	/* Postcopy paused: a cancel gives the VM up (3.4: FAILED). */
	bool paused = tm_events_phase(&r->events) == TM_PHASE_POSTCOPY_PAUSED;
	if ((r->quit && !paused) || terminal(&r->events)) {
		g_mutex_unlock(&r->lock);
		return -EALREADY;
	}
	tm_failure_record(&r->failure, cancel_error("receiver", reason), false);
	r->failure.cancelled = true;
	__atomic_store_n(&r->quit, true, __ATOMIC_RELAXED);
	g_cond_broadcast(&r->cond);
	tm_control_wake(&r->control);
	tm_events_stop(&r->events);
	g_mutex_unlock(&r->lock);
	tm_events_set_phase(&r->events, TM_PHASE_FAILED);

	g_mutex_lock(&r->lock);
	tm_control_await_error_locked(&r->control, CANCEL_GRACE_MS);
	for (unsigned k = 0; k < TM_HS_SLOTS; k++)
		shut(r->setup_fds[k]); /* those whose HELLO accept or attach awaits */
	for (unsigned i = 0; r->chans && i < r->nch; i++)
		shut(r->chans[i].ch.fd);
	shut(r->ctl.fd);
	tm_pc_recv_quit(r); /* postcopy: the fault and urgent threads, the urgent connection */
	g_mutex_unlock(&r->lock);
	return 0;
}

tm_phase tm_sender_phase(tm_sender *s)
{
	return tm_events_phase(&s->events);
}

tm_phase tm_receiver_phase(tm_receiver *r)
{
	return tm_events_phase(&r->events);
}

int tm_sender_event_fd(tm_sender *s)
{
	return s->events.fd;
}

int tm_receiver_event_fd(tm_receiver *r)
{
	return r->events.fd;
}

uint32_t tm_sender_take_events(tm_sender *s)
{
	return tm_events_take(&s->events);
}

uint32_t tm_receiver_take_events(tm_receiver *r)
{
	return tm_events_take(&r->events);
}
