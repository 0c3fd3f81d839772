/* SPDX-License-Identifier: MIT */
/*
 * The receiving side of a session. One worker per channel validates every packet with the codec
 * before it touches guest RAM, reads page data straight into guest RAM at the validated offsets,
 * sets the tags through the tag store and only then marks the pages present.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "codec/codec.h"
#include "ram/ram-internal.h"
#include "tagmig/error.h"
#include "tagstore/tagstore-internal.h"
#include "tls/tls.h"
#include "transport/channel.h"

typedef struct recv_chan {
	tm_chan ch;
	tm_receiver *r;
	GThread *thread;
	bool used;   /* slot taken by a channel during accept */
	bool ended;  /* protected by r->lock */
	bool exited; /* protected by r->lock */

	/* worker-local, allocated once in start() */
	uint8_t *entry_buf;       /* raw page entries */
	tm_page_entry *entries;
	uint8_t *tag_payload;
	uint8_t *tags;            /* expanded, one byte per granule */
	struct iovec *iov;
	uint64_t pages_applied;
} recv_chan;

enum receiver_state { R_NEW, R_ACCEPTED, R_RUNNING, R_DONE };

struct tm_receiver {
	/* read-only after setup */
	tm_receiver_config cfg;
	const tm_transport_ops *io;
	char *io_note;             /* why the default backend was not used, or NULL */
	tm_tls_ctx *tls;           /* NULL: plaintext channels */
	tm_hello hello;            /* the session as announced (channel_id of the first HELLO) */
	tm_ram_layout *announced;
	const tm_ram_layout *layout;
	tm_tag_store *tags;        /* NULL: no tags */
	unsigned nch;
	recv_chan *chans;
	uint64_t **present;        /* per block bitmap, atomic bit ops */
	bool no_populate;          /* the kernel lacks MADV_POPULATE_WRITE */

	enum receiver_state state; /* migration-thread local */

	/* protected by lock */
	GMutex lock;
	GCond cond;
	tm_failure failure;
	bool quit;
	unsigned ended;
	int64_t t_start, t_end;
};

int tm_receiver_new(const tm_receiver_config *cfg, tm_receiver **ret, GError **error)
{
	tm_receiver_config c = cfg ? *cfg : (tm_receiver_config){ 0 };
	const tm_transport_ops *io;

	if (!c.timeout_ms)
		c.timeout_ms = 60000;
	g_autofree char *note = NULL;
	int r = tm_transport_lookup(c.io_backend, &io, &note, error);
	if (r < 0)
		return r;
	g_autoptr(tm_tls_ctx) tls = NULL;
	if (c.tls_creds_dir &&
	    (r = tm_tls_ctx_new(TM_TLS_SERVER, c.tls_creds_dir, NULL, &tls, error)) < 0)
		return r;
	tm_receiver *rc = g_new0(tm_receiver, 1);
	rc->io_note = g_steal_pointer(&note);
	rc->tls = g_steal_pointer(&tls);
	rc->cfg = c;
	rc->cfg.io_backend = NULL;    /* not owned; io holds the choice */
	rc->cfg.tls_creds_dir = NULL; /* not owned; tls holds what it needs */
	rc->io = io;
	g_mutex_init(&rc->lock);
	g_cond_init(&rc->cond);
	*ret = rc;
	return 0;
}

/* Tells every connected channel why we give up (best effort) and closes it. */
static void abort_channels(tm_receiver *r, int code, const char *message)
{
	for (unsigned i = 0; r->chans && i < r->nch; i++) {
		if (r->chans[i].ch.fd < 0)
			continue;
		tm_chan_send_error(&r->chans[i].ch, code, message);
		tm_chan_close(&r->chans[i].ch);
	}
}

int tm_receiver_abort(tm_receiver *r, int code, const char *message)
{
	if (r->state == R_RUNNING) {
		/* Workers own the channels now: stop them instead. */
		g_mutex_lock(&r->lock);
		tm_failure_record(&r->failure, g_error_new_literal(TM_ERROR, code, message), false);
		__atomic_store_n(&r->quit, true, __ATOMIC_RELAXED);
		g_cond_broadcast(&r->cond);
		g_mutex_unlock(&r->lock);
		for (unsigned i = 0; i < r->nch; i++)
			shutdown(r->chans[i].ch.fd, SHUT_RD);
		return 0;
	}
	abort_channels(r, code, message);
	r->state = R_DONE;
	return 0;
}

