/* SPDX-License-Identifier: MIT */
/*
 * The source side of the switch to postcopy (docs/design/live-engine.md 1.3, 2.4, 3.2).
 *
 * Two bitmaps per block say what the destination lacks: ever_sent (a copy of the page was packed,
 * set at pack time) and unsent (the destination must still get the page: set at the switch for
 * what was queued and not packed, and for every page never sent). The migration thread sets
 * `switching`, moves what is still in the workers' pending lists into unsent and waits until
 * every worker has switched: each, at its next packet boundary, flushes its packet, moves the rest
 * of its work into unsent, ORs in its stripes' never-sent pages and counts them; then, on its
 * channel, DISCARD for its stripes' pages that are unsent and were sent before (only those can be
 * stale at the destination; every range inside one striping chunk, so a DISCARD travels behind
 * every precopy copy of its pages), and RAM_END(POSTCOPY). From then on the worker sends STATE
 * chunks as they are handed over and, between them, background pages: ascending over its stripes
 * from a cursor, each run taken with an atomic test-and-clear of unsent bits (the return thread,
 * urgent-send.c, clears them too: whoever clears a page sends it), through the rate limit like
 * any packet. Its END waits until none of its stripes' pages is unsent.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "session/resume-postcopy.h"
#include "session/resume.h"
#include "session/session-internal.h"
#include "tagmig/error.h"

#define U64(x) ((guint64)(x))

/* Bits [lo, hi) of a word, 0 <= lo < hi <= 64. */
static uint64_t word_mask(unsigned lo, unsigned hi)
{
	uint64_t m = hi >= 64 ? ~0ULL : (1ULL << hi) - 1;
	return m & ~((1ULL << lo) - 1);
}

/* Sets bits [first, first + n) atomically (words may be shared with other channels' chunks). */
static void bits_set(uint64_t *bm, uint64_t first, uint64_t n)
{
	uint64_t end = first + n;

	while (first < end) {
		unsigned lo = (unsigned)(first % 64);
		unsigned hi = (unsigned)MIN(64u, lo + (end - first));
		__atomic_fetch_or(&bm[first / 64], word_mask(lo, hi), __ATOMIC_RELAXED);
		first += hi - lo;
	}
}

/* The first run of set bits of *v: its start, its length in *ret_len; clears it from *v. */
static unsigned take_run(uint64_t *v, unsigned *ret_len)
{
	unsigned s0 = (unsigned)__builtin_ctzll(*v);
	uint64_t rest = ~(*v >> s0);
	unsigned len = rest ? (unsigned)__builtin_ctzll(rest) : 64 - s0;

	*v = s0 + len >= 64 ? 0 : *v & (~0ULL << (s0 + len));
	*ret_len = len;
	return s0;
}

static uint64_t per_chunk(const tm_sender *s, const tm_wire_block *b)
{
	return s->hello.chunk_size / b->page_size;
}

/* The first page >= page of block b in a chunk of channel id (b->npages when none is). */
static uint64_t next_mine(const tm_sender *s, unsigned id, const tm_wire_block *b, uint64_t page)
{
	uint64_t per = per_chunk(s, b), k = page / per;
	unsigned owner = (unsigned)((b->chunk_base + k) % s->nch);

	if (page >= b->npages || owner == id)
		return MIN(page, b->npages);
	return MIN((k + (id + s->nch - owner) % s->nch) * per, b->npages);
}

/* The end of page's striping chunk (within the block). */
static uint64_t chunk_end(const tm_sender *s, const tm_wire_block *b, uint64_t page)
{
	uint64_t per = per_chunk(s, b);
	return MIN((page / per + 1) * per, b->npages);
}

void tm_sender_pc_agree(tm_sender *s, const tm_hello_ack *ack)
{
	if (!s->pc.offered)
		return;
	s->pc.agreed = (ack->features & TM_FEATURE_POSTCOPY) != 0;
	s->pc.max_outstanding = ack->max_outstanding;
	s->pc.decline = ack->pc_decline;
	if (!s->pc.agreed) {
		/* Declined: both sides close the urgent connection right after HELLO_ACK (2.2). */
		tm_chan_close(&s->pc.urg);
		return;
	}
	unsigned n = s->hello.block_count;
	s->pc.ever_sent = g_new0(uint64_t *, n);
	s->pc.unsent = g_new0(uint64_t *, n);
	s->pc.answered = g_new0(uint64_t *, n);
	for (unsigned i = 0; i < n; i++) {
		uint64_t words = (s->hello.blocks[i].npages + 63) / 64;
		s->pc.ever_sent[i] = g_new0(uint64_t, words);
		s->pc.unsent[i] = g_new0(uint64_t, words);
		s->pc.answered[i] = g_new0(uint64_t, words);
	}
}

