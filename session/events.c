/* SPDX-License-Identifier: MIT */
/*
 * What a VMM's main loop sees of a session without blocking (docs/design/live-engine.md 1.5):
 * its phase, the event bits accumulated since they were last taken, and an eventfd that is
 * readable while some are waiting. Setter order is bits, then the eventfd; taker order is the
 * eventfd, then the bits: a bit is never lost, a wake may be spurious.
 */
#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "session/session-internal.h"
#include "tagmig/error.h"

int tm_events_init(tm_events *e, GError **error)
{
	e->bits = 0;
	e->phase = TM_PHASE_SETUP;
	e->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	e->cancel_fd = e->fd >= 0 ? eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC) : -1;
	if (e->cancel_fd < 0) {
		int err = errno;
		if (e->fd >= 0)
			close(e->fd);
		e->fd = -1;
		g_set_error(error, TM_ERROR, err, "eventfd: %s", g_strerror(err));
		return -err;
	}
	return 0;
}

void tm_events_fini(tm_events *e)
{
	if (e->fd >= 0)
		close(e->fd);
	if (e->cancel_fd >= 0)
		close(e->cancel_fd);
	e->fd = e->cancel_fd = -1;
}

void tm_events_raise(tm_events *e, uint32_t bits)
{
	uint64_t one = 1;

	__atomic_fetch_or(&e->bits, bits, __ATOMIC_RELEASE);
	/* Only EAGAIN can fail here (the counter at its maximum): readable anyway. */
	(void)!write(e->fd, &one, sizeof(one));
}

uint32_t tm_events_take(tm_events *e)
{
	uint64_t v;

	(void)!read(e->fd, &v, sizeof(v));
	return __atomic_exchange_n(&e->bits, 0, __ATOMIC_ACQUIRE);
}

void tm_events_set_phase(tm_events *e, tm_phase p)
{
	int cur = __atomic_load_n(&e->phase, __ATOMIC_ACQUIRE);

	do {
		if (cur == TM_PHASE_COMPLETE || cur == TM_PHASE_FAILED || cur == (int)p)
			return;
	} while (!__atomic_compare_exchange_n(&e->phase, &cur, (int)p, false, __ATOMIC_ACQ_REL,
					      __ATOMIC_ACQUIRE));
	if (p == TM_PHASE_FAILED)
		tm_events_raise(e, TM_EVENT_FAILED);
	else if (p == TM_PHASE_COMPLETE)
		tm_events_raise(e, TM_EVENT_COMPLETE);
}

tm_phase tm_events_phase(tm_events *e)
{
	return (tm_phase)__atomic_load_n(&e->phase, __ATOMIC_ACQUIRE);
}

void tm_events_stop(tm_events *e)
{
	uint64_t one = 1;

	/* Never read: it stays readable, so every later connect or accept returns at once too. */
	(void)!write(e->cancel_fd, &one, sizeof(one));
}
