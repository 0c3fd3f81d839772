/* SPDX-License-Identifier: MIT */
/*
 * Device state inside the session (docs/design/live-engine.md §1.3, §1.4, §2.4, §2.5).
 *
 * Sender: the VMM pauses its guest (tm_sender_guest_stopped() in rounds.c: the downtime clock
 * starts), queues its final dirty log, then hands named sections (tm_sender_put_state). The first section closes
 * RAM: every channel gets RAM_END(FINAL) behind its last DATA. A section travels as chunks of at
 * most packet_size bytes, numbered g over the session, chunk g on channel g mod N, in the same
 * work lists as pages (so behind RAM_END). finish adds END_OF_STATE and waits for READY.
 *
 * Receiver: a channel worker checks a chunk's header as soon as it reads it, reads its data into
 * the channel's state buffer, then waits for its turn: every channel past RAM_END (all RAM of the
 * final round applied) and chunk g - 1 read by the VMM. At its turn the order is checked, then the
 * chunk is handed to the VMM (r->st.held) and the worker waits until it is read: one chunk per
 * channel in memory, and a slow VMM slows the sender through TCP. READY goes back once every
 * channel ended and END_OF_STATE was reached.
 */
#include <errno.h>
#include <string.h>

#include "session/postcopy-recv.h"
#include "session/resume.h"
#include "session/session-internal.h"
#include "tagmig/error.h"

#define U64(x) ((guint64)(x))

/* ---- sender ---- */

static int sender_usable(tm_sender *s, const char *what, GError **error)
{
	int r = tm_sender_check_open(s, error);
	if (r < 0)
		return r;
	if (s->wire != TM_WIRE_VERSION_2) {
		g_set_error(error, TM_ERROR, EOPNOTSUPP,
			    "%s: protocol 1 carries no device state (wire_version = 1)", what);
		return -EOPNOTSUPP;
	}
	return 0;
}

/* Appends w to channel i's work list (under s->lock) and wakes its worker. */
/* s->lock held. A channel finish sends itself (direct) has a worker that must not wake. */
static void hand_over(tm_sender *s, unsigned i, const work *w)
{
	g_array_append_vals(s->chans[i].pending, w, 1);
	if (!s->chans[i].direct)
		g_cond_signal(&s->chans[i].wake);
}

/* RAM_END(FINAL) to every channel, behind everything queued so far (migration thread). */
static void close_ram(tm_sender *s)
{
	work w = { .kind = WORK_RAM_END };

	if (s->st.ram_closed)
		return;
	g_mutex_lock(&s->lock);
	for (unsigned i = 0; i < s->nch; i++)
		hand_over(s, i, &w);
	g_mutex_unlock(&s->lock);
	s->st.ram_closed = true;
}

int tm_sender_check_ram_open(tm_sender *s, GError **error)
{
	if (!s->st.ram_closed)
		return 0;
	g_set_error(error, TM_ERROR, EBADFD,
		    "RAM is closed: device state has started (queue the final dirty pages before "
		    "the first tm_sender_put_state())");
	return -EBADFD;
}