void tm_sender_pc_free(tm_sender *s)
{
	tm_pcresume_send_free(s);
	for (unsigned i = 0; s->pc.unsent && i < s->hello.block_count; i++) {
		g_free(s->pc.ever_sent[i]);
		g_free(s->pc.unsent[i]);
		g_free(s->pc.answered[i]);
	}
	g_clear_pointer(&s->pc.ever_sent, g_free);
	g_clear_pointer(&s->pc.unsent, g_free);
	g_clear_pointer(&s->pc.answered, g_free);
}

bool tm_send_pc_switching(send_chan *c)
{
	return c->s->pc.agreed && !c->pc.switched &&
	       __atomic_load_n(&c->s->pc.switching, __ATOMIC_ACQUIRE);
}

void tm_send_pc_unsent(send_chan *c, uint32_t block, uint64_t first, uint64_t n)
{
	bits_set(c->s->pc.unsent[block], first, n);
}

void tm_send_pc_packed(send_chan *c, uint32_t block, uint64_t first, uint64_t n)
{
	if (c->s->pc.agreed)
		bits_set(c->s->pc.ever_sent[block], first, n);
}

/*
 * Work items at the switch: pages into unsent, SYNCs dropped (no SYNC after RAM_END), STATE and
 * END kept in q for after the switch.
 */
static void take_items(tm_sender *s, const work *items, guint n, GArray *q)
{
	for (guint i = 0; i < n; i++) {
		const work *w = &items[i];
		if (w->kind == WORK_PAGES)
			bits_set(s->pc.unsent[w->block], w->first, w->count);
		else if (w->kind == WORK_STATE || w->kind == WORK_END)
			g_array_append_vals(q, w, 1);
	}
}

/* Worker c at the switch: unsent |= ~ever_sent over its stripes; returns its unsent pages. */
static uint64_t fill_unsent(send_chan *c)
{
	tm_sender *s = c->s;
	uint64_t missing = 0;

	for (unsigned b = 0; b < s->hello.block_count; b++) {
		const tm_wire_block *wb = &s->hello.blocks[b];
		uint64_t *un = s->pc.unsent[b], *ev = s->pc.ever_sent[b];
		for (uint64_t p = next_mine(s, c->ch.id, wb, 0); p < wb->npages;
		     p = next_mine(s, c->ch.id, wb, chunk_end(s, wb, p))) {
			uint64_t e = chunk_end(s, wb, p);
			while (p < e) {
				unsigned lo = (unsigned)(p % 64);
				unsigned hi = (unsigned)MIN(64u, lo + (e - p));
				uint64_t m = word_mask(lo, hi);
				uint64_t add = ~__atomic_load_n(&ev[p / 64], __ATOMIC_RELAXED) & m;
				uint64_t old = __atomic_fetch_or(&un[p / 64], add, __ATOMIC_RELAXED);
				missing += (uint64_t)__builtin_popcountll((old | add) & m);
				p += hi - lo;
			}
		}
	}
	return missing;
}

/* One DISCARD message's worth: ranges of one block. */
typedef struct discard_msg {
	uint32_t block;
	uint32_t n;
	tm_discard_range r[TM_MAX_DISCARD_RANGES];
} discard_msg;

static void discard_add(GPtrArray *msgs, uint32_t block, uint32_t n,
			const tm_discard_range *r)
{
	discard_msg *m = g_new(discard_msg, 1);
	m->block = block;
	m->n = n;
	memcpy(m->r, r, n * sizeof(*r));
	g_ptr_array_add(msgs, m);
}

/*
 * Worker c at the switch, before it is published: the DISCARDs for its stripes' pages that are
 * unsent and were sent. Taken now, as messages to send after: once the switch is published the
 * return thread may clear unsent bits of pages whose stale copy must still be dropped.
 */
