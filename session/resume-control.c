/* SPDX-License-Identifier: MIT */
/*
 * Resume of the control connection (resume.h; docs/wire-format.md, "Resume of the control
 * connection"). Agreed with RESUME_CONTROL on top of RESUME: the control thread (control.c)
 * sends the ordered control messages (POSTCOPY, END; READY, END_ACK) through
 * tm_control_send_ordered(), which keeps them, and counts those it receives. When the connection
 * breaks, the sender reconnects (HELLO of role control with a new epoch, CTL_RESUME with the
 * secret and its count) and the receiver, whose accepting thread (resume-recv.c) hands the proven
 * connection over, answers CTL_POS with its own count; each side then sends again, in order, what
 * the other lacks, and the thread goes on where it was. PING and PONG belong to one connection:
 * never kept, never sent again.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "session/resume.h"
#include "tagmig/error.h"

/* Ordered control messages one side sends over a whole session: POSTCOPY and END, or READY and
 * END_ACK; room for more. */
#define MAX_ORDERED 4u

typedef struct ordered_msg {
	uint8_t type;
	uint64_t value; /* POSTCOPY: pages_missing; READY: mode; END, END_ACK: 0 */
} ordered_msg;

typedef struct tm_ctl_resume tm_ctl_resume;
struct tm_ctl_resume {
	/* control-thread local */
	ordered_msg sent[MAX_ORDERED];
	unsigned nsent;
	uint64_t received;  /* ordered messages received over the session */
	/* protected by the owner's lock */
	int busy_fd;        /* sender: the connection of an attempt under way, or -1 */
	tm_chan pending;    /* receiver: a reconnect that proved itself, for the thread to take */
	bool pending_ready;
	uint64_t pending_received; /* ... and the sender's count in its CTL_RESUME */
	uint32_t epoch;     /* receiver: the last control epoch accepted */
	bool done;          /* the control thread exited: no reconnect is taken any more */
	/* atomics */
	uint64_t reconnects;
};

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
static int test_without;

void tm_ctl_resume_test_without(int which)
{
	__atomic_store_n(&test_without, which, __ATOMIC_RELAXED);
}
#define WITHOUT(which) (__atomic_load_n(&test_without, __ATOMIC_RELAXED) == (which))
#else
#define WITHOUT(which) false
#endif

uint32_t tm_ctl_resume_offer(void)
{
	return WITHOUT(TM_CTL_RESUME_TEST_NO_OFFER) ? 0 : TM_FEATURE_RESUME_CONTROL;
}

bool tm_ctl_resume_accepts(uint32_t offered)
{
	return (offered & TM_FEATURE_RESUME_CONTROL) && !WITHOUT(TM_CTL_RESUME_TEST_NO_ACCEPT);
}

void tm_ctl_resume_enable(tm_control *c)
{
	if (c->resume)
		return;
	c->resume = g_new0(tm_ctl_resume, 1);
	c->resume->busy_fd = -1;
	c->resume->pending.fd = -1;
}

void tm_ctl_resume_free(tm_control *c)
{
	if (!c->resume)
		return;
	if (c->resume->pending_ready)
		tm_chan_close(&c->resume->pending);
	g_clear_pointer(&c->resume, g_free);
}

uint64_t tm_ctl_resume_reconnects(const tm_control *c)
{
	return c->resume ? __atomic_load_n(&c->resume->reconnects, __ATOMIC_RELAXED) : 0;
}

/* One ordered message on ch, with the connection's next sequence number. */
static int send_one(tm_chan *ch, const ordered_msg *m, GError **error)
{
	uint8_t buf[TM_FRAME_HDR_LEN + 8];
	size_t n;

	switch (m->type) {
	case TM_MSG_READY:
		n = tm_ready_encode(buf, ch->tx_seq++, m->value);
		break;
	case TM_MSG_POSTCOPY:
		n = tm_postcopy_encode(buf, ch->tx_seq++, m->value);
		break;
	default: /* END, END_ACK: no counts on control */
		return tm_chan_send_ctrl(ch, m->type, 0, 0, error);
	}
	struct iovec v = { .iov_base = buf, .iov_len = n };
	return tm_chan_send(ch, &v, 1, n, error);
}

