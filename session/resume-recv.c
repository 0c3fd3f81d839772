/* SPDX-License-Identifier: MIT */
/*
 * Resume, the receiver's side (resume.h; docs/wire-format.md, "Resume").
 *
 * After accept the receiver keeps a duplicate of the listener, and once the HELLO_ACKs agreed
 * RESUME a thread accepts reconnects on it, one handshake at a time with the handshake deadline
 * (TLS included, as accept.c): a HELLO of this session with a new epoch for a data channel, then
 * RESUME with the session's secret. Anything else is a stranger: refused with an ERROR, counted
 * (tm_live_stats.resume_refused), and the session goes on; after TM_MAX_STRANGERS of them the
 * thread stops listening. A reconnect that proves itself is handed to the channel's worker
 * (its old connection is shut down, so a worker still reading it wakes), which answers
 * RESUME_ACK with what it applied and reads on. A worker whose connection broke waits for that
 * as long as the session lives: the control connection tells whether the sender still does, and
 * the sender's resume deadline bounds its attempts (it reports a failure on control).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "session/resume-postcopy.h"
#include "session/resume.h"
#include "tagmig/error.h"

typedef struct pending_conn {
	tm_chan ch;     /* a reconnect that proved itself, for the worker to take */
	bool ready;
	uint32_t epoch; /* the highest epoch accepted for the channel */
} pending_conn;

typedef struct tm_resume_rx tm_resume_rx;
struct tm_resume_rx {
	/* read-only after agree */
	int listen_fd;   /* duplicate of the VMM's listener, owned */
	int stop_fd;     /* eventfd: the accepting thread ends */
	uint64_t token;  /* the session's secret; 0: not agreed */
	GThread *thread;
	/* protected by r->lock */
	pending_conn *pending; /* per channel */
	int busy_fd;           /* the connection being handshaken (free shuts it down), or -1 */
	/* atomics */
	uint64_t reconnects;
	uint64_t refused;
};

void tm_resume_recv_listen(tm_receiver *r, int listen_fd)
{
	if (r->wire != TM_WIRE_VERSION_2 || r->resume)
		return;
	tm_resume_rx *rr = g_new0(tm_resume_rx, 1);
	rr->listen_fd = listen_fd < 0 ? -1 : fcntl(listen_fd, F_DUPFD_CLOEXEC, 0);
	rr->stop_fd = -1;
	rr->busy_fd = -1;
	if (rr->listen_fd < 0 && !(listen_fd < 0 && r->live.reconnect)) {
		g_free(rr);
		return; /* no reconnects then: a broken channel fails the session */
	}
	r->resume = rr;
}

/* Best effort: tells a refused connection why, then closes it. */
static void refuse(tm_chan *ch, int code, const char *why)
{
	ch->version = TM_WIRE_VERSION_2;
	tm_chan_send_error(ch, code, why);
	tm_chan_close(ch);
}

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
static int64_t test_syncs_skew;

void tm_receiver_test_syncs_skew(int64_t skew)
{
	__atomic_store_n(&test_syncs_skew, skew, __ATOMIC_RELAXED);
}
#define SYNCS_SKEW ((uint64_t)__atomic_load_n(&test_syncs_skew, __ATOMIC_RELAXED))
#else
#define SYNCS_SKEW 0
#endif

/* The receiver's position on channel c (its worker stopped reading, or it ended). */
static tm_resume_pos position(recv_chan *c)
{
	return (tm_resume_pos){
		.pages_applied = c->pages_applied,
		.packets_applied = c->packets_applied,
		.state_chunks = c->state_chunks,
		.syncs = __atomic_load_n(&c->last_sync, __ATOMIC_RELAXED) + SYNCS_SKEW,
		.flags = (c->ram_ended ? TM_RESUME_RAM_ENDED : 0) | (c->ended ? TM_RESUME_ENDED : 0),
	};
}

static int send_ack(tm_chan *ch, const tm_resume_pos *pos, GError **error)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_RESUME_ACK_LEN];
	size_t n = tm_resume_ack_encode(buf, ch->tx_seq++, pos);
	struct iovec v = { .iov_base = buf, .iov_len = n };
	return tm_chan_send(ch, &v, 1, n, error);
}

