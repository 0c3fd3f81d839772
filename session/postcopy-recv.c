/* SPDX-License-Identifier: MIT */
/*
 * Postcopy at the destination (docs/design/live-engine.md 3.3, docs/wire-format.md "Postcopy
 * messages"): accepting the offer with a userfaultfd, the switch (SWITCHING on the first of
 * POSTCOPY, DISCARD or RAM_END(POSTCOPY)), DISCARD applied, the registration barrier, background
 * pages through the placer, READY(2), completion and UFFDIO_UNREGISTER. The fault thread is in
 * fault.c, the urgent connection in urgent-recv.c; postcopy-recv.h says who calls what.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/error-internal.h"
#include "common/escape.h"
#include "common/guest-buf.h"
#include "common/uffd-internal.h"
#include "ram/ram-internal.h"
#include "session/drop-pages.h"
#include "session/postcopy-recv.h"
#include "session/resume-postcopy.h"
#include "session/resume.h"
#include "session/session-internal.h"
#include "tagmig/error.h"

static bool test_and_set(uint64_t *map, uint64_t i)
{
	uint64_t bit = 1ull << (i % 64);
	return __atomic_fetch_or(&map[i / 64], bit, __ATOMIC_ACQ_REL) & bit;
}

static bool test_and_clear(uint64_t *map, uint64_t i)
{
	uint64_t bit = 1ull << (i % 64);
	return __atomic_fetch_and(&map[i / 64], ~bit, __ATOMIC_ACQ_REL) & bit;
}

static bool test_bit(const uint64_t *map, uint64_t i)
{
	return (__atomic_load_n(&map[i / 64], __ATOMIC_ACQUIRE) >> (i % 64)) & 1;
}

static uint64_t **bitmaps_new(const tm_receiver *r)
{
	uint64_t **m = g_new0(uint64_t *, r->hello.block_count);
	for (unsigned b = 0; b < r->hello.block_count; b++)
		m[b] = g_new0(uint64_t, (r->hello.blocks[b].npages + 63) / 64);
	return m;
}

static void bitmaps_free(uint64_t **m, unsigned n)
{
	for (unsigned b = 0; m && b < n; b++)
		g_free(m[b]);
	g_free(m);
}

/* ---- setup ---- */

int tm_pc_recv_setup(tm_receiver *r, const tm_live_config *cfg, GError **error)
{
	int fd = -1, ret;
	bool owned = false, poison = false;
	uint64_t features = cfg->uffd_borrow ? cfg->uffd_features : 0;

	if (cfg->uffd_borrow) {
		fd = cfg->uffd;
		if (fd < 0 || fcntl(fd, F_GETFD) < 0) {
			g_set_error(error, TM_ERROR, EBADF,
				    "live config: uffd_borrow with uffd %d, which is not open", fd);
			r->pc_refused = EBADF;
			return -EBADF;
		}
	} else {
		/* Non-blocking: the fault thread polls it with the stop eventfd. With poison where
		 * the kernel has it (6.6): a paused receiver's free leaves no page silently zero. */
		static const uint64_t tries[] = {
#if defined(TAGMIG_HAVE_KVM_MTE) && TAGMIG_HAVE_KVM_MTE
			/* arm64: and UFFDIO_MOVE where the kernel has it (6.8), for atomic placement
			 * of tagged pages (session/place.h) */
			TM_UFFD_FEATURE_POISON | TM_UFFD_FEATURE_MOVE,
#endif
			TM_UFFD_FEATURE_POISON, 0
		};
		ret = -EINVAL;
		for (size_t i = 0; i < G_N_ELEMENTS(tries) && ret < 0; i++) {
			bool last = i + 1 == G_N_ELEMENTS(tries);
			ret = tm_uffd_open(cfg->uffd_user_mode_only, true, tries[i], &fd, NULL,
					   last ? error : NULL);
			features = ret == 0 ? tries[i] : 0;
		}
		if (ret < 0) {
			g_prefix_error(error, "live config: postcopy: ");
			r->pc_refused = -ret; /* a sender's offer is declined with this reason */
			return ret;
		}
		poison = features & TM_UFFD_FEATURE_POISON;
		owned = true;
	}
	tm_pc_recv *pc = g_new0(tm_pc_recv, 1);
	pc->uffd = fd;
	pc->uffd_owned = owned;
	pc->poison = poison;
	pc->uffd_features = features;
	pc->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	pc->req_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (pc->stop_fd < 0 || pc->req_fd < 0) {
		int err = errno;
		g_set_error(error, TM_ERROR, err, "eventfd: %s", g_strerror(err));
		if (pc->stop_fd >= 0)
			close(pc->stop_fd);
		if (pc->req_fd >= 0)
			close(pc->req_fd);
		if (owned)
			close(fd);
		g_free(pc);
		return -err;
	}
	g_mutex_init(&pc->qlock);
	pc->queue = g_array_new(false, false, sizeof(pc_fault));
	pc->open = g_hash_table_new(g_int64_hash, g_int64_equal);
	tm_pc_recv_free(r); /* a second set_live replaces the first */
	r->pc = pc;
	return 0;
}

