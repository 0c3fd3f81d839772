/* SPDX-License-Identifier: MIT */
/*
 * The receiver's channel worker: it reads the channel's messages in order, applies each DATA
 * packet to guest RAM (page data, zero pages, tags, then presence), answers SYNC once every
 * earlier packet of the channel is applied, and ends at END. Nothing from the peer touches guest
 * RAM before the codec has checked it against the session's layout.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "common/error-internal.h"
#include "ram/ram-internal.h"
#include "session/resume.h"
#include "session/postcopy-recv.h"
#include "session/delta.h"
#include "session/session-internal.h"
#include "tagmig/error.h"
#include "tagstore/tagstore-internal.h"

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
static int test_end_ack_lie = -1;

void tm_receiver_test_end_ack_lie(int channel)
{
	__atomic_store_n(&test_end_ack_lie, channel, __ATOMIC_RELAXED);
}

/* The pages_applied c's END_ACK says: one more than applied on a lying channel. */
static uint64_t end_ack_pages(const recv_chan *c)
{
	int lie = __atomic_load_n(&test_end_ack_lie, __ATOMIC_RELAXED);
	return c->pages_applied + (lie == -2 || (lie >= 0 && (unsigned)lie == c->ch.id));
}
#else
static uint64_t end_ack_pages(const recv_chan *c)
{
	return c->pages_applied;
}
#endif

static void mark_present(tm_receiver *r, recv_chan *c, unsigned block, uint64_t first,
			 uint64_t n)
{
	uint64_t *bm = r->present[block];
	for (uint64_t p = first; p < first + n; p++)
		__atomic_fetch_or(&bm[p / 64], 1ull << (p % 64), __ATOMIC_RELEASE);
	if (r->cfg.on_present)
		r->cfg.on_present(r->cfg.opaque, c->ch.id, block, first, n);
}

/*
 * Fault the destination pages in with one call per run instead of one exception per page inside
 * the socket copy: on cold guest RAM that is most of the receiver's cost. Kernels without
 * MADV_POPULATE_WRITE (before 5.14) say EINVAL and fault as before.
 */
static void populate(tm_receiver *r, const tm_recv_plan *p)
{
	if (__atomic_load_n(&r->no_populate, __ATOMIC_RELAXED))
		return;
	for (unsigned i = 0; i < p->data_iov_count; i++)
		if (p->iov[i].iov_len >= TM_POPULATE_MIN && !tm_recv_plan_iov_staged(p, i) &&
		    madvise(p->iov[i].iov_base, p->iov[i].iov_len, MADV_POPULATE_WRITE) < 0 &&
		    errno == EINVAL)
			__atomic_store_n(&r->no_populate, true, __ATOMIC_RELAXED);
}

/*
 * One DATA packet: the codec plans it from its headers (tm_recv_plan_*, which checks every count
 * and offset first), the channel moves the bytes (page data straight into guest RAM), then the
 * zero pages, the tags and the presence bits are applied.
 */