/*
 * Reads and checks a reconnect's HELLO and RESUME. Returns the channel id, or -errno with
 * *error (the words for the peer).
 */
static int check_hello(tm_receiver *r, tm_chan *ch, tm_hello *h, GError **error);

static int check_reconnect(tm_receiver *r, tm_chan *ch, uint32_t *ret_epoch,
			   uint64_t *ret_received, GError **error)
{
	tm_hello h = { 0 };
	int ret = check_hello(r, ch, &h, error);
	uint32_t epoch = h.epoch;
	/* Postcopy's urgent connection is no channel (resume-postcopy.c). */
	int id = h.role == TM_ROLE_URGENT ? TM_PCRESUME_URGENT_ID : (int)h.channel_id;
	bool control = h.role == TM_ROLE_CONTROL;

	tm_hello_clear(&h);
	if (ret < 0)
		return ret;
	tm_resume_rx *rr = r->resume;
	if (control) { /* resume-control.c: CTL_RESUME, not RESUME */
		*ret_epoch = epoch;
		ret = tm_ctl_resume_recv_check(r, ch, rr->token, ret_received, error);
		return ret < 0 ? ret : TM_CTL_RESUME_ID;
	}
	tm_frame f;
	uint64_t token = 0;
	uint8_t rb[TM_RESUME_LEN];

	if ((ret = tm_chan_recv_frame(ch, 0, &f, error)) < 0)
		return ret;
	if (f.type != TM_MSG_RESUME) {
		g_set_error(error, TM_ERROR, EPROTO, "expected RESUME, received %s",
			    tm_msg_name(f.type));
		return -EPROTO;
	}
	if ((ret = tm_chan_recv(ch, rb, f.body_len, error)) < 0 ||
	    (ret = tm_resume_decode(rb, f.body_len, &token, error)) < 0)
		return ret;
	if (!tm_resume_token_equal(token, rr->token)) {
		g_set_error_literal(error, TM_ERROR, EACCES, "resume refused: wrong secret");
		return -EACCES;
	}
	*ret_epoch = epoch;
	return id;
}

/* The reconnect's HELLO: this session's, a data channel, a new epoch (in *h). */
static int check_hello(tm_receiver *r, tm_chan *ch, tm_hello *h, GError **error)
{
	tm_frame f;

	ch->version = TM_WIRE_VERSION_2;
	int ret = tm_chan_recv_frame(ch, 0, &f, error);
	if (ret < 0)
		return ret;
	if (f.type != TM_MSG_HELLO) {
		g_set_error(error, TM_ERROR, EPROTO, "expected HELLO, received %s", tm_msg_name(f.type));
		return -EPROTO;
	}
	g_autofree uint8_t *body = g_malloc(f.body_len ? f.body_len : 1);
	if ((ret = tm_chan_recv(ch, body, f.body_len, error)) < 0 ||
	    (ret = tm_hello_decode(body, f.body_len, f.version, h, error)) < 0)
		return ret;
	/* Nothing of this session's shape to someone who does not know its id. */
	if (memcmp(h->session_id, r->hello.session_id, sizeof(h->session_id)) != 0) {
		g_set_error_literal(error, TM_ERROR, EPROTO, "a HELLO of another session");
		return -EPROTO;
	}
	/* The urgent connection too, after the switch to postcopy (resume-postcopy.c); the
	 * control connection with RESUME_CONTROL (resume-control.c). */
	bool urgent_ok = h->role == TM_ROLE_URGENT && tm_pcresume_recv_urgent_ok(r);
	bool control = h->role == TM_ROLE_CONTROL && r->control.resume;
	if (h->epoch == 0 || (h->role != TM_ROLE_DATA && !urgent_ok && !control)) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "the session runs already: only a data channel's reconnect (epoch >= 1) "
			    "may come, not %s connection of epoch %u",
			    h->role == TM_ROLE_DATA	 ? "a data"
			    : h->role == TM_ROLE_CONTROL ? "a control"
			    : h->role == TM_ROLE_URGENT	 ? "an urgent"
							 : "an unknown",
			    h->epoch);
		return -EPROTO;
	}
	uint32_t epoch = h->epoch;
	h->epoch = r->hello.epoch;
	ret = tm_hello_same_session(&r->hello, h, error);
	h->epoch = epoch;
	return ret;
}

