/* SPDX-License-Identifier: MIT */
/*
 * The urgent thread of a postcopy destination (docs/design/live-engine.md 2.3, 3.3): it owns the
 * urgent connection from the registration barrier on. It turns the pages the fault thread queued
 * into PAGE_REQs (adjacent pages merged, at most 16 and what one DATA body holds), keeps at most
 * max_outstanding of them unanswered (the rest wait in its queue), reads each URGENT into its
 * bounce buffer, checks it against its request and places it. Pages known to be zero at the
 * barrier (zero_known) are placed here as zero pages without a request. Once every page is
 * present (or every data channel ended) and nothing is outstanding it sends REQ_END and takes
 * the sender's END_ACK: the urgent connection is done. With resume, a break after REQ_END ends
 * it too, and a reconnect after the end is answered with REQ_END at once (docs/wire-format.md,
 * "The end of the urgent connection"). A connection that broke before the switch (its
 * HELLO_ACK lost, or cut while idle in precopy) is found broken when the thread starts, and
 * resumed as any: the sender reconnects it once its switch is committed.
 *
 * The thread never blocks in a send: at most max_outstanding PAGE_REQs of 40 bytes are unread
 * by the sender, far below the socket buffer (2.2), so it always returns to reading.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ram/ram-internal.h"
#include "session/postcopy-recv.h"
#include "session/resume-postcopy.h"
#include "session/session-internal.h"
#include "tagmig/error.h"

#define U64(x) ((guint64)(x))

/* A request sent and not yet answered. */
typedef struct pending_req {
	tm_page_req req;
} pending_req;

typedef struct urg {
	tm_receiver *r;
	tm_pc_recv *pc;
	tm_chan *ch;
	pc_bounce *bounce;
	GArray *waiting;         /* of pc_fault: queued, not requested yet */
	GHashTable *outstanding; /* req_id -> pending_req */
	uint64_t next_id;        /* of the next PAGE_REQ: 1, 2, ... */
	bool req_end_sent;
	bool conn_done;          /* END_ACK after REQ_END: the connection is closed cleanly */
	uint8_t zero_flag;
	int64_t quiet_since;     /* the last message received, or the first request since (us) */
} urg;

void tm_pc_urgent_wake(tm_pc_recv *pc)
{
	uint64_t one = 1;
	(void)!write(pc->req_fd, &one, sizeof(one));
}

static int cmp_fault(const void *a, const void *b)
{
	const pc_fault *x = a, *y = b;
	if (x->block != y->block)
		return x->block < y->block ? -1 : 1;
	return x->page < y->page ? -1 : x->page > y->page;
}

/*
 * A zero_known page a thread faulted on: a zero page, placed here, with the tags it has. Its
 * tags came in precopy (a zero page may carry non-zero tags) and are not touched: a side-array
 * store holds them already; a page-resident store could not have them, since writing them
 * would have mapped the page and it would not fault (fresh pages have zero tags).
 */
static int place_zero(urg *u, unsigned block, uint64_t page, GError **error)
{
	tm_place_run run = { .block = block, .first_page = page, .npages = 1, .data = NULL,
			     .zero = &u->zero_flag, .tags = NULL, .requested = true };
	int ret = tm_placer_place(u->pc->placer, &run, NULL, error);
	if (ret < 0) {
		g_prefix_error(error, "urgent: ");
		return ret;
	}
	tm_pc_recv_placed(u->r, 0, block, page, 1);
	return 0;
}

static int send_req(urg *u, const tm_page_req *req, GError **error)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_PAGE_REQ_LEN];
	size_t n = tm_page_req_encode(buf, u->ch->tx_seq++, req);
	struct iovec v = { .iov_base = buf, .iov_len = n };
	int ret = tm_chan_send(u->ch, &v, 1, n, error);
	if (ret < 0)
		return ret;
	pending_req *p = g_new(pending_req, 1);
	p->req = *req;
	if (!g_hash_table_size(u->outstanding))
		u->quiet_since = tm_now_us(); /* an answer is due from now */
	g_hash_table_insert(u->outstanding, &p->req.req_id, p);
	__atomic_add_fetch(&u->pc->requests, 1, __ATOMIC_RELAXED);
	return 0;
}