int tm_control_send_ordered(tm_control *c, uint8_t type, uint64_t value, GError **error)
{
	ordered_msg m = { .type = type, .value = value };
	tm_ctl_resume *cr = c->resume;

	/* Kept before it is sent: a send that breaks is sent again if the peer lacks it. */
	if (cr && cr->nsent < MAX_ORDERED)
		cr->sent[cr->nsent++] = m;
	return send_one(c->ch, &m, error);
}

void tm_ctl_resume_received(tm_control *c)
{
	if (c->resume)
		c->resume->received++;
}

uint64_t tm_ctl_resume_count(const tm_control *c)
{
	return c->resume ? c->resume->received : 0;
}

bool tm_ctl_resume_wanted(const tm_control *c, const GError *err, bool unresponsive)
{
	return c->resume && err && !c->ch->peer_error &&
	       (unresponsive || tm_resume_broken(err->code));
}

unsigned tm_ctl_resume_answer_ms(unsigned timeout_ms)
{
	return CLAMP(timeout_ms / 2, 100u, 5000u);
}

int tm_ctl_pos_send(tm_control *c, GError **error)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_CTL_POS_LEN];
	size_t n = tm_ctl_pos_encode(buf, c->ch->tx_seq++, tm_ctl_resume_count(c));
	struct iovec v = { .iov_base = buf, .iov_len = n };
	return tm_chan_send(c->ch, &v, 1, n, error);
}

int tm_ctl_pos_recv(tm_control *c, tm_chan *ch, const tm_frame *f, uint64_t *ret_received,
		    GError **error)
{
	uint8_t body[TM_CTL_POS_LEN];
	int r;

	if (f->type != TM_MSG_CTL_POS) {
		g_set_error(error, TM_ERROR, EPROTO, "control: expected CTL_POS, received %s",
			    tm_msg_name(f->type));
		return -EPROTO;
	}
	if (f->body_len != sizeof(body)) {
		g_set_error(error, TM_ERROR, EBADMSG, "control: CTL_POS body of %u bytes",
			    f->body_len);
		return -EBADMSG;
	}
	if ((r = tm_chan_recv(ch, body, sizeof(body), error)) < 0)
		return r;
	if ((r = tm_ctl_pos_decode(body, sizeof(body), ret_received, error)) < 0) {
		tm_chan_prefix_error(ch, error);
		return r;
	}
	if (c->resume && *ret_received > c->resume->nsent) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "control: the %s says it received %" G_GUINT64_FORMAT
			    " control messages, %u were sent",
			    c->sender ? "receiver" : "sender", (guint64)*ret_received,
			    c->resume->nsent);
		return -EPROTO;
	}
	return 0;
}

/* The broken connection goes (owner's lock held); its counters stay with the session. */
static void drop_broken(tm_control *c, tm_counters *st, tm_io_counters *io_closed)
{
	*st = c->ch->st;
	if (c->ch->fd >= 0)
		shutdown(c->ch->fd, SHUT_RDWR);
	tm_chan_close(c->ch);
	*io_closed = c->ch->io_closed;
}

/* The new connection is the session's control connection (owner's lock held). */
static void adopt(tm_control *c, tm_chan *ch, const tm_counters *st,
		  const tm_io_counters *io_closed)
{
	*c->ch = *ch;
	c->ch->st = *st;
	c->ch->io_closed = *io_closed;
	c->ch->version = TM_WIRE_VERSION_2;
	tm_chan_set_control(c->ch, "control");
}

/* Waits ms or until the session quits (owner's lock held). Returns whether it quit. */
static bool backoff_wait(tm_control *c, unsigned ms)
{
	int64_t end = g_get_monotonic_time() + (int64_t)ms * 1000;
	while (!*c->quit)
		if (!g_cond_wait_until(c->cond, c->lock, end))
			break;
	return *c->quit;
}

/* ---- sender ---- */

/* HELLO of role control with epoch, then CTL_RESUME: the secret and what we received. */
static int send_hello(tm_sender *s, tm_control *c, tm_chan *ch, uint32_t epoch, uint64_t token,
		      GError **error)
{
	tm_hello h = s->hello; /* shallow: the blocks are only read */
	h.version = TM_WIRE_VERSION_2;
	h.role = TM_ROLE_CONTROL;
	h.channel_id = 0;
	h.epoch = epoch;
	size_t blen = tm_hello_body_len(&h);
	g_autofree uint8_t *buf =
		g_malloc(TM_FRAME_HDR_LEN + blen + TM_FRAME_HDR_LEN + TM_CTL_RESUME_LEN);
	tm_frame_encode_v(buf, TM_WIRE_VERSION_2, TM_MSG_HELLO, (uint32_t)blen, ch->tx_seq++);
	tm_hello_encode(&h, buf + TM_FRAME_HDR_LEN);
	size_t n = TM_FRAME_HDR_LEN + blen;
	n += tm_ctl_resume_encode(buf + n, ch->tx_seq++, token, tm_ctl_resume_count(c));
	struct iovec v = { .iov_base = buf, .iov_len = n };
	return tm_chan_send(ch, &v, 1, n, error);
}