static int apply_data(recv_chan *c, const tm_frame *f, GError **error)
{
	tm_receiver *r = c->r;
	tm_recv_plan *p = &c->plan;
	int ret;

	/*
	 * Frame header, DATA header and entries arrive in separate receives: the frame may be a
	 * control message as short as 24 bytes, and the entries' count is in the DATA header.
	 */
	if (f->type == TM_MSG_ZDATA)
		ret = tm_zrecv_begin(c, f->body_len, error); /* compress-recv.c */
	else if ((ret = tm_recv_plan_begin(p, &r->hello, f->body_len, error)) < 0)
		goto bad;
	if (ret < 0 || (ret = tm_chan_recv(&c->ch, p->head, (size_t)ret, error)) < 0)
		return ret;
	if ((ret = tm_recv_plan_header(p, error)) < 0)
		goto bad;
	if ((ret = tm_chan_recv(&c->ch, p->head + TM_DATA_HDR_LEN, (size_t)ret, error)) < 0)
		return ret;
	const tm_ram_block *b = tm_ram_layout_get(r->layout, p->hdr.block);
	if ((ret = tm_recv_plan_entries(p, c->ch.id, b->host, error)) < 0)
		goto bad;

	/* Everything is validated: page data goes straight into guest RAM. */
	uint32_t ps = p->page_size;
	populate(r, p); /* short runs go to the stage (codec.h): nothing of them to fetch */
	if (p->payload_len) {
		ret = tm_chan_recv_iov(&c->ch, p->iov, p->iov_count, p->payload_len);
		if (ret < 0)
			return tm_error_at(error, -ret, c->ch.id, b->name,
					   (uint64_t)p->entries[0].page * ps, "receive page data: %s%s",
					   tm_chan_io_reason(&c->ch, -ret),
					   tm_chan_deadline_note(&c->ch, -ret));
	}
	if ((ret = tm_recv_plan_tags(p, error)) < 0)
		goto bad;
	tm_recv_plan_commit(p); /* staged runs: only now into guest RAM */
	if ((ret = tm_zrecv_decode(c, b->name, error)) < 0) /* ZDATA: decoded into its pages */
		return ret;
	for (uint32_t i = 0; i < p->hdr.page_count; i++) {
		const tm_page_entry *e = &p->entries[i];
		bool skip = e->kind != TM_PAGE_NORMAL && r->cfg.ram_zeroed &&
			    !tm_receiver_page_present(r, p->hdr.block, e->page);
		if (e->kind != TM_PAGE_NORMAL && !skip) {
			/* Only write when needed: fresh destination memory stays untouched. */
			uint8_t *page = b->host + (uint64_t)e->page * ps;
			if (!tm_buffer_is_zero(page, ps))
				memset(page, 0, ps);
		}
		/* Postcopy: a page never written may not be mapped; the barrier must know. */
		tm_pc_recv_zero_skipped(r, p->hdr.block, e->page, skip);
		tm_count(&c->ch.st.by_kind[e->kind], 1);
		tm_count(&c->ch.st.by_enc[e->tag_enc], 1);
	}
	/* Tags (zero ones too: stale tags of an earlier round must go), then presence, in runs. */
	for (uint32_t i = 0; i < p->hdr.page_count;) {
		uint32_t j = tm_recv_plan_run_end(p, i);
		uint64_t first = p->entries[i].page;
		if (r->tags) {
			ret = tm_tag_store_set(r->tags, p->hdr.block, first * ps, (uint64_t)(j - i) * ps,
					       p->tags + (size_t)i * (ps / TM_TAG_GRANULE));
			if (ret < 0)
				return tm_error_at(error, -ret, c->ch.id, b->name, first * ps,
						   "setting tags failed: %s", g_strerror(-ret));
		}
		mark_present(r, c, p->hdr.block, first, j - i);
		i = j;
	}
	c->pages_applied += p->hdr.page_count;
	c->packets_applied++;
	tm_count(&c->ch.st.pages, p->hdr.page_count);
	tm_count(&c->ch.st.packets, 1);
	tm_count(&c->ch.st.data_bytes, p->zcodec ? p->zlen : p->hdr.data_len); /* on the wire */
	tm_count(&c->ch.st.tag_bytes, p->hdr.tag_len);
	return 0;
bad:
	tm_chan_prefix_error(&c->ch, error);
	return ret;
}

static int recv_ctrl_body(recv_chan *c, const tm_frame *f, uint64_t v[TM_CTRL_MAX_FIELDS],
			  GError **error)
{
	uint8_t body[8 * TM_CTRL_MAX_FIELDS];
	int ret;

	if (f->body_len > sizeof(body)) {
		g_set_error(error, TM_ERROR, EBADMSG, "channel %u: %s body of %u bytes", c->ch.id,
			    tm_msg_name(f->type), f->body_len);
		return -EBADMSG;
	}
	if ((ret = tm_chan_recv(&c->ch, body, f->body_len, error)) < 0)
		return ret;
	ret = tm_ctrl_decode_v(f->version, f->type, body, f->body_len, v, error);
	if (ret < 0)
		tm_chan_prefix_error(&c->ch, error);
	return ret;
}

