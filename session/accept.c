/* SPDX-License-Identifier: MIT */
/*
 * The receiver's listener: connections arrive until the session has all of its own, and any
 * other connection (a port scan, garbage, an immediate close, a failed TLS authentication, a
 * handshake that trickles past its deadline) is dropped without ending the session, up to
 * tm_strangers_bound() of them and within the accept deadline (tm_accept_clock: moved on by the
 * session's progress while a setup redial may come). Up to TM_HANDSHAKES_AT_ONCE
 * connections are handshaken at once (TLS, then their HELLO read and decoded), each in a thread
 * of its own, so one that went silent (a connection cut on one side only, a stalled peer) holds
 * one of them until its deadline and not the session's other connections; the listener takes no
 * more while all are busy (the kernel's backlog holds the rest). HELLOs are placed one at a time,
 * on the accepting thread, in the order their handshakes finish. The dropped ones leave a count
 * and the first reason: O(1) memory however many come.
 *
 * tm_receiver_attach() feeds the same pool from the VMM's sockets (every one at once, each in a
 * slot of its own beyond those TM_HANDSHAKES_AT_ONCE: the sender sets its connections up one at
 * a time in its own order, so an attached socket waiting for a slot could hold the one the
 * sender's handshake waits for) and, with the reconnect hook, from a thread that calls the hook
 * while the accept runs and hands one connection at a time over (the hook's own backlog holds
 * the rest), so that a setup redial finds the receiver accepting as on a listener (tm_accept_src
 * in session-internal.h). An attached socket's handshake deadline starts with its first byte
 * (attached_deadline()).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "session/resume.h"
#include "session/session-internal.h"
#include "tagmig/error.h"

/* The hook's timeout per call during the accept: the most its end waits for the hook's thread. */
#define ACCEPT_HOOK_MS 100u

int64_t tm_handshake_deadline(unsigned timeout_ms)
{
	unsigned ms = timeout_ms ? MIN(timeout_ms, TM_HANDSHAKE_DEADLINE_MS) : TM_HANDSHAKE_DEADLINE_MS;
	return tm_now_us() + (int64_t)ms * 1000;
}

void tm_accept_clock_start(const tm_receiver *r, tm_accept_clock *clk)
{
	clk->start_us = tm_now_us();
	clk->deadline_us = clk->start_us + (int64_t)r->cfg.timeout_ms * 1000;
}

void tm_accept_clock_progress(const tm_receiver *r, tm_accept_clock *clk)
{
	if (!tm_setup_redial_possible(r))
		return; /* nothing dials again: the first deadline stays */
	int64_t t = (int64_t)r->cfg.timeout_ms * 1000;
	unsigned rms = r->live.resume_deadline_ms; /* tm_live_config_load() set the default */
	/* The sender redials after timeout_ms of silence since its last HELLO (about our last
	 * progress); half as much again lets its round of redials come in. */
	int64_t d = MIN(tm_now_us() + t + t / 2, clk->start_us + t + (int64_t)rms * 1000);
	clk->deadline_us = MAX(clk->deadline_us, d);
}

int64_t tm_receiver_handshake_deadline(const tm_receiver *r, int64_t accept_deadline_us)
{
	int64_t d = tm_handshake_deadline(r->cfg.timeout_ms);
	return accept_deadline_us ? MIN(d, accept_deadline_us) : d;
}

/* One handshake under way: its thread owns fd and res until it set done. */
typedef struct hs_slot {
	struct tm_hs_pool *pool;
	unsigned k;          /* its index: r->setup_fds[k] */
	GThread *thread;     /* NULL: free */
	int fd;
	int attached;        /* its index in the attached sockets, or -1 */
	uint64_t seq;        /* the order it was accepted in */
	int64_t deadline_us;
	/* written by the thread before done; read by the accepting thread after */
	int ret;
	GError *err;
	tm_hs_result res;
	bool done;           /* atomic */
} hs_slot;

