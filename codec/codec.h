/* SPDX-License-Identifier: MIT */
/*
 * The wire codec (docs/wire-format.md). No I/O: encoders write into caller buffers or iovecs,
 * decoders read (const uint8_t *, size_t) and check every magic, version, reserved field, count,
 * length and offset before returning anything that could be used to address guest RAM.
 *
 * Every decoder returns 0 or a negative errno and, on failure, sets *error (TM_ERROR, positive
 * errno as code) with a message that names the field: -EBADMSG malformed or truncated,
 * -EPROTONOSUPPORT version, -EMSGSIZE count over its maximum, -ERANGE block, page or channel id out
 * of range, -EPROTO out of sequence or on the wrong channel.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <glib.h>

#include "tagmig/wire.h"

G_BEGIN_DECLS

/* ---- little-endian helpers (the wire is little-endian) ---- */
static inline void tm_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void tm_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void tm_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t tm_get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t tm_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t tm_get64(const uint8_t *p)
{
	return (uint64_t)tm_get32(p) | (uint64_t)tm_get32(p + 4) << 32;
}

/* ---- frame header ---- */
typedef struct tm_frame {
	uint8_t type;      /* tm_msg_type */
	uint32_t body_len;
	uint32_t seq;
} tm_frame;

/* Largest body per type for a session with these parameters (0 if type unknown). */
uint32_t tm_frame_max_body(uint8_t type, uint32_t packet_size);
/* Body length of a control message type (HELLO_ACK, SYNC, SYNC_ACK, END, END_ACK), else 0. */
uint32_t tm_ctrl_body_len(uint8_t type);

void tm_frame_encode(uint8_t out[TM_FRAME_HDR_LEN], uint8_t type, uint32_t body_len, uint32_t seq);

/*
 * Decodes a frame header from len bytes (needs TM_FRAME_HDR_LEN). Checks magic, version, type,
 * reserved, and body_len against tm_frame_max_body(type, packet_size) (packet_size 0: before the
 * handshake, the HELLO limit applies to HELLO and DATA is refused).
 */
int tm_frame_decode(const uint8_t *buf, size_t len, uint32_t packet_size, tm_frame *ret,
		    GError **error);

/* ---- session parameters (HELLO) ---- */
/* The page sizes the wire format (and so a RAM layout) allows: 4096, 16384, 65536. */
bool tm_page_size_valid(uint64_t page_size);

typedef struct tm_wire_block {
	char name[TM_MAX_BLOCK_NAME + 1];
	uint64_t length;
	uint64_t guest_base;
	uint32_t page_size;
	/* derived, not on the wire: */
	uint64_t npages;
	uint64_t chunk_base; /* global number of the block's first chunk */
} tm_wire_block;

typedef struct tm_hello {
	uint8_t session_id[16];
	uint16_t channel_id;
	uint16_t channel_count;
	uint32_t features;
	uint32_t packet_size;
	uint64_t chunk_size;
	uint32_t block_count;
	tm_wire_block *blocks; /* block_count entries, owned (g_free) */
} tm_hello;

void tm_hello_clear(tm_hello *hello);

/* Bytes of the HELLO body for this hello. */
size_t tm_hello_body_len(const tm_hello *hello);

/*
 * Validates hello as a decoder would (so a sender cannot announce what a receiver refuses) and
 * fills the derived block fields. Returns 0 or -errno with *error.
 */
int tm_hello_check(tm_hello *hello, GError **error);

/* Encodes the body (tm_hello_body_len() bytes) into out. hello must have passed tm_hello_check(). */
void tm_hello_encode(const tm_hello *hello, uint8_t *out);

/* Decodes and checks a HELLO body; on success *ret owns a new blocks array (tm_hello_clear()). */
int tm_hello_decode(const uint8_t *buf, size_t len, tm_hello *ret, GError **error);

/*
 * Whether two HELLOs belong to the same session (equal except channel_id): 0 or -EPROTO with the
 * differing field named.
 */
int tm_hello_same_session(const tm_hello *a, const tm_hello *b, GError **error);

/* ---- DATA ---- */
typedef struct tm_data_hdr {
	uint32_t block;
	uint32_t page_count;
	uint32_t data_len;
	uint32_t tag_len;
} tm_data_hdr;

typedef struct tm_page_entry {
	uint32_t page;
	uint8_t kind;    /* tm_page_kind */
	uint8_t tag_enc; /* tm_tag_enc */
} tm_page_entry;

/* Tag payload bytes of one page with this encoding. */
static inline uint32_t tm_tag_payload_len(uint8_t tag_enc, uint32_t page_size)
{
	return tag_enc == TM_TAGS_UNIFORM ? 1u : tag_enc == TM_TAGS_PACKED ? page_size / 32u : 0u;
}

