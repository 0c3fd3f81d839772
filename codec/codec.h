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
	uint8_t version;   /* protocol of the frame: 1 or 2 */
	uint8_t type;      /* tm_msg_type */
	uint32_t body_len;
	uint32_t seq;
} tm_frame;

/*
 * Largest body per type for a session of protocol version with these parameters (0 if the type
 * is unknown in that version). packet_size 0 (before the handshake): DATA, STATE and URGENT 0.
 */
uint32_t tm_frame_max_body(uint8_t version, uint8_t type, uint32_t packet_size);
/*
 * Body length of a control message type in version (protocol 1: HELLO_ACK, SYNC, SYNC_ACK, END,
 * END_ACK; protocol 2: SYNC, SYNC_ACK, END, END_ACK, PING, PONG), else 0.
 */
uint32_t tm_ctrl_body_len(uint8_t version, uint8_t type);

/* A protocol 1 frame header. */
void tm_frame_encode(uint8_t out[TM_FRAME_HDR_LEN], uint8_t type, uint32_t body_len, uint32_t seq);
/* A frame header of protocol version (1 or 2). */
void tm_frame_encode_v(uint8_t out[TM_FRAME_HDR_LEN], uint8_t version, uint8_t type,
		       uint32_t body_len, uint32_t seq);

/*
 * Decodes a frame header from len bytes (needs TM_FRAME_HDR_LEN). Checks magic, version, type
 * (the types of the frame's version), reserved, and body_len against
 * tm_frame_max_body(ret->version, type, packet_size) (packet_size 0: before the handshake, the
 * HELLO limit applies to HELLO; DATA, STATE and URGENT are refused).
 *
 * version is what the caller speaks: 1 = protocol 1 only (another version: -EPROTONOSUPPORT
 * "supported: 1", the words of a tagmig 0.1 peer); 2 = a protocol 2 session (a protocol 1 frame:
 * -EPROTO; outside 1..2: -EPROTONOSUPPORT); 0 = a handshake that serves either (the first HELLO
 * chooses; ret->version says which).
 */
int tm_frame_decode(const uint8_t *buf, size_t len, uint8_t version, uint32_t packet_size,
		    tm_frame *ret, GError **error);

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
	uint8_t version;       /* not in the body: the protocol of its frame, 1 or 2 (0 means 1) */
	uint8_t session_id[16];
	uint16_t channel_id;
	uint16_t channel_count;
	uint32_t features;
	uint8_t role;          /* protocol 2: tm_conn_role; protocol 1: 0 (data) */
	uint32_t epoch;        /* protocol 2: 0 (reconnects are issue 14's) */
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
 * fills the derived block fields. Protocol 2 adds: role 0..2 (-EBADMSG), a control or urgent
 * connection has channel_id 0 (-EBADMSG), urgent only with TM_FEATURE_POSTCOPY (-EPROTO), epoch 0
 * (-EOPNOTSUPP). Protocol 1: role and epoch must be 0 (they are reserved bytes there). Returns 0
 * or -errno with *error.
 */
int tm_hello_check(tm_hello *hello, GError **error);

/*
 * Encodes the body (tm_hello_body_len() bytes) into out, in hello->version's layout. hello must
 * have passed tm_hello_check().
 */
void tm_hello_encode(const tm_hello *hello, uint8_t *out);

/*
 * Decodes and checks a HELLO body that came in a frame of protocol version (1 or 2; the frame's
 * tm_frame.version); on success *ret owns a new blocks array (tm_hello_clear()).
 */
int tm_hello_decode(const uint8_t *buf, size_t len, uint8_t version, tm_hello *ret,
		    GError **error);

/*
 * Whether two HELLOs belong to the same session (equal except channel_id and role; the same
 * version and epoch): 0 or -EPROTO with the differing field named.
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
	uint8_t version;        /* protocol of the frames: 1 after init; the session may set 2 */
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
/*
 * Protocol 1: encodes frame + 8-byte or 16-byte body of SYNC/SYNC_ACK/END/END_ACK/HELLO_ACK;
 * returns length.
 */