struct tm_hs_pool {
	tm_receiver *r;
	int wake_fd;         /* eventfd: a handshake finished */
	unsigned busy;
	unsigned busy_attached; /* of them, the VMM's attached sockets */
	uint64_t accepted;
	bool stop;           /* protected by r->lock: the accept ended, handshakes end at once */
	bool hook_off;       /* protected by r->lock: no redial can come, the hook is not called */
	int64_t accept_deadline_us; /* the accept's deadline as it moves (atomic) */
	hs_slot slot[TM_HS_SLOTS];
	/* attach mode with the reconnect hook */
	GThread *hook_thread; /* calls the hook while the accept runs, or NULL */
	int hook_fd;         /* protected by r->lock: its connection not taken yet, or -1 (the
	                      * thread waits on r->cond for it to be taken) */
};

/* Attach mode: the VMM's hook, called until the accept ends (tm_live_config.reconnect). */
static gpointer hook_thread(gpointer data)
{
	struct tm_hs_pool *pool = data;
	tm_receiver *r = pool->r;

	g_mutex_lock(&r->lock);
	for (;;) {
		while (!pool->stop && !pool->hook_off && !r->failure.cancelled && pool->hook_fd >= 0)
			g_cond_wait(&r->cond, &r->lock);
		if (pool->stop || pool->hook_off || r->failure.cancelled)
			break;
		g_mutex_unlock(&r->lock);
		int64_t t0 = tm_now_us();
		int fd = r->live.reconnect(r->live.reconnect_opaque, TM_RECONNECT_ANY,
					   ACCEPT_HOOK_MS);
		/* A hook that fails at once is not called in a busy loop. */
		if (fd < 0 && tm_now_us() - t0 < ACCEPT_HOOK_MS * 100)
			g_usleep(ACCEPT_HOOK_MS * 1000 / 10);
		g_mutex_lock(&r->lock);
		if (fd < 0)
			continue;
		if (pool->stop || pool->hook_off || r->failure.cancelled) {
			close(fd); /* the accept is over: the sender dials again, after it */
			break;
		}
		pool->hook_fd = fd;
		uint64_t one = 1;
		(void)!write(pool->wake_fd, &one, sizeof(one));
	}
	g_mutex_unlock(&r->lock);
	return NULL;
}

/*
 * An attached socket: the VMM connected it before the sender began, and the sender sets its
 * connections up one at a time, so its handshake's clock starts with its first byte (or an end,
 * or a cancel's shutdown), awaited until the accept's deadline (which the session's progress
 * moves on). The deadline for the handshake from then on, as for a listener's connection.
 */
static int64_t attached_deadline(hs_slot *sl)
{
	struct tm_hs_pool *pool = sl->pool;
	for (;;) {
		int64_t until = __atomic_load_n(&pool->accept_deadline_us, __ATOMIC_RELAXED);
		int64_t now = tm_now_us();
		if (now >= until)
			return until; /* silent: the handshake ends at once, saying so */
		struct pollfd p = { .fd = sl->fd, .events = POLLIN };
		/* In steps: the accept's deadline may have moved meanwhile. */
		int n = poll(&p, 1, (int)MIN((until - now + 999) / 1000, (int64_t)ACCEPT_HOOK_MS));
		if (n > 0 || (n < 0 && errno != EINTR))
			return tm_receiver_handshake_deadline(
				pool->r, __atomic_load_n(&pool->accept_deadline_us, __ATOMIC_RELAXED));
	}
}