/*
 * Decodes the 16-byte DATA header; checks block < block_count and
 * 1 <= page_count <= packet_size / page_size of the block.
 */
int tm_data_hdr_decode(const uint8_t *buf, size_t len, const tm_hello *session, tm_data_hdr *ret,
		       GError **error);

/*
 * Decodes hdr->page_count entries from buf (len must be at least 8 * page_count, else truncated)
 * into out[]; checks every entry: page in range, kind and tag_enc valid and consistent with the
 * session's features, reserved zero, the page's chunk on `channel`, and that data_len and tag_len
 * of hdr equal what the entries imply, and that body_len == TM_DATA_HDR_LEN + entries + data + tags.
 */
int tm_data_entries_decode(const tm_data_hdr *hdr, const uint8_t *buf, size_t len,
			   const tm_hello *session, unsigned channel, uint32_t body_len,
			   tm_page_entry *out, GError **error);

/*
 * Checks the tag payload of a decoded packet (uniform bytes must have a zero high nibble) and
 * expands it into tags (one byte per granule, hdr->page_count * page_size / 16 bytes, every page
 * in entry order including TAGS_ZERO pages, which become zeros).
 */
int tm_data_tags_expand(const tm_data_hdr *hdr, const tm_page_entry *entries, uint32_t page_size,
			const uint8_t *payload, size_t payload_len, uint8_t *tags, GError **error);

/* ---- DATA decoding: the receive plan of a packet (receiver) ---- */
/*
 * The receiver's mirror of tm_packet: the codec turns a DATA packet's headers into a plan (iovecs
 * straight into guest RAM, the zero pages, the tags) and the session does the I/O in between:
 *
 *   n = tm_recv_plan_begin(plan, session, body_len)   receive n bytes at plan->head
 *   n = tm_recv_plan_header(plan)                     receive n bytes at plan->head + 16
 *   tm_recv_plan_entries(plan, channel, block_host)   receive payload_len bytes into plan->iov
 *   tm_recv_plan_tags(plan)                           then apply the entries (zero pages),
 *                                                     plan->tags by runs (tm_recv_plan_run_end)
 *
 * Every step checks what it decodes (tm_data_hdr_decode, tm_data_entries_decode,
 * tm_data_tags_expand) before the next step's I/O, so no iovec ever points outside the block.
 * Errors as the decoders' (no channel named: the caller prefixes it).
 */
typedef struct tm_recv_plan {
	/* set once by tm_recv_plan_init: buffers owned by the channel, allocated once */
	uint8_t *head;           /* DATA header, then the raw entries, as received */
	tm_page_entry *entries;  /* decoded entries */
	uint8_t *tag_payload;    /* tag payload, as received */
	uint8_t *tags;           /* expanded tags, one byte per granule, every page in entry order */
	struct iovec *iov;       /* page data runs in guest RAM, then the tag payload */
	uint32_t max_entries;
	/* per packet */
	const tm_hello *session;
	uint32_t body_len;
	tm_data_hdr hdr;
	uint32_t page_size;
	unsigned data_iov_count; /* iov[0..data_iov_count): page data runs */
	unsigned iov_count;      /* data runs plus the tag payload when there is one */
	size_t payload_len;      /* bytes iov[0..iov_count) covers: data_len + tag_len */
} tm_recv_plan;

/* Allocates the buffers for packets of up to packet_size bytes (of 4 KiB pages at most). */
void tm_recv_plan_init(tm_recv_plan *plan, uint32_t packet_size);
void tm_recv_plan_fini(tm_recv_plan *plan);

/*
 * Starts the plan of a DATA frame with body_len bytes of body, in session (which must outlive the
 * packet). Returns the bytes of DATA header to receive into plan->head (TM_DATA_HDR_LEN), or
 * -EBADMSG for a body too short to hold one.
 */
int tm_recv_plan_begin(tm_recv_plan *plan, const tm_hello *session, uint32_t body_len,
		       GError **error);

/*
 * Decodes the DATA header in plan->head (tm_data_hdr_decode) and checks that its entries fit the
 * body. Returns the bytes of entries to receive at plan->head + TM_DATA_HDR_LEN, or -errno.
 */
int tm_recv_plan_header(tm_recv_plan *plan, GError **error);

/*
 * Decodes the entries (tm_data_entries_decode: channel is the one they arrived on) and builds
 * plan->iov: the NORMAL pages' data straight into block_host (the block's guest RAM, which holds
 * every page of the HELLO's block), adjacent pages merged into one run, then the tag payload.
 * Returns 0 or -errno; nothing is planned on failure.
 */
