/* SPDX-License-Identifier: MIT */
/*
 * The receiver's side of delta encoding (delta.h): a DELTA is read whole into a buffer of the
 * channel's (never guest RAM) and checked whole by the codec; then each page's base is checked
 * against the page this receiver holds (applied before, and its hash equal to the sender's
 * base_hash), never assumed. Pages that pass get their delta and tags and are marked present;
 * the others are left as they are, no longer present, and named in one DELTA_NACK.
 */
#include <errno.h>
#include <string.h>

#include "codec/compress.h"
#include "codec/delta-wire.h"
#include "codec/delta.h"
#include "common/error-internal.h"
#include "common/guest-buf.h"
#include "ram/ram-internal.h"
#include "session/delta.h"
#include "session/session-internal.h"
#include "tagmig/error.h"
#include "tagstore/tagstore-internal.h"

struct tm_drecv {
	/* worker-local */
	tm_delta_rx rx;
	uint32_t *nack_pages, *nack_why;
	uint8_t *nack_buf;     /* a whole DELTA_NACK frame */
	uint32_t agreed;       /* the session's features */
	tm_zctx *z;            /* ZDELTA: a context when ZSTD was agreed too */
	uint8_t *zbody;        /* a ZDELTA body as received */
	/* statistics: relaxed atomics (any thread reads) */
	uint64_t pages, page_bytes, wire_bytes, refused_pages, zpackets;
};

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
static bool no_zctx;

void tm_drecv_test_no_zctx(bool on)
{
	__atomic_store_n(&no_zctx, on, __ATOMIC_RELAXED);
}

static bool test_no_zctx(void)
{
	return __atomic_load_n(&no_zctx, __ATOMIC_RELAXED);
}
#else
static bool test_no_zctx(void)
{
	return false;
}
#endif

void tm_drecv_setup(recv_chan *c, uint32_t agreed, uint32_t packet_size)
{
	if (!(agreed & TM_FEATURE_DELTA))
		return;
	tm_drecv *d = g_new0(tm_drecv, 1);
	uint32_t n = packet_size / 4096u;
	tm_delta_rx_init(&d->rx, packet_size);
	d->nack_pages = g_new(uint32_t, n);
	d->nack_why = g_new(uint32_t, n);
	d->nack_buf = g_malloc(TM_FRAME_HDR_LEN + tm_delta_nack_max_body(packet_size));
	d->agreed = agreed;
	/* Out of memory for a context: a ZDELTA is then refused (tm_drecv_apply). */
	if ((agreed & TM_FEATURE_ZSTD) && !test_no_zctx() && tm_zctx_new(packet_size, &d->z, NULL) == 0)
		d->zbody = tm_guest_buf_new(tm_zdelta_max_body(packet_size)); /* as rx.body */
	__atomic_store_n(&c->dr, d, __ATOMIC_RELEASE);
}

void tm_drecv_free(tm_drecv *d)
{
	if (!d)
		return;
	tm_guest_buf_free(d->zbody, tm_zdelta_max_body(d->rx.packet_size));
	tm_delta_rx_fini(&d->rx);
	g_free(d->nack_pages);
	g_free(d->nack_why);
	g_free(d->nack_buf);
	tm_zctx_free(d->z);
	g_free(d);
}