int tm_sender_put_state(tm_sender *s, const char *name, const void *data, size_t len,
			unsigned flags, GError **error)
{
	g_autoptr(GError) why = NULL;
	int r = sender_usable(s, "tm_sender_put_state()", error);
	if (r < 0)
		return r;
	if (!s->rounds.stopped_us || s->st.ended) {
		g_set_error(error, TM_ERROR, EBADFD, "tm_sender_put_state(): %s",
			    s->st.ended ? "device state has ended"
					: "the guest is not stopped (tm_sender_guest_stopped() first)");
		return -EBADFD;
	}
	if (flags & ~TM_STATE_COPY) {
		g_set_error(error, TM_ERROR, EINVAL, "tm_sender_put_state(): unknown flags 0x%x",
			    flags & ~TM_STATE_COPY);
		return -EINVAL;
	}
	if (!name || tm_state_name_check(name, strlen(name), &why) < 0) {
		g_set_error(error, TM_ERROR, EINVAL, "tm_sender_put_state(): %s",
			    why ? why->message : "name is NULL");
		return -EINVAL;
	}
	if (len && !data) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "tm_sender_put_state(): section '%s': %zu bytes at NULL", name, len);
		return -EINVAL;
	}
	if (s->st.sections->len >= TM_MAX_STATE_SECTIONS || len > s->st.max_section ||
	    len > s->st.max_total - s->st.total) {
		g_set_error(error, TM_ERROR, EMSGSIZE,
			    "state section %u '%s' of %zu bytes: over the receiver's limits "
			    "(max_state_section %" G_GUINT64_FORMAT ", max_state_total %" G_GUINT64_FORMAT
			    " of which %" G_GUINT64_FORMAT " are used, %u sections)",
			    s->st.sections->len, name, len, U64(s->st.max_section),
			    U64(s->st.max_total), U64(s->st.total), TM_MAX_STATE_SECTIONS);
		return -EMSGSIZE;
	}
	close_ram(s);

	state_section *sec = g_new0(state_section, 1);
	sec->name = g_strdup(name);
	sec->len = len;
	sec->data = data;
	if ((flags & TM_STATE_COPY) && len)
		sec->data = sec->owned = g_memdup2(data, len);
	g_mutex_lock(&s->lock);
	s->st.total += len;
	work w = { .kind = WORK_STATE, .block = s->st.sections->len };
	g_ptr_array_add(s->st.sections, sec);
	/* An empty section is one chunk too: it carries the name. */
	uint64_t off = 0;
	do {
		w.first = s->st.next_chunk++;
		w.count = off;
		hand_over(s, (unsigned)(w.first % s->nch), &w);
		off += s->hello.packet_size;
	} while (off < len);
	g_mutex_unlock(&s->lock);
	return 0;
}

void tm_sender_state_finish(tm_sender *s)
{
	if (s->wire != TM_WIRE_VERSION_2 || s->st.ended)
		return;
	close_ram(s);
	g_mutex_lock(&s->lock);
	work w = { .kind = WORK_STATE, .block = TM_STATE_EOS_ITEM, .first = s->st.next_chunk++,
		   .count = s->st.sections->len };
	/* Postcopy's background pages wait for this (postcopy-send.c): set before the hand-over,
	 * and every worker woken. */
	__atomic_store_n(&s->st.ended, true, __ATOMIC_RELEASE);
	hand_over(s, (unsigned)(w.first % s->nch), &w);
	for (unsigned i = 0; i < s->nch; i++)
		if (!s->chans[i].direct)
			g_cond_signal(&s->chans[i].wake);
	g_mutex_unlock(&s->lock);
}

/* The bytes of section sec that its chunk at offset carries: a packet's worth, or what is left. */
static uint64_t section_chunk_bytes(const tm_sender *s, const state_section *sec, uint64_t offset)
{
	return MIN((uint64_t)s->hello.packet_size, sec->len - offset);
}

int tm_send_state_work(send_chan *c, const work *w, GError **error)
{
	tm_sender *s = c->s;
	uint8_t hdr[TM_FRAME_HDR_LEN + TM_STATE_HDR_LEN + TM_MAX_STATE_NAME];
	struct iovec iov[2];
	tm_state_hdr h = { .chunk = w->first };

	if (w->kind == WORK_RAM_END) {
		/* send_batch settled the deltas first (tm_dsend_barrier): no refusal comes after. */
		size_t n = tm_ram_end_encode(hdr, c->ch.tx_seq++, TM_RAM_END_FINAL, c->pages_sent,
					     c->packets_sent);
		iov[0] = (struct iovec){ .iov_base = hdr, .iov_len = n };
		return tm_chan_send(&c->ch, iov, 1, n, error);
	}
	const char *name = NULL;
	const uint8_t *data = NULL;
	if (w->block == TM_STATE_EOS_ITEM) {
		h.section = (uint32_t)w->count;
		h.flags = TM_STATE_END;
	} else {
		g_mutex_lock(&s->lock);
		const state_section *sec = g_ptr_array_index(s->st.sections, w->block);
		g_mutex_unlock(&s->lock);
		h.section = w->block;
		h.section_len = sec->len;
		h.offset = w->count;
		h.data_len = (uint32_t)section_chunk_bytes(s, sec, w->count);
		h.flags = (h.offset == 0 ? TM_STATE_FIRST : 0) |
			  (h.offset + h.data_len == sec->len ? TM_STATE_LAST : 0);
		if (h.offset == 0) {
			name = sec->name;
			h.name_len = (uint16_t)strlen(name);
		}
		data = sec->data ? sec->data + w->count : NULL;
	}
	size_t n = tm_state_encode(hdr, c->ch.tx_seq++, &h, name);
	iov[0] = (struct iovec){ .iov_base = hdr, .iov_len = n };
	iov[1] = (struct iovec){ .iov_base = (void *)data, .iov_len = h.data_len };
	int r = tm_chan_send(&c->ch, iov, h.data_len ? 2 : 1, n + h.data_len, error);
	if (r >= 0)
		c->state_chunks++;
	return r;
}