static int recv_loop(recv_chan *c, GError **error)
{
	tm_receiver *r = c->r;
	uint64_t v[TM_CTRL_MAX_FIELDS];
	tm_frame f;
	int ret;

	for (;;) {
		/* Another channel failed or the VMM aborted: stop writing guest RAM now, even if
		 * this channel's sender keeps streaming (a read shutdown only ends an empty queue).
		 * The worker then drains the channel (drain_for_error). */
		if (__atomic_load_n(&r->quit, __ATOMIC_RELAXED)) {
			g_set_error(error, TM_ERROR, ECANCELED, "channel %u: stopped", c->ch.id);
			return -ECANCELED;
		}
		if ((ret = tm_chan_recv_frame(&c->ch, r->hello.packet_size, &f, error)) < 0)
			return ret;
		if ((ret = tm_recv_state_gate(c, &f, error)) < 0)
			return ret;
		switch (f.type) {
		case TM_MSG_RAM_END:
		case TM_MSG_STATE:
			if ((ret = tm_recv_state_frame(c, &f, error)) < 0)
				return ret;
			break;
		case TM_MSG_DATA:
			if ((ret = c->postcopy ? tm_pc_recv_data(c, &f, error)
					       : apply_data(c, &f, error)) < 0)
				return ret;
			break;
		case TM_MSG_ZDATA:
			if (c->postcopy) {
				/* Background pages are placed from a bounce buffer: raw DATA only. */
				g_set_error(error, TM_ERROR, EPROTO,
					    "channel %u: ZDATA after RAM_END(POSTCOPY): background pages "
					    "travel as DATA", c->ch.id);
				return -EPROTO;
			}
			if ((ret = apply_data(c, &f, error)) < 0)
				return ret;
			break;
		case TM_MSG_DELTA:
		case TM_MSG_ZDELTA:
			if ((ret = tm_drecv_apply(c, &f, error)) < 0) /* delta-recv.c */
				return ret;
			break;
		case TM_MSG_DISCARD:
			if ((ret = tm_pc_recv_discard(c, &f, error)) < 0)
				return ret;
			break;
		case TM_MSG_SYNC:
			if ((ret = recv_ctrl_body(c, &f, v, error)) < 0)
				return ret;
			/* Every earlier DATA on this channel is applied: the channel is ordered. So
			 * it is answered for a resume even if the SYNC_ACK goes with the connection. */
			if (v[0] > c->last_sync) /* the worker's own: only it writes */
				__atomic_store_n(&c->last_sync, v[0], __ATOMIC_RELAXED);
			if ((ret = tm_chan_send_ctrl(&c->ch, TM_MSG_SYNC_ACK, v[0], c->pages_applied,
						     error)) < 0)
				return ret;
			break;
		case TM_MSG_END:
			if ((ret = recv_ctrl_body(c, &f, v, error)) < 0)
				return ret;
			if (v[0] != c->pages_applied) {
				g_set_error(error, TM_ERROR, EPROTO,
					    "channel %u: sender sent %" G_GUINT64_FORMAT
					    " pages, %" G_GUINT64_FORMAT " arrived",
					    c->ch.id, v[0], c->pages_applied);
				return -EPROTO;
			}
			/* Every count END carries (protocol 1's packets_sent too). */
			if (v[1] != c->packets_applied) {
				g_set_error(error, TM_ERROR, EPROTO,
					    "channel %u: sender sent %" G_GUINT64_FORMAT
					    " packets, %" G_GUINT64_FORMAT " arrived",
					    c->ch.id, v[1], c->packets_applied);
				return -EPROTO;
			}
			if (f.version == TM_WIRE_VERSION_2 && v[2] != c->state_chunks) {
				g_set_error(error, TM_ERROR, EPROTO,
					    "channel %u: sender sent %" G_GUINT64_FORMAT
					    " state chunks, %" G_GUINT64_FORMAT " arrived",
					    c->ch.id, v[2], c->state_chunks);
				return -EPROTO;
			}
			if ((ret = tm_chan_send_ctrl(&c->ch, TM_MSG_END_ACK, end_ack_pages(c),
						     c->state_chunks, error)) < 0)
				return ret;
			/* A clean TLS close both ways: a stream cut short is an error, not an end. */
			return tm_tls_shutdown(c->ch.io, error);
		case TM_MSG_ERROR:
			return tm_chan_recv_peer_error(&c->ch, &f, "sender gave up", error);
		default:
			g_set_error(error, TM_ERROR, EPROTO, "channel %u: unexpected %s message",
				    c->ch.id, tm_msg_name(f.type));
			return -EPROTO;
		}
	}
}