static gpointer hs_thread(gpointer data)
{
	hs_slot *sl = data;
	tm_receiver *r = sl->pool->r;

	/*
	 * A cancel (or the end of the accept) shuts the connection down while its handshake runs,
	 * through a duplicate that only this thread closes: the channel may close fd itself.
	 */
	g_mutex_lock(&r->lock);
	bool cancelled = r->failure.cancelled || sl->pool->stop;
	r->setup_fds[sl->k] = cancelled ? -1 : fcntl(sl->fd, F_DUPFD_CLOEXEC, 0);
	g_mutex_unlock(&r->lock);
	if (cancelled) {
		close(sl->fd);
		g_set_error_literal(&sl->err, TM_ERROR, ECANCELED, "cancelled");
		sl->ret = -ECANCELED;
	} else {
		if (sl->attached >= 0)
			sl->deadline_us = attached_deadline(sl);
		sl->ret = tm_receiver_read_hello(r, sl->fd, sl->deadline_us, &sl->res, &sl->err);
	}
	g_mutex_lock(&r->lock);
	if (r->setup_fds[sl->k] >= 0)
		close(r->setup_fds[sl->k]);
	r->setup_fds[sl->k] = -1;
	g_mutex_unlock(&r->lock);
	__atomic_store_n(&sl->done, true, __ATOMIC_RELEASE);
	uint64_t one = 1;
	(void)!write(sl->pool->wake_fd, &one, sizeof(one));
	return NULL;
}

/* Handshakes under way of connections other than the VMM's attached sockets. */
static unsigned busy_others(const struct tm_hs_pool *pool)
{
	return pool->busy - pool->busy_attached;
}

/* Joins a finished handshake's thread; the slot is free again, its result left in it. */
static void hs_join(struct tm_hs_pool *pool, hs_slot *sl)
{
	g_thread_join(sl->thread);
	sl->thread = NULL;
	sl->done = false;
	pool->busy--;
	pool->busy_attached -= sl->attached >= 0;
}

void tm_strangers_clear(tm_strangers *st)
{
	struct tm_hs_pool *pool = st->pool;

	if (pool) {
		/* The handshakes still under way are not the session's (it has all of its
		 * connections, or failed): ended at once. */
		g_mutex_lock(&pool->r->lock);
		pool->stop = true; /* one that did not start yet ends at once too */
		for (unsigned k = 0; k < TM_HS_SLOTS; k++)
			if (pool->r->setup_fds[k] >= 0)
				shutdown(pool->r->setup_fds[k], SHUT_RDWR);
		g_cond_broadcast(&pool->r->cond); /* the hook's thread, waiting for a taker */
		g_mutex_unlock(&pool->r->lock);
		if (pool->hook_thread)
			g_thread_join(pool->hook_thread); /* within ACCEPT_HOOK_MS */
		if (pool->hook_fd >= 0)
			close(pool->hook_fd); /* never handshaken: the sender dials it again */
		for (unsigned k = 0; k < TM_HS_SLOTS; k++) {
			hs_slot *sl = &pool->slot[k];
			if (!sl->thread)
				continue;
			hs_join(pool, sl);
			if (sl->ret >= 0) {
				tm_chan_close(&sl->res.ch);
				tm_hello_clear(&sl->res.h);
			}
			g_clear_error(&sl->err);
		}
		close(pool->wake_fd);
		g_free(pool);
		st->pool = NULL;
	}
	g_clear_pointer(&st->first, g_free);
	st->dropped = 0;
	st->first_seq = 0;
}

unsigned tm_strangers_bound(const tm_receiver *r)
{
	return TM_MAX_STRANGERS + (r->chans ? 2 * tm_receiver_connections(r) : 0);
}

/* Starts the handshake of connection fd (attached: its index in fds, or -1) in a free slot
 * (there is one); deadline_us: its end (attached: 0, attached_deadline() sets it). */
static void hs_start(struct tm_hs_pool *pool, int fd, int attached, int64_t deadline_us)
{
	for (unsigned k = 0; k < TM_HS_SLOTS; k++) {
		hs_slot *sl = &pool->slot[k];
		if (sl->thread)
			continue;
		sl->pool = pool;
		sl->k = k;
		sl->fd = fd;
		sl->attached = attached;
		sl->seq = ++pool->accepted;
		sl->deadline_us = deadline_us;
		sl->ret = 0;
		sl->err = NULL;
		sl->done = false;
		pool->busy++;
		pool->busy_attached += attached >= 0;
		sl->thread = g_thread_new("tm-handshake", hs_thread, sl);
		return;
	}
	g_assert_not_reached();
}

