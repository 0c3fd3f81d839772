/* SPDX-License-Identifier: MIT */
/*
 * DELTA and DELTA_NACK on the wire (docs/wire-format.md, "DELTA"): re-sent pages as deltas
 * against the copy the sender sent last (codec/delta.h), and the receiver's refusal of pages
 * whose base it does not hold. Reader and writer of both messages; no I/O. The sender builds a
 * DELTA into buffers of its own and gets iovecs; the receiver decodes a whole DELTA body it
 * read into a buffer of its own, and everything (headers, entries, every delta stream, tags) is
 * checked before the session touches guest RAM.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <glib.h>

#include "codec/codec.h"

G_BEGIN_DECLS

#define TM_DELTA_HDR_LEN 16u      /* block, page_count, data_len, tag_len */
#define TM_DELTA_ENTRY_LEN 24u    /* page, dlen, base_hash, tag_enc, reserved */
#define TM_DELTA_NACK_HDR_LEN 8u  /* block, count */
#define TM_DELTA_NACK_ENTRY_LEN 8u

/* Why the receiver refused a page of a DELTA (DELTA_NACK). */
enum {
	TM_DELTA_REFUSED_BASE = 1,   /* the page it holds is not the base (hash differs) */
	TM_DELTA_REFUSED_ABSENT = 2, /* it never applied the page: nothing to apply a delta to */
};

/* Body limits for the frame header (packet_size 0: none may arrive). */
uint32_t tm_delta_max_body(uint32_t packet_size);
uint32_t tm_delta_nack_max_body(uint32_t packet_size);

typedef struct tm_delta_entry {
	uint32_t page;
	uint32_t dlen;
	uint64_t base_hash;
	uint8_t tag_enc;
	uint32_t off; /* decoder: where its delta starts in the body */
} tm_delta_entry;

/* ---- sender: one DELTA being built (buffers allocated once per channel) ---- */
typedef struct tm_delta_pkt {
	/* set once by tm_delta_pkt_init */
	uint8_t *head;         /* frame header + DELTA header + entries */
	uint8_t *data;         /* the deltas, packet_size bytes */
	uint8_t *tagbuf;       /* tag payloads */
	uint32_t packet_size;
	/* per packet */
	uint32_t block, page_size, max_pages, page_count, data_len, tag_len;
	uint32_t last_page;
	struct iovec iov[3];
} tm_delta_pkt;

void tm_delta_pkt_init(tm_delta_pkt *pkt, uint32_t packet_size);
void tm_delta_pkt_fini(tm_delta_pkt *pkt);
void tm_delta_pkt_begin(tm_delta_pkt *pkt, uint32_t block, uint32_t page_size);
static inline bool tm_delta_pkt_full(const tm_delta_pkt *pkt)
{
	return pkt->page_count >= pkt->max_pages;
}
/*
 * Adds page (page_size bytes, a stable copy) as a delta against base (what was sent of it
 * last), if the delta takes at most max_dlen bytes (< page_size). tags: one byte per granule or
 * NULL. Pages must come in ascending order within a packet. Returns the delta's length,
 * -ENOSPC when it would be longer than max_dlen (send the page whole), -ENOBUFS when the packet
 * has no room for max_dlen more bytes (finish it and begin another).
 */
ssize_t tm_delta_pkt_add(tm_delta_pkt *pkt, uint32_t page, const uint8_t *data,
			 const uint8_t *base, const uint8_t *tags, uint32_t max_dlen);
/* Writes the frame and DELTA headers; returns the iovec count (pkt->iov), wire length in *len. */
unsigned tm_delta_pkt_finish(tm_delta_pkt *pkt, uint8_t version, uint32_t seq, size_t *ret_len);

/* ---- receiver: a DELTA body, decoded and checked whole ---- */
typedef struct tm_delta_rx {
	/* set once by tm_delta_rx_init */
	uint8_t *body;            /* tm_delta_max_body(packet_size) bytes: the body as received */
	tm_delta_entry *entries;  /* packet_size / 4096 */
	tm_page_entry *pe;        /* the same pages as DATA entries, for the tag decoder */
	uint8_t *tags;            /* expanded tags, one byte per granule, every page */
	uint32_t max_entries;
	uint32_t packet_size;
	/* per message, after tm_delta_decode */
	uint32_t block, page_count, data_len, tag_len, page_size;
} tm_delta_rx;