static void plan_discards(send_chan *c, GPtrArray *msgs)
{
	tm_sender *s = c->s;
	tm_discard_range r[TM_MAX_DISCARD_RANGES];

	for (unsigned b = 0; b < s->hello.block_count; b++) {
		const tm_wire_block *wb = &s->hello.blocks[b];
		const uint64_t *un = s->pc.unsent[b], *ev = s->pc.ever_sent[b];
		uint32_t n = 0;
		for (uint64_t p = next_mine(s, c->ch.id, wb, 0); p < wb->npages;
		     p = next_mine(s, c->ch.id, wb, chunk_end(s, wb, p))) {
			uint64_t e = chunk_end(s, wb, p);
			bool open = false; /* r[n - 1] may grow: it ends where the next run starts */
			while (p < e) {
				unsigned lo = (unsigned)(p % 64);
				unsigned hi = (unsigned)MIN(64u, lo + (e - p));
				uint64_t base = p - lo;
				uint64_t v = __atomic_load_n(&un[p / 64], __ATOMIC_RELAXED) &
					     __atomic_load_n(&ev[p / 64], __ATOMIC_RELAXED) &
					     word_mask(lo, hi);
				while (v) {
					unsigned len, at = take_run(&v, &len);
					uint64_t first = base + at;
					if (open && r[n - 1].first_page + r[n - 1].npages == first) {
						r[n - 1].npages += len;
						continue;
					}
					if (n == TM_MAX_DISCARD_RANGES) {
						discard_add(msgs, b, n, r);
						n = 0;
					}
					r[n++] = (tm_discard_range){ (uint32_t)first, len };
					open = true;
				}
				p += hi - lo;
			}
		}
		if (n)
			discard_add(msgs, b, n, r);
	}
}

int tm_send_pc_announce(send_chan *c, GPtrArray *msgs, GError **error)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_DISCARD_HDR_LEN + 8 * TM_MAX_DISCARD_RANGES];
	int r;

	for (guint i = 0; i < msgs->len; i++) {
		const discard_msg *m = g_ptr_array_index(msgs, i);
		size_t len = tm_discard_encode(buf, c->ch.tx_seq++, m->block, m->r, m->n);
		struct iovec v = { .iov_base = buf, .iov_len = len };
		if ((r = tm_chan_send(&c->ch, &v, 1, len, error)) < 0)
			return r;
	}
	size_t n = tm_ram_end_encode(buf, c->ch.tx_seq++, TM_RAM_END_POSTCOPY, c->pages_sent,
				     c->packets_sent);
	struct iovec v = { .iov_base = buf, .iov_len = n };
	return tm_chan_send(&c->ch, &v, 1, n, error);
}

/* Scans bits [p, e) of bm for a set one. */
static bool scan(const uint64_t *bm, uint64_t p, uint64_t e, uint64_t *ret)
{
	while (p < e) {
		unsigned lo = (unsigned)(p % 64);
		unsigned hi = (unsigned)MIN(64u, lo + (e - p));
		uint64_t v = __atomic_load_n(&bm[p / 64], __ATOMIC_RELAXED) & word_mask(lo, hi);
		if (v) {
			*ret = p - lo + (uint64_t)__builtin_ctzll(v);
			return true;
		}
		p += hi - lo;
	}
	return false;
}

/* The first unsent page of c's stripes of block b in [from, to). */
static bool find_in(send_chan *c, unsigned b, uint64_t from, uint64_t to, uint64_t *ret)
{
	tm_sender *s = c->s;
	const tm_wire_block *wb = &s->hello.blocks[b];

	for (uint64_t p = next_mine(s, c->ch.id, wb, from); p < to;
	     p = next_mine(s, c->ch.id, wb, chunk_end(s, wb, p)))
		if (scan(s->pc.unsent[b], p, MIN(chunk_end(s, wb, p), to), ret))
			return true;
	return false;
}

