/* SPDX-License-Identifier: MIT */
/*
 * The sender's urgent connection (docs/design/live-engine.md 2.3, 3.1, 3.2 step 3): one return
 * thread reads the receiver's PAGE_REQs and answers each with one URGENT, whose pages come from
 * guest RAM and whose tags from the store's get, as a data worker packs them. A requested page's
 * unsent bit is cleared (the background then skips it), its answered bit set (a second request
 * for it is -EPROTO: a receiver causes at most one reply per page), and the data worker of the
 * page's stripe moves its cursor behind the request (pages after a requested one are likely
 * next). Each reply records its service latency (request read -> reply sent) and what the same
 * reply would have waited on the page's data channel (its socket's unsent bytes at that
 * channel's throughput: the inline-wait sample that keeps the decision for a dedicated
 * connection measurable). REQ_END, once the destination has every page, is answered by END_ACK.
 */
#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/sockios.h>

#include "common/error-internal.h"
#include "ram/ram-internal.h"
#include "session/resume-postcopy.h"
#include "session/session-internal.h"
#include "tagmig/error.h"
#include "tagstore/tagstore-internal.h"

#define U64(x) ((guint64)(x))

/* Socket buffers of the urgent connection: at least the receiver's 20 KiB of PAGE_REQs (2.2). */
#define URGENT_SOCKBUF (64 << 10)

typedef struct ret_loop {
	tm_sender *s;
	tm_req_window win;
	tm_packet pkt;
	uint8_t *tagraw;
} ret_loop;

/* Sample of what an in-channel reply would have waited on data channel c, in us (0: unknown). */
static void sample_inline_wait(tm_sender *s, send_chan *c)
{
	int outq = 0;
	/*
	 * Under s->lock: a data channel that resumes (resume-send.c) closes its connection and
	 * puts the new one in c->ch under it, so the fd read here is the channel's, open, and not
	 * a number reused meanwhile. A channel between the two has fd -1: no sample. The workers
	 * never take the lock for this; only this thread, once per request.
	 */
	g_mutex_lock(&s->lock);
	int64_t dt = tm_now_us() - s->t_start; /* the channel's throughput over the session */
	uint64_t bytes = __atomic_load_n(&c->ch.st.wire_bytes, __ATOMIC_RELAXED);
	bool ok = c->ch.fd >= 0 && ioctl(c->ch.fd, SIOCOUTQ, &outq) == 0;
	g_mutex_unlock(&s->lock);

	if (!ok || dt <= 0 || bytes == 0)
		return;
	tm_histogram_record(&s->pc.inline_wait, (uint64_t)outq * (uint64_t)dt / bytes);
}

/* The answer's bookkeeping: answered bits (refusing a page asked for again), unsent cleared. */
static int account(ret_loop *l, const tm_page_req *req, GError **error)
{
	tm_sender *s = l->s;
	const tm_wire_block *wb = &s->hello.blocks[req->block];
	uint64_t *ans = s->pc.answered[req->block], *un = s->pc.unsent[req->block];

	for (uint32_t i = 0; i < req->count; i++) {
		uint64_t p = req->page + i;
		if (__atomic_load_n(&ans[p / 64], __ATOMIC_RELAXED) & (1ULL << (p % 64))) {
			g_set_error(error, TM_ERROR, EPROTO,
				    "urgent: PAGE_REQ %" G_GUINT64_FORMAT " asks again for block %u "
				    "'%s' page %" G_GUINT64_FORMAT " (offset 0x%" G_GINT64_MODIFIER "x), "
				    "answered before",
				    U64(req->req_id), req->block, wb->name, U64(p), U64(p * wb->page_size));
			return -EPROTO;
		}
	}
	for (uint32_t i = 0; i < req->count; i++) {
		uint64_t p = req->page + i;
		__atomic_fetch_or(&ans[p / 64], 1ULL << (p % 64), __ATOMIC_RELAXED);
		__atomic_fetch_and(&un[p / 64], ~(1ULL << (p % 64)), __ATOMIC_ACQ_REL);
	}
	/* The cursor hint goes to the channel of the page after the request. */
	uint64_t next = (uint64_t)req->page + req->count;
	if (next < wb->npages) {
		uint64_t chunk = next / (s->hello.chunk_size / wb->page_size);
		send_chan *c = &s->chans[(wb->chunk_base + chunk) % s->nch];
		__atomic_store_n(&c->pc.hint, (((uint64_t)req->block << 40) | next) + 1,
				 __ATOMIC_RELAXED);
	}
	return 0;
}