uint64_t tm_state_chunk_bytes(tm_sender *s, const work *w)
{
	if (w->block == TM_STATE_EOS_ITEM)
		return 0;
	g_mutex_lock(&s->lock);
	const state_section *sec = g_ptr_array_index(s->st.sections, w->block);
	g_mutex_unlock(&s->lock);
	return section_chunk_bytes(s, sec, w->count);
}

int tm_send_end_v2_post(send_chan *c, GError **error)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_END2_LEN];
	const uint64_t vals[TM_CTRL_MAX_FIELDS] = { c->pages_sent, c->packets_sent,
						    c->state_chunks };
	size_t n = tm_ctrl_encode_v(buf, TM_WIRE_VERSION_2, TM_MSG_END, c->ch.tx_seq++, vals);
	struct iovec v = { .iov_base = buf, .iov_len = n };

	int r = tm_chan_send(&c->ch, &v, 1, n, error);
	if (r >= 0) /* END and what the channel held before it (tm_chan_cork) */
		r = tm_chan_flush(&c->ch, error);
	if (r >= 0) /* TLS: close_notify right behind END (send-pages.c) */
		r = tm_tls_close_notify(c->ch.io, error);
	return r < 0 ? r : 0;
}

int tm_send_end_v2_ack(send_chan *c, GError **error)
{
	uint64_t applied, chunks;
	int r = tm_chan_recv_ctrl(&c->ch, TM_MSG_END_ACK, &applied, &chunks, error);
	if (r < 0)
		return r;
	bool differs = applied != c->pages_sent || chunks != c->state_chunks;
	g_autofree char *what = !differs ? NULL : g_strdup_printf(
		"channel %u: receiver applied %" G_GUINT64_FORMAT " pages and %" G_GUINT64_FORMAT
		" state chunks, %" G_GUINT64_FORMAT " and %" G_GUINT64_FORMAT " were sent",
		c->ch.id, U64(applied), U64(chunks), U64(c->pages_sent), U64(c->state_chunks));
	if (differs && __atomic_load_n(&c->s->pc.started, __ATOMIC_ACQUIRE)) {
		/*
		 * After the switch the source can never run the guest again. The receiver answered
		 * END only after checking it against its own counts (recv-pages.c), and answers
		 * control's END only with every page present (data_end in receiver.c): a difference
		 * here is a receiver contradicting itself. Failing would pause the one side that can
		 * run the guest, with nothing a resume or the VMM could do but cancel it.
		 */
		__atomic_add_fetch(&c->s->pc.end_count_mismatches, 1, __ATOMIC_RELAXED);
		g_mutex_lock(&c->s->lock);
		if (!c->s->pc.end_mismatch[0])
			g_strlcpy(c->s->pc.end_mismatch, what, sizeof(c->s->pc.end_mismatch));
		g_mutex_unlock(&c->s->lock);
	} else if (differs) {
		g_set_error(error, TM_ERROR, EPROTO, "%s", what);
		return -EPROTO;
	}
	return 0;
}