/* The next unsent page of c's stripes from its cursor on, wrapping around once. */
static bool find_unsent(send_chan *c, unsigned *ret_block, uint64_t *ret_page)
{
	tm_sender *s = c->s;
	unsigned nb = s->hello.block_count;

	for (unsigned i = 0; i <= nb; i++) {
		unsigned b = (c->pc.cur_block + i) % nb;
		uint64_t from = i == 0 ? c->pc.cur_page : 0;
		uint64_t to = i == nb ? c->pc.cur_page : s->hello.blocks[b].npages;
		if (find_in(c, b, from, to, ret_page)) {
			*ret_block = b;
			return true;
		}
	}
	return false;
}

/* One packet's worth of background pages: 1 when some were taken, 0 when none is left. */
static int background(send_chan *c, GError **error)
{
	tm_sender *s = c->s;
	uint64_t hint = __atomic_exchange_n(&c->pc.hint, 0, __ATOMIC_RELAXED);
	unsigned b;
	uint64_t p;

	if (hint && (uint32_t)((hint - 1) >> 40) < s->hello.block_count) {
		/* A requested page: the pages after it are likely next (urgent-send.c). */
		c->pc.cur_block = (uint32_t)((hint - 1) >> 40);
		c->pc.cur_page = (hint - 1) & ((1ULL << 40) - 1);
	}
	/*
	 * Device state first: the destination starts its vCPUs only once it has all of it, so a
	 * background page before the end of device state (tm_sender_finish) only adds to the
	 * downtime. Requested pages (the return thread) are not held back.
	 */
	if (!__atomic_load_n(&s->st.ended, __ATOMIC_ACQUIRE))
		return 0;
	/*
	 * Nor before this channel's own STATE chunks: the end was marked with the last of them
	 * handed over (state.c, under the lock), but a worker may not have taken them yet. A page
	 * packet ahead of one would hold it behind the rate limit.
	 */
	g_mutex_lock(&s->lock);
	bool state_due = c->pending->len > 0;
	g_mutex_unlock(&s->lock);
	if (state_due)
		return 0;
	if (!find_unsent(c, &b, &p))
		return 0;
	const tm_wire_block *wb = &s->hello.blocks[b];
	uint64_t e = chunk_end(s, wb, p), want = s->hello.packet_size / wb->page_size, got = 0;
	uint64_t *bm = s->pc.unsent[b];
	while (p < e && got < want) {
		unsigned lo = (unsigned)(p % 64);
		unsigned hi = (unsigned)MIN(64u, lo + MIN(e - p, want - got));
		uint64_t base = p - lo, m = word_mask(lo, hi);
		/* Whoever clears a bit sends the page: this worker or the return thread. */
		uint64_t v = __atomic_fetch_and(&bm[p / 64], ~m, __ATOMIC_ACQ_REL) & m;
		while (v) {
			unsigned len, at = take_run(&v, &len);
			work w = { .kind = WORK_PAGES, .block = b, .first = base + at, .count = len };
			/* Both before: a break loses what it packed, and the resume takes back what
			 * the receiver lacks (resume-postcopy.c). */
			tm_pcresume_log(c, &w);
			__atomic_fetch_add(&s->pc.background_pages, len, __ATOMIC_RELAXED);
			int r = tm_send_pages(c, &w, error);
			if (r < 0) {
				/* The word's other runs were taken and never sent: a reconnect
				 * finds them unsent again (resume-postcopy.c). */
				__atomic_fetch_or(&bm[p / 64], v, __ATOMIC_ACQ_REL);
				return r;
			}
			got += len;
		}
		p = base + hi;
	}
	c->pc.cur_block = b;
	c->pc.cur_page = p;
	return 1;
}

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
static bool test_break_at_switch;
static unsigned test_broken_at_switch;

void tm_send_pc_test_break_at_switch(bool on)
{
	__atomic_store_n(&test_break_at_switch, on, __ATOMIC_RELAXED);
}

unsigned tm_send_pc_test_broken_at_switch(void)
{
	return __atomic_load_n(&test_broken_at_switch, __ATOMIC_RELAXED);
}

/* The first worker to switch finds its connection broken as it flushes its last packet. */
static int flush_at_switch(send_chan *c, GError **error)
{
	if (!__atomic_exchange_n(&test_break_at_switch, false, __ATOMIC_RELAXED))
		return tm_send_flush(c, error);
	__atomic_fetch_add(&test_broken_at_switch, 1, __ATOMIC_RELAXED);
	shutdown(c->ch.fd, SHUT_RDWR);
	g_set_error(error, TM_ERROR, ECONNRESET, "%s: broken at the switch (test hook)",
		    c->ch.label);
	return -ECONNRESET;
}