/* Reads the HELLO of a fresh connection and places it by channel id. */
static int place_channel(tm_receiver *r, int fd, unsigned timeout_ms, GError **error)
{
	tm_chan tmp;
	tm_frame f;
	tm_hello h = { 0 };
	int ret = tm_chan_open(&tmp, fd, 0, r->io, timeout_ms, 1, error);
	if (ret < 0)
		return ret;
	if (r->tls && (ret = tm_tls_wrap(r->tls, &tmp.io, error)) < 0) {
		/* The TLS layer told the peer already (an alert); nothing else can reach it. */
		tm_chan_close(&tmp);
		return ret;
	}
	ret = tm_chan_recv_frame(&tmp, 0, &f, error);
	if (ret >= 0 && f.type != TM_MSG_HELLO) {
		g_set_error(error, TM_ERROR, EPROTO, "expected HELLO, received %s",
			    tm_msg_name(f.type));
		ret = -EPROTO;
	}
	g_autofree uint8_t *body = NULL;
	if (ret >= 0) {
		body = g_malloc(f.body_len ? f.body_len : 1);
		ret = tm_chan_recv(&tmp, body, f.body_len, error);
	}
	if (ret >= 0)
		ret = tm_hello_decode(body, f.body_len, &h, error);
	if (ret >= 0 && r->chans)
		ret = tm_hello_same_session(&r->hello, &h, error);
	if (ret >= 0 && r->chans && r->chans[h.channel_id].used) {
		g_set_error(error, TM_ERROR, EPROTO, "channel id %u connected twice", h.channel_id);
		ret = -EPROTO;
	}
	if (ret < 0) {
		g_prefix_error(error, "handshake: ");
		g_autofree char *msg = g_strdup((*error)->message);
		tm_chan_send_error(&tmp, -ret, msg);
		tm_chan_close(&tmp);
		tm_hello_clear(&h);
		return ret;
	}
	if (!r->chans) {
		r->hello = h;
		h.blocks = NULL;
		r->nch = r->hello.channel_count;
		r->chans = g_new0(recv_chan, r->nch);
		for (unsigned i = 0; i < r->nch; i++) {
			r->chans[i].ch.fd = -1;
			r->chans[i].r = r;
		}
	}
	unsigned id = h.channel_id;
	tm_hello_clear(&h);
	tm_chan_set_id(&tmp, id);
	r->chans[id].ch = tmp;
	r->chans[id].used = true;
	return 0;
}