int tm_sender_take_ready(void *owner, const tm_frame *fp, GError **error)
{
	tm_sender *s = owner;
	tm_chan *ch = &s->ctl;
	uint8_t body[TM_READY_LEN];
	uint64_t mode;
	tm_frame f = *fp;
	int r;

	if (f.body_len > sizeof(body)) {
		g_set_error(error, TM_ERROR, EBADMSG, "control: READY body of %u bytes", f.body_len);
		return -EBADMSG;
	}
	if ((r = tm_chan_recv(ch, body, f.body_len, error)) < 0)
		return r;
	if ((r = tm_ready_decode(body, f.body_len, &mode, error)) < 0) {
		tm_chan_prefix_error(ch, error);
		return r;
	}
	/* postcopy-send.c sets started before it asks the control thread for POSTCOPY */
	bool postcopy = __atomic_load_n(&s->pc.started, __ATOMIC_ACQUIRE);
	if (mode != (postcopy ? TM_RAM_END_POSTCOPY : TM_RAM_END_FINAL)) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "control: READY for %s (mode %" G_GUINT64_FORMAT ") in %s",
			    postcopy ? "precopy" : "postcopy", U64(mode),
			    postcopy ? "postcopy" : "precopy");
		return -EPROTO;
	}
	/* The destination has all RAM and every section: the downtime clock stops here. */
	g_mutex_lock(&s->lock);
	int64_t stopped_us = s->rounds.stopped_us;
	g_mutex_unlock(&s->lock);
	if (stopped_us)
		__atomic_store_n(&s->st.downtime_us, (uint64_t)MAX(tm_now_us() - stopped_us, 1),
				 __ATOMIC_RELEASE);
	return 0;
}

void tm_sender_state_free(tm_sender *s)
{
	for (guint i = 0; s->st.sections && i < s->st.sections->len; i++) {
		state_section *sec = g_ptr_array_index(s->st.sections, i);
		g_free(sec->name);
		g_free(sec->owned);
		g_free(sec);
	}
	if (s->st.sections)
		g_ptr_array_unref(s->st.sections);
}

/* ---- receiver ---- */

int tm_receiver_load_state_names(tm_receiver *r, const tm_live_config *cfg, GError **error)
{
	const char *const *names = NULL;
	guint n = 0;

	if (cfg->size >= offsetof(tm_live_config, state_names) + sizeof(cfg->state_names))
		names = cfg->state_names;
	for (; names && names[n]; n++) {
		g_autoptr(GError) why = NULL;
		if (n >= TM_MAX_STATE_SECTIONS) {
			g_set_error(error, TM_ERROR, EINVAL,
				    "live config: state_names has more than %u names",
				    TM_MAX_STATE_SECTIONS);
			return -EINVAL;
		}
		if (tm_state_name_check(names[n], strlen(names[n]), &why) < 0) {
			g_set_error(error, TM_ERROR, EINVAL, "live config: state_names[%u]: %s", n,
				    why->message);
			return -EINVAL;
		}
	}
	g_strfreev(r->st.names);
	r->st.names = names ? g_strdupv((char **)names) : NULL;
	return 0;
}

void tm_receiver_state_init(tm_receiver *r)
{
	tm_state_order_init(&r->st.order, r->live.max_state_total,
			    (const char *const *)r->st.names);
	for (unsigned i = 0; i < r->nch; i++)
		r->chans[i].next_chunk = i;
	r->st.cut = UINT64_MAX;
}

/*
 * Under r->lock: the device state can no longer end when the chunk due next was due on a
 * channel that ended (its END came first): every later chunk waits for it forever.
 */
static int state_cut(tm_receiver *r, GError **error)
{
	if (r->st.order.ended || r->st.order.next_chunk < r->st.cut)
		return 0;
	g_set_error(error, TM_ERROR, EPROTO,
		    "channel %u ended before STATE chunk %" G_GUINT64_FORMAT " (no END_OF_STATE)",
		    (unsigned)(r->st.cut % r->nch), U64(r->st.cut));
	return -EPROTO;
}