static unsigned test_switch_delay_ms;

void tm_send_pc_test_switch_delay(unsigned ms)
{
	__atomic_store_n(&test_switch_delay_ms, ms, __ATOMIC_RELAXED);
}

/* A VMM thread preempted between the guest's stop and the switch. */
static void switch_delay(void)
{
	unsigned ms = __atomic_load_n(&test_switch_delay_ms, __ATOMIC_RELAXED);
	if (ms)
		g_usleep((gulong)ms * 1000);
}
#else
#define flush_at_switch tm_send_flush
static void switch_delay(void)
{
}
#endif

/* The switch of worker c: its part of unsent, then DISCARD and RAM_END(POSTCOPY). */
static int switch_channel(send_chan *c, guint from, GArray *q, GError **error)
{
	tm_sender *s = c->s;
	int r = flush_at_switch(c, error);

	/*
	 * Broken before the switch, with precopy's last packet: resumed as precopy is (the
	 * replay of what the receiver lacks is c->work then, all of it taken below); after
	 * tm_pcresume_switch() a break is postcopy's to resume.
	 */
	if (r < 0 && tm_resume_send(c, from, error) == 0) {
		r = 0;
		from = 0;
	}
	if (r < 0)
		return r;
	if (from < c->work->len)
		take_items(s, &g_array_index(c->work, work, from), c->work->len - from, q);
	g_array_set_size(c->work, 0);
	g_mutex_lock(&s->lock);
	take_items(s, (const work *)(void *)c->pending->data, c->pending->len, q);
	g_array_set_size(c->pending, 0);
	g_mutex_unlock(&s->lock);

	uint64_t missing = fill_unsent(c);
	g_autoptr(GPtrArray) discards = g_ptr_array_new_with_free_func(g_free);
	plan_discards(c, discards);
	/* Committed: start_postcopy() may return once every worker is here. */
	tm_pcresume_switch(c, discards); /* a broken connection replays from here */
	c->pc.switched = true;
	g_mutex_lock(&s->lock);
	s->pc.switched++;
	s->pc.missing += missing;
	g_cond_broadcast(&s->cond);
	g_mutex_unlock(&s->lock);
	return tm_send_pc_announce(c, discards, error);
}

int tm_send_postcopy(send_chan *c, guint from, GError **error)
{
	tm_sender *s = c->s;
	g_autoptr(GArray) q = g_array_new(FALSE, FALSE, sizeof(work));
	int r = switch_channel(c, from, q, error);

	for (;;) {
		/* A broken connection comes back with q starting with what the receiver lacks
		 * (resume-postcopy.c); otherwise the failure stands. */
		if (r < 0) {
			if ((r = tm_pcresume_send(c, q, error)) < 0)
				break;
			if (r == 1)
				return 0; /* its END was answered: the END_ACK was what got lost */
		}
		/* STATE chunks first, in their order; END once the stripes are done. Each item
		 * leaves q as it is taken: after a break q holds only what was not sent. */
		while (q->len && r >= 0) {
			work w = g_array_index(q, work, 0);
			g_array_remove_index(q, 0);
			if (w.kind == WORK_END) {
				c->pc.end_wanted = true;
			} else if (w.kind == WORK_PAGES || w.kind == WORK_SWITCH) {
				r = tm_pcresume_send_item(c, &w, error); /* a reconnect's replay */
			} else if ((r = tm_send_flush(c, error)) >= 0) {
				tm_pcresume_log(c, &w);
				r = tm_send_state_work(c, &w, error);
			}
		}
		if (r < 0 || (r = background(c, error)) < 0)
			continue;
		if (r == 0 && c->pc.end_wanted) {
			tm_pcresume_log(c, &(work){ .kind = WORK_END });
			if ((r = tm_send_end(c, error)) < 0)
				continue;
			return 0;
		}
		/* Idle: nothing may stay behind, neither the open packet nor what the cork holds
		 * (DISCARD, RAM_END(POSTCOPY), small STATE: the destination waits for them). */
		if (r == 0 && ((r = tm_send_flush(c, error)) < 0 ||
			       (r = tm_chan_flush(&c->ch, error)) < 0))
			continue;
		g_mutex_lock(&s->lock);
		while (r == 0 && !s->quit && c->pending->len == 0) {
			tm_rounds_chan_idle(s, c);
			g_cond_wait(&c->wake, &s->lock);
		}
		if (s->quit) {
			g_mutex_unlock(&s->lock);
			return 0; /* the failure is recorded; the worker's loop ends */
		}
		g_array_append_vals(q, c->pending->data, c->pending->len);
		g_array_set_size(c->pending, 0);
		g_mutex_unlock(&s->lock);
		r = 0;
	}
	return r;
}