/*
 * One attempt: connect, TLS, HELLO + CTL_RESUME, the receiver's CTL_POS into *ret_received. On
 * failure ch is closed; *final says the receiver refused (no retry changes its answer).
 */
static int send_attempt(tm_control *c, tm_chan *ch, int64_t deadline, unsigned answer_ms,
			uint64_t *ret_received, bool *final, bool *unanswered, GError **error)
{
	tm_sender *s = c->owner;
	tm_ctl_resume *cr = c->resume;
	const char *host, *port;
	uint64_t token;
	uint32_t epoch;
	/* Control messages are latency-bound: the sockets byte mover, as at setup (sender.c). */
	tm_io_config ioc = { .timeout_ms = s->cfg.timeout_ms, .depth = 1, .zerocopy = -1 };
	tm_frame f;
	int r;

	tm_resume_send_ctl_target(s, &host, &port, &token, &epoch); /* host NULL: attach mode */
	if ((r = tm_resume_attempt_open(s, TM_RECONNECT_CONTROL, deadline, ch, 0,
					&tm_transport_socket, &ioc, error)) < 0)
		return r;
	tm_chan_set_control(ch, "control");
	/* A failure or cancel meanwhile shuts it down. */
	if ((r = tm_resume_attempt_claim(ch, c->lock, c->quit, &cr->busy_fd, ch->fd, error)) < 0)
		return r;
	/* After a silence: a receiver alive enough to answer has answered within answer_ms. */
	int64_t answer_by = answer_ms ? MIN(deadline, tm_now_us() + (int64_t)answer_ms * 1000)
				      : deadline;
	if ((r = tm_resume_attempt_secure(s, ch, answer_by, error)) < 0 ||
	    (r = send_hello(s, c, ch, epoch, token, error)) < 0 ||
	    (r = tm_chan_recv_frame(ch, 0, &f, error)) < 0) {
		if (answer_ms && r == -ETIMEDOUT)
			*final = *unanswered = true;
		goto out;
	}
	if (f.type == TM_MSG_ERROR) {
		*final = true;
		r = tm_chan_recv_peer_error(ch, &f, "receiver refused the reconnect", error);
		goto out;
	}
	if ((r = tm_ctl_pos_recv(c, ch, &f, ret_received, error)) < 0) {
		*final = true;
		goto out;
	}
	ch->setup_deadline_us = 0;
	tm_io_set_deadline(ch->io, 0);
	g_mutex_lock(c->lock);
	cr->busy_fd = -1;
	g_mutex_unlock(c->lock);
	return 0;
out:
	g_mutex_lock(c->lock);
	cr->busy_fd = -1; /* before the close: never shut down a reused number */
	g_mutex_unlock(c->lock);
	tm_chan_close(ch);
	return r;
}