static int build_announced(tm_receiver *r, GError **error)
{
	tm_ram_layout_new(&r->announced);
	for (unsigned i = 0; i < r->hello.block_count; i++) {
		const tm_wire_block *b = &r->hello.blocks[i];
		int ret = tm_ram_layout_add_block(r->announced, b->name, NULL, b->length,
						  b->page_size, b->guest_base, error);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int accept_fail(tm_receiver *r, GError **error)
{
	g_autofree char *msg = g_strdup(*error ? (*error)->message : "setup failed");
	abort_channels(r, *error ? (*error)->code : EIO, msg);
	r->state = R_DONE;
	return *error ? -(*error)->code : -EIO;
}

static int accept_common(tm_receiver *r, int listen_fd, const int *fds, unsigned n,
			 GError **error)
{
	int64_t deadline = tm_now_us() + (int64_t)r->cfg.timeout_ms * 1000;

	if (r->state != R_NEW) {
		g_set_error(error, TM_ERROR, EBUSY, "a session was accepted already");
		return -EBUSY;
	}
	for (unsigned k = 0; fds ? k < n : (!r->chans || k < r->nch); k++) {
		int64_t left_ms = (deadline - tm_now_us()) / 1000;
		int fd = fds ? fds[k] : -1;
		if (!fds) {
			if (left_ms <= 0 ||
			    (fd = tm_net_accept(listen_fd, (unsigned)left_ms, error)) < 0) {
				if (left_ms <= 0 || fd == -ETIMEDOUT) {
					g_clear_error(error);
					if (r->nch)
						g_set_error(error, TM_ERROR, ETIMEDOUT,
							    "only %u of %u channels connected within %.1f s",
							    k, r->nch, r->cfg.timeout_ms / 1000.0);
					else
						g_set_error(error, TM_ERROR, ETIMEDOUT,
							    "no sender connected within %.1f s",
							    r->cfg.timeout_ms / 1000.0);
				}
				return accept_fail(r, error);
			}
		}
		/* The whole deadline bounds the arrival of the channels; each channel's own I/O,
		 * its handshake included, gets the full timeout like any blocked I/O. */
		int ret = place_channel(r, fd, r->cfg.timeout_ms, error);
		if (ret < 0) {
			if (fds)
				for (unsigned j = k + 1; j < n; j++)
					close(fds[j]);
			return accept_fail(r, error);
		}
	}
	if (fds && n != r->nch) {
		g_set_error(error, TM_ERROR, EPROTO, "%u sockets given, the session has %u channels",
			    n, r->nch);
		return accept_fail(r, error);
	}
	int ret = build_announced(r, error);
	if (ret < 0)
		return accept_fail(r, error);
	r->state = R_ACCEPTED;
	return 0;
}

/* The setup paths report through *error internally; callers may pass NULL. */
int tm_receiver_accept(tm_receiver *r, int listen_fd, GError **error)
{
	g_autoptr(GError) local = NULL;
	return accept_common(r, listen_fd, NULL, 0, error ? error : &local);
}

int tm_receiver_attach(tm_receiver *r, const int *fds, unsigned n, GError **error)
{
	g_autoptr(GError) local = NULL;
	return accept_common(r, -1, fds, n, error ? error : &local);
}

const tm_ram_layout *tm_receiver_announced_layout(tm_receiver *r)
{
	return r->announced;
}

bool tm_receiver_peer_sends_tags(tm_receiver *r)
{
	return r->hello.features & TM_FEATURE_TAGS_MTE4;
}

/* Compares our RAM with the announced layout; the message says what differs. */
static int compare_layout(tm_receiver *r, const tm_ram_layout *layout, tm_tag_store *tags,
			  GError **error)
{
	unsigned n = layout->blocks->len;
	bool store_tags = tags && tm_tag_store_get_ops(tags)->has_tags;

	if (n != r->hello.block_count) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "RAM layout differs: sender has %u blocks, receiver has %u",
			    r->hello.block_count, n);
		return -EINVAL;
	}
	for (unsigned i = 0; i < n; i++) {
		const tm_wire_block *w = &r->hello.blocks[i];
		const tm_ram_block *b = tm_ram_layout_get(layout, i);
		if (strcmp(w->name, b->name) != 0) {
			g_set_error(error, TM_ERROR, EINVAL,
				    "RAM layout differs: block %u is '%s' on the sender, '%s' on the receiver",
				    i, w->name, b->name);
			return -EINVAL;
		}
		if (w->length != b->length || w->page_size != b->page_size) {
			g_set_error(error, TM_ERROR, EINVAL,
				    "RAM block %u '%s' differs: sender length %" G_GUINT64_FORMAT
				    " page size %u, receiver length %" G_GUINT64_FORMAT " page size %u",
				    i, b->name, w->length, w->page_size, b->length, b->page_size);
			return -EINVAL;
		}
		if (!b->host) {
			g_set_error(error, TM_ERROR, EINVAL, "RAM block '%s' has no host memory",
				    b->name);
			return -EINVAL;
		}
	}
	if (tags && tm_tag_store_layout(tags) != layout) {
		g_set_error(error, TM_ERROR, EINVAL, "the tag store was made for another RAM layout");
		return -EINVAL;
	}
	if (tm_receiver_peer_sends_tags(r) && !store_tags) {
		g_set_error(error, TM_ERROR, EOPNOTSUPP,
			    "the sender migrates memory tags but this receiver has no tag store");
		return -EOPNOTSUPP;
	}
	if (!tm_receiver_peer_sends_tags(r) && store_tags) {
		g_set_error(error, TM_ERROR, EOPNOTSUPP,
			    "this receiver has a tag store ('%s') but the sender migrates no tags",
			    tm_tag_store_get_ops(tags)->name);
		return -EOPNOTSUPP;
	}
	return 0;
}