int tm_sender_start_postcopy(tm_sender *s, GError **error)
{
	int r = tm_sender_check_open(s, error);

	if (r < 0)
		return r;
	if (s->wire != TM_WIRE_VERSION_2 || !s->pc.agreed) {
		char code[16] = "";
		if (s->pc.decline > TM_PC_DECLINE_UFFD_FAILED)
			g_snprintf(code, sizeof(code), " (code %u)", s->pc.decline);
		if (s->wire == TM_WIRE_VERSION_2 && s->pc.offered)
			g_set_error(error, TM_ERROR, EOPNOTSUPP,
				    "tm_sender_start_postcopy(): the destination declined postcopy: "
				    "%s%s",
				    tm_pc_decline_text(s->pc.decline), code);
		else
			g_set_error(error, TM_ERROR, EOPNOTSUPP, "tm_sender_start_postcopy(): %s",
				    s->wire != TM_WIRE_VERSION_2
					    ? "protocol 1 has no postcopy (wire_version = 1)"
					    : "postcopy was not offered (tm_live_config.postcopy)");
		return -EOPNOTSUPP;
	}
	if (s->pc.started || s->st.ram_closed) {
		g_set_error(error, TM_ERROR, EBADFD, "tm_sender_start_postcopy(): %s",
			    s->pc.started ? "the session is in postcopy already"
					  : "device state has started (tm_sender_put_state or finish)");
		return -EBADFD;
	}
	if ((r = tm_urgent_switch_check(s, error)) < 0)
		return r;
	/* The limit stays: lifted here, the workers could send at full speed what the switch
	 * would otherwise leave to the background (a VMM thread preempted before the switch). */
	if ((r = tm_rounds_stop(s, false, error)) < 0)
		return r;
	switch_delay();

	/* Background pages share the link with urgent ones: the rate limit applies again (3.2). */
	__atomic_store_n(&s->rl.lifted, false, __ATOMIC_RELAXED);
	g_mutex_lock(&s->lock);
	/* Set under the lock: a worker that sees it takes its pending list only after ours. */
	__atomic_store_n(&s->pc.switching, true, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < s->nch; i++) {
		send_chan *c = &s->chans[i];
		g_autoptr(GArray) keep = g_array_new(FALSE, FALSE, sizeof(work));
		take_items(s, (const work *)(void *)c->pending->data, c->pending->len, keep);
		g_array_set_size(c->pending, 0);
		g_array_append_vals(c->pending, keep->data, keep->len);
		work w = { .kind = WORK_SWITCH };
		g_array_append_val(c->pending, w);
		tm_rounds_chan_busy(s, c);
		g_cond_signal(&c->wake);
	}
	while (!s->quit && s->pc.switched < s->nch)
		g_cond_wait(&s->cond, &s->lock);
	bool quit = s->quit;
	if (!quit) {
		/* Both under the lock: a failure from now on pauses (tm_sender_pc_paused_locked). */
		__atomic_store_n(&s->pc.started, true, __ATOMIC_RELEASE);
		g_cond_broadcast(&s->cond); /* a return thread waits for it to reconnect */
		tm_events_set_phase(&s->events, TM_PHASE_POSTCOPY);
		__atomic_store_n(&s->pc.postcopy_pages, s->pc.missing, __ATOMIC_RELAXED);
		s->control.postcopy_pages = s->pc.missing;
		s->control.postcopy_requested = true;
		tm_control_wake(&s->control);
	}
	g_mutex_unlock(&s->lock);
	if (quit)
		return tm_sender_check_open(s, error);
	/* RAM is closed: queue_* refuse, put_state sends no RAM_END(FINAL). */
	s->st.ram_closed = true;
	return 0;
}

