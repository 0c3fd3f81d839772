/* SPDX-License-Identifier: MIT */
/*
 * LINK_CHECK (docs/wire-format.md, "A path that acknowledges what it does not deliver"): the
 * control thread's watch for a data connection whose bytes the path acknowledged and holds (a
 * middlebox that keeps both ends open and stopped forwarding, acknowledging what it took and then
 * advertising a zero window). Neither end sees anything wrong: the sender's kernel has every byte
 * acknowledged, the receiver waits for the next message, or the sender for an answer, for good;
 * TCP_INFO's unacknowledged-data check (control.c) never fires. Only the two ends' counts of
 * the same stream tell: what the sender's kernel had acknowledged against what the receiver's
 * kernel received, and the other way round.
 *
 * The sender asks (LINK_Q) about a connection that was quiet for a keepalive interval (its counts
 * did not move: a busy connection costs nothing), at most one question per connection out; the
 * receiver answers (LINK_A) with its kernel's counts of its current connection for that channel
 * (from its base, below), what of it its application has not read, and the connection's epoch. A
 * gap of more than LINK_SLACK bytes one way while the end that should have them has read everything
 * it got (its window open: a working path would deliver), shown by every answer for timeout_ms with
 * the sender's counts still, is a dead path: the connection goes to link_dead() (resumed like any
 * break) or the session fails. A proxy on a working path holds bytes too, but only while the next
 * end's window is closed: its application has not read what it has (a slow VMM).
 *
 * Every count is of the session's bytes alone: each end subtracts the stream base it took when
 * it took the socket (tm_chan.base, tm_net_stream_base()), so a socket a VMM attached, or its
 * reconnect hook handed over, may have carried bytes before (a preamble of the VMMs', a proxy's
 * handshake only one end's kernel counted) and the two ends still count the same stream. For a
 * connection the library made itself the base is the connecting end's SYN and nothing else: a
 * peer of the version before bases, which offers and keeps LINK_CHECK only there and sends its
 * kernel's own counts, counts the same bytes but that SYN (within LINK_SLACK). A connection
 * whose base could not be taken (not TCP: a unix socket) is never asked about, and answered
 * with unknown counts.
 */
#include <errno.h>
#include <inttypes.h>

#include "session/session-internal.h"
#include "tagmig/error.h"
#include "transport/transport.h"

/* Each end counts a FIN (and a peer of the version before bases the connecting end's SYN as
 * acknowledged): no message is this short. */
#define LINK_SLACK 2u
/* More LINK_Qs than this per data channel in one second from the sender: -EPROTO. Ours are at
 * most one per keepalive (>= 100 ms) per channel. */
#define LINK_Q_FLOOD 20u

typedef struct watch_chan {
	int fd;             /* the connection as last seen (data_fds), -1: none */
	uint32_t epoch;
	uint64_t acked, received; /* our kernel's counts then */
	bool asked;         /* a LINK_Q is out (its answer comes, whatever happened since) */
	int q_fd;           /* ... about this connection, */
	uint32_t q_epoch;
	uint64_t q_acked;   /* ... when our kernel had this acknowledged */
	int64_t gap_since;  /* the first of the answers showing a gap, the far end's counts still
	                     * since (us), 0: none */
	int64_t gap_seen;   /* the last answer showing it (us) */
	uint64_t a_received, a_acked; /* the far end's counts in that answer */
	uint64_t gap_tx, gap_rx; /* the last gap: our bytes not there, theirs not here */
} watch_chan;

struct tm_link_watch {
	int64_t flood_t; /* receiver: the current second of LINK_Qs */
	unsigned flood_n;
	watch_chan ch[];
};

void tm_link_watch_alloc(tm_control *c)
{
	if (!c->link_check || c->lw)
		return;
	c->lw = g_malloc0(sizeof(*c->lw) + c->ndata * sizeof(watch_chan));
	for (unsigned i = 0; i < c->ndata; i++)
		c->lw->ch[i].fd = c->lw->ch[i].q_fd = -1;
}

void tm_link_watch_free(tm_control *c)
{
	g_clear_pointer(&c->lw, g_free);
}

void tm_link_watch_reset(tm_control *c)
{
	for (unsigned i = 0; c->lw && i < c->ndata; i++)
		c->lw->ch[i].asked = false; /* asked on a connection that is gone */
}

void tm_control_data_conn(tm_control *c, unsigned i, int fd, uint32_t epoch,
			  const tm_net_base *base)
{
	if (!c->data_fds || i >= c->ndata)
		return;
	c->data_bases[i] = base ? *base : (tm_net_base){ .ok = false };
	__atomic_store_n(&c->data_epochs[i], epoch, __ATOMIC_RELAXED);
	__atomic_store_n(&c->data_fds[i], fd, __ATOMIC_RELAXED);
}