static void receiver_fail(tm_receiver *r, recv_chan *c, GError *err, bool from_peer)
{
	g_mutex_lock(&r->lock);
	bool was_quit = r->quit;
	if (!was_quit || from_peer)
		tm_failure_record(&r->failure, err, from_peer);
	else
		g_error_free(err);
	__atomic_store_n(&r->quit, true, __ATOMIC_RELAXED);
	g_cond_broadcast(&r->cond);
	g_mutex_unlock(&r->lock);
	if (!was_quit)
		for (unsigned i = 0; i < r->nch; i++)
			if (&r->chans[i] != c)
				shutdown(r->chans[i].ch.fd, SHUT_RD); /* wakes its worker */
}

static void mark_present(tm_receiver *r, recv_chan *c, unsigned block, uint64_t first,
			 uint64_t n)
{
	uint64_t *bm = r->present[block];
	for (uint64_t p = first; p < first + n; p++)
		__atomic_fetch_or(&bm[p / 64], 1ull << (p % 64), __ATOMIC_RELEASE);
	if (r->cfg.on_present)
		r->cfg.on_present(r->cfg.opaque, c->ch.id, block, first, n);
}

static int apply_data(recv_chan *c, const tm_frame *f, GError **error)
{
	tm_receiver *r = c->r;
	uint8_t hb[TM_DATA_HDR_LEN];
	tm_data_hdr hdr;
	int ret;

	if (f->body_len < TM_DATA_HDR_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG, "channel %u: DATA body of %u bytes is truncated",
			    c->ch.id, f->body_len);
		return -EBADMSG;
	}
	if ((ret = tm_chan_recv(&c->ch, hb, sizeof(hb), error)) < 0)
		return ret;
	if ((ret = tm_data_hdr_decode(hb, sizeof(hb), &r->hello, &hdr, error)) < 0)
		goto bad;
	size_t elen = (size_t)hdr.page_count * TM_PAGE_ENTRY_LEN;
	if (elen > f->body_len - TM_DATA_HDR_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG, "DATA with %u pages is truncated at %u bytes",
			    hdr.page_count, f->body_len);
		ret = -EBADMSG;
		goto bad;
	}
	if ((ret = tm_chan_recv(&c->ch, c->entry_buf, elen, error)) < 0)
		return ret;
	if ((ret = tm_data_entries_decode(&hdr, c->entry_buf, elen, &r->hello, c->ch.id,
					  f->body_len, c->entries, error)) < 0)
		goto bad;

	/* Everything is validated: page data goes straight into guest RAM. */
	const tm_ram_block *b = tm_ram_layout_get(r->layout, hdr.block);
	uint32_t ps = b->page_size;
	unsigned n = 0;
	uint8_t *run_end = NULL;
	for (uint32_t i = 0; i < hdr.page_count; i++) {
		if (c->entries[i].kind != TM_PAGE_NORMAL)
			continue;
		uint8_t *p = b->host + (uint64_t)c->entries[i].page * ps;
		if (n && p == run_end) {
			c->iov[n - 1].iov_len += ps;
		} else {
			c->iov[n].iov_base = p;
			c->iov[n++].iov_len = ps;
		}
		run_end = p + ps;
	}
	/*
	 * Fault the destination pages in with one call per run instead of one exception per page
	 * inside the socket copy: on cold guest RAM that is most of the receiver's cost. Kernels
	 * without MADV_POPULATE_WRITE (before 5.14) say EINVAL and fault as before.
	 */
	if (!r->no_populate)
		for (unsigned i = 0; i < n; i++)
			if (madvise(c->iov[i].iov_base, c->iov[i].iov_len, MADV_POPULATE_WRITE) < 0 &&
			    errno == EINVAL)
				__atomic_store_n(&r->no_populate, true, __ATOMIC_RELAXED);
	if (hdr.tag_len) {
		c->iov[n].iov_base = c->tag_payload;
		c->iov[n++].iov_len = hdr.tag_len;
	}
	size_t plen = (size_t)hdr.data_len + hdr.tag_len;
	if (plen) {
		ret = tm_io_recv(c->ch.io, c->iov, n, plen);
		if (ret < 0) {
			g_set_error(error, TM_ERROR, -ret,
				    "channel %u, block '%s', offset 0x%" G_GINT64_MODIFIER
				    "x: receive page data: %s",
				    c->ch.id, b->name, (uint64_t)c->entries[0].page * ps,
				    tm_chan_io_reason(&c->ch, -ret));
			return ret;
		}
		tm_count(&c->ch.st.wire_bytes, plen);
	}
	if (r->tags) {
		ret = tm_data_tags_expand(&hdr, c->entries, ps, c->tag_payload, hdr.tag_len, c->tags,
					  error);
		if (ret < 0)
			goto bad;
	}
	for (uint32_t i = 0; i < hdr.page_count; i++) {
		const tm_page_entry *e = &c->entries[i];
		if (e->kind != TM_PAGE_NORMAL &&
		    !(r->cfg.ram_zeroed && !tm_receiver_page_present(r, hdr.block, e->page))) {
			/* Only write when needed: fresh destination memory stays untouched. */
			uint8_t *p = b->host + (uint64_t)e->page * ps;
			if (!tm_buffer_is_zero(p, ps))
				memset(p, 0, ps);
		}
		tm_count(&c->ch.st.by_kind[e->kind], 1);
		tm_count(&c->ch.st.by_enc[e->tag_enc], 1);
	}
	/* Tags (zero ones too: stale tags of an earlier round must go), then presence, in runs. */
	for (uint32_t i = 0; i < hdr.page_count;) {
		uint32_t j = i + 1;
		while (j < hdr.page_count && c->entries[j].page == c->entries[j - 1].page + 1)
			j++;
		uint64_t first = c->entries[i].page;
		if (r->tags) {
			ret = tm_tag_store_set(r->tags, hdr.block, first * ps, (uint64_t)(j - i) * ps,
					       c->tags + (size_t)i * (ps / TM_TAG_GRANULE));
			if (ret < 0) {
				g_set_error(error, TM_ERROR, -ret,
					    "channel %u, block '%s', offset 0x%" G_GINT64_MODIFIER
					    "x: setting tags failed: %s",
					    c->ch.id, b->name, first * ps, g_strerror(-ret));
				return ret;
			}
		}
		mark_present(r, c, hdr.block, first, j - i);
		i = j;
	}
	c->pages_applied += hdr.page_count;
	tm_count(&c->ch.st.pages, hdr.page_count);
	tm_count(&c->ch.st.packets, 1);
	tm_count(&c->ch.st.data_bytes, hdr.data_len);
	tm_count(&c->ch.st.tag_bytes, hdr.tag_len);
	return 0;