int tm_sender_pc_await_end_locked(tm_sender *s)
{
	/* Agreed, the urgent connection ends with REQ_END / END_ACK, in precopy too (REQ_END 0). */
	if (!s->pc.agreed)
		return 0;
	/* Control ended: a reconnect of the urgent connection under way ends now (its REQ_END
	 * was lost in the break; resume-postcopy.c). */
	tm_pcresume_urgent_wake(s);
	/*
	 * Control's END_ACK came after the receiver's urgent connection ended (with every page
	 * present, or never switched: it carried nothing), so REQ_END only closes it cleanly here.
	 * A path that died where we cannot see it (nothing breaks it, no REQ_END comes) costs
	 * TM_URGENT_END_GRACE_MS, not the session.
	 */
	int64_t until = g_get_monotonic_time() + (int64_t)TM_URGENT_END_GRACE_MS * 1000;
	while (!s->quit && !s->pc.urg_ended && !s->pc.urg_exited) {
		if (s->pc.urg_end_over) {
			g_cond_wait(&s->cond, &s->lock);
		} else if (!g_cond_wait_until(&s->cond, &s->lock, until)) {
			s->pc.urg_end_over = true;
			tm_urgent_wake(s, false);
		}
	}
	if (s->pc.urg_ended)
		return 0;
	/* In precopy a receiver that just closed its urgent connection lacks nothing. */
	return __atomic_load_n(&s->pc.started, __ATOMIC_ACQUIRE) ? -ECANCELED : 0;
}

void tm_sender_pc_stats(tm_sender *s, tm_live_stats *st)
{
	st->postcopy_pages = __atomic_load_n(&s->pc.postcopy_pages, __ATOMIC_RELAXED);
	st->requests = __atomic_load_n(&s->pc.requests, __ATOMIC_RELAXED);
	st->urgent_pages = __atomic_load_n(&s->pc.urgent_pages, __ATOMIC_RELAXED);
	st->background_pages = __atomic_load_n(&s->pc.background_pages, __ATOMIC_RELAXED);
	st->end_count_mismatches = __atomic_load_n(&s->pc.end_count_mismatches, __ATOMIC_RELAXED);
	g_mutex_lock(&s->lock);
	g_strlcpy(st->end_count_mismatch, s->pc.end_mismatch, sizeof(st->end_count_mismatch));
	g_mutex_unlock(&s->lock);
	st->service_p50_us = tm_histogram_percentile(&s->pc.service, 0.5);
	st->service_p99_us = tm_histogram_percentile(&s->pc.service, 0.99);
	st->inline_wait_p50_us = tm_histogram_percentile(&s->pc.inline_wait, 0.5);
	st->inline_wait_p99_us = tm_histogram_percentile(&s->pc.inline_wait, 0.99);
}

/* ---- a failure after the switch (design 3.4): paused, never lost ---- */

bool tm_sender_pc_paused_locked(tm_sender *s)
{
	/*
	 * From the committed switch on (started, set under the lock with phase POSTCOPY). A
	 * failure while the workers switch is FAILED: the destination cannot run before it has
	 * END_OF_STATE, which only follows a successful start_postcopy, so the source may resume.
	 */
	return s->pc.started && s->failure.error && !s->failure.cancelled;
}

void tm_sender_pc_pause(tm_sender *s)
{
	/*
	 * The destination may run and lacks pages only this side has. tm_sender_fail() shuts
	 * every connection down (a broken data or urgent connection was resumed before it came
	 * to this, when resume was agreed: resume-postcopy.c); nothing is freed before
	 * tm_sender_free() (unsent, answered, ever_sent, the state sections, the counts).
	 */
	tm_events_set_phase(&s->events, TM_PHASE_POSTCOPY_PAUSED);
	tm_events_raise(&s->events, TM_EVENT_PAUSED);
}

int tm_sender_pc_paused_error(tm_sender *s, GError **error)
{
	g_set_error(error, TM_ERROR, ENOTCONN,
		    "postcopy paused: %s; the source must stay paused and keep its RAM",
		    s->failure.error->message);
	return -ENOTCONN;
}