/* Takes the fault thread's queue and requests what it can (max_outstanding). */
static int drain_queue(urg *u, GError **error)
{
	tm_pc_recv *pc = u->pc;
	int ret;

	g_mutex_lock(&pc->qlock);
	if (pc->queue->len)
		g_array_append_vals(u->waiting, pc->queue->data, pc->queue->len);
	g_array_set_size(pc->queue, 0);
	g_mutex_unlock(&pc->qlock);
	if (!u->waiting->len)
		return 0;
	g_array_sort(u->waiting, cmp_fault);
	GArray *left = g_array_new(false, false, sizeof(pc_fault));
	guint i = 0;
	while (i < u->waiting->len) {
		const pc_fault *f = &g_array_index(u->waiting, pc_fault, i);
		/* Placed meanwhile, or being placed (background): nothing to ask. */
		if (tm_placer_claimed(pc->placer, f->block, f->page)) {
			i++;
			continue;
		}
		if (pc->zero_known[f->block][f->page / 64] & (1ull << (f->page % 64))) {
			if ((ret = place_zero(u, f->block, f->page, error)) < 0)
				goto out;
			i++;
			continue;
		}
		if (u->req_end_sent) {
			/* Nothing can be asked any more: only a page that will never come (the
			 * session is incomplete and the control END_ACK's check says so). */
			i++;
			continue;
		}
		if (g_hash_table_size(u->outstanding) >= pc->max_outstanding) {
			g_array_append_val(left, *f);
			i++;
			continue;
		}
		/* Adjacent faulted pages, unclaimed, in one request (one DATA body). */
		uint32_t max = tm_page_req_max_pages(&u->r->hello, f->block);
		tm_page_req req = { .req_id = u->next_id, .block = f->block,
				    .page = (uint32_t)f->page, .count = 1 };
		guint j = i + 1;
		for (; j < u->waiting->len && req.count < max; j++) {
			const pc_fault *g = &g_array_index(u->waiting, pc_fault, j);
			if (g->block == f->block && g->page == f->page + req.count - 1)
				continue; /* the same page twice */
			if (g->block != f->block || g->page != f->page + req.count ||
			    tm_placer_claimed(pc->placer, g->block, g->page) ||
			    (pc->zero_known[g->block][g->page / 64] & (1ull << (g->page % 64))))
				break;
			req.count++;
		}
		if ((ret = send_req(u, &req, error)) < 0)
			goto out;
		u->next_id++;
		i = j;
	}
	ret = 0;
out:
	/*
	 * A failed send (the connection broke: resumed() may reconnect it) leaves the faults from
	 * i on unrequested: they stay waiting. A vCPU faults once, so a fault dropped here would
	 * block it for good.
	 */
	if (ret < 0 && i < u->waiting->len)
		g_array_append_vals(left, &g_array_index(u->waiting, pc_fault, i),
				    u->waiting->len - i);
	g_array_unref(u->waiting);
	u->waiting = left;
	return ret;
}

static int recv_urgent(urg *u, const tm_frame *f, GError **error)
{
	uint8_t idb[TM_URGENT_ID_LEN];
	uint64_t id;
	uint32_t pages = 0;
	int ret;

	if (f->body_len < TM_URGENT_ID_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG, "urgent: URGENT body of %u bytes is truncated",
			    f->body_len);
		return -EBADMSG;
	}
	if ((ret = tm_chan_recv(u->ch, idb, sizeof(idb), error)) < 0)
		return ret;
	if ((ret = tm_urgent_id_decode(idb, sizeof(idb), f->body_len, &id, error)) < 0) {
		tm_chan_prefix_error(u->ch, error);
		return ret;
	}
	pending_req *p = g_hash_table_lookup(u->outstanding, &id);
	if (!p || u->req_end_sent) {
		g_set_error(error, TM_ERROR, EPROTO, "urgent: URGENT for request %" G_GUINT64_FORMAT
			    ", which is not outstanding", U64(id));
		return -EPROTO;
	}
	ret = tm_pc_recv_body(u->r, u->ch, u->bounce, f->body_len - TM_URGENT_ID_LEN,
			      TM_CHANNEL_ANY, id, &p->req, &pages, error);
	if (ret < 0)
		return ret;
	g_hash_table_remove(u->outstanding, &id); /* frees p */
	__atomic_add_fetch(&u->pc->urgent_pages, pages, __ATOMIC_RELAXED);
	return 0;
}