/*
 * Data channel i's connection as its owner last set it: its fd (-1: none), epoch and stream
 * base, all of one connection (read under the owner's lock, which tm_control_data_conn() is
 * called with; the control thread holds io_lock, which comes first).
 */
static int conn_now(tm_control *c, unsigned i, uint32_t *ret_epoch, tm_net_base *ret_base)
{
	g_mutex_lock(c->lock);
	int fd = c->data_fds[i];
	*ret_epoch = c->data_epochs[i];
	*ret_base = c->data_bases[i];
	g_mutex_unlock(c->lock);
	return fd;
}

static int dead(tm_control *c, unsigned i, watch_chan *w, int64_t now, GError **error)
{
	if (c->link_dead && c->link_dead(c->owner, i, w->fd, w->epoch)) {
		w->gap_since = 0;
		return 0;
	}
	double s = (now - w->gap_since) / 1e6;
	if (w->gap_tx)
		g_set_error(error, TM_ERROR, ETIMEDOUT,
			    "channel %u: the receiver got %" PRIu64 " bytes fewer than this end's "
			    "path acknowledged, for %.1f s (timeout_ms): something on the path holds "
			    "them",
			    i, w->gap_tx, s);
	else
		g_set_error(error, TM_ERROR, ETIMEDOUT,
			    "channel %u: %" PRIu64 " bytes the receiver's path acknowledged never "
			    "arrived here, for %.1f s (timeout_ms): something on the path holds them",
			    i, w->gap_rx, s);
	return -ETIMEDOUT;
}

/* Sends LINK_Q about data channel i, whose connection is fd of epoch now. */
static int ask(tm_control *c, unsigned i, watch_chan *w, int fd, uint32_t epoch, GError **error)
{
	const uint64_t q[TM_CTRL_MAX_FIELDS] = { i, epoch };
	int r = tm_chan_send_ctrl_v(c->ch, TM_MSG_LINK_Q, q, error);
	if (r < 0)
		return r;
	w->asked = true;
	w->q_fd = fd;
	w->q_epoch = epoch;
	return 0;
}

int tm_link_watch_tick(tm_control *c, GError **error)
{
	int64_t now = tm_now_us();

	for (unsigned i = 0; c->lw && i < c->ndata; i++) {
		watch_chan *w = &c->lw->ch[i];
		uint32_t epoch;
		tm_net_base base;
		int fd = conn_now(c, i, &epoch, &base);
		uint64_t acked = 0, received = 0, unread;
		/* Closed for a reconnect, not TCP, or counts that cannot be read: nothing to tell. */
		if (tm_net_session_bytes(fd, &base, &acked, &received, &unread) < 0)
			fd = -1;
		if (fd < 0 || fd != w->fd || epoch != w->epoch || acked != w->acked ||
		    received != w->received) {
			/* Another connection, or the stream moved: nothing is held for now. */
			*w = (watch_chan){ .fd = fd, .epoch = epoch, .acked = acked,
					   .received = received, .asked = w->asked, .q_fd = w->q_fd,
					   .q_epoch = w->q_epoch, .q_acked = w->q_acked };
			continue;
		}
		/* Every answer for timeout_ms showed it, the last one recent (two questions). */
		if (w->gap_since && now - w->gap_since >= (int64_t)c->timeout_ms * 1000 &&
		    now - w->gap_seen <= 2 * (int64_t)c->ka_ms * 1000) {
			int r = dead(c, i, w, now, error);
			if (r < 0)
				return r;
			continue;
		}
		if (w->asked)
			continue;
		int r = ask(c, i, w, fd, epoch, error);
		if (r < 0)
			return r;
		w->q_acked = acked;
	}
	return 0;
}