/* URGENT for req: its pages from guest RAM, tags through the store. */
static int answer(ret_loop *l, const tm_page_req *req, int64_t t_read, GError **error)
{
	tm_sender *s = l->s;
	tm_chan *ch = &s->pc.urg;
	const tm_wire_block *wb = &s->hello.blocks[req->block];
	const tm_ram_block *rb = tm_ram_layout_get(s->layout, req->block);
	uint32_t ps = wb->page_size;
	uint64_t off = (uint64_t)req->page * ps;
	uint64_t chunk = req->page / (s->hello.chunk_size / ps);
	int r;

	sample_inline_wait(s, &s->chans[(wb->chunk_base + chunk) % s->nch]);
	if ((r = account(l, req, error)) < 0)
		return r;
	if (s->tags) {
		r = tm_tag_store_get(s->tags, req->block, off, (uint64_t)req->count * ps, l->tagraw);
		if (r < 0)
			return tm_error_at(error, -r, ch->id, wb->name, off,
					   "urgent: reading tags failed: %s", g_strerror(-r));
	}
	tm_packet_begin(&l->pkt, req->block, ps, s->hello.packet_size);
	for (uint32_t i = 0; i < req->count; i++) {
		const uint8_t *data = rb->host + off + (uint64_t)i * ps;
		tm_tag_enc enc;
		tm_packet_add(&l->pkt, req->page + i, data, tm_buffer_is_zero(data, ps),
			      s->tags ? l->tagraw + (uint64_t)i * (ps / TM_TAG_GRANULE) : NULL, &enc);
	}
	uint8_t prefix[TM_FRAME_HDR_LEN + TM_URGENT_ID_LEN];
	size_t len;
	unsigned n = tm_urgent_finish(&l->pkt, ch->tx_seq++, req->req_id, prefix, &len);
	g_autofree struct iovec *iov = g_new(struct iovec, n + 1);
	iov[0] = (struct iovec){ .iov_base = prefix, .iov_len = sizeof(prefix) };
	memcpy(iov + 1, l->pkt.iov, n * sizeof(*iov));
	if ((r = tm_chan_send(ch, iov, n + 1, len, error)) < 0)
		return r;
	l->win.outstanding--;
	__atomic_fetch_add(&s->pc.requests, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&s->pc.urgent_pages, req->count, __ATOMIC_RELAXED);
	tm_histogram_record(&s->pc.service, (uint64_t)MAX(tm_now_us() - t_read, 0));
	return 0;
}

static int recv_body(tm_chan *ch, const tm_frame *f, uint8_t *body, size_t cap, GError **error)
{
	if (f->body_len > cap) {
		g_set_error(error, TM_ERROR, EBADMSG, "urgent: %s body of %u bytes",
			    tm_msg_name(f->type), f->body_len);
		return -EBADMSG;
	}
	return tm_chan_recv(ch, body, f->body_len, error);
}