bool tm_pc_recv_accepts(const tm_receiver *r)
{
	return r->pc != NULL;
}

uint8_t tm_pc_recv_decline_reason(const tm_receiver *r)
{
	switch (r->pc ? 0 : r->pc_refused) {
	case 0:
		return r->pc ? TM_PC_DECLINE_NONE : TM_PC_DECLINE_NOT_CONFIGURED;
	case EPERM:
	case EACCES:
		return TM_PC_DECLINE_UFFD_DENIED;
	case ENOSYS:
	case EINVAL:
	case EOPNOTSUPP:
		return TM_PC_DECLINE_UFFD_UNSUPPORTED; /* no syscall, or UFFDIO_API refused */
	default:
		return TM_PC_DECLINE_UFFD_FAILED;
	}
}

bool tm_pc_recv_agreed(const tm_receiver *r)
{
	return r->pc && r->pc->agreed;
}

void tm_pc_recv_start(tm_receiver *r)
{
	tm_pc_recv *pc = r->pc;

	pc->agreed = true;
	pc->max_outstanding = r->live.max_outstanding;
	pc->nblocks = r->hello.block_count;
	pc->zero_skipped = bitmaps_new(r);
	pc->zero_known = bitmaps_new(r);
	pc->requested = bitmaps_new(r);
	pc->dropped = bitmaps_new(r);
}

void tm_pc_recv_zero_skipped(tm_receiver *r, unsigned block, uint64_t page, bool skipped)
{
	if (!tm_pc_recv_agreed(r))
		return;
	if (skipped)
		test_and_set(r->pc->zero_skipped[block], page);
	else
		test_and_clear(r->pc->zero_skipped[block], page);
}

const uint64_t *tm_pc_recv_zero_known(tm_receiver *r, unsigned block)
{
	return tm_pc_recv_agreed(r) ? r->pc->zero_known[block] : NULL;
}

/* ---- the switch ---- */

static int stopped(recv_chan *c, GError **error)
{
	g_set_error(error, TM_ERROR, ECANCELED, "channel %u: stopped", c->ch.id);
	return -ECANCELED;
}

/* Under r->lock: the first sign of the switch. No huge page may form over missing pages. */
static void switching_locked(tm_receiver *r)
{
	if (r->pc->switching)
		return;
	r->pc->switching = true;
	for (unsigned b = 0; b < r->hello.block_count; b++) {
		const tm_ram_block *blk = tm_ram_layout_get(r->layout, b);
		(void)madvise(blk->host, blk->length, MADV_NOHUGEPAGE); /* best effort, as QEMU */
	}
}

int tm_pc_recv_discard(recv_chan *c, const tm_frame *f, GError **error)
{
	tm_receiver *r = c->r;
	uint8_t body[TM_DISCARD_HDR_LEN + 8 * TM_MAX_DISCARD_RANGES];
	tm_discard_range ranges[TM_MAX_DISCARD_RANGES];
	uint32_t block, count;
	int ret;

	if (!tm_pc_recv_agreed(r) || c->ram_ended) {
		g_set_error(error, TM_ERROR, EPROTO, "channel %u: DISCARD %s", c->ch.id,
			    c->ram_ended ? "after RAM_END" : "without postcopy agreed");
		return -EPROTO;
	}
	if (f->body_len > sizeof(body)) {
		g_set_error(error, TM_ERROR, EMSGSIZE, "channel %u: DISCARD body of %u bytes",
			    c->ch.id, f->body_len);
		return -EMSGSIZE;
	}
	if ((ret = tm_chan_recv(&c->ch, body, f->body_len, error)) < 0)
		return ret;
	if ((ret = tm_discard_decode(body, f->body_len, &r->hello, c->ch.id, &block, ranges, &count,
				     error)) < 0) {
		tm_chan_prefix_error(&c->ch, error);
		return ret;
	}
	g_mutex_lock(&r->lock);
	bool mixed = r->pc->final_seen;
	if (!mixed)
		switching_locked(r);
	g_mutex_unlock(&r->lock);
	if (mixed) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "channel %u: DISCARD after another channel's RAM_END(FINAL)", c->ch.id);
		return -EPROTO;
	}
	/* Nothing is registered yet and these pages ride this channel only: no one else writes
	 * them now. Absent again, they fault once registered, until their new copy is placed. */
	const tm_ram_block *b = tm_ram_layout_get(r->layout, block);
	uint32_t ps = b->page_size;
	uint64_t dropped = 0;
	tm_drop drop;
	void *bad = NULL;
	tm_drop_init(&drop);
	for (uint32_t k = 0; k < count && ret >= 0; k++) {
		uint64_t first = ranges[k].first_page, n = ranges[k].npages;
		for (uint64_t p = first; p < first + n; p++) {
			dropped += test_and_clear(r->present[block], p);
			test_and_clear(r->pc->zero_skipped[block], p);
		}
		ret = tm_drop_add(&drop, b->host + first * ps, n * ps, &bad);
	}
	if (ret >= 0)
		ret = tm_drop_flush(&drop, &bad); /* the message's ranges in one system call */
	tm_drop_done(&drop);
	if (ret < 0)
		return tm_error_at(error, -ret, c->ch.id, b->name, (uint64_t)((uint8_t *)bad - b->host),
				   "DISCARD of %u ranges: madvise: %s", count, g_strerror(-ret));
	/* Absent now and until the registration: only this channel writes them, and its precopy
	 * copies came before this DISCARD; no huge page forms over them from now on (switching).
	 * The barrier need not drop them again (drop_missing). */
	for (uint32_t k = 0; k < count; k++)
		for (uint64_t p = ranges[k].first_page; p < ranges[k].first_page + ranges[k].npages;
		     p++)
			test_and_set(r->pc->dropped[block], p);
	__atomic_add_fetch(&r->pc->discarded, dropped, __ATOMIC_RELAXED);
	return 0;
}