/* END_ACK after our REQ_END: the urgent connection ends cleanly. Returns 1. */
static int recv_end_ack(urg *u, const tm_frame *f, GError **error)
{
	uint8_t body[8 * TM_CTRL_MAX_FIELDS];
	uint64_t v[TM_CTRL_MAX_FIELDS];
	int ret;

	if (!u->req_end_sent || f->body_len > sizeof(body)) {
		g_set_error(error, TM_ERROR, EPROTO, "urgent: END_ACK before REQ_END");
		return -EPROTO;
	}
	if ((ret = tm_chan_recv(u->ch, body, f->body_len, error)) < 0)
		return ret;
	if ((ret = tm_ctrl_decode_v(f->version, f->type, body, f->body_len, v, error)) < 0) {
		tm_chan_prefix_error(u->ch, error);
		return ret;
	}
	if (v[0] || v[1]) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "urgent: END_ACK counts %" G_GUINT64_FORMAT " pages and %" G_GUINT64_FORMAT
			    " state chunks, the urgent connection acknowledges none",
			    U64(v[0]), U64(v[1]));
		return -EPROTO;
	}
	if ((ret = tm_tls_shutdown(u->ch->io, error)) < 0)
		return ret;
	return 1;
}

/* One message from the sender: 0, 1 (the connection ended cleanly) or -errno. */
static int one_message(urg *u, GError **error)
{
	tm_frame f;
	int ret = tm_chan_recv_frame(u->ch, u->r->hello.packet_size, &f, error);

	if (ret < 0)
		return ret;
	u->quiet_since = tm_now_us();
	switch (f.type) {
	case TM_MSG_URGENT:
		return recv_urgent(u, &f, error);
	case TM_MSG_END_ACK:
		return recv_end_ack(u, &f, error);
	case TM_MSG_ERROR:
		return tm_chan_recv_peer_error(u->ch, &f, "sender gave up", error);
	default:
		g_set_error(error, TM_ERROR, EPROTO, "urgent: unexpected %s", tm_msg_name(f.type));
		return -EPROTO;
	}
}

/* REQ_END once nothing more can be asked: every page present, or every data channel ended. */
static int maybe_end(urg *u, GError **error)
{
	tm_receiver *r = u->r;

	if (u->req_end_sent || g_hash_table_size(u->outstanding) || u->waiting->len)
		return 0;
	g_mutex_lock(&u->pc->qlock);
	bool queued = u->pc->queue->len > 0;
	g_mutex_unlock(&u->pc->qlock);
	g_mutex_lock(&r->lock);
	bool ended = r->ended == r->nch;
	g_mutex_unlock(&r->lock);
	if (queued || (__atomic_load_n(&u->pc->missing, __ATOMIC_ACQUIRE) && !ended))
		return 0;
	uint8_t buf[TM_FRAME_HDR_LEN + TM_REQ_END_LEN];
	size_t n = tm_req_end_encode(buf, u->ch->tx_seq++, u->next_id - 1);
	struct iovec v = { .iov_base = buf, .iov_len = n };
	/* Sent from here on, even if the send breaks: nothing is asked after it, and a sender
	 * that lacks it reconnects and gets it again (late()). */
	u->req_end_sent = true;
	u->quiet_since = tm_now_us(); /* END_ACK is due from now */
	return tm_chan_send(u->ch, &v, 1, n, error);
}

/* The urgent connection ended cleanly: completion may go on (control's END_ACK waits). */
static void conn_done(urg *u)
{
	tm_receiver *r = u->r;

	u->conn_done = true;
	g_mutex_lock(&r->lock);
	u->pc->urgent_done = true;
	g_cond_broadcast(&r->cond);
	g_mutex_unlock(&r->lock);
	tm_control_wake(&r->control); /* its END_ACK waits for this */
}

