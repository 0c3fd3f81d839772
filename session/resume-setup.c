/* SPDX-License-Identifier: MIT */
/*
 * Cuts during setup (docs/wire-format.md, "Setup"; resume.h).
 *
 * Before the receiver sent its HELLO_ACKs nothing is agreed and nothing was sent, so there is
 * nothing to resume: a connection that breaks then (or whose TLS handshake gets no answer in
 * time, or, when no connection got an answer for a handshake deadline, every unanswered one:
 * a HELLO may be lost on a connection cut on the receiver's side only) is simply dialled again,
 * the same HELLO (epoch 0), by the sender, within resume_deadline_ms of the first break. The
 * receiver, still accepting the session's connections, takes such a HELLO in place of the
 * connection it placed for that role (which broke, or is healthy but unanswered: its
 * HELLO_ACK would go nowhere) and counts it with the strangers, so a peer that keeps
 * redialling ends the accept after tm_strangers_bound(). Once a HELLO_ACK gave the
 * secret, a connection whose own HELLO_ACK was lost is resumed at position 0 as any broken one
 * (data channels by their worker, control by the control thread); a redial that comes after
 * the receiver finished accepting is refused by its reconnect thread (epoch 0), and that
 * connection is then resumed the same way.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include "session/resume.h"
#include "tagmig/error.h"

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
static int test_fail_ack;

void tm_setup_test_fail_ack(int which)
{
	__atomic_store_n(&test_fail_ack, which, __ATOMIC_RELAXED);
}
#endif

void tm_setup_test_ack_hook(const tm_receiver *r, unsigned i, tm_chan *ch)
{
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	int which = __atomic_load_n(&test_fail_ack, __ATOMIC_RELAXED);
	/* A send after our own shutdown fails with EPIPE, and the sender sees the close. */
	if (ch->fd >= 0 && ((which == TM_SETUP_TEST_ACK_CONTROL && i == r->nch) ||
			    (which == TM_SETUP_TEST_ACK_URGENT && i == r->nch + 1) ||
			    (which == TM_SETUP_TEST_ACK_DATA && i + 1 == r->nch)))
		shutdown(ch->fd, SHUT_RDWR);
#else
	(void)r;
	(void)i;
	(void)ch;
#endif
}

bool tm_setup_redial_possible(const tm_receiver *r)
{
	/* Only a listener's accept, or an attach with the VMM's reconnect hook (where else would a
	 * redial come?), only while the sender offered RESUME and this receiver would agree it. */
	return (r->setup_redial_ok || r->setup_redial_hook) && r->chans && !r->live.no_resume &&
	       (r->hello.features & TM_FEATURE_RESUME);
}

int tm_setup_replace(tm_receiver *r, const tm_chan *ch, const tm_frame *f, const tm_hello *h)
{
	/* ... and only an epoch 0 HELLO of this session. */
	if (!tm_setup_redial_possible(r) || f->version != r->wire || h->epoch != 0 ||
	    memcmp(r->hello.session_id, h->session_id, sizeof(h->session_id)) != 0)
		return false;
	tm_chan *old;
	bool *used;
	if (h->role == TM_ROLE_CONTROL) {
		old = &r->ctl;
		used = &r->ctl_used;
	} else if (h->role == TM_ROLE_URGENT) {
		old = &r->urg;
		used = &r->urg_used;
	} else if (h->role == TM_ROLE_DATA && h->channel_id < r->nch) {
		old = &r->chans[h->channel_id].ch;
		used = &r->chans[h->channel_id].used;
	} else {
		return false;
	}
	if (!*used)
		return false;
	g_autoptr(GError) err = NULL;
	if (tm_hello_same_session(&r->hello, h, &err) < 0)
		return false; /* check_placement says why */
	/* Handshakes run at once and finish in any order (accept.c): the one accepted later is the
	 * sender's redial, whichever finished first. */
	if (old->setup_seq > ch->setup_seq)
		return -ESTALE;
	/* Nothing was sent on it yet: the new connection takes its place, O(1) as before. Closed
	 * under the lock: a cancel shuts the placed connections down (cancel.c), never a closed
	 * fd whose number another thread may have taken again. */
	g_mutex_lock(&r->lock);
	tm_chan_close(old);
	*used = false;
	g_mutex_unlock(&r->lock);
	return true;
}