/*
 * Pages never received may sit under a transparent huge page that a neighbour's precopy write
 * mapped (MADV_NOHUGEPAGE at the switch is too late for those): they would never fault, and
 * their later UFFDIO_COPY would find them present (EEXIST). Dropped here, before the
 * registration, so that every one of them faults until it is placed. Those a DISCARD dropped
 * are absent already (->dropped); the rest go in batches of coalesced ranges (drop-pages.h):
 * a switch with 50,000 missing runs made as many madvise(2) calls here before.
 */
static int drop_missing(tm_receiver *r, unsigned block, tm_drop *drop, GError **error)
{
	const tm_ram_block *b = tm_ram_layout_get(r->layout, block);
	const uint64_t *have = r->present[block], *zk = r->pc->zero_known[block],
		       *gone = r->pc->dropped[block];
	uint64_t np = r->hello.blocks[block].npages, ps = b->page_size, words = (np + 63) / 64;
	void *bad = NULL;
	int ret = 0;

	/* By words: runs of missing bits, joined across words by the batch. */
	for (uint64_t w = 0; w < words && ret >= 0; w++) {
		uint64_t valid = w + 1 < words || np % 64 == 0 ? ~0ull : (1ull << (np % 64)) - 1;
		uint64_t miss = ~(__atomic_load_n(&have[w], __ATOMIC_ACQUIRE) | zk[w] |
				  __atomic_load_n(&gone[w], __ATOMIC_ACQUIRE)) &
				valid;
		while (miss && ret >= 0) {
			unsigned lo = (unsigned)__builtin_ctzll(miss);
			uint64_t rest = ~(miss >> lo);
			unsigned len = rest ? (unsigned)__builtin_ctzll(rest) : 64 - lo;
			miss = lo + len >= 64 ? 0 : miss & (~0ull << (lo + len));
			ret = tm_drop_add(drop, b->host + (w * 64 + lo) * ps, (uint64_t)len * ps, &bad);
		}
	}
	if (ret >= 0)
		ret = tm_drop_flush(drop, &bad); /* the next block's ranges never touch these */
	if (ret < 0) {
		g_autofree char *name = tm_escape_untrusted(b->name);
		g_set_error(error, TM_ERROR, -ret,
			    "postcopy: block '%s', offset 0x%" G_GINT64_MODIFIER "x: dropping "
			    "missing pages: madvise: %s",
			    name, (uint64_t)((uint8_t *)bad - b->host), g_strerror(-ret));
	}
	return ret;
}

/*
 * Under r->lock, by the last channel at the barrier: claimed := present (minus the pages
 * ram_zeroed never wrote: zero_known), guest RAM registered for MISSING faults, phase POSTCOPY.
 */