int tm_recv_state_gate(recv_chan *c, const tm_frame *f, GError **error)
{
	if (f->version != TM_WIRE_VERSION_2)
		return 0;
	/* After RAM_END(POSTCOPY) DATA is background pages (postcopy-recv.c). */
	if ((f->type == TM_MSG_SYNC || f->type == TM_MSG_ZDATA ||
	     (f->type == TM_MSG_DATA && !c->postcopy)) &&
	    c->ram_ended) {
		g_set_error(error, TM_ERROR, EPROTO, "channel %u: %s after RAM_END", c->ch.id,
			    tm_msg_name(f->type));
		return -EPROTO;
	}
	if (f->type == TM_MSG_END && !c->ram_ended) {
		g_set_error(error, TM_ERROR, EPROTO, "channel %u: END before RAM_END", c->ch.id);
		return -EPROTO;
	}
	if (f->type == TM_MSG_END) {
		/* This channel carries no chunk from its next one on. */
		g_mutex_lock(&c->r->lock);
		c->r->st.cut = MIN(c->r->st.cut, c->next_chunk);
		int ret = state_cut(c->r, error);
		g_mutex_unlock(&c->r->lock);
		return ret;
	}
	return 0;
}

static int recv_ram_end(recv_chan *c, const tm_frame *f, GError **error)
{
	tm_receiver *r = c->r;
	uint8_t body[TM_RAM_END_LEN];
	uint64_t pages, packets;
	uint32_t mode;
	int ret;

	/* tm_frame_decode bounds RAM_END's body_len by 24 */
	if ((ret = tm_chan_recv(&c->ch, body, f->body_len, error)) < 0)
		return ret;
	if ((ret = tm_ram_end_decode(body, f->body_len, tm_pc_recv_agreed(r), &mode, &pages,
				     &packets, error)) < 0) {
		tm_chan_prefix_error(&c->ch, error);
		return ret;
	}
	if (c->ram_ended) {
		g_set_error(error, TM_ERROR, EPROTO, "channel %u: RAM_END twice", c->ch.id);
		return -EPROTO;
	}
	if (pages != c->pages_applied || packets != c->packets_applied) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "channel %u: RAM_END counts %" G_GUINT64_FORMAT " pages in %" G_GUINT64_FORMAT
			    " packets, %" G_GUINT64_FORMAT " in %" G_GUINT64_FORMAT " arrived",
			    c->ch.id, U64(pages), U64(packets), U64(c->pages_applied),
			    U64(c->packets_applied));
		return -EPROTO;
	}
	/* Postcopy: SWITCHING, and the registration barrier (returns once RAM is registered). */
	if ((ret = tm_pc_recv_ram_end(c, mode, error)) < 0)
		return ret;
	c->ram_ended = true;
	g_mutex_lock(&r->lock);
	r->st.ram_ended++;
	g_cond_broadcast(&r->cond);
	g_mutex_unlock(&r->lock);
	return 0;
}

static int stopped(recv_chan *c, GError **error)
{
	g_set_error(error, TM_ERROR, ECANCELED, "channel %u: stopped", c->ch.id);
	return -ECANCELED;
}

void tm_recv_state_setup(recv_chan *c, uint32_t packet_size)
{
	if (c->state_buf)
		return;
	/* Touched now, at setup: the chunks arrive inside the guest's downtime, and a fresh
	 * buffer's first-touch page faults would be paid there (packet_size / 4096 of them). */
	c->state_buf = g_malloc(packet_size);
	memset(c->state_buf, 0, packet_size);
}