tm_chan *tm_setup_chan(tm_sender *s, unsigned idx)
{
	return idx == s->nch + 1 ? &s->pc.urg : idx == s->nch ? &s->ctl : &s->chans[idx].ch;
}

static unsigned hook_connection(const tm_sender *s, unsigned idx)
{
	return idx == s->nch + 1 ? TM_RECONNECT_URGENT : idx == s->nch ? TM_RECONNECT_CONTROL : idx;
}

static const char *conn_name(const tm_sender *s, unsigned idx, char *buf, size_t len)
{
	if (idx == s->nch + 1)
		return "urgent";
	if (idx == s->nch)
		return "control";
	g_snprintf(buf, len, "channel %u", idx);
	return buf;
}

bool tm_setup_redial_wanted(const tm_sender *s, int code)
{
	/* A cut closes or resets, or (cut on the receiver's side only) leaves a connection open
	 * and silent: its handshake runs past its deadline. Either is dialled again; a receiver
	 * that does not answer at all (frozen) fails every redial the same way, and the setup
	 * then ends at resume_deadline_ms, saying so. */
	return s->resume && s->wire == TM_WIRE_VERSION_2 && tm_resume_broken(code);
}

void tm_setup_budget_start(tm_sender *s)
{
	unsigned ms = s->live.resume_deadline_ms; /* tm_live_config_load() set the default */
	/* One budget for the whole setup, from its first break. */
	if (!s->setup_redial.deadline_us)
		s->setup_redial.deadline_us = tm_now_us() + (int64_t)ms * 1000;
}

int64_t tm_setup_handshake_deadline(const tm_sender *s)
{
	/* Half the receiver's (min(timeout_ms, TM_HANDSHAKE_DEADLINE_MS) from its accept): the
	 * connections after a silent one are opened one at a time behind it, and their handshakes
	 * must still end within the receiver's deadlines (accepted at the start, the TCP connects
	 * come first), and so must a redial of it. */
	unsigned ms = MIN(s->cfg.timeout_ms / 2, TM_HANDSHAKE_DEADLINE_MS);
	int64_t d = tm_now_us() + (int64_t)MAX(ms, 1u) * 1000;
	/* A redial's handshake ends with the setup's budget for redials, not after it. */
	return s->setup_redial.deadline_us ? MIN(d, s->setup_redial.deadline_us) : d;
}

/*
 * Setup, before any HELLO_ACK: channel 0 has something to read that is not a break. With a
 * redial refused (nothing listens) it is the answer of a receiver that gave up the session: a
 * tagmig 0.1 receiver refuses there and exits, and the resets of the other connections can
 * arrive before its ERROR. Dialling again cannot help; that answer explains.
 */
static bool channel0_answered(tm_sender *s, unsigned idx)
{
	tm_chan *ch0 = &s->chans[0].ch;

	return idx != 0 && ch0->fd >= 0 && ch0->io && tm_io_readable(ch0->io) &&
	       !tm_chan_broke(ch0);
}

/* Returned by redial() when it stopped for an answer on channel 0 (channel0_answered()). */
#define REDIAL_ANSWERED 1

/* at_once: its first attempt comes without the backoff (a round of redials of connections
 * that got no answer, spaced by the round's interval: nothing failed to connect). silent: it
 * is dialled again because no connection was answered, not for a failure of its own.
 * answer_ends: a redial refused while channel 0 has an answer ends them; REDIAL_ANSWERED,
 * the connection left closed and *error cleared, for channel 0's answer to explain. */