static int register_locked(tm_receiver *r, GError **error)
{
	tm_pc_recv *pc = r->pc;
	g_autoptr(tm_placer) placer = NULL;
	uint64_t missing = 0;
	int ret;

	if ((ret = tm_placer_new(r->layout, r->tags, pc->uffd, &placer, error)) < 0)
		return ret;
	/* Placer threads: the data channels' workers and the urgent connection's. */
	tm_placer_probe_atomic(placer, pc->uffd_features, r->nch + 1);
	/* The VMM's vCPU pause around background copies (used only where placement is by copy). */
	tm_placer_set_pause(placer, r->live.vcpu_pause, r->live.vcpu_resume,
			    r->live.vcpu_pause_opaque);
	for (unsigned b = 0; b < r->hello.block_count; b++) {
		uint64_t np = r->hello.blocks[b].npages;
		for (uint64_t w = 0; w < (np + 63) / 64; w++) {
			uint64_t valid = w + 1 < (np + 63) / 64 || np % 64 == 0
						 ? ~0ull
						 : (1ull << (np % 64)) - 1;
			uint64_t have = __atomic_load_n(&r->present[b][w], __ATOMIC_ACQUIRE);
			/* Its page table entry may be empty: it would fault forever once registered. */
			uint64_t zk = have & pc->zero_skipped[b][w];
			have &= ~zk;
			pc->zero_known[b][w] = zk;
			__atomic_store_n(&r->present[b][w], have, __ATOMIC_RELEASE);
			missing += (uint64_t)__builtin_popcountll(valid & ~(have | zk));
			for (uint64_t bits = have; bits;) {
				unsigned lo = (unsigned)__builtin_ctzll(bits);
				unsigned hi = lo;
				while (hi < 64 && (bits >> hi) & 1)
					hi++;
				tm_placer_mark_present(placer, b, w * 64 + lo, hi - lo);
				bits &= hi == 64 ? 0 : ~0ull << hi;
			}
		}
	}
	tm_drop drop;
	tm_drop_init(&drop);
	for (unsigned b = 0; b < r->hello.block_count && ret >= 0; b++)
		ret = drop_missing(r, b, &drop, error);
	tm_drop_done(&drop);
	if (ret < 0)
		return ret;
	for (unsigned b = 0; b < r->hello.block_count; b++) {
		const tm_ram_block *blk = tm_ram_layout_get(r->layout, b);
		if ((ret = tm_uffd_register_missing(pc->uffd, blk->host, blk->length, error)) < 0) {
			g_autofree char *name = tm_escape_untrusted(blk->name);
			g_prefix_error(error, "postcopy: registering block '%s': ", name);
			for (unsigned k = 0; k < b; k++) {
				const tm_ram_block *done = tm_ram_layout_get(r->layout, k);
				(void)tm_uffd_unregister(pc->uffd, done->host, done->length, NULL);
			}
			return ret;
		}
	}
	pc->placer = g_steal_pointer(&placer);
	__atomic_store_n(&pc->missing, missing, __ATOMIC_RELEASE);
	__atomic_store_n(&pc->postcopy_pages, missing, __ATOMIC_RELAXED);
	if ((ret = tm_pc_fault_start(r, error)) < 0 || (ret = tm_pc_urgent_start(r, error)) < 0)
		return ret;
	pc->registered = true;
	tm_events_set_phase(&r->events, TM_PHASE_POSTCOPY);
	tm_events_raise(&r->events, TM_EVENT_POSTCOPY);
	return 0;
}

int tm_pc_recv_ram_end(recv_chan *c, uint32_t mode, GError **error)
{
	tm_receiver *r = c->r;
	tm_pc_recv *pc = r->pc;
	int ret = 0;

	if (!tm_pc_recv_agreed(r))
		return 0; /* the codec refused RAM_END(POSTCOPY) */
	g_mutex_lock(&r->lock);
	if (mode == TM_RAM_END_FINAL) {
		if (pc->switching) {
			g_set_error(error, TM_ERROR, EPROTO,
				    "channel %u: RAM_END(FINAL) after the switch to postcopy", c->ch.id);
			ret = -EPROTO;
		}
		pc->final_seen = true;
		g_mutex_unlock(&r->lock);
		return ret;
	}
	if (pc->final_seen) {
		g_mutex_unlock(&r->lock);
		g_set_error(error, TM_ERROR, EPROTO,
			    "channel %u: RAM_END(POSTCOPY) after another channel's RAM_END(FINAL)",
			    c->ch.id);
		return -EPROTO;
	}
	switching_locked(r);
	c->postcopy = true;
	/* The registration barrier: until every channel is here, workers still write precopy
	 * DATA straight into RAM, which nothing registered yet would catch. */
	if (++pc->arrived == r->nch) {
		if ((ret = register_locked(r, error)) < 0) {
			g_mutex_unlock(&r->lock);
			g_prefix_error(error, "channel %u: ", c->ch.id);
			return ret;
		}
		g_cond_broadcast(&r->cond);
		tm_control_wake(&r->control); /* READY(2) may be due */
	}
	while (!r->quit && !pc->registered)
		g_cond_wait(&r->cond, &r->lock);
	bool quit = !pc->registered;
	g_mutex_unlock(&r->lock);
	return quit ? stopped(c, error) : 0;
}