int tm_link_watch_answer(tm_control *c, const uint64_t v[TM_CTRL_MAX_FIELDS], GError **error)
{
	if (v[0] >= c->ndata) {
		g_set_error(error, TM_ERROR, ERANGE,
			    "control: LINK_A for channel %" PRIu64 ", the session has %u data channels",
			    v[0], c->ndata);
		return -ERANGE;
	}
	watch_chan *w = &c->lw->ch[v[0]];
	if (!w->asked) {
		g_set_error(error, TM_ERROR, EPROTO, "control: LINK_A for channel %" PRIu64
			    " answers no LINK_Q", v[0]);
		return -EPROTO;
	}
	if (v[1] > UINT32_MAX) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "control: LINK_A epoch %" PRIu64 " does not fit a HELLO's", v[1]);
		return -EBADMSG;
	}
	w->asked = false;
	/* About another connection than ours now (one end reconnected meanwhile), or unknown. */
	uint32_t epoch;
	tm_net_base base;
	int fd = conn_now(c, (unsigned)v[0], &epoch, &base);
	if (v[1] != w->q_epoch || w->q_fd != w->fd || w->q_epoch != w->epoch || w->fd < 0 ||
	    w->fd != fd || w->epoch != epoch || v[2] == TM_LINK_UNKNOWN ||
	    v[3] == TM_LINK_UNKNOWN || v[4] == TM_LINK_UNKNOWN) {
		w->gap_since = 0;
		return 0;
	}
	uint64_t acked, received, unread;
	if (tm_net_session_bytes(fd, &base, &acked, &received, &unread) < 0)
		return 0;
	/* v[2]: what the receiver's kernel received of the session's bytes, v[4] unread; v[3]:
	 * what our side of the path acknowledged of the session's bytes the receiver sent. All
	 * counts are the session's alone, from each end's base (tm_chan.base). */
	w->gap_tx = v[4] == 0 && w->q_acked > v[2] && w->q_acked - v[2] > LINK_SLACK
			    ? w->q_acked - v[2]
			    : 0;
	w->gap_rx = unread == 0 && v[3] > received && v[3] - received > LINK_SLACK
			    ? v[3] - received
			    : 0;
	int64_t now = tm_now_us();
	if (!w->gap_tx && !w->gap_rx) {
		w->gap_since = 0;
	} else if (!w->gap_since || v[2] != w->a_received || v[3] != w->a_acked) {
		/* New, or the far end's counts moved: a buffer on the path that drains slowly (a
		 * tunnel before a slower link) is no dead path. The clock starts again. */
		w->gap_since = now;
	}
	w->gap_seen = now;
	w->a_received = v[2];
	w->a_acked = v[3];
	return 0;
}

int tm_link_watch_count(tm_control *c, GError **error)
{
	struct tm_link_watch *lw = c->lw;
	int64_t now = tm_now_us();

	if (now - lw->flood_t >= G_USEC_PER_SEC) {
		lw->flood_t = now;
		lw->flood_n = 0;
	}
	if (++lw->flood_n > LINK_Q_FLOOD * MAX(c->ndata, 1u)) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "control: LINK_Q flood: more than %u in one second from the sender",
			    LINK_Q_FLOOD * MAX(c->ndata, 1u));
		return -EPROTO;
	}
	return 0;
}

int tm_link_watch_query(tm_control *c, const uint64_t v[TM_CTRL_MAX_FIELDS], GError **error)
{
	int r = tm_link_watch_count(c, error);

	if (r < 0)
		return r;
	if (v[0] >= c->ndata) {
		g_set_error(error, TM_ERROR, ERANGE,
			    "control: LINK_Q for channel %" PRIu64 ", the session has %u data channels",
			    v[0], c->ndata);
		return -ERANGE;
	}
	if (v[1] > UINT32_MAX) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "control: LINK_Q epoch %" PRIu64 " does not fit a HELLO's", v[1]);
		return -EBADMSG;
	}
	unsigned i = (unsigned)v[0];
	uint32_t epoch;
	tm_net_base base;
	int fd = conn_now(c, i, &epoch, &base);
	uint64_t a[TM_CTRL_MAX_FIELDS] = { i, epoch, TM_LINK_UNKNOWN, TM_LINK_UNKNOWN,
					   TM_LINK_UNKNOWN };
	uint64_t acked, received, unread;
	if (tm_net_session_bytes(fd, &base, &acked, &received, &unread) == 0) {
		a[2] = received;
		a[3] = acked;
		a[4] = unread;
	}
	return tm_chan_send_ctrl_v(c->ch, TM_MSG_LINK_A, a, error);
}

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
static bool test_cross;
static unsigned test_crossed;

void tm_link_watch_test_cross(bool on)
{
	__atomic_store_n(&test_cross, on, __ATOMIC_RELAXED);
}

unsigned tm_link_watch_test_crossed(void)
{
	return __atomic_load_n(&test_crossed, __ATOMIC_RELAXED);
}

int tm_link_watch_test_ready(tm_control *c, GError **error)
{
	if (!__atomic_load_n(&test_cross, __ATOMIC_RELAXED) || !c->lw || !c->end_sent ||
	    c->ndata == 0 || c->lw->ch[0].asked)
		return 0;
	uint32_t epoch;
	tm_net_base base;
	int fd = conn_now(c, 0, &epoch, &base);
	int r = ask(c, 0, &c->lw->ch[0], fd, epoch, error);
	if (r < 0)
		return r;
	__atomic_fetch_add(&test_crossed, 1, __ATOMIC_RELAXED);
	return 0;
}
#endif