static int redial(tm_sender *s, unsigned idx, bool at_once, bool silent, bool answer_ends,
		  GError **error)
{
	unsigned ms = s->live.resume_deadline_ms; /* tm_live_config_load() set the default */
	g_autofree char *cause = g_strdup(*error ? (*error)->message : "broken");
	int code = *error ? (*error)->code : ECONNRESET;
	tm_chan *ch = tm_setup_chan(s, idx);
	int64_t *deadline = &s->setup_redial.deadline_us;
	g_autoptr(GError) last = NULL;
	char nb[32];

	tm_setup_budget_start(s);
	g_clear_error(error);
	for (;;) {
		/* The broken connection goes, under the lock: a cancel shuts down what it sees. */
		g_mutex_lock(&s->lock);
		bool quit = s->quit || s->failure.cancelled;
		if (ch->fd >= 0) {
			shutdown(ch->fd, SHUT_RDWR);
			tm_chan_close(ch);
		}
		g_mutex_unlock(&s->lock);
		if (quit) {
			g_set_error(error, TM_ERROR, ECANCELED, "cancelled");
			return -ECANCELED;
		}
		int64_t left = (*deadline - tm_now_us()) / 1000;
		if (left <= 0)
			break;
		/* The backoff spans the setup: a redial may open and then break again. */
		if (s->setup_redial.attempts && !at_once) {
			unsigned *backoff = &s->setup_redial.backoff_ms;
			*backoff = *backoff ? MIN(*backoff * 2, TM_RESUME_BACKOFF_MAX_MS)
					    : TM_RESUME_BACKOFF_FIRST_MS;
			g_usleep(1000 * (gulong)MIN((int64_t)*backoff, left));
			left = (*deadline - tm_now_us()) / 1000;
			if (left <= 0)
				break;
		}
		s->setup_redial.attempts++;
		at_once = false;
		g_clear_error(&last);
		int fd = tm_resume_send_dial(s, hook_connection(s, idx),
					     (unsigned)MIN(left, (int64_t)G_MAXUINT), &last);
		int r = fd < 0 ? fd : tm_sender_open_connection(s, fd, idx, &last);
		if (r >= 0) {
			tm_resume_send_count(s, 1, 0); /* a reconnect of its kind */
			return 0;
		}
		if (answer_ends && r == -ECONNREFUSED && channel0_answered(s, idx))
			return REDIAL_ANSWERED;
		if (!tm_resume_broken(-r) && r != -ECONNREFUSED) {
			g_propagate_error(error, g_steal_pointer(&last));
			g_prefix_error(error, "%s: setup: ", conn_name(s, idx, nb, sizeof(nb)));
			return r;
		}
	}
	if (silent) {
		/* Which connection lost its HELLO the sender cannot tell (its side of the cut one
		 * stays open and silent like every other): naming the one whose redial was the
		 * last would blame the wrong one. */
		g_set_error(error, TM_ERROR, ETIMEDOUT,
			    "setup: could not connect again within %.1f s (resume_deadline_ms; %u "
			    "attempt%s during setup, the last: %s%s) after: no answer to its HELLO "
			    "on any connection within %.1f s (a HELLO lost on a connection cut on the "
			    "receiver's side only, or a receiver that stopped: every unanswered "
			    "connection was dialled again)",
			    ms / 1000.0, s->setup_redial.attempts,
			    s->setup_redial.attempts == 1 ? "" : "s",
			    last ? last->message : conn_name(s, idx, nb, sizeof(nb)),
			    last ? "" : " opened", s->setup_redial.quiet_s);
		return -ETIMEDOUT;
	}
	g_set_error(error, TM_ERROR, code ? code : ETIMEDOUT,
		    "%s: setup: could not connect again within %.1f s (resume_deadline_ms; %u "
		    "attempt%s during setup, the last: %s) after: %s",
		    conn_name(s, idx, nb, sizeof(nb)), ms / 1000.0, s->setup_redial.attempts,
		    s->setup_redial.attempts == 1 ? "" : "s",
		    last ? last->message : s->setup_redial.attempts ? "it opened" : "none", cause);
	return -(code ? code : ETIMEDOUT);
}