/*
 * After this side stopped: reads and discards what the sender already sent, for up to a
 * second, looking for its ERROR (the best explanation when both sides fail at once) and so that
 * it is not left blocked in a send while it learns of the failure. Ends at an ERROR (returns
 * -code with it in *error), at the end of the stream, or at the deadline (returns 0).
 */
static int drain_for_error(recv_chan *c, GError **error)
{
	int64_t deadline = tm_now_us() + G_USEC_PER_SEC;
	size_t scratch = c->r->hello.packet_size / TM_TAG_GRANULE;
	tm_frame f;

	tm_chan_set_timeout(&c->ch, 250);
	while (tm_now_us() < deadline) {
		g_autoptr(GError) local = NULL;
		if (tm_chan_recv_frame(&c->ch, c->r->hello.packet_size, &f, &local) < 0)
			return 0;
		if (f.type == TM_MSG_ERROR)
			return tm_chan_recv_peer_error(&c->ch, &f, "sender gave up", error);
		for (size_t left = f.body_len; left > 0;) {
			size_t n = MIN(left, scratch);
			if (tm_chan_recv(&c->ch, c->plan.tags, n, &local) < 0)
				return 0;
			left -= n;
		}
	}
	return 0;
}

gpointer tm_recv_worker(gpointer data)
{
	recv_chan *c = data;
	tm_receiver *r = c->r;
	g_autoptr(GError) err = NULL;

	int ret = recv_loop(c, &err);
	while (ret < 0 && tm_resume_recv(c, &err) == 0) /* the sender reconnected (resume.h) */
		ret = recv_loop(c, &err);
	if (ret < 0) {
		bool from_peer = c->ch.peer_error;
		/* Record our reason before telling the sender: it reacts by closing every channel,
		 * and those ends must not be taken for the cause. */
		tm_receiver_fail(r, c, g_steal_pointer(&err), from_peer);
		if (!from_peer) {
			/* Tell the sender why: the session's first failure, ours or another
			 * channel's. Then look for its own explanation behind what it already sent. */
			g_mutex_lock(&r->lock);
			g_autofree char *msg = g_strdup(r->failure.error ? r->failure.error->message
									 : "receiver stopped");
			int code = r->failure.error ? r->failure.error->code : EIO;
			g_mutex_unlock(&r->lock);
			tm_chan_send_error(&c->ch, code, msg);
			GError *why = NULL;
			if (drain_for_error(c, &why) < 0)
				tm_receiver_fail(r, c, why, true);
		}
	}
	g_mutex_lock(&r->lock);
	bool last = ret < 0;
	if (ret >= 0) {
		c->ended = true;
		r->ended++;
		if ((last = r->ended == r->nch))
			r->t_end = tm_now_us();
	}
	c->exited = true;
	g_cond_broadcast(&r->cond);
	g_mutex_unlock(&r->lock);
	/* Its END_ACK waits for every data channel (control.c): only the last one's end (or a
	 * failure) changes what it sees, so the others let it sleep. The last one answers the
	 * control END itself when it can: the control thread's wake-up is not on the way. */
	if (last && ret >= 0)
		tm_control_answer_end(&r->control);
	else if (last)
		tm_control_wake(&r->control);
	/* Ended cleanly: the thread exits in free(), not now, where its exit (tens of us of a
	 * CPU) would delay the threads that end the session, on a host that has few. */
	g_mutex_lock(&r->lock);
	while (ret >= 0 && !r->quit)
		g_cond_wait(&r->stop, &r->lock);
	g_mutex_unlock(&r->lock);
	return NULL;
}