void tm_delta_rx_init(tm_delta_rx *rx, uint32_t packet_size);
void tm_delta_rx_fini(tm_delta_rx *rx);
/*
 * Decodes and checks rx->body[0..body_len) (a DELTA of channel, in session): header, entries
 * (block and pages in range, on channel, ascending, reserved zero), lengths, every delta stream
 * (tm_delta_check) and the tags (expanded into rx->tags). On failure *ret_page is the page the
 * error is about (the packet's first when none) and *error says what; nothing is to be applied.
 * Returns 0, -EBADMSG, -EMSGSIZE, -ERANGE, -EPROTO.
 */
int tm_delta_decode(tm_delta_rx *rx, uint32_t body_len, const tm_hello *session,
		    unsigned channel, uint32_t *ret_page, GError **error);

/* ---- DELTA_NACK ---- */
/* Encodes a DELTA_NACK of count (>= 1) pages with their reasons into out (frame header
 * included, 16 + 8 + 8 * count bytes); returns its length. */
size_t tm_delta_nack_encode(uint8_t *out, uint8_t version, uint32_t seq, uint32_t block,
			    const uint32_t *pages, const uint32_t *reasons, uint32_t count);
/*
 * Decodes a DELTA_NACK body from the peer: block, count in 1..max_pages of the block's page size
 * (packet_size), pages in range and on channel, reasons known. Fills pages (at most
 * packet_size / 4096) and *ret_block, *ret_count. Returns 0 or -EBADMSG / -EMSGSIZE / -ERANGE /
 * -EPROTO with *error naming the field.
 */
int tm_delta_nack_decode(const uint8_t *body, size_t len, const tm_hello *session,
			 unsigned channel, uint32_t *pages, uint32_t *ret_block,
			 uint32_t *ret_count, GError **error);

/* ---- ZDELTA (codec/zdelta.c): a DELTA whose deltas are one zstd frame ---- */

#define TM_ZDELTA_HDR_LEN 8u /* codec, reserved, zlen */

typedef struct tm_zctx tm_zctx;

/* Body limit for the frame header: 8 + DELTA's (the frame is shorter than the deltas). */
uint32_t tm_zdelta_max_body(uint32_t packet_size);
/*
 * After tm_delta_pkt_finish(): the same packet as a ZDELTA whose deltas are zdata[0..zlen), a
 * zstd frame of the pkt->data_len bytes of deltas (0 < zlen < data_len). zhead holds the frame
 * and ZDELTA headers (TM_FRAME_HDR_LEN + TM_ZDELTA_HDR_LEN bytes, the caller's). Fills iov (at
 * most 4) and returns their count, the wire length in *ret_len.
 */
unsigned tm_zdelta_finish(const tm_delta_pkt *pkt, uint8_t *zhead, uint8_t version, uint32_t seq,
			  const uint8_t *zdata, uint32_t zlen, struct iovec *iov, size_t *ret_len);
/*
 * A ZDELTA body from the peer, in[0..body_len): checks the ZDELTA header (codec zstd, agreed
 * in features, reserved 0), the sizes (zlen 1..data_len - 1, data_len at most packet_size, the
 * body exactly 8 + 16 + 24 x page_count + zlen + tag_len, the DELTA it makes within DELTA's
 * limit) before a byte is decoded, then writes the DELTA body it stands for into out
 * (tm_delta_max_body(packet_size) bytes: rx->body, the caller's buffer, never guest RAM) with
 * the frame decoded to exactly data_len bytes (z: a context of packet_size). Sets *ret_len to
 * that body's length for tm_delta_decode(), which checks the rest. Returns 0, -EBADMSG (a bad
 * field, a frame that states another size, decodes short or long, is corrupt or has bytes
 * after it), -EPROTO (zstd not agreed), -EOPNOTSUPP (zstd not built).
 */
int tm_zdelta_unpack(const uint8_t *in, uint32_t body_len, const tm_hello *session,
		     uint32_t agreed, tm_zctx *z, uint8_t *out, uint32_t *ret_len,
		     GError **error);

G_END_DECLS