int tm_setup_redial(tm_sender *s, unsigned idx, GError **error)
{
	/* A wait for its HELLO_ACK that timed out after a round: the silence again, not its own. */
	bool silent = s->setup_redial.quiet_s > 0 && *error && (*error)->code == ETIMEDOUT;
	return redial(s, idx, false, silent, false, error);
}

int tm_setup_redial_all(tm_sender *s, GError **broke, unsigned n, GError **error)
{
	int r = 0;
	for (unsigned i = 0; i < n; i++) {
		if (!broke[i])
			continue;
		/* After channel 0's answer, the rest are left closed too: each redial would wait its
		 * backoff, and together they would outlast resume_deadline_ms. */
		if (r != 0 || !error) {
			g_clear_error(&broke[i]);
			continue;
		}
		*error = g_steal_pointer(&broke[i]);
		r = redial(s, i, false, false, true, error);
	}
	return r == REDIAL_ANSWERED ? 0 : r; /* tm_sender_await_acks() reads that answer */
}

void tm_setup_lost(tm_chan *ch)
{
	/* Its first I/O fails as a broken connection and resumes it (at position 0). */
	if (ch->fd >= 0)
		shutdown(ch->fd, SHUT_RDWR);
	ch->peer_error = false;
}

/* Sender, before any HELLO_ACK: whether one of connections i .. n - 1 has something to read. */
static bool any_readable(tm_sender *s, unsigned i, unsigned n)
{
	for (unsigned j = i; j < n; j++) {
		tm_chan *ch = tm_setup_chan(s, j);
		if (ch->fd >= 0 && tm_io_readable(ch->io))
			return true;
	}
	return false;
}

/* Waits at most ms for one of connections i .. n - 1 to have something to read. */
static void wait_readable(tm_sender *s, unsigned i, unsigned n, int ms)
{
	struct pollfd p[TM_MAX_CHANNELS + TM_V2_EXTRA_CONNECTIONS + 1];
	unsigned np = 0;

	if (any_readable(s, i, n))
		return; /* also TLS data buffered above the socket */
	for (unsigned j = i; j < n; j++) {
		tm_chan *ch = tm_setup_chan(s, j);
		if (ch->fd >= 0)
			p[np++] = (struct pollfd){ .fd = ch->fd, .events = POLLIN };
	}
	(void)poll(p, np, ms);
}

/*
 * No connection answered for timeout_ms: the receiver handshakes every connection within its
 * handshake deadline, so one of ours was cut on its side only (its HELLO went nowhere, and
 * the receiver waits for that role), the receiver is frozen, or its VMM is slow to start. We cannot tell which connection,
 * so every one without an answer is dialled again, in the setup order; the receiver takes each
 * in place of the one it placed (resume-setup.c), and once it has them all it answers on every
 * connection: then the rest is left as it is (a redial that comes after that is refused, and
 * the connection is resumed). Frozen, the redials fail at resume_deadline_ms.
 */
static int redial_quiet(tm_sender *s, unsigned i, unsigned n, double quiet_s, bool *redialled,
			GError **error)
{
	for (unsigned j = i; j < n; j++) {
		tm_chan *ch = tm_setup_chan(s, j);
		if (any_readable(s, i, n))
			return 0; /* the receiver is past its accept: await_acks reads the answers */
		if (ch->fd < 0)
			continue;
		g_set_error(error, TM_ERROR, ETIMEDOUT, "%s: no answer to its HELLO within %.1f s",
			    ch->label, quiet_s);
		if (!s->setup_redial.quiet_s)
			s->setup_redial.quiet_s = quiet_s;
		int r = redial(s, j, true, true, false, error);
		if (r < 0)
			return r;
		redialled[j] = true;
		/* Its HELLO may be the one the receiver waited for: its answers come at once. */
		wait_readable(s, i, n, 20);
	}
	return 0;
}