/* One connection from the listener: a proven reconnect goes to its channel. */
static void take_connection(tm_receiver *r, int fd)
{
	tm_resume_rx *rr = r->resume;
	tm_io_config ioc = { .timeout_ms = r->cfg.timeout_ms, .depth = 1,
			     .zerocopy = r->cfg.tuning.zerocopy };
	g_autoptr(GError) err = NULL;
	tm_chan ch;
	uint32_t epoch = 0;
	uint64_t received = 0; /* a control reconnect's count (resume-control.c) */

	if (tm_chan_open(&ch, fd, 0, r->io, &ioc, &err) < 0) {
		__atomic_add_fetch(&rr->refused, 1, __ATOMIC_RELAXED);
		return;
	}
	ch.setup_deadline_us = tm_handshake_deadline(r->cfg.timeout_ms);
	tm_io_set_deadline(ch.io, ch.setup_deadline_us);
	g_mutex_lock(&r->lock);
	rr->busy_fd = r->quit ? -1 : ch.fd;
	g_mutex_unlock(&r->lock);
	int id = rr->busy_fd < 0 ? -ECANCELED : r->tls ? tm_tls_wrap(r->tls, &ch.io, &err) : 0;
	if (id >= 0)
		id = check_reconnect(r, &ch, &epoch, &received, &err);
	g_mutex_lock(&r->lock);
	rr->busy_fd = -1;
	g_mutex_unlock(&r->lock);
	if (id == -ECANCELED && !err) {
		tm_chan_close(&ch);
		return;
	}
	if (id < 0) {
		__atomic_add_fetch(&rr->refused, 1, __ATOMIC_RELAXED);
		g_prefix_error(&err, "reconnect: ");
		refuse(&ch, -id, err->message);
		return;
	}
	if (id == TM_PCRESUME_URGENT_ID) { /* for the urgent thread (resume-postcopy.c) */
		/* Refused (an old epoch, the session over): counted as any refused reconnect. */
		if (tm_pcresume_recv_take_urgent(r, &ch, epoch) < 0)
			__atomic_add_fetch(&rr->refused, 1, __ATOMIC_RELAXED);
		return;
	}
	ch.setup_deadline_us = 0;
	tm_io_set_deadline(ch.io, 0);
	if (id == TM_CTL_RESUME_ID) {
		if (tm_ctl_resume_recv_take(r, &ch, epoch, received, &err) < 0) {
			__atomic_add_fetch(&rr->refused, 1, __ATOMIC_RELAXED);
			g_prefix_error(&err, "reconnect: ");
			refuse(&ch, err->code, err->message);
		}
		return;
	}
	tm_chan_set_id(&ch, (unsigned)id);

	g_mutex_lock(&r->lock);
	recv_chan *c = &r->chans[id];
	pending_conn *p = &rr->pending[id];
	if (r->quit) {
		/* The sender is real but the session is over: it learns why. */
		g_autofree char *why = g_strdup_printf("reconnect: the session failed: %s",
						       r->failure.error ? r->failure.error->message
									: "stopped");
		g_mutex_unlock(&r->lock);
		refuse(&ch, ECANCELED, why);
		return;
	}
	if (epoch <= p->epoch) {
		g_mutex_unlock(&r->lock);
		__atomic_add_fetch(&rr->refused, 1, __ATOMIC_RELAXED);
		refuse(&ch, EPROTO, "reconnect: epoch not newer than the channel's last");
		return;
	}
	p->epoch = epoch;
	if (c->ended) {
		/* Its END was answered and the worker is done: the END_ACK was what got lost. */
		tm_resume_pos pos = position(c);
		g_mutex_unlock(&r->lock);
		/* Counted first: the sender may finish, and its VMM read our figures, right after. */
		__atomic_add_fetch(&rr->reconnects, 1, __ATOMIC_RELAXED);
		(void)send_ack(&ch, &pos, NULL);
		tm_chan_close(&ch);
		return;
	}
	if (p->ready)
		tm_chan_close(&p->ch); /* an older reconnect the worker never took */
	p->ch = ch;
	p->ready = true;
	/* A worker still reading the old connection: it is dead to the sender. */
	if (c->ch.fd >= 0)
		shutdown(c->ch.fd, SHUT_RDWR);
	g_cond_broadcast(&r->cond);
	g_mutex_unlock(&r->lock);
}