/* One message: 0, 1 when REQ_END was answered and the connection closed, or -errno. */
static int one_message(ret_loop *l, GError **error)
{
	tm_sender *s = l->s;
	tm_chan *ch = &s->pc.urg;
	uint8_t body[TM_PAGE_REQ_LEN];
	tm_frame f;
	int r = tm_chan_recv_frame(ch, 0, &f, error);

	if (r < 0)
		return r;
	int64_t t_read = tm_now_us();
	if (f.type == TM_MSG_ERROR)
		return tm_chan_recv_peer_error(ch, &f, "receiver failed", error);
	if (f.type == TM_MSG_REQ_END) {
		uint64_t sent;
		if ((r = recv_body(ch, &f, body, TM_REQ_END_LEN, error)) < 0)
			return r;
		if ((r = tm_req_end_decode(body, f.body_len, l->win.next_id - 1, &sent, error)) < 0) {
			tm_chan_prefix_error(ch, error);
			return r;
		}
		if ((r = tm_chan_send_ctrl(ch, TM_MSG_END_ACK, 0, 0, error)) < 0 ||
		    (r = tm_tls_shutdown(ch->io, error)) < 0)
			return r;
		return 1;
	}
	if (f.type != TM_MSG_PAGE_REQ) {
		g_set_error(error, TM_ERROR, EPROTO, "urgent: unexpected %s", tm_msg_name(f.type));
		return -EPROTO;
	}
	tm_page_req req;
	if ((r = recv_body(ch, &f, body, sizeof(body), error)) < 0)
		return r;
	if (!__atomic_load_n(&s->pc.switching, __ATOMIC_ACQUIRE)) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "urgent: PAGE_REQ before the switch to postcopy");
		return -EPROTO;
	}
	if ((r = tm_page_req_decode(body, f.body_len, &s->hello, &l->win, &req, error)) < 0) {
		tm_chan_prefix_error(ch, error);
		return r;
	}
	l->win.next_id++;
	l->win.outstanding++;
	return answer(l, &req, t_read, error);
}

static int run(ret_loop *l, GError **error)
{
	tm_sender *s = l->s;
	tm_chan *ch = &s->pc.urg;

	for (;;) {
		g_mutex_lock(&s->lock);
		bool quit = s->quit, over = s->pc.urg_end_over;
		g_mutex_unlock(&s->lock);
		if (quit)
			return 0;
		if (over)
			return 1; /* its end did not come after control's: it ends anyway */
		if (tm_io_readable(ch->io)) {
			int r = one_message(l, error);
			/* Broken before REQ_END was answered: reconnected (at the switch if it broke
			 * before), and asked again, or ended by control's END_ACK (resume-postcopy.c). */
			if (r < 0 && (r = tm_pcresume_urgent_send(s, &l->win, error)) == 0)
				continue;
			if (r != 0)
				return r;
			continue;
		}
		struct pollfd p[2] = { { .fd = ch->fd, .events = POLLIN },
				       { .fd = s->pc.wake_fd, .events = POLLIN } };
		if (poll(p, 2, -1) > 0 && p[1].revents) {
			uint64_t v;
			(void)!read(s->pc.wake_fd, &v, sizeof(v));
		}
	}
}

static gpointer return_thread(gpointer data)
{
	ret_loop *l = data;
	tm_sender *s = l->s;
	g_autoptr(GError) err = NULL;
	int r = run(l, &err);

	g_mutex_lock(&s->lock);
	if (r == 1)
		s->pc.urg_ended = true;
	/*
	 * Before the switch the urgent connection carries nothing: a receiver that closes it (at
	 * the end of a precopy session) breaks nothing, and a receiver that died is found on the
	 * other connections.
	 */
	bool idle_close = (r == -ECONNRESET || r == -EPIPE) &&
			  !__atomic_load_n(&s->pc.started, __ATOMIC_ACQUIRE);
	/* Without resume nothing reconnects it: tm_sender_start_postcopy() says why it cannot. */
	if (idle_close && !s->pc.urg_lost)
		s->pc.urg_lost = g_steal_pointer(&err);
	g_mutex_unlock(&s->lock);
	if (r < 0 && !idle_close) {
		if (!s->pc.urg.peer_error)
			tm_chan_send_error(&s->pc.urg, err->code, err->message);
		tm_sender_fail(s, g_steal_pointer(&err), s->pc.urg.peer_error);
	}
	tm_packet_fini(&l->pkt);
	g_free(l->tagraw);
	g_free(l);
	g_mutex_lock(&s->lock);
	s->pc.urg_exited = true;
	g_cond_broadcast(&s->cond);
	g_mutex_unlock(&s->lock);
	return NULL;
}