size_t tm_ctrl_encode(uint8_t *out, uint8_t type, uint32_t seq, uint64_t a, uint64_t b);
/* Protocol 1: decodes such a body: checks body_len for the type and reserved fields (HELLO_ACK). */
int tm_ctrl_decode(uint8_t type, const uint8_t *buf, size_t len, uint64_t *ret_a, uint64_t *ret_b,
		   GError **error);

/* The u64 fields of a control body, in wire order (at most 3: END v2). */
#define TM_CTRL_MAX_FIELDS 3u

/*
 * Any protocol: encodes frame + body of a control message (tm_ctrl_body_len(version, type) != 0)
 * from vals (tm_ctrl_body_len / 8 values); returns the length, 0 for a type that is none.
 * Protocol 2: END = pages_sent, packets_sent, state_chunks; END_ACK = pages_applied,
 * state_chunks; SYNC, SYNC_ACK as protocol 1.
 */
size_t tm_ctrl_encode_v(uint8_t *out, uint8_t version, uint8_t type, uint32_t seq,
			const uint64_t *vals);
/*
 * Decodes such a body: exactly tm_ctrl_body_len(version, type) bytes (-EBADMSG), fields into
 * ret[] (TM_CTRL_MAX_FIELDS entries; unused ones 0). -EINVAL for a type that is no control
 * message of version.
 */
int tm_ctrl_decode_v(uint8_t version, uint8_t type, const uint8_t *buf, size_t len,
		     uint64_t ret[TM_CTRL_MAX_FIELDS], GError **error);

/* ---- HELLO_ACK, protocol 2 ---- */
typedef struct tm_hello_ack {
	uint32_t features;          /* accepted: TAGS_MTE4 as offered, POSTCOPY only if offered */
	uint32_t max_outstanding;   /* 1..TM_MAX_OUTSTANDING with POSTCOPY, else 0 */
	uint64_t max_state_section; /* 0..TM_STATE_SECTION_MAX */
	uint64_t max_state_total;   /* max_state_section..TM_STATE_TOTAL_MAX */
} tm_hello_ack;

/*
 * Checks an acknowledgement against the features the sender offered (its HELLO's): -EBADMSG
 * (reserved feature bit, a limit out of its range), -EPROTO (accepts what was not offered, or
 * changes TAGS_MTE4). A receiver runs it before sending, the sender after decoding.
 */
int tm_hello_ack_check(const tm_hello_ack *ack, uint32_t offered, GError **error);
/* Encodes frame (protocol 2) + 32-byte body; returns TM_FRAME_HDR_LEN + TM_HELLO_ACK2_LEN. */
size_t tm_hello_ack_encode(uint8_t *out, uint32_t seq, const tm_hello_ack *ack);
/* Decodes a protocol 2 HELLO_ACK body (exactly 32 bytes, reserved 0) and checks it. */
int tm_hello_ack_decode(const uint8_t *buf, size_t len, uint32_t offered, tm_hello_ack *ret,
			GError **error);

/* ERROR: encodes frame + body into out (at most TM_FRAME_HDR_LEN + 8 + 1024 bytes); returns length. */
size_t tm_error_encode(uint8_t *out, uint32_t seq, int code, const char *message);
/* The same in a frame of protocol version (1 or 2): the body is the same in both. */
size_t tm_error_encode_v(uint8_t *out, uint8_t version, uint32_t seq, int code,
			 const char *message);
/* Decodes; *ret_message is a new NUL-terminated string (g_free), invalid UTF-8 replaced. */
int tm_error_decode(const uint8_t *buf, size_t len, int *ret_code, char **ret_message,
		    GError **error);

/* Human name of a message type, for errors ("DATA", "unknown"). */
const char *tm_msg_name(uint8_t type);

G_END_DECLS