static int send_reconnect(tm_control *c, bool silent, uint64_t *ret_received, GError **error)
{
	tm_sender *s = c->owner;
	int64_t t0 = g_get_monotonic_time();
	int64_t deadline = t0 + (int64_t)s->live.resume_deadline_ms * 1000;
	tm_counters st;
	tm_io_counters io_closed;

	g_mutex_lock(c->lock);
	if (*c->quit) {
		g_mutex_unlock(c->lock);
		return -ECANCELED;
	}
	drop_broken(c, &st, &io_closed);
	g_mutex_unlock(c->lock);

	g_autoptr(GError) last = NULL;
	tm_chan ch = { .fd = -1 };
	unsigned attempts = 0, backoff = TM_RESUME_BACKOFF_FIRST_MS;
	bool final = false, unanswered = false;
	unsigned answer_ms = silent ? tm_ctl_resume_answer_ms(c->timeout_ms) : 0;
	for (;;) {
		g_clear_error(&last);
		attempts++;
		int r = send_attempt(c, &ch, deadline, answer_ms, ret_received, &final, &unanswered,
				     &last);
		g_mutex_lock(c->lock);
		if (r == 0 && !*c->quit) {
			adopt(c, &ch, &st, &io_closed);
			g_mutex_unlock(c->lock);
			return 0;
		}
		if (r == 0)
			tm_chan_close(&ch);
		if (*c->quit) {
			g_mutex_unlock(c->lock);
			return -ECANCELED;
		}
		if (final || g_get_monotonic_time() + (int64_t)backoff * 1000 >= deadline ||
		    backoff_wait(c, backoff)) {
			bool quit = *c->quit;
			g_mutex_unlock(c->lock);
			if (quit)
				return -ECANCELED;
			break;
		}
		g_mutex_unlock(c->lock);
		backoff = MIN(backoff * 2, TM_RESUME_BACKOFF_MAX_MS);
	}
	int code = last ? last->code : ETIMEDOUT;
	if (unanswered) {
		/* Connected, and nobody answered: the receiver itself is frozen, not the path. */
		g_set_error(error, TM_ERROR, ETIMEDOUT,
			    "a new control connection got no answer within %.1f s either",
			    answer_ms / 1000.0);
		return -ETIMEDOUT;
	}
	if (final) {
		g_propagate_error(error, g_steal_pointer(&last));
		g_prefix_error(error, "control: resume: ");
		return -code;
	}
	g_set_error(error, TM_ERROR, ETIMEDOUT,
		    "control: could not resume within %.1f s (resume_deadline_ms; %u attempt%s, the "
		    "last: %s)",
		    (double)(g_get_monotonic_time() - t0) / 1e6, attempts, attempts == 1 ? "" : "s",
		    last ? last->message : "none");
	return -ETIMEDOUT;
}

void tm_ctl_resume_send_wake(tm_sender *s)
{
	tm_ctl_resume *cr = s->control.resume;

	if (cr && cr->busy_fd >= 0)
		shutdown(cr->busy_fd, SHUT_RDWR);
}

/* ---- receiver ---- */

int tm_ctl_resume_recv_check(tm_receiver *r, tm_chan *ch, uint64_t token, uint64_t *ret_received,
			     GError **error)
{
	uint8_t body[TM_CTL_RESUME_LEN];
	uint64_t got = 0;
	tm_frame f;
	int ret;

	if (!r->control.resume) {
		g_set_error_literal(error, TM_ERROR, EPROTO,
				    "a control reconnect, but RESUME_CONTROL was not agreed");
		return -EPROTO;
	}
	if ((ret = tm_chan_recv_frame(ch, 0, &f, error)) < 0)
		return ret;
	if (f.type != TM_MSG_CTL_RESUME) {
		g_set_error(error, TM_ERROR, EPROTO, "expected CTL_RESUME, received %s",
			    tm_msg_name(f.type));
		return -EPROTO;
	}
	if ((ret = tm_chan_recv(ch, body, f.body_len, error)) < 0 ||
	    (ret = tm_ctl_resume_decode(body, f.body_len, &got, ret_received, error)) < 0)
		return ret;
	if (!tm_resume_token_equal(got, token)) {
		g_set_error_literal(error, TM_ERROR, EACCES, "resume refused: wrong secret");
		return -EACCES;
	}
	return 0;
}

int tm_ctl_resume_recv_take(tm_receiver *r, tm_chan *ch, uint32_t epoch, uint64_t received,
			    GError **error)
{
	tm_ctl_resume *cr = r->control.resume;

	g_mutex_lock(&r->lock);
	if (r->quit || cr->done) {
		g_set_error(error, TM_ERROR, ECANCELED, "the session %s: %s",
			    cr->done ? "ended" : "failed",
			    r->failure.error ? r->failure.error->message : "stopped");
		g_mutex_unlock(&r->lock);
		return -ECANCELED;
	}
	if (epoch <= cr->epoch) {
		g_mutex_unlock(&r->lock);
		g_set_error_literal(error, TM_ERROR, EPROTO,
				    "epoch not newer than the control connection's last");
		return -EPROTO;
	}
	cr->epoch = epoch;
	if (cr->pending_ready)
		tm_chan_close(&cr->pending); /* an older reconnect the thread never took */
	cr->pending = *ch;
	cr->pending_ready = true;
	cr->pending_received = received;
	/* A control thread still reading the old connection: it is dead to the sender. */
	if (r->ctl.fd >= 0)
		shutdown(r->ctl.fd, SHUT_RDWR);
	g_cond_broadcast(&r->cond);
	g_mutex_unlock(&r->lock);
	return 0;
}