int tm_recv_plan_entries(tm_recv_plan *plan, unsigned channel, uint8_t *block_host,
			 GError **error);

/*
 * After the payload arrived: checks the tag payload and expands it into plan->tags
 * (tm_data_tags_expand). A session without the tag feature has no tag payload: nothing to do.
 */
int tm_recv_plan_tags(tm_recv_plan *plan, GError **error);

/* End of the run of consecutive pages that starts at entry i: the first entry after it. */
uint32_t tm_recv_plan_run_end(const tm_recv_plan *plan, uint32_t i);

/* ---- DATA encoding: a packet under construction (sender) ---- */
typedef struct tm_packet {
	/* set once by tm_packet_init: buffers owned by the channel, allocated once */
	uint8_t *hdr;          /* frame header + data header + entries */
	size_t hdr_cap;
	uint8_t *tagbuf;       /* tag payloads */
	size_t tag_cap;
	struct iovec *iov;     /* [0] header, then page data runs, then tags */
	unsigned iov_cap;
	/* per packet */
	uint32_t block;
	uint32_t page_size;
	uint32_t max_pages;
	uint32_t page_count;
	uint32_t data_len;
	uint32_t tag_len;
	unsigned iov_count;
	const uint8_t *run_end; /* end of the last data iovec, to merge adjacent pages */
} tm_packet;

/*
 * Allocates the buffers for packets of up to packet_size bytes of the smallest page size 4096.
 * Free with tm_packet_fini().
 */
void tm_packet_init(tm_packet *pkt, uint32_t packet_size);
void tm_packet_fini(tm_packet *pkt);

/* Starts a packet for block with page_size; max_pages = packet_size / page_size. */
void tm_packet_begin(tm_packet *pkt, uint32_t block, uint32_t page_size, uint32_t packet_size);

static inline bool tm_packet_full(const tm_packet *pkt) { return pkt->page_count >= pkt->max_pages; }

/*
 * Adds a page. data: the page in guest RAM (referenced, not copied; only for NORMAL). tags: the
 * page's tags, one byte per granule (page_size / 16 bytes), or NULL without the tag feature.
 * Chooses the kind (ZERO / ZERO_TAGGED if data_is_zero) and tag encoding. Returns the kind.
 */
tm_page_kind tm_packet_add(tm_packet *pkt, uint32_t page, const uint8_t *data, bool data_is_zero,
			   const uint8_t *tags, tm_tag_enc *ret_enc);

/*
 * Writes the frame and data headers (seq) and returns the iovec count; pkt->iov[0..count) is the
 * whole message, wire length in *ret_len.
 */
unsigned tm_packet_finish(tm_packet *pkt, uint32_t seq, size_t *ret_len);

/* ---- tags ---- */
/* Classifies n tag bytes (one per granule): TM_TAGS_ZERO, _UNIFORM (value in *ret_value), _PACKED. */
tm_tag_enc tm_tags_classify(const uint8_t *tags, size_t n, uint8_t *ret_value);
/* n even: out[i] = tags[2i] | tags[2i+1] << 4 (n / 2 bytes). */
void tm_tags_pack(const uint8_t *tags, size_t n, uint8_t *out);
void tm_tags_unpack(const uint8_t *in, size_t n, uint8_t *tags);
/* Offset of the first byte with a non-zero high nibble, or -1. */
ssize_t tm_tags_find_invalid(const uint8_t *tags, size_t n);

/* Whether len bytes (a multiple of 64, 64-byte aligned not required) are all zero. */
bool tm_buffer_is_zero(const void *buf, size_t len);

/* ---- small control messages ---- */
/* Encodes frame + 8-byte or 16-byte body of SYNC/SYNC_ACK/END/END_ACK/HELLO_ACK; returns length. */
size_t tm_ctrl_encode(uint8_t *out, uint8_t type, uint32_t seq, uint64_t a, uint64_t b);
/* Decodes such a body: checks body_len for the type and reserved fields (HELLO_ACK). */
int tm_ctrl_decode(uint8_t type, const uint8_t *buf, size_t len, uint64_t *ret_a, uint64_t *ret_b,
		   GError **error);

/* ERROR: encodes frame + body into out (at most TM_FRAME_HDR_LEN + 8 + 1024 bytes); returns length. */
size_t tm_error_encode(uint8_t *out, uint32_t seq, int code, const char *message);
/* Decodes; *ret_message is a new NUL-terminated string (g_free), invalid UTF-8 replaced. */
int tm_error_decode(const uint8_t *buf, size_t len, int *ret_code, char **ret_message,
		    GError **error);

/* Human name of a message type, for errors ("DATA", "unknown"). */
const char *tm_msg_name(uint8_t type);

G_END_DECLS