static gpointer accept_thread(gpointer data)
{
	tm_receiver *r = data;
	tm_resume_rx *rr = r->resume;

	for (;;) {
		if (rr->listen_fd < 0) {
			/* Attach mode: the VMM's hook accepts, a quarter second at a time so that
			 * free need not wait for long (tm_live_config.reconnect). */
			struct pollfd stop = { .fd = rr->stop_fd, .events = POLLIN };
			if (poll(&stop, 1, 0) > 0)
				break;
			int fd = r->live.reconnect(r->live.reconnect_opaque, TM_RECONNECT_ANY, 250);
			if (fd >= 0)
				take_connection(r, fd);
			if (__atomic_load_n(&rr->refused, __ATOMIC_RELAXED) >= TM_MAX_STRANGERS)
				break;
			continue;
		}
		struct pollfd p[2] = { { .fd = rr->listen_fd, .events = POLLIN },
				       { .fd = rr->stop_fd, .events = POLLIN } };
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		if (!(p[0].revents & POLLIN))
			continue;
		int fd = accept4(rr->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		take_connection(r, fd);
		/* O(1) per stranger, and a bound: past it the session takes no reconnect. */
		if (__atomic_load_n(&rr->refused, __ATOMIC_RELAXED) >= TM_MAX_STRANGERS)
			break;
	}
	return NULL;
}

int tm_resume_recv_agree(tm_receiver *r, tm_hello_ack *ack, GError **error)
{
	tm_resume_rx *rr = r->resume;

	if (!rr || !(r->hello.features & TM_FEATURE_RESUME) || r->live.no_resume) {
		ack->features &= ~(TM_FEATURE_RESUME | TM_FEATURE_RESUME_CONTROL |
				   TM_FEATURE_CONN_LOST);
		ack->resume_token = 0;
		tm_resume_recv_free(r);
		return 0;
	}
	while (!rr->token)
		if (getrandom(&rr->token, sizeof(rr->token), 0) != sizeof(rr->token)) {
			int e = errno;
			g_set_error(error, TM_ERROR, e, "resume secret: getrandom: %s", g_strerror(e));
			return -e;
		}
	rr->pending = g_new0(pending_conn, r->nch);
	for (unsigned i = 0; i < r->nch; i++)
		rr->pending[i].ch.fd = -1;
	rr->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (rr->stop_fd < 0) {
		int e = errno;
		g_set_error(error, TM_ERROR, e, "eventfd: %s", g_strerror(e));
		return -e;
	}
	/* Before the thread, which hands control reconnects over (resume-control.c). */
	ack->features &= ~TM_FEATURE_RESUME_CONTROL;
	if (tm_ctl_resume_accepts(r->hello.features)) {
		ack->features |= TM_FEATURE_RESUME_CONTROL;
		tm_ctl_resume_enable(&r->control);
	}
	rr->thread = g_thread_try_new("tm-recv-resume", accept_thread, r, error);
	if (!rr->thread)
		return -EAGAIN;
	ack->features |= TM_FEATURE_RESUME;
	ack->resume_token = rr->token;
	r->control.resume_agreed = true;
	/* A break we see and the sender may not: said on control (kept when offered). */
	r->control.conn_lost = (ack->features & TM_FEATURE_CONN_LOST) != 0;
	return 0;
}

int tm_resume_recv(recv_chan *c, GError **error)
{
	tm_receiver *r = c->r;
	tm_resume_rx *rr = r->resume;
	int code = (*error)->code;

	if (!rr || !rr->token || c->ch.peer_error || !tm_resume_broken(code))
		return -code;
	g_mutex_lock(&r->lock);
	if (r->quit) {
		g_mutex_unlock(&r->lock);
		return -code;
	}
	/* Under the lock: a failure elsewhere shuts down what it sees, never a closed fd. */
	tm_counters st = c->ch.st;
	shutdown(c->ch.fd, SHUT_RDWR);
	tm_control_data_conn(&r->control, c->ch.id, -1, 0, NULL); /* its number may be reused */
	tm_chan_close(&c->ch);
	tm_io_counters io_closed = c->ch.io_closed;
	pending_conn *p = &rr->pending[c->ch.id];
	/* The sender may not see this break (its end of the path still open): it learns it on
	 * control, unless a newer connection is here already. */
	if (!p->ready)
		tm_control_conn_lost_locked(&r->control, c->ch.id, p->epoch);
	for (;;) {
		while (!r->quit && !p->ready)
			g_cond_wait(&r->cond, &r->lock);
		if (r->quit) {
			g_mutex_unlock(&r->lock);
			return -code;
		}
		unsigned id = c->ch.id;
		c->ch = p->ch;
		c->ch.st = st;
		c->ch.io_closed = io_closed;
		c->ch.version = TM_WIRE_VERSION_2;
		p->ready = false;
		p->ch.fd = -1;
		p->ch.io = NULL;
		tm_control_data_conn(&r->control, id, c->ch.fd, p->epoch, &c->ch.base);
		g_mutex_unlock(&r->lock);

		tm_chan_set_timeout(&c->ch, 0); /* as tm_control_start left the data channels */
		(void)tm_net_keepalive(c->ch.fd, r->control.ka_ms ? r->control.ka_ms : 5000, 0);
		tm_resume_pos pos = position(c);
		g_autoptr(GError) local = NULL;
		if (send_ack(&c->ch, &pos, &local) == 0)
			break;
		/* That one broke too: wait for the next. */
		g_mutex_lock(&r->lock);
		st = c->ch.st;
		tm_control_data_conn(&r->control, c->ch.id, -1, 0, NULL);
		tm_chan_close(&c->ch);
		io_closed = c->ch.io_closed;
	}
	__atomic_add_fetch(&rr->reconnects, 1, __ATOMIC_RELAXED);
	g_clear_error(error);
	return 0;
}

bool tm_resume_recv_link_dead(void *receiver, unsigned chan, int fd, uint32_t epoch)
{
	tm_receiver *r = receiver;
	bool resumed = false;

	(void)epoch; /* a closed connection's number is -1 in data_fds until the next is taken */
	/* Our end goes: the worker's read fails, it says CONN_LOST and waits for the sender. */
	g_mutex_lock(&r->lock);
	if (r->control.resume_agreed && chan < r->nch) {
		resumed = true;
		if (r->chans[chan].ch.fd == fd)
			shutdown(fd, SHUT_RDWR);
	}
	g_mutex_unlock(&r->lock);
	return resumed;
}

void tm_resume_recv_stats(tm_receiver *r, tm_live_stats *ret)
{
	if (!r->resume)
		return;
	ret->reconnects = __atomic_load_n(&r->resume->reconnects, __ATOMIC_RELAXED) +
			  tm_ctl_resume_reconnects(&r->control);
	ret->resume_refused = __atomic_load_n(&r->resume->refused, __ATOMIC_RELAXED);
}

void tm_resume_recv_free(tm_receiver *r)
{
	tm_resume_rx *rr = r->resume;

	if (!rr)
		return;
	if (rr->thread) {
		uint64_t one = 1;
		g_mutex_lock(&r->lock);
		if (rr->busy_fd >= 0) /* a handshake in progress ends now */
			shutdown(rr->busy_fd, SHUT_RDWR);
		g_mutex_unlock(&r->lock);
		(void)!write(rr->stop_fd, &one, sizeof(one));
		g_thread_join(rr->thread);
	}
	tm_ctl_resume_free(&r->control); /* the thread handed control reconnects over */
	for (unsigned i = 0; rr->pending && i < r->nch; i++)
		if (rr->pending[i].ready)
			tm_chan_close(&rr->pending[i].ch);
	g_free(rr->pending);
	if (rr->stop_fd >= 0)
		close(rr->stop_fd);
	if (rr->listen_fd >= 0)
		close(rr->listen_fd);
	g_free(rr);
	r->resume = NULL;
}

void tm_resume_recv_count(tm_receiver *r)
{
	__atomic_add_fetch(&r->resume->reconnects, 1, __ATOMIC_RELAXED);
}

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
uint64_t tm_receiver_test_resume_syncs(tm_receiver *r, unsigned channel)
{
	return position(&r->chans[channel]).syncs;
}
#endif