int tm_setup_watch(tm_sender *s, unsigned i, unsigned n, bool *redialled, GError **error)
{
	unsigned ms = s->cfg.timeout_ms ? s->cfg.timeout_ms : 20000;
	int64_t until = tm_now_us() + (int64_t)ms * 1000;
	bool quiet[TM_MAX_CHANNELS + TM_V2_EXTRA_CONNECTIONS + 1] = { false };
	/* How long silence means a lost HELLO: timeout_ms, doubled after each round of redials.
	 * The receiver answers at its VMM's start(), after its accept: one that starts within
	 * timeout_ms is never redialled (a redial after its accept is refused, and resumed). */
	int64_t quiet_us = (int64_t)ms * 1000;
	int64_t since = tm_now_us(), next = since + quiet_us;
	bool rounds = tm_setup_redial_wanted(s, ETIMEDOUT);

	/* With rounds of redials, the redials' deadline ends the watch (a round past it fails). */
	while (rounds || tm_now_us() < until) {
		tm_chan *chi = tm_setup_chan(s, i);
		if (chi->fd < 0 || tm_io_readable(chi->io))
			return 0;
		/* A readable one first (an answer, or a break to dial again: below); redial_quiet()
		 * would only return at once, and past the redials' deadline spin. */
		if (rounds && tm_now_us() >= next && !any_readable(s, i, n)) {
			int r = redial_quiet(s, i, n, (double)(tm_now_us() - since) / 1e6, redialled,
					     error);
			if (r < 0)
				return r;
			quiet_us *= 2;
			since = tm_now_us();
			next = MIN(since + quiet_us, s->setup_redial.deadline_us);
			continue;
		}
		struct pollfd p[TM_MAX_CHANNELS + TM_V2_EXTRA_CONNECTIONS + 1];
		unsigned np = 0;
		for (unsigned j = i; j < n; j++) {
			tm_chan *ch = tm_setup_chan(s, j);
			if (j != i && !quiet[j] && ch->fd >= 0 && tm_io_readable(ch->io)) {
				if (!tm_chan_broke(ch))
					return 0; /* its HELLO_ACK: the receiver is past its accept */
				/* Its HELLO may never have arrived: the receiver would wait for it. */
				g_set_error(error, TM_ERROR, ECONNRESET, "%s: connection closed by the peer",
					    ch->label);
				if (!tm_setup_redial_wanted(s, ECONNRESET)) {
					/* A refusal on i (a receiver that gave up) explains more. */
					struct pollfd pi = { .fd = chi->fd, .events = POLLIN };
					if (poll(&pi, 1, 200) > 0 || tm_io_readable(chi->io)) {
						g_clear_error(error);
						return 0;
					}
					g_clear_error(error);
					g_set_error(error, TM_ERROR, ECONNRESET,
						    "handshake: %s: connection closed by the peer before its "
						    "HELLO_ACK; not dialled again: %s",
						    ch->label,
						    s->live.no_resume ? "resume is off (no_resume)"
								      : "resume is not offered");
					return -ECONNRESET;
				}
				int r = redial(s, j, false, false, i == 0, error);
				if (r < 0)
					return r;
				redialled[j] = true;
				if (r == REDIAL_ANSWERED)
					return 0; /* channel 0's answer: the await reads it */
			}
			if (ch->fd >= 0 && (j == i || !quiet[j]))
				p[np++] = (struct pollfd){ .fd = ch->fd, .events = POLLIN };
		}
		g_mutex_lock(&s->lock);
		bool cancelled = s->failure.cancelled;
		g_mutex_unlock(&s->lock);
		if (cancelled)
			return 0; /* the await fails with the cancel's reason */
		(void)poll(p, np, 100); /* also TLS data buffered above the socket: readable above */
	}
	return 0; /* the await times out on its own */
}