/* A finished handshake's slot, or NULL. */
static hs_slot *hs_finished(struct tm_hs_pool *pool)
{
	for (unsigned k = 0; k < TM_HS_SLOTS; k++) {
		hs_slot *sl = &pool->slot[k];
		if (sl->thread && __atomic_load_n(&sl->done, __ATOMIC_ACQUIRE))
			return sl;
	}
	return NULL;
}

/*
 * The next handshake to place: before the session's first HELLO was placed, only the one
 * accepted first (the first HELLO defines the session, and that stays the first connection's,
 * as when connections were handshaken one at a time: a stranger that finishes first must not
 * take its place), or any attached socket that finished (the VMM handed each over as the
 * session's: one that went silent must not hold the others, nor the sender's redial of it,
 * until its deadline); after that, any that finished. NULL: none yet.
 */
static hs_slot *hs_next(tm_receiver *r, struct tm_hs_pool *pool)
{
	if (r->chans)
		return hs_finished(pool);
	for (unsigned k = 0; k < TM_HS_SLOTS; k++) {
		hs_slot *sl = &pool->slot[k];
		if (sl->thread && sl->attached >= 0 && __atomic_load_n(&sl->done, __ATOMIC_ACQUIRE))
			return sl;
	}
	hs_slot *first = NULL;
	for (unsigned k = 0; k < TM_HS_SLOTS; k++) {
		hs_slot *sl = &pool->slot[k];
		if (sl->thread && (!first || sl->seq < first->seq))
			first = sl;
	}
	return first && __atomic_load_n(&first->done, __ATOMIC_ACQUIRE) ? first : NULL;
}

/*
 * Waits until deadline_us for a finished handshake, a cancel or (while a slot is free) a
 * connection on the listener: 0 (*ret_listener: the latter), -ETIMEDOUT, -ECANCELED or another
 * -errno of poll.
 */
static int hs_wait(tm_receiver *r, struct tm_hs_pool *pool, int listen_fd, int64_t deadline_us,
		   bool *ret_listener)
{
	struct pollfd p[3] = { { .fd = pool->wake_fd, .events = POLLIN },
			       { .fd = r->events.cancel_fd, .events = POLLIN },
			       { .fd = listen_fd, .events = POLLIN } };
	unsigned np = busy_others(pool) < TM_HANDSHAKES_AT_ONCE ? 3 : 2;

	*ret_listener = false;
	for (;;) {
		int64_t left_ms = (deadline_us - tm_now_us() + 999) / 1000;
		if (left_ms <= 0)
			return -ETIMEDOUT;
		int n = poll(p, np, (int)MIN(left_ms, (int64_t)G_MAXINT));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			continue;
		if (p[1].revents)
			return -ECANCELED;
		if (p[0].revents) {
			uint64_t v;
			(void)!read(pool->wake_fd, &v, sizeof(v));
		}
		*ret_listener = np == 3 && p[2].revents;
		return 0;
	}
}

static int pool_new(tm_receiver *r, tm_strangers *st, bool hook, GError **error)
{
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fd < 0) {
		int e = errno;
		g_set_error(error, TM_ERROR, e, "eventfd: %s", g_strerror(e));
		return -e;
	}
	st->pool = g_new0(struct tm_hs_pool, 1);
	st->pool->r = r;
	st->pool->wake_fd = fd;
	st->pool->hook_fd = -1;
	if (hook)
		st->pool->hook_thread = g_thread_new("tm-accept-hook", hook_thread, st->pool);
	return 0;
}

/*
 * Every attached socket at once (each has a slot: at most TM_MAX_CONNECTIONS of them), then the
 * hook's connection while fewer than TM_HANDSHAKES_AT_ONCE others run (none past the deadline).
 */