/*
 * The connection broke (*error): if the sender reconnects it (resume-postcopy.c), every request
 * not answered on the old one is asked again on the new one, whose request ids start at 1.
 * Returns 0 then, else ret with *error.
 */
static int resumed(urg *u, int ret, GError **error)
{
	/*
	 * After REQ_END nothing is outstanding and nothing more is asked: a break ends the
	 * connection as END_ACK would. Whether the sender read REQ_END is unknowable here: if it
	 * did, it answered and will not come back (waiting for it would hang the session); if
	 * not, it reconnects and late() answers with REQ_END at once.
	 */
	if (u->req_end_sent && !g_hash_table_size(u->outstanding) &&
	    tm_pcresume_recv_urgent_ends(u->r, *error)) {
		g_clear_error(error);
		conn_done(u);
		return 0;
	}
	if (tm_pcresume_recv_urgent(u->r, error) < 0)
		return ret;
	GHashTableIter it;
	gpointer v;
	g_hash_table_iter_init(&it, u->outstanding);
	while (g_hash_table_iter_next(&it, NULL, &v)) {
		const tm_page_req *q = &((pending_req *)v)->req;
		for (uint32_t i = 0; i < q->count; i++) {
			pc_fault f = { .block = q->block, .page = (uint64_t)q->page + i };
			g_array_append_val(u->waiting, f);
		}
	}
	g_hash_table_remove_all(u->outstanding);
	u->next_id = 1;
	u->req_end_sent = false;
	return 0;
}

/*
 * The connection ended (END_ACK, or a break after REQ_END) and the sender reconnected: it
 * did not see REQ_END. REQ_END(0) on the new connection at once (no request on it), and its
 * END_ACK ends the connection again. Returns 0 or -errno with *error.
 */
static int late(urg *u, GError **error)
{
	if (!tm_pcresume_recv_urgent_late(u->r))
		return 0;
	u->conn_done = false;
	u->next_id = 1;
	uint8_t buf[TM_FRAME_HDR_LEN + TM_REQ_END_LEN];
	size_t n = tm_req_end_encode(buf, u->ch->tx_seq++, 0);
	struct iovec v = { .iov_base = buf, .iov_len = n };
	return tm_chan_send(u->ch, &v, 1, n, error);
}

/*
 * Until the session stops: requests and their answers while the connection lasts, and local
 * zero pages until RAM is unregistered (a zero_known page may fault after REQ_END: it needs
 * no request, so REQ_END does not wait for it).
 */
/*
 * Requests (or REQ_END) outstanding and nothing from the sender for timeout_ms: the path is
 * dead even if neither end of the connection saw it break (a frozen middlebox). Taken as a
 * break (-ETIMEDOUT): with resume the sender learns it on control (CONN_LOST) and reconnects;
 * after REQ_END such a break ends the connection (resumed()).
 */
static int check_silent(urg *u, GError **error)
{
	unsigned n = g_hash_table_size(u->outstanding);
	int64_t quiet = tm_now_us() - u->quiet_since;

	if ((!n && !u->req_end_sent) || u->conn_done ||
	    quiet < (int64_t)u->r->cfg.timeout_ms * 1000)
		return 0;
	if (n)
		g_set_error(error, TM_ERROR, ETIMEDOUT,
			    "urgent: peer unresponsive: %u request%s unanswered, nothing from the "
			    "sender for %.1f s (timeout_ms)",
			    n, n == 1 ? "" : "s", quiet / 1e6);
	else
		g_set_error(error, TM_ERROR, ETIMEDOUT,
			    "urgent: peer unresponsive: no END_ACK for REQ_END, nothing from the "
			    "sender for %.1f s (timeout_ms)",
			    quiet / 1e6);
	return -ETIMEDOUT;
}