bad:
	tm_chan_prefix_error(&c->ch, error);
	return ret;
}

static int recv_ctrl_body(recv_chan *c, const tm_frame *f, uint64_t *a, uint64_t *b,
			  GError **error)
{
	uint8_t body[16];
	int ret;

	if (f->body_len > sizeof(body)) {
		g_set_error(error, TM_ERROR, EBADMSG, "channel %u: %s body of %u bytes", c->ch.id,
			    tm_msg_name(f->type), f->body_len);
		return -EBADMSG;
	}
	if ((ret = tm_chan_recv(&c->ch, body, f->body_len, error)) < 0)
		return ret;
	ret = tm_ctrl_decode(f->type, body, f->body_len, a, b, error);
	if (ret < 0)
		tm_chan_prefix_error(&c->ch, error);
	return ret;
}

static int recv_loop(recv_chan *c, GError **error)
{
	tm_receiver *r = c->r;
	uint64_t a, b;
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
		switch (f.type) {
		case TM_MSG_DATA:
			if ((ret = apply_data(c, &f, error)) < 0)
				return ret;
			break;
		case TM_MSG_SYNC:
			if ((ret = recv_ctrl_body(c, &f, &a, &b, error)) < 0)
				return ret;
			/* Every earlier DATA on this channel is applied: the channel is ordered. */
			if ((ret = tm_chan_send_ctrl(&c->ch, TM_MSG_SYNC_ACK, a, c->pages_applied,
						     error)) < 0)
				return ret;
			break;
		case TM_MSG_END:
			if ((ret = recv_ctrl_body(c, &f, &a, &b, error)) < 0)
				return ret;
			if (a != c->pages_applied) {
				g_set_error(error, TM_ERROR, EPROTO,
					    "channel %u: sender sent %" G_GUINT64_FORMAT
					    " pages, %" G_GUINT64_FORMAT " arrived",
					    c->ch.id, a, c->pages_applied);
				return -EPROTO;
			}
			if ((ret = tm_chan_send_ctrl(&c->ch, TM_MSG_END_ACK, c->pages_applied, 0,
						     error)) < 0)
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
			if (tm_chan_recv(&c->ch, c->tags, n, &local) < 0)
				return 0;
			left -= n;
		}
	}
	return 0;
}