int tm_pc_recv_postcopy_msg(void *owner, const tm_frame *f, GError **error)
{
	tm_receiver *r = owner;
	uint8_t body[TM_POSTCOPY_LEN];
	uint64_t missing;
	int ret;

	if (f->body_len != sizeof(body)) {
		g_set_error(error, TM_ERROR, EBADMSG, "control: POSTCOPY body of %u bytes",
			    f->body_len);
		return -EBADMSG;
	}
	if ((ret = tm_chan_recv(&r->ctl, body, sizeof(body), error)) < 0)
		return ret;
	if ((ret = tm_postcopy_decode(body, sizeof(body), &r->hello, tm_pc_recv_agreed(r), &missing,
				      error)) < 0) {
		tm_chan_prefix_error(&r->ctl, error);
		return ret;
	}
	g_mutex_lock(&r->lock);
	const char *why = r->pc->postcopy_msg ? "POSTCOPY twice"
			  : r->pc->final_seen ? "POSTCOPY after a channel's RAM_END(FINAL)"
					      : NULL;
	r->pc->postcopy_msg = true;
	if (!why)
		switching_locked(r);
	g_mutex_unlock(&r->lock);
	if (why) {
		g_set_error(error, TM_ERROR, EPROTO, "control: %s", why);
		return -EPROTO;
	}
	return 0;
}

/* ---- pages after the switch ---- */

struct pc_bounce {
	uint8_t head[TM_DATA_HDR_LEN];
	uint8_t *raw;            /* entries as received */
	tm_page_entry *entries;
	uint8_t *data;           /* one page_size slot per entry: data_len bytes, a guest-buf */
	uint32_t data_len;
	uint8_t *zero;           /* per entry: its data is zero */
	uint8_t *tag_payload;
	uint8_t *tags;           /* one byte per granule, every page in entry order */
	struct iovec *iov;
	uint32_t max_entries;
};

pc_bounce *tm_pc_bounce_new(uint32_t packet_size)
{
	pc_bounce *b = g_new0(pc_bounce, 1);
	/* tm_data_hdr_decode bounds page_count by packet_size / page_size, pages of 4 KiB or more */
	b->max_entries = packet_size / 4096 + 1;
	b->raw = g_malloc((size_t)b->max_entries * TM_PAGE_ENTRY_LEN);
	b->entries = g_new(tm_page_entry, b->max_entries);
	b->data_len = packet_size;
	b->data = tm_guest_buf_new(packet_size); /* guest bytes: unmapped at free (guest-buf.h) */
	b->zero = g_malloc(b->max_entries);
	b->tag_payload = g_malloc(packet_size / 32 + 1);
	b->tags = g_malloc(packet_size / TM_TAG_GRANULE + 1);
	b->iov = g_new(struct iovec, b->max_entries + 1);
	return b;
}

void tm_pc_bounce_free(pc_bounce *b)
{
	if (!b)
		return;
	g_free(b->raw);
	g_free(b->entries);
	tm_guest_buf_free(b->data, b->data_len);
	g_free(b->zero);
	g_free(b->tag_payload);
	g_free(b->tags);
	g_free(b->iov);
	g_free(b);
}

void tm_pc_recv_placed(tm_receiver *r, unsigned ch, unsigned block, uint64_t first,
		       uint32_t npages)
{
	tm_pc_recv *pc = r->pc;
	uint64_t newly = 0;

	for (uint64_t p = first; p < first + npages; p++) {
		/* Another placer's claimed page: it marks it when its copy is done. */
		if (!tm_placer_present(pc->placer, block, p) || test_and_set(r->present[block], p))
			continue;
		if (!test_bit(pc->zero_known[block], p))
			newly++;
		if (r->cfg.on_present)
			r->cfg.on_present(r->cfg.opaque, ch, block, p, 1);
		if (test_and_clear(pc->requested[block], p)) {
			/* The fault on it is over: fault read -> woken (3.3 step 7). */
			int64_t key = (int64_t)((uint64_t)block << 48 | p), t = 0;
			g_mutex_lock(&pc->qlock);
			gpointer v = g_hash_table_lookup(pc->open, &key);
			if (v) {
				t = ((int64_t *)v)[1]; /* fault.c: { key, t_fault } */
				g_hash_table_remove(pc->open, &key);
				g_free(v);
			}
			g_mutex_unlock(&pc->qlock);
			int64_t dt = g_get_monotonic_time() - t;
			if (t)
				tm_placer_record_latency(pc->placer, dt > 0 ? (uint64_t)dt : 0);
		}
	}
	if (newly && __atomic_sub_fetch(&pc->missing, newly, __ATOMIC_ACQ_REL) == 0) {
		tm_pc_urgent_wake(pc); /* REQ_END is due */
		tm_control_wake(&r->control);
	}
}