static int run(urg *u, GError **error)
{
	tm_pc_recv *pc = u->pc;
	int ret;

	for (;;) {
		if (((ret = drain_queue(u, error)) < 0 || (ret = maybe_end(u, error)) < 0 ||
		     (u->conn_done && (ret = late(u, error)) < 0) ||
		     (ret = check_silent(u, error)) < 0) &&
		    (ret = resumed(u, ret, error)) < 0)
			return ret;
		if (!u->conn_done && tm_io_readable(u->ch->io)) {
			if ((ret = one_message(u, error)) < 0 && (ret = resumed(u, ret, error)) < 0)
				return ret;
			if (ret == 1)
				conn_done(u);
			continue;
		}
		/* Progress elsewhere (a data channel ending) wakes nobody here: look again soon. */
		struct pollfd p[3] = { { .fd = pc->stop_fd, .events = POLLIN },
				       { .fd = pc->req_fd, .events = POLLIN },
				       { .fd = u->ch->fd, .events = POLLIN } };
		if (poll(p, u->conn_done ? 2 : 3, 50) < 0 && errno != EINTR) {
			int e = errno;
			g_set_error(error, TM_ERROR, e, "urgent: poll: %s", g_strerror(e));
			return -e;
		}
		if (p[0].revents)
			return 0; /* the session stopped (its cause is recorded) or is freed */
		if (p[1].revents) {
			uint64_t v;
			(void)!read(pc->req_fd, &v, sizeof(v));
		}
	}
}

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
static bool test_late;

void tm_pc_test_urgent_late(bool late)
{
	__atomic_store_n(&test_late, late, __ATOMIC_RELAXED);
}

/* Under the hook: waits for a kept reconnect and a queued fault (postcopy-recv.h). */
static void test_start_late(urg *u)
{
	if (!__atomic_load_n(&test_late, __ATOMIC_RELAXED))
		return;
	for (unsigned ms = 0; ms < 10000; ms++) {
		g_mutex_lock(&u->r->lock);
		bool kept = u->pc->urg_ready;
		g_mutex_unlock(&u->r->lock);
		g_mutex_lock(&u->pc->qlock);
		bool faulted = u->pc->queue->len > 0;
		g_mutex_unlock(&u->pc->qlock);
		struct pollfd p = { .fd = u->pc->stop_fd, .events = POLLIN };
		if ((kept && faulted) || poll(&p, 1, 0) > 0)
			return;
		g_usleep(1000);
	}
}
#else
static void test_start_late(urg *u)
{
	(void)u;
}
#endif

static gpointer urgent_thread(gpointer data)
{
	urg *u = data;
	tm_receiver *r = u->r;
	g_autoptr(GError) err = NULL;

	test_start_late(u);
	int ret = run(u, &err);
	if (ret < 0) {
		tm_receiver_fail(r, NULL, g_steal_pointer(&err), u->ch->peer_error);
	}
	tm_pc_bounce_free(u->bounce);
	g_array_unref(u->waiting);
	g_hash_table_unref(u->outstanding);
	g_free(u);
	return NULL;
}