static int recv_chunk(recv_chan *c, const tm_frame *f, GError **error)
{
	tm_receiver *r = c->r;
	uint8_t hb[TM_STATE_HDR_LEN];
	tm_state_hdr h;
	int ret;

	if (!c->ram_ended) {
		g_set_error(error, TM_ERROR, EPROTO, "channel %u: STATE before RAM_END", c->ch.id);
		return -EPROTO;
	}
	/* The header alone first: a body too short for one is refused before any read. */
	size_t hl = MIN((size_t)f->body_len, sizeof(hb));
	if (hl == sizeof(hb) && (ret = tm_chan_recv(&c->ch, hb, hl, error)) < 0)
		return ret;
	tm_state_limits lim = { .packet_size = r->hello.packet_size,
				.max_section = r->live.max_state_section,
				.channels = r->nch,
				.channel = c->ch.id,
				.expected = c->next_chunk };
	if ((ret = tm_state_hdr_decode(hb, hl, f->body_len, &lim, &h, error)) < 0)
		goto bad;
	if ((ret = tm_chan_recv(&c->ch, c->state_name, h.name_len, error)) < 0)
		return ret;
	c->state_name[h.name_len] = '\0';
	if ((h.flags & TM_STATE_FIRST) &&
	    (ret = tm_state_name_check(c->state_name, h.name_len, error)) < 0) {
		g_prefix_error(error, "STATE chunk %" G_GUINT64_FORMAT " (section %u): ",
			       U64(h.chunk), h.section);
		goto bad;
	}
	tm_recv_state_setup(c, r->hello.packet_size); /* normally done at setup already */
	if ((ret = tm_chan_recv(&c->ch, c->state_buf, h.data_len, error)) < 0)
		return ret;
	c->next_chunk += r->nch;
	c->state_chunks++;

	/* Its turn: all RAM of the final round applied, chunk g - 1 read by the VMM; or, past
	 * END_OF_STATE, at once (refused below: no turn comes). */
	g_mutex_lock(&r->lock);
	while (!r->quit && !r->st.order.ended &&
	       !(r->st.ram_ended == r->nch && r->st.order.next_chunk >= h.chunk && !r->st.held))
		g_cond_wait(&r->cond, &r->lock);
	if (r->quit) {
		g_mutex_unlock(&r->lock);
		return stopped(c, error);
	}
	if ((ret = tm_state_order_check(&r->st.order, &h, c->state_name, error)) < 0) {
		g_mutex_unlock(&r->lock);
		goto bad;
	}
	if ((ret = state_cut(r, error)) < 0) {
		g_mutex_unlock(&r->lock);
		return ret;
	}
	c->state_hdr = h;
	if (h.flags & TM_STATE_END) {
		r->st.eos = true;
		g_cond_broadcast(&r->cond);
		g_mutex_unlock(&r->lock);
		tm_pc_recv_state_progress(r); /* READY(2) may be due */
		return 0;
	}
	r->st.held = c;
	r->st.consumed = 0;
	g_cond_broadcast(&r->cond);
	while (!r->quit && r->st.held == c)
		g_cond_wait(&r->cond, &r->lock);
	bool quit = r->st.held == c;
	if (quit)
		r->st.held = NULL;
	g_mutex_unlock(&r->lock);
	return quit ? stopped(c, error) : 0;
bad:
	tm_chan_prefix_error(&c->ch, error);
	return ret;
}

int tm_recv_state_frame(recv_chan *c, const tm_frame *f, GError **error)
{
	return f->type == TM_MSG_RAM_END ? recv_ram_end(c, f, error) : recv_chunk(c, f, error);
}

bool tm_receiver_state_waiting(tm_receiver *r)
{
	return r->st.held || (r->st.open && r->st.left);
}

/* The session's failure as the VMM's error (under r->lock). */
static int state_failure(tm_receiver *r, GError **error)
{
	if (tm_pc_recv_pauses_locked(r))
		return tm_pc_recv_paused_error_locked(r, error);
	int code = r->failure.error ? r->failure.error->code : EIO;
	if (error)
		*error = r->failure.error ? g_error_copy(r->failure.error)
					  : g_error_new(TM_ERROR, EIO, "migration aborted");
	return -code;
}

static int receiver_usable(tm_receiver *r, const char *what, GError **error)
{
	if (r->state == R_RUNNING)
		return 0;
	g_set_error(error, TM_ERROR, EBADFD, "%s: the receiver is not running", what);
	return -EBADFD;
}