int tm_drecv_apply(recv_chan *c, const tm_frame *f, GError **error)
{
	tm_receiver *r = c->r;
	tm_drecv *d = c->dr;
	int ret;

	bool zd = f->type == TM_MSG_ZDELTA;
	if (!d || c->postcopy || c->ram_ended || (zd && !(d->agreed & TM_FEATURE_ZSTD))) {
		g_set_error(error, TM_ERROR, EPROTO, "channel %u: %s %s", c->ch.id,
			    tm_msg_name(f->type),
			    !d ? "without DELTA agreed in the handshake"
			       : c->postcopy || c->ram_ended ? "after RAM_END"
							     : "without ZSTD agreed in the handshake");
		return -EPROTO;
	}
	if (zd && !d->zbody) { /* its body would have nowhere to go */
		g_set_error(error, TM_ERROR, ENOMEM,
			    "channel %u: ZDELTA: no zstd context on this side (out of memory at "
			    "setup)", c->ch.id);
		return -ENOMEM;
	}
	/* A ZDELTA's body is read aside; what it stands for is decoded into the DELTA buffer. */
	if ((ret = tm_chan_recv(&c->ch, zd ? d->zbody : d->rx.body, f->body_len, error)) < 0)
		return ret;

	g_autoptr(GError) why = NULL;
	uint32_t first = 0, body_len = f->body_len;
	const uint8_t *hdr = d->rx.body; /* the DELTA header, for the error's block and page */
	if (zd) {
		hdr = d->zbody + TM_ZDELTA_HDR_LEN;
		ret = tm_zdelta_unpack(d->zbody, f->body_len, &r->hello, d->agreed, d->z,
				       d->rx.body, &body_len, &why); /* d->z is set with zbody */
		if (ret < 0 && f->body_len >= TM_ZDELTA_HDR_LEN + TM_DELTA_HDR_LEN + 4)
			first = tm_get32(hdr + TM_DELTA_HDR_LEN);
	}
	if (ret >= 0) {
		hdr = d->rx.body;
		ret = tm_delta_decode(&d->rx, body_len, &r->hello, c->ch.id, &first, &why);
	}
	if (ret < 0) {
		uint32_t block = body_len >= 4 && (!zd || f->body_len >= TM_ZDELTA_HDR_LEN + 4)
					 ? tm_get32(hdr) : UINT32_MAX;
		if (block >= r->hello.block_count) {
			g_set_error(error, TM_ERROR, -ret, "channel %u: %s; nothing of it applied",
				    c->ch.id, why->message);
			return ret;
		}
		const tm_wire_block *wb = &r->hello.blocks[block];
		return tm_error_at(error, -ret, c->ch.id, wb->name, (uint64_t)first * wb->page_size,
				   "%s; nothing of it applied", why->message);
	}

	/* Checked whole: now page by page, the base first. */
	const tm_delta_rx *rx = &d->rx;
	const tm_ram_block *b = tm_ram_layout_get(r->layout, rx->block);
	uint32_t ps = rx->page_size, nref = 0;
	for (uint32_t i = 0; i < rx->page_count; i++) {
		const tm_delta_entry *e = &rx->entries[i];
		uint8_t *page = b->host + (uint64_t)e->page * ps;
		uint32_t reason = 0;
		if (!tm_receiver_page_present(r, rx->block, e->page))
			reason = TM_DELTA_REFUSED_ABSENT;
		else if (tm_page_hash(page, ps) != e->base_hash)
			reason = TM_DELTA_REFUSED_BASE;
		if (reason) {
			/* Not what the sender thinks we hold: untouched, and no longer present until
			 * its whole copy comes (a lost refusal then fails the completeness check). */
			__atomic_fetch_and(&r->present[rx->block][e->page / 64],
					   ~(1ull << (e->page % 64)), __ATOMIC_RELEASE);
			d->nack_pages[nref] = e->page;
			d->nack_why[nref++] = reason;
			continue;
		}
		ret = tm_delta_apply(page, ps, rx->body + e->off, e->dlen, &why);
		g_assert(ret == 0); /* tm_delta_decode checked every stream */
		if (r->tags) {
			ret = tm_tag_store_set(r->tags, rx->block, (uint64_t)e->page * ps, ps,
					       rx->tags + (size_t)i * (ps / TM_TAG_GRANULE));
			if (ret < 0)
				return tm_error_at(error, -ret, c->ch.id, b->name, (uint64_t)e->page * ps,
						   "setting tags failed: %s", g_strerror(-ret));
		}
		__atomic_fetch_or(&r->present[rx->block][e->page / 64], 1ull << (e->page % 64),
				  __ATOMIC_RELEASE);
		if (r->cfg.on_present)
			r->cfg.on_present(r->cfg.opaque, c->ch.id, rx->block, e->page, 1);
		tm_count(&d->pages, 1);
		tm_count(&d->page_bytes, ps);
		tm_count(&d->wire_bytes, e->dlen + (uint64_t)TM_DELTA_ENTRY_LEN);
	}
	uint64_t data_wire = rx->data_len;
	if (zd) {
		/* As the sender counts a ZDELTA: its frame in place of the deltas' bytes. */
		data_wire = f->body_len - (body_len - rx->data_len);
		tm_count(&d->zpackets, 1);
	}
	/* Refused pages count as answered: SYNC_ACK, RAM_END and END counts hold (wire-format). */
	c->pages_applied += rx->page_count;
	c->packets_applied++;
	tm_count(&c->ch.st.pages, rx->page_count);
	tm_count(&c->ch.st.packets, 1);
	tm_count(&c->ch.st.data_bytes, data_wire);
	tm_count(&c->ch.st.tag_bytes, rx->tag_len);
	if (nref == 0)
		return 0;
	tm_count(&d->refused_pages, nref);
	size_t len = tm_delta_nack_encode(d->nack_buf, c->ch.version, c->ch.tx_seq++, rx->block,
					  d->nack_pages, d->nack_why, nref);
	struct iovec iov = { d->nack_buf, len };
	return tm_chan_send(&c->ch, &iov, 1, len, error);
}

int tm_receiver_get_delta_stats(tm_receiver *r, unsigned channel, tm_delta_stats *ret)
{
	if (ret->size < 8)
		return -EINVAL;
	if (channel >= r->nch)
		return -ERANGE;
	tm_delta_stats full = { .size = sizeof(full) };
	const tm_drecv *d = __atomic_load_n(&r->chans[channel].dr, __ATOMIC_ACQUIRE);
	if (d) {
		full.agreed = 1;
		full.pages = __atomic_load_n(&d->pages, __ATOMIC_RELAXED);
		full.page_bytes = __atomic_load_n(&d->page_bytes, __ATOMIC_RELAXED);
		full.wire_bytes = __atomic_load_n(&d->wire_bytes, __ATOMIC_RELAXED);
		full.refused = __atomic_load_n(&d->refused_pages, __ATOMIC_RELAXED);
		full.zdelta_packets = __atomic_load_n(&d->zpackets, __ATOMIC_RELAXED);
	}
	uint32_t n = MIN(ret->size, (uint32_t)sizeof(full));
	memcpy(ret, &full, n);
	ret->size = n;
	return 0;
}