static void hs_feed(tm_receiver *r, struct tm_hs_pool *pool, tm_accept_src *src,
		    const tm_accept_clock *clk)
{
	while (tm_now_us() < clk->deadline_us) {
		int fd = -1, attached = -1;
		if (src->fds && src->next < src->nfds) {
			attached = (int)src->next;
			fd = src->fds[src->next++];
		} else if (src->hook && busy_others(pool) < TM_HANDSHAKES_AT_ONCE) {
			g_mutex_lock(&r->lock);
			fd = pool->hook_fd;
			pool->hook_fd = -1;
			if (fd >= 0)
				g_cond_broadcast(&r->cond); /* the hook's thread calls it again */
			g_mutex_unlock(&r->lock);
		}
		if (fd < 0)
			return;
		/* An attached socket's deadline is set once its first byte comes. */
		hs_start(pool, fd, attached,
			 attached >= 0 ? 0 : tm_receiver_handshake_deadline(r, clk->deadline_us));
	}
}

int tm_receiver_accept_one(tm_receiver *r, tm_accept_src *src, tm_accept_clock *clk,
			   tm_strangers *st, GError **error)
{
	int ret;

	if (!st->pool && (ret = pool_new(r, st, src->hook, error)) < 0)
		return ret;
	struct tm_hs_pool *pool = st->pool;
	int64_t grace_until = 0; /* past the deadline: handshakes under way end (by theirs) */
	for (;;) {
		/* For attached sockets still waiting for their sender (attached_deadline). */
		__atomic_store_n(&pool->accept_deadline_us, clk->deadline_us, __ATOMIC_RELAXED);
		hs_feed(r, pool, src, clk);
		hs_slot *sl = hs_next(r, pool);
		if (grace_until && tm_now_us() < clk->deadline_us)
			grace_until = 0; /* a replacement moved the deadline on */
		if (!sl) {
			bool listener;
			if (grace_until && (!pool->busy || tm_now_us() >= grace_until))
				return -ETIMEDOUT;
			/* Every attached socket tried, none under way, nothing else to come. */
			if (src->listen_fd < 0 && !src->hook && src->next >= src->nfds &&
			    !pool->busy)
				return -ENODATA;
			ret = hs_wait(r, pool, grace_until ? -1 : src->listen_fd,
				      grace_until ? grace_until : clk->deadline_us, &listener);
			if (ret == -ETIMEDOUT && !grace_until && pool->busy) {
				/* Their deadlines are ours at the latest: what they fail with (a
				 * trickle, a silence) explains the wait, as it did one at a time. */
				grace_until = tm_now_us() + (int64_t)TM_ACCEPT_DRAIN_MS * 1000;
				continue;
			}
			if (ret == -ECANCELED)
				g_set_error(error, TM_ERROR, ECANCELED,
					    "waiting for a channel to connect: cancelled");
			else if (ret < 0 && ret != -ETIMEDOUT)
				g_set_error(error, TM_ERROR, -ret, "poll: %s", g_strerror(-ret));
			if (ret < 0)
				return ret;
			int fd = listener ? accept4(src->listen_fd, NULL, NULL, SOCK_CLOEXEC) : -1;
			if (listener && fd < 0 && errno != EINTR && errno != EAGAIN &&
			    errno != ECONNABORTED) {
				int e = errno;
				g_set_error(error, TM_ERROR, e, "accept: %s", g_strerror(e));
				return -e;
			}
			if (fd >= 0)
				hs_start(pool, fd, -1,
					 tm_receiver_handshake_deadline(r, clk->deadline_us));
			continue;
		}
		hs_join(pool, sl);
		g_autoptr(GError) local = g_steal_pointer(&sl->err);
		bool stranger = true; /* a connection whose handshake failed */
		ret = sl->ret;
		g_mutex_lock(&r->lock);
		bool cancelled = r->failure.cancelled;
		g_mutex_unlock(&r->lock);
		if (ret >= 0 && cancelled) {
			tm_chan_close(&sl->res.ch);
			tm_hello_clear(&sl->res.h);
		} else if (ret >= 0) {
			sl->res.ch.setup_seq = sl->seq; /* a redial replaces only older ones */
			ret = tm_receiver_place_hello(r, &sl->res, &stranger, &local);
		}
		if (cancelled) {
			/* The session is over, whatever the connection did. */
			g_set_error(error, TM_ERROR, ECANCELED, "cancelled");
			return -ECANCELED;
		}
		if (ret >= 0) /* the session's: its sender is at work (tm_accept_clock) */
			tm_accept_clock_progress(r, clk);
		if (ret >= 0 && src->hook && !tm_setup_redial_possible(r)) {
			/* Protocol 1, or no RESUME: no redial will come, the hook rests (session.h). */
			g_mutex_lock(&r->lock);
			pool->hook_off = true;
			g_cond_broadcast(&r->cond);
			g_mutex_unlock(&r->lock);
			src->hook = false;
		}
		if (ret >= 0 && src->lost && !tm_setup_redial_possible(r)) {
			/* An attached socket failed before the session was known, and its sender
			 * will not dial it again: the oldest dropped is an attached one (fed first). */
			g_set_error(error, TM_ERROR, ECONNRESET,
				    "%s; not replaced: the sender offered no RESUME (its reconnect hook "
				    "or resume is off)",
				    st->first);
			return -ECONNRESET;
		}
		if (ret == 0)
			return 0;
		if (ret > 0) /* a setup redial replaced a broken connection: counted (resume.h) */
			g_set_error_literal(&local, TM_ERROR, ECONNRESET,
					    "a connection broke during setup and was dialled again");
		else if (sl->attached >= 0)
			g_prefix_error(&local, "attached socket fds[%d]: ", sl->attached);
		/* The VMM's own socket is no stranger: only the sender's redial through the hooks
		 * replaces it, and only in a session that offered RESUME. */
		if (ret < 0 && (!stranger || (sl->attached >= 0 &&
					      (!src->hook || (r->chans && !tm_setup_redial_possible(r)))))) {
			g_propagate_error(error, g_steal_pointer(&local));
			return ret;
		}
		if (ret < 0 && sl->attached >= 0)
			src->lost++; /* its redial is awaited */
		/* The first connection's reason explains the most: a sender refused by TLS closes
		 * its other channels, and those closes may finish their handshakes first. */
		st->dropped++;
		if (!st->first || sl->seq < st->first_seq) {
			g_free(st->first);
			st->first = g_strdup(local->message);
			st->first_seq = sl->seq;
		}
		if (st->dropped >= tm_strangers_bound(r)) {
			g_set_error(error, TM_ERROR, ret > 0 ? ECONNRESET : -ret,
				    "%u connections failed their handshake, the most a session "
				    "tolerates (the first: %s)",
				    st->dropped, st->first);
			return ret > 0 ? -ECONNRESET : ret;
		}
	}
}