int tm_pc_recv_body(tm_receiver *r, tm_chan *ch, pc_bounce *b, uint32_t body_len,
		    unsigned channel, uint64_t req_id, const tm_page_req *req, uint32_t *ret_pages,
		    GError **error)
{
	tm_data_hdr hdr;
	int ret;

	if (body_len < TM_DATA_HDR_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG, "DATA body of %u bytes is truncated", body_len);
		goto bad;
	}
	if ((ret = tm_chan_recv(ch, b->head, TM_DATA_HDR_LEN, error)) < 0)
		return ret;
	if ((ret = tm_data_hdr_decode(b->head, TM_DATA_HDR_LEN, &r->hello, &hdr, error)) < 0 ||
	    (req && (ret = tm_urgent_check(&r->hello, req_id, req, &hdr, NULL, error)) < 0))
		goto bad;
	size_t elen = (size_t)hdr.page_count * TM_PAGE_ENTRY_LEN;
	if (hdr.page_count > b->max_entries || elen > body_len - TM_DATA_HDR_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG, "DATA with %u pages is truncated at %u bytes",
			    hdr.page_count, body_len);
		goto bad;
	}
	if ((ret = tm_chan_recv(ch, b->raw, elen, error)) < 0)
		return ret;
	if ((ret = tm_data_entries_decode(&hdr, b->raw, elen, &r->hello, channel, body_len,
					  b->entries, error)) < 0 ||
	    (req && (ret = tm_urgent_check(&r->hello, req_id, req, &hdr, b->entries, error)) < 0))
		goto bad;

	/* Everything is checked; the pages go to the bounce buffer, never straight to RAM. */
	const tm_ram_block *blk = tm_ram_layout_get(r->layout, hdr.block);
	uint32_t ps = blk->page_size;
	unsigned n = 0;
	for (uint32_t i = 0; i < hdr.page_count; i++) {
		b->zero[i] = b->entries[i].kind != TM_PAGE_NORMAL;
		if (b->zero[i])
			continue;
		uint8_t *to = b->data + (size_t)i * ps;
		if (n && (uint8_t *)b->iov[n - 1].iov_base + b->iov[n - 1].iov_len == to)
			b->iov[n - 1].iov_len += ps;
		else
			b->iov[n++] = (struct iovec){ .iov_base = to, .iov_len = ps };
	}
	if (hdr.tag_len)
		b->iov[n++] = (struct iovec){ .iov_base = b->tag_payload, .iov_len = hdr.tag_len };
	size_t payload = (size_t)hdr.data_len + hdr.tag_len;
	if (payload && (ret = tm_chan_recv_iov(ch, b->iov, n, payload)) < 0)
		return tm_error_at(error, -ret, ch->id, blk->name,
				   (uint64_t)b->entries[0].page * ps, "%s: receive page data: %s",
				   ch->label, tm_chan_io_reason(ch, -ret));
	if ((r->hello.features & TM_FEATURE_TAGS_MTE4) &&
	    (ret = tm_data_tags_expand(&hdr, b->entries, ps, b->tag_payload, hdr.tag_len, b->tags,
				       error)) < 0)
		goto bad;
	tm_count(&ch->st.pages, hdr.page_count);
	tm_count(&ch->st.packets, 1);
	tm_count(&ch->st.data_bytes, hdr.data_len);
	tm_count(&ch->st.tag_bytes, hdr.tag_len);

	/* Runs of consecutive pages, each placed once whoever else delivers it (claim bits). */
	size_t granules = ps / TM_TAG_GRANULE;
	for (uint32_t i = 0; i < hdr.page_count;) {
		uint32_t j = i + 1;
		while (j < hdr.page_count && b->entries[j].page == b->entries[j - 1].page + 1)
			j++;
		tm_place_run run = { .block = hdr.block,
				     .first_page = b->entries[i].page,
				     .npages = j - i,
				     .data = b->data + (size_t)i * ps,
				     .zero = b->zero + i,
				     .tags = r->tags ? b->tags + (size_t)i * granules : NULL,
				     .requested = req != NULL };
		if ((ret = tm_placer_place(r->pc->placer, &run, NULL, error)) < 0) {
			g_prefix_error(error, "%s: ", ch->label);
			return ret;
		}
		tm_pc_recv_placed(r, ch->id, hdr.block, run.first_page, run.npages);
		i = j;
	}
	*ret_pages = hdr.page_count;
	return 0;
bad:
	tm_chan_prefix_error(ch, error);
	return error && *error ? -(*error)->code : -EBADMSG;
}