int tm_receiver_next_state(tm_receiver *r, tm_state_info *ret, GError **error)
{
	int rc = receiver_usable(r, "tm_receiver_next_state()", error);
	if (rc < 0)
		return rc;
	if (r->wire != TM_WIRE_VERSION_2)
		return 0; /* protocol 1: no device state */
	g_mutex_lock(&r->lock);
	if (r->st.open && r->st.left && !r->quit) {
		GError *err = g_error_new(TM_ERROR, EPROTO,
					  "state section %u '%s' not read to its end: %" G_GUINT64_FORMAT
					  " bytes left",
					  r->st.index, r->st.order.name, U64(r->st.left));
		if (error)
			*error = g_error_copy(err);
		g_mutex_unlock(&r->lock);
		tm_receiver_fail(r, NULL, err, false);
		return -EPROTO;
	}
	while (!r->quit && !r->st.held && !r->st.eos)
		g_cond_wait(&r->cond, &r->lock);
	if (r->quit) {
		rc = state_failure(r, error);
		g_mutex_unlock(&r->lock);
		return rc;
	}
	r->st.open = false;
	if (!r->st.held) {
		g_mutex_unlock(&r->lock);
		return 0; /* END_OF_STATE */
	}
	const recv_chan *c = r->st.held;
	memset(ret, 0, sizeof(*ret));
	g_strlcpy(ret->name, c->state_name, sizeof(ret->name));
	ret->index = c->state_hdr.section;
	ret->length = c->state_hdr.section_len;
	r->st.open = ret->length > 0; /* an empty section is read to its end at once */
	r->st.left = ret->length;
	r->st.index = ret->index;
	if (c->state_hdr.data_len == 0) {
		/* an empty section: nothing to read, its chunk is done */
		r->st.held = NULL;
		g_cond_broadcast(&r->cond);
	}
	g_mutex_unlock(&r->lock);
	return 1;
}

int tm_receiver_read_state(tm_receiver *r, void *buf, size_t len, GError **error)
{
	int rc = receiver_usable(r, "tm_receiver_read_state()", error);
	if (rc < 0 || len == 0)
		return rc;
	g_mutex_lock(&r->lock);
	if (!r->st.open || len > r->st.left) {
		if (r->st.open)
			g_set_error(error, TM_ERROR, EINVAL,
				    "tm_receiver_read_state(): %zu bytes past the end of state "
				    "section %u '%s' (%" G_GUINT64_FORMAT " bytes left)",
				    len, r->st.index, r->st.order.name, U64(r->st.left));
		else
			g_set_error(error, TM_ERROR, EINVAL,
				    "tm_receiver_read_state(): no state section is open "
				    "(tm_receiver_next_state() first)");
		g_mutex_unlock(&r->lock);
		return -EINVAL;
	}
	uint8_t *out = buf;
	while (len) {
		while (!r->quit && !r->st.held)
			g_cond_wait(&r->cond, &r->lock);
		if (r->quit)
			break;
		recv_chan *c = r->st.held;
		size_t n = MIN(len, (size_t)(c->state_hdr.data_len - r->st.consumed));
		const uint8_t *src = c->state_buf + r->st.consumed;
		/* The worker waits until the chunk is read: its buffer holds still meanwhile. */
		g_mutex_unlock(&r->lock);
		memcpy(out, src, n);
		g_mutex_lock(&r->lock);
		if (r->quit)
			break;
		r->st.consumed += n;
		r->st.left -= n;
		out += n;
		len -= n;
		if (r->st.consumed == c->state_hdr.data_len) {
			r->st.held = NULL;
			r->st.consumed = 0;
			g_cond_broadcast(&r->cond);
		}
	}
	rc = r->quit ? state_failure(r, error) : 0;
	if (rc == 0 && r->st.left == 0)
		r->st.open = false;
	g_mutex_unlock(&r->lock);
	tm_pc_recv_state_progress(r);
	return rc;
}

int tm_receiver_send_ready(void *owner, const tm_frame *unused, GError **error)
{
	tm_receiver *r = owner;

	g_mutex_lock(&r->lock);
	bool eos = r->st.eos, sent = tm_pc_recv_ready_sent_locked(r);
	g_mutex_unlock(&r->lock);
	if (sent)
		return 0; /* postcopy: READY(2) went when the destination could run */
	if (!eos) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "every channel ended without the end of device state (END_OF_STATE)");
		return -EPROTO;
	}
	g_mutex_lock(&r->lock);
	bool postcopy = tm_pc_recv_agreed(r) && r->pc->registered;
	if (postcopy)
		r->pc->ready_sent = true;
	g_mutex_unlock(&r->lock);
	/* Kept for a control reconnect (resume-control.c). */
	return tm_control_send_ordered(&r->control, TM_MSG_READY,
				       postcopy ? TM_RAM_END_POSTCOPY : TM_RAM_END_FINAL, error);
}

void tm_receiver_state_free(tm_receiver *r)
{
	for (unsigned i = 0; r->chans && i < r->nch; i++)
		g_free(r->chans[i].state_buf);
	g_strfreev(r->st.names);
}