void tm_receiver_accept_drain(tm_receiver *r, tm_strangers *st)
{
	struct tm_hs_pool *pool = st->pool;
	int64_t until = tm_now_us() + (int64_t)TM_ACCEPT_DRAIN_MS * 1000;

	while (pool && pool->busy) {
		g_mutex_lock(&r->lock);
		bool cancelled = r->failure.cancelled;
		g_mutex_unlock(&r->lock);
		if (cancelled)
			return;
		hs_slot *sl = hs_finished(pool);
		if (!sl) {
			struct pollfd p = { .fd = pool->wake_fd, .events = POLLIN };
			int64_t left_ms = (until - tm_now_us() + 999) / 1000;
			if (left_ms <= 0 || poll(&p, 1, (int)left_ms) <= 0)
				return; /* the rest are ended by tm_strangers_clear() */
			uint64_t v;
			(void)!read(pool->wake_fd, &v, sizeof(v));
			continue;
		}
		hs_join(pool, sl);
		g_autoptr(GError) local = g_steal_pointer(&sl->err);
		bool stranger;
		if (sl->ret < 0)
			continue;
		/* Only a redial replaces now; any other HELLO is refused, without ending a session
		 * that has all of its connections (as its reconnect thread would refuse it). */
		sl->res.ch.setup_seq = sl->seq;
		(void)tm_receiver_place_hello(r, &sl->res, &stranger, &local);
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