int tm_pc_recv_data(recv_chan *c, const tm_frame *f, GError **error)
{
	tm_receiver *r = c->r;
	uint32_t pages = 0;

	if (!c->pc_bounce)
		c->pc_bounce = tm_pc_bounce_new(r->hello.packet_size);
	int ret = tm_pc_recv_body(r, &c->ch, c->pc_bounce, f->body_len, c->ch.id, 0, NULL, &pages,
				  error);
	if (ret < 0)
		return ret;
	c->pages_applied += pages;
	c->packets_applied++;
	__atomic_add_fetch(&r->pc->background, pages, __ATOMIC_RELAXED);
	return 0;
}

/* ---- READY(2), wait, completion ---- */

int tm_pc_recv_control_tick(tm_receiver *r, GError **error)
{
	if (!tm_pc_recv_agreed(r))
		return 0;
	g_mutex_lock(&r->lock);
	/* RAM registered, END_OF_STATE reached, every section read: the destination may run. */
	bool due = r->pc->registered && !r->pc->ready_sent && r->st.eos && !r->st.held &&
		   !(r->st.open && r->st.left);
	if (due)
		r->pc->ready_sent = true;
	g_mutex_unlock(&r->lock);
	if (!due)
		return 0;
	/* Kept for a control reconnect (resume-control.c). */
	return tm_control_send_ordered(&r->control, TM_MSG_READY, TM_RAM_END_POSTCOPY, error);
}

bool tm_pc_recv_ready_sent_locked(tm_receiver *r)
{
	return tm_pc_recv_agreed(r) && r->pc->ready_sent;
}

bool tm_pc_recv_wait_one_locked(tm_receiver *r)
{
	if (!tm_pc_recv_agreed(r) || !r->pc->registered || !r->st.eos || r->pc->wait_told)
		return false;
	r->pc->wait_told = true;
	return true;
}

void tm_pc_recv_state_progress(tm_receiver *r)
{
	if (tm_pc_recv_agreed(r))
		tm_control_wake(&r->control);
}

int tm_pc_recv_data_end(tm_receiver *r, bool channels_ended, GError **error)
{
	tm_pc_recv *pc = r->pc;

	g_mutex_lock(&r->lock);
	bool done = pc->urgent_done, unreg = pc->unregistered, registered = pc->registered;
	g_mutex_unlock(&r->lock);
	if (channels_ended && !registered) {
		/* Agreed, never switched: complete in precopy; the urgent connection ends unused. */
		int ret = tm_receiver_check_complete(r, error);
		if (ret < 0 || done || (ret = tm_pc_urgent_end_unused(r, error)) < 0)
			return ret < 0 ? ret : 1;
		g_mutex_lock(&r->lock);
		pc->urgent_done = true;
		g_mutex_unlock(&r->lock);
		return 1;
	}
	if (!channels_ended || !done)
		return 0;
	int ret = tm_receiver_check_complete(r, error);
	if (ret < 0 || unreg)
		return ret < 0 ? ret : 1;
	/* Every page is present: guest RAM is ordinary memory again (zero_known pages are
	 * zero-fill memory, with zero tags). */
	for (unsigned b = 0; b < r->hello.block_count; b++) {
		const tm_ram_block *blk = tm_ram_layout_get(r->layout, b);
		if ((ret = tm_uffd_unregister(pc->uffd, blk->host, blk->length, error)) < 0) {
			g_autofree char *name = tm_escape_untrusted(blk->name);
			g_prefix_error(error, "postcopy: unregistering block '%s': ", name);
			return ret;
		}
	}
	/* ... and present as far as tm_receiver_page_present() tells. */
	for (unsigned b = 0; b < r->hello.block_count; b++)
		for (uint64_t w = 0; w < (r->hello.blocks[b].npages + 63) / 64; w++)
			__atomic_fetch_or(&r->present[b][w], pc->zero_known[b][w], __ATOMIC_RELEASE);
	g_mutex_lock(&r->lock);
	pc->unregistered = true;
	g_mutex_unlock(&r->lock);
	return 1;
}