static gpointer recv_worker(gpointer data)
{
	recv_chan *c = data;
	tm_receiver *r = c->r;
	g_autoptr(GError) err = NULL;

	int ret = recv_loop(c, &err);
	if (ret < 0) {
		bool from_peer = c->ch.peer_error;
		/* Record our reason before telling the sender: it reacts by closing every channel,
		 * and those ends must not be taken for the cause. */
		receiver_fail(r, c, g_steal_pointer(&err), from_peer);
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
				receiver_fail(r, c, why, true);
		}
	}
	g_mutex_lock(&r->lock);
	if (ret >= 0) {
		c->ended = true;
		r->ended++;
		if (r->ended == r->nch)
			r->t_end = tm_now_us();
	}
	c->exited = true;
	g_cond_broadcast(&r->cond);
	g_mutex_unlock(&r->lock);
	return NULL;
}

static int start_common(tm_receiver *r, const tm_ram_layout *layout, tm_tag_store *tags,
			GError **error);

int tm_receiver_start(tm_receiver *r, const tm_ram_layout *layout, tm_tag_store *tags,
		      GError **error)
{
	g_autoptr(GError) local = NULL;
	return start_common(r, layout, tags, error ? error : &local);
}

static int start_common(tm_receiver *r, const tm_ram_layout *layout, tm_tag_store *tags,
			GError **error)
{
	if (r->state != R_ACCEPTED) {
		g_set_error(error, TM_ERROR, EBADFD, "tm_receiver_start() needs an accepted session");
		return -EBADFD;
	}
	int ret = compare_layout(r, layout, tags, error);
	if (ret < 0) {
		abort_channels(r, -ret, (*error)->message);
		r->state = R_DONE;
		return ret;
	}
	r->layout = layout;
	((tm_ram_layout *)layout)->frozen = true;
	r->tags = tm_receiver_peer_sends_tags(r) ? tags : NULL;
	r->present = g_new0(uint64_t *, r->hello.block_count);
	for (unsigned i = 0; i < r->hello.block_count; i++)
		r->present[i] = g_new0(uint64_t, (r->hello.blocks[i].npages + 63) / 64);

	uint32_t max_pages = r->hello.packet_size / 4096;
	for (unsigned i = 0; i < r->nch; i++) {
		recv_chan *c = &r->chans[i];
		c->entry_buf = g_malloc((size_t)max_pages * TM_PAGE_ENTRY_LEN);
		c->entries = g_new(tm_page_entry, max_pages);
		c->tag_payload = g_malloc(r->hello.packet_size / 32 + max_pages);
		c->tags = g_malloc(r->hello.packet_size / TM_TAG_GRANULE);
		c->iov = g_new(struct iovec, max_pages + 1);
		if ((ret = tm_chan_send_ctrl(&c->ch, TM_MSG_HELLO_ACK, 0, 0, error)) < 0) {
			g_autofree char *msg = g_strdup((*error)->message);
			abort_channels(r, -ret, msg);
			r->state = R_DONE;
			return ret;
		}
	}
	g_mutex_lock(&r->lock);
	r->t_start = tm_now_us();
	g_mutex_unlock(&r->lock);
	for (unsigned i = 0; i < r->nch; i++) {
		g_autofree char *name = g_strdup_printf("tm-recv-%u", i);
		r->chans[i].thread = g_thread_new(name, recv_worker, &r->chans[i]);
	}
	r->state = R_RUNNING;
	return 0;
}