int tm_pc_urgent_start(tm_receiver *r, GError **error)
{
	if (r->urg.fd < 0) {
		g_set_error(error, TM_ERROR, EPROTO, "postcopy: no urgent connection");
		return -EPROTO;
	}
	urg *u = g_new0(urg, 1);
	u->r = r;
	u->pc = r->pc;
	u->ch = &r->urg;
	u->bounce = tm_pc_bounce_new(r->hello.packet_size);
	u->waiting = g_array_new(false, false, sizeof(pc_fault));
	u->outstanding = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, g_free);
	u->next_id = 1;
	u->zero_flag = 1;
	/* Only messages are timed from here on: the thread polls before it reads. */
	tm_chan_set_timeout(u->ch, 0);
	/* Room for every unanswered PAGE_REQ: this thread never blocks in a send (2.2). */
	int buf = 64 << 10;
	(void)setsockopt(u->ch->fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	(void)setsockopt(u->ch->fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
	r->pc->urgent_thread = g_thread_try_new("tm-recv-urgent", urgent_thread, u, error);
	if (!r->pc->urgent_thread) {
		tm_pc_bounce_free(u->bounce);
		g_array_unref(u->waiting);
		g_hash_table_unref(u->outstanding);
		g_free(u);
		return -EAGAIN;
	}
	return 0;
}

/*
 * Agreed, never switched: REQ_END(0) / END_ACK. The connection carried nothing, so a break of
 * it (the sender's side closed or reset it before the switch, or now) ends it as END_ACK
 * would: the sender takes the same break as the end (urgent-send.c), with or without resume,
 * and reconnects only at a switch, which never came. The control END_ACK still says whether
 * everything arrived, and goes without waiting for the answer here: a path that died silently
 * (nothing ever breaks it) must not hold the end of the session; the answer is read once
 * control ended, for a bounded time (tm_pc_urgent_close_unused).
 */
static bool tolerated(tm_receiver *r, int ret)
{
	return !r->urg.peer_error && tm_resume_broken(-ret) && ret != -ETIMEDOUT;
}

/* The sender's answer to REQ_END(0): END_ACK (then the TLS close), or its ERROR. */
static int unused_answer(tm_receiver *r, GError **error)
{
	tm_frame f;
	int ret = tm_chan_recv_frame(&r->urg, r->hello.packet_size, &f, error);

	if (ret < 0)
		return ret;
	if (f.type == TM_MSG_ERROR)
		return tm_chan_recv_peer_error(&r->urg, &f, "sender gave up", error);
	if (f.type != TM_MSG_END_ACK) {
		/* Nothing was ever asked: an URGENT here answers no request. */
		g_set_error(error, TM_ERROR, EPROTO, "urgent: %s, but the session never switched to "
			    "postcopy", tm_msg_name(f.type));
		return -EPROTO;
	}
	uint8_t body[8 * TM_CTRL_MAX_FIELDS];
	uint64_t vals[TM_CTRL_MAX_FIELDS];
	if (f.body_len > sizeof(body)) {
		g_set_error(error, TM_ERROR, EBADMSG, "urgent: END_ACK body of %u bytes", f.body_len);
		return -EBADMSG;
	}
	if ((ret = tm_chan_recv(&r->urg, body, f.body_len, error)) < 0)
		return ret;
	if ((ret = tm_ctrl_decode_v(f.version, f.type, body, f.body_len, vals, error)) < 0) {
		tm_chan_prefix_error(&r->urg, error);
		return ret;
	}
	if (vals[0] || vals[1]) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "urgent: END_ACK counts %" G_GUINT64_FORMAT " pages and %" G_GUINT64_FORMAT
			    " state chunks, the urgent connection acknowledges none",
			    (guint64)vals[0], (guint64)vals[1]);
		return -EPROTO;
	}
	return tm_tls_shutdown(r->urg.io, error);
}

int tm_pc_urgent_end_unused(tm_receiver *r, GError **error)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_REQ_END_LEN];

	if (r->urg.fd < 0)
		return 0;
	size_t n = tm_req_end_encode(buf, r->urg.tx_seq++, 0);
	struct iovec v = { .iov_base = buf, .iov_len = n };
	/* Nothing else ever went on it: the socket has room, the send does not wait. */
	int ret = tm_chan_send(&r->urg, &v, 1, n, error);
	/* What the sender sent before (an URGENT, its ERROR) is judged before control ends. */
	if (ret == 0 && tm_io_readable(r->urg.io))
		ret = unused_answer(r, error);
	else if (ret == 0)
		r->pc->unused_ack_due = true;
	if (ret < 0 && tolerated(r, ret)) {
		g_clear_error(error);
		return 0;
	}
	return ret;
}

int tm_pc_urgent_close_unused(tm_receiver *r, GError **error)
{
	if (!r->pc || !r->pc->unused_ack_due)
		return 0;
	r->pc->unused_ack_due = false;
	if (!tm_io_readable(r->urg.io)) {
		struct pollfd p = { .fd = r->urg.fd, .events = POLLIN };
		if (poll(&p, 1, TM_URGENT_END_GRACE_MS) <= 0)
			return 0; /* no answer in time: closed as a break */
	}
	int ret = unused_answer(r, error);
	if (ret < 0 && tolerated(r, ret)) {
		g_clear_error(error);
		return 0;
	}
	return ret;
}