void tm_pc_recv_stats(tm_receiver *r, tm_live_stats *st)
{
	tm_pc_recv *pc = r->pc;

	if (!tm_pc_recv_agreed(r))
		return;
	st->postcopy_pages = __atomic_load_n(&pc->postcopy_pages, __ATOMIC_RELAXED);
	st->discarded_pages = __atomic_load_n(&pc->discarded, __ATOMIC_RELAXED);
	st->requests = __atomic_load_n(&pc->requests, __ATOMIC_RELAXED);
	st->urgent_pages = __atomic_load_n(&pc->urgent_pages, __ATOMIC_RELAXED);
	st->background_pages = __atomic_load_n(&pc->background, __ATOMIC_RELAXED);
	st->faults = __atomic_load_n(&pc->faults, __ATOMIC_RELAXED);
	g_mutex_lock(&r->lock);
	tm_placer *placer = pc->registered ? pc->placer : NULL;
	g_mutex_unlock(&r->lock);
	if (placer) {
		tm_place_stats ps;
		tm_placer_get_stats(placer, &ps);
		st->duplicate_pages = ps.duplicate_pages;
		st->fault_p50_us = ps.fault_p50_us;
		st->fault_p99_us = ps.fault_p99_us;
		st->fault_max_us = ps.fault_max_us;
		st->placement = ps.move ? TM_PLACEMENT_MOVE : TM_PLACEMENT_COPY;
		st->moved_pages = ps.moved_pages;
		st->copied_pages = ps.copied_pages;
		st->background_nonatomic_pages = ps.background_nonatomic_pages;
		st->paused_batches = ps.paused_batches;
		st->pause_us = ps.pause_us;
		st->pause_failures = ps.pause_failures;
		g_strlcpy(st->placement_reason, ps.reason, sizeof(st->placement_reason));
	}
}

bool tm_pc_recv_pauses_locked(tm_receiver *r)
{
	return tm_pc_recv_agreed(r) && r->pc->registered && !r->pc->unregistered &&
	       !r->failure.cancelled;
}

int tm_pc_recv_paused_error_locked(tm_receiver *r, GError **error)
{
	g_set_error(error, TM_ERROR, ENOTCONN,
		    "postcopy paused: %s; the source must stay paused and keep its RAM",
		    r->failure.error ? r->failure.error->message : "a connection failed");
	return -ENOTCONN;
}

void tm_pc_recv_quit(tm_receiver *r)
{
	tm_pc_recv *pc = r->pc;
	uint64_t one = 1;

	if (!pc)
		return;
	(void)!write(pc->stop_fd, &one, sizeof(one));
	if (r->urg.fd >= 0)
		shutdown(r->urg.fd, SHUT_RDWR);
}

void tm_pc_recv_stop(tm_receiver *r)
{
	tm_pc_recv *pc = r->pc;

	if (!pc)
		return;
	tm_pc_recv_quit(r);
	if (pc->fault_thread)
		g_thread_join(pc->fault_thread);
	if (pc->urgent_thread)
		g_thread_join(pc->urgent_thread);
	pc->fault_thread = pc->urgent_thread = NULL;
}

/*
 * At free of a session that switched and never completed (paused or failed): the pages still
 * missing are poisoned before the userfaultfd closes, so that a thread the VMM failed to stop
 * gets SIGBUS instead of a zero page it would take for guest data (1.7). Without poison (before
 * Linux 6.6, or a borrowed fd without the feature) closing releases them to zero pages.
 */
static void poison_missing(tm_receiver *r)
{
	tm_pc_recv *pc = r->pc;

	if (!pc->poison || !pc->registered || pc->unregistered)
		return;
	for (unsigned b = 0; b < r->hello.block_count; b++) {
		const tm_ram_block *blk = tm_ram_layout_get(r->layout, b);
		uint64_t np = r->hello.blocks[b].npages;
		for (uint64_t p = 0; p < np;) {
			if (tm_placer_claimed(pc->placer, b, p) || test_bit(pc->zero_known[b], p)) {
				p++;
				continue;
			}
			uint64_t q = p + 1;
			while (q < np && !tm_placer_claimed(pc->placer, b, q) &&
			       !test_bit(pc->zero_known[b], q))
				q++;
			(void)tm_uffd_poison(pc->uffd, blk->host + p * blk->page_size,
					     (q - p) * blk->page_size, NULL);
			p = q;
		}
	}
}

void tm_pc_recv_free(tm_receiver *r)
{
	tm_pc_recv *pc = r->pc;

	if (!pc)
		return;
	tm_pc_recv_stop(r);
	tm_pcresume_recv_free(r); /* a reconnect nobody took */
	poison_missing(r);
	tm_placer_free(pc->placer);
	bitmaps_free(pc->zero_skipped, pc->nblocks);
	bitmaps_free(pc->zero_known, pc->nblocks);
	bitmaps_free(pc->requested, pc->nblocks);
	bitmaps_free(pc->dropped, pc->nblocks);
	if (pc->open) {
		GHashTableIter it;
		gpointer k, v;
		g_hash_table_iter_init(&it, pc->open);
		while (g_hash_table_iter_next(&it, &k, &v))
			g_free(v);
		g_hash_table_unref(pc->open);
	}
	if (pc->queue)
		g_array_unref(pc->queue);
	g_mutex_clear(&pc->qlock);
	close(pc->stop_fd);
	close(pc->req_fd);
	if (pc->uffd_owned)
		close(pc->uffd);
	g_free(pc);
	r->pc = NULL;
}