int tm_receiver_wait(tm_receiver *r, GError **error)
{
	if (r->state != R_RUNNING) {
		g_set_error(error, TM_ERROR, EBADFD, "the receiver is not running");
		return -EBADFD;
	}
	g_mutex_lock(&r->lock);
	while (!r->quit && r->ended < r->nch)
		g_cond_wait(&r->cond, &r->lock);
	int ret = 0;
	if (r->quit) {
		/* Let every worker stop so that the sender's own explanation, if any, wins. */
		for (unsigned i = 0; i < r->nch; i++)
			while (!r->chans[i].exited)
				g_cond_wait(&r->cond, &r->lock);
		ret = r->failure.error ? -r->failure.error->code : -EIO;
		if (error)
			*error = r->failure.error ? g_error_copy(r->failure.error)
						  : g_error_new(TM_ERROR, EIO, "migration aborted");
	}
	g_mutex_unlock(&r->lock);
	return ret;
}

bool tm_receiver_page_present(tm_receiver *r, unsigned block, uint64_t page)
{
	if (!r->present || block >= r->hello.block_count || page >= r->hello.blocks[block].npages)
		return false;
	return (__atomic_load_n(&r->present[block][page / 64], __ATOMIC_ACQUIRE) >> (page % 64)) & 1;
}

void tm_receiver_get_stats(tm_receiver *r, tm_stats *ret)
{
	memset(ret, 0, sizeof(*ret));
	g_strlcpy(ret->io_backend, r->io->name, sizeof(ret->io_backend));
	g_strlcpy(ret->io_note, r->io_note ? r->io_note : "", sizeof(ret->io_note));
	g_mutex_lock(&r->lock);
	/* The channels are complete once the workers run: t_start is set under the lock then;
	 * before, accept may still be building them. */
	if (r->t_start) {
		for (unsigned i = 0; i < r->nch; i++)
			tm_chan_sum(&r->chans[i].ch, ret);
		ret->channels = r->nch;
		tm_tls_fill_stats(r->tls, r->chans[0].ch.io, ret);
		ret->seconds = (double)((r->t_end ? r->t_end : tm_now_us()) - r->t_start) / 1e6;
	}
	g_mutex_unlock(&r->lock);
}

void tm_receiver_free(tm_receiver *r)
{
	if (!r)
		return;
	g_mutex_lock(&r->lock);
	r->quit = true;
	g_mutex_unlock(&r->lock);
	for (unsigned i = 0; i < r->nch; i++) {
		recv_chan *c = &r->chans[i];
		if (c->thread) {
			g_mutex_lock(&r->lock);
			bool exited = c->exited;
			g_mutex_unlock(&r->lock);
			if (!exited)
				shutdown(c->ch.fd, SHUT_RDWR);
			g_thread_join(c->thread);
		}
		tm_chan_close(&c->ch);
		g_free(c->entry_buf);
		g_free(c->entries);
		g_free(c->tag_payload);
		g_free(c->tags);
		g_free(c->iov);
	}
	for (unsigned i = 0; r->present && i < r->hello.block_count; i++)
		g_free(r->present[i]);
	g_free(r->present);
	g_free(r->chans);
	tm_ram_layout_free(r->announced);
	g_free(r->io_note);
	tm_tls_ctx_free(r->tls);
	tm_hello_clear(&r->hello);
	g_clear_error(&r->failure.error);
	g_mutex_clear(&r->lock);
	g_cond_clear(&r->cond);
	g_free(r);
}