/*
 * How long the receiver waits for the sender to come back. After a break: the sender may not
 * see it (a path cut at our end only leaves its end open and silent), and only reconnects
 * after timeout_ms of silence, then within resume_deadline_ms. After a silence: the sender's
 * silence began up to one keepalive interval after ours, then it has answer_ms to reconnect.
 */
static int64_t recv_wait_us(const tm_control *c, const tm_receiver *r, bool silent)
{
	if (silent)
		return ((int64_t)c->ka_ms + tm_ctl_resume_answer_ms(c->timeout_ms)) * 1000;
	return ((int64_t)r->live.resume_deadline_ms + c->timeout_ms) * 1000;
}

static int recv_reconnect(tm_control *c, bool silent, uint64_t *ret_received, GError **error)
{
	tm_receiver *r = c->owner;
	tm_ctl_resume *cr = c->resume;
	int64_t t0 = g_get_monotonic_time();
	int64_t deadline = t0 + recv_wait_us(c, r, silent);
	tm_counters st;
	tm_io_counters io_closed;

	g_mutex_lock(c->lock);
	drop_broken(c, &st, &io_closed);
	while (!*c->quit && !cr->pending_ready)
		if (!g_cond_wait_until(c->cond, c->lock, deadline))
			break;
	if (*c->quit) {
		g_mutex_unlock(c->lock);
		return -ECANCELED;
	}
	if (!cr->pending_ready) {
		g_mutex_unlock(c->lock);
		if (silent)
			g_set_error(error, TM_ERROR, ETIMEDOUT,
				    "no new control connection came within %.1f s either",
				    (double)(g_get_monotonic_time() - t0) / 1e6);
		else
			g_set_error(error, TM_ERROR, ETIMEDOUT,
				    "control: the connection broke and the sender did not come back "
				    "within %.1f s (timeout_ms + resume_deadline_ms)",
				    (double)(g_get_monotonic_time() - t0) / 1e6);
		return -ETIMEDOUT;
	}
	adopt(c, &cr->pending, &st, &io_closed);
	cr->pending_ready = false;
	cr->pending.fd = -1;
	cr->pending.io = NULL;
	*ret_received = cr->pending_received;
	g_mutex_unlock(c->lock);
	if (*ret_received > cr->nsent) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "control: the sender says it received %" G_GUINT64_FORMAT
			    " control messages, %u were sent",
			    (guint64)*ret_received, cr->nsent);
		return -EPROTO;
	}
	/* Our count first: the sender replays behind its CTL_RESUME, we behind this. */
	return tm_ctl_pos_send(c, error);
}

/* ---- both ---- */

int tm_ctl_resume_reconnect(tm_control *c, bool silent, GError **error)
{
	tm_ctl_resume *cr = c->resume;
	uint64_t peer_received = 0;
	int r;
	if (c->sender) {
		tm_sender *s = c->owner;
		__atomic_add_fetch(&s->links_down, 1, __ATOMIC_RELEASE); /* rounds.c */
		r = send_reconnect(c, silent, &peer_received, error);
		__atomic_sub_fetch(&s->links_down, 1, __ATOMIC_RELEASE);
	} else {
		r = recv_reconnect(c, silent, &peer_received, error);
	}
	if (r < 0)
		return r;
	(void)tm_net_keepalive(c->ch->fd, c->ka_ms, c->timeout_ms); /* as tm_control_start */
	__atomic_add_fetch(&cr->reconnects, 1, __ATOMIC_RELAXED);
	/* What the peer lacks, in the order it was first sent. */
	for (uint64_t i = peer_received; i < cr->nsent; i++)
		if ((r = send_one(c->ch, &cr->sent[i], error)) < 0)
			return r;
	return 0;
}

void tm_ctl_resume_exited(tm_control *c)
{
	if (!c->resume)
		return;
	g_mutex_lock(c->lock);
	c->resume->done = true;
	if (c->resume->pending_ready) {
		tm_chan_close(&c->resume->pending);
		c->resume->pending_ready = false;
	}
	g_mutex_unlock(c->lock);
}