int tm_urgent_start(tm_sender *s, GError **error)
{
	int sz = URGENT_SOCKBUF;

	if (!s->pc.agreed)
		return 0;
	s->pc.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->pc.wake_fd < 0) {
		int err = errno;
		g_set_error(error, TM_ERROR, err, "urgent: eventfd: %s", g_strerror(err));
		return -err;
	}
	s->pc.urg.version = TM_WIRE_VERSION_2;
	/* Best effort, as keepalive: an attached socket that is not TCP keeps its buffers. */
	(void)setsockopt(s->pc.urg.fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	(void)setsockopt(s->pc.urg.fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	(void)tm_net_keepalive(s->pc.urg.fd, tm_control_interval(s->cfg.timeout_ms), 0);
	ret_loop *l = g_new0(ret_loop, 1);
	l->s = s;
	l->win = (tm_req_window){ .next_id = 1, .max_outstanding = s->pc.max_outstanding };
	tm_packet_init(&l->pkt, s->hello.packet_size);
	l->pkt.version = TM_WIRE_VERSION_2;
	l->tagraw = g_malloc(s->hello.packet_size / TM_TAG_GRANULE);
	s->pc.thread = g_thread_try_new("tm-send-urg", return_thread, l, error);
	if (!s->pc.thread) {
		tm_packet_fini(&l->pkt);
		g_free(l->tagraw);
		g_free(l);
		return -EAGAIN;
	}
	return 0;
}

void tm_urgent_wake(tm_sender *s, bool shut)
{
	uint64_t one = 1;

	if (s->pc.wake_fd >= 0)
		(void)!write(s->pc.wake_fd, &one, sizeof(one));
	if (shut && s->pc.thread && s->pc.urg.fd >= 0)
		shutdown(s->pc.urg.fd, SHUT_RDWR);
}

void tm_urgent_await_exit_locked(tm_sender *s)
{
	while (s->pc.thread && !s->pc.urg_exited)
		g_cond_wait(&s->cond, &s->lock);
}

int tm_urgent_switch_check(tm_sender *s, GError **error)
{
	/* With resume the return thread reconnects a broken connection once the switch is
	 * committed (resume-postcopy.c): the switch goes on. */
	if (tm_resume_send_on(s))
		return 0;
	g_mutex_lock(&s->lock);
	/* A break the return thread has not read yet: it ends on it at once (no resume). */
	if (s->pc.thread && !s->pc.urg_exited && tm_chan_broke(&s->pc.urg))
		tm_urgent_await_exit_locked(s);
	int code = s->pc.urg_lost ? s->pc.urg_lost->code : 0;
	if (code)
		g_set_error(error, TM_ERROR, ENOTCONN,
			    "tm_sender_start_postcopy(): the urgent connection broke before the switch "
			    "and is not reconnected (%s): %s; the session goes on in precopy",
			    s->live.no_resume ? "resume is off (no_resume)" : "resume was not agreed",
			    s->pc.urg_lost->message);
	g_mutex_unlock(&s->lock);
	return code ? -ENOTCONN : 0;
}

void tm_urgent_stop(tm_sender *s)
{
	/* A return thread that waits for the switch to reconnect sees quit (resume-postcopy.c). */
	g_mutex_lock(&s->lock);
	g_cond_broadcast(&s->cond);
	g_mutex_unlock(&s->lock);
	if (s->pc.thread) {
		/* also out of a send to a receiver that stopped reading (free mid-migration) */
		tm_urgent_wake(s, true);
		g_thread_join(s->pc.thread);
		s->pc.thread = NULL;
	}
	if (s->pc.wake_fd >= 0)
		close(s->pc.wake_fd);
	s->pc.wake_fd = -1;
	tm_chan_close(&s->pc.urg);
	g_clear_error(&s->pc.urg_lost);
}
