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

#include <limits.h>
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
	uint32_t epoch;        /* protocol 2: 0, or a reconnect (data: RESUME; control: RESUME_CONTROL) */
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
 * connection has channel_id 0 (-EBADMSG), urgent only with TM_FEATURE_POSTCOPY (-EPROTO), epoch
 * non-zero only with TM_FEATURE_RESUME (-EPROTO), on a data connection or, with
 * TM_FEATURE_RESUME_CONTROL (only with RESUME: -EBADMSG), the control one (else -EOPNOTSUPP).
 * Protocol 1: role and epoch must be 0 (they are reserved bytes there). Returns 0
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

/* `channel` of tm_data_entries_decode() for a DATA body inside URGENT: no striping check. */
#define TM_CHANNEL_ANY UINT_MAX

/*
 * Decodes hdr->page_count entries from buf (len must be at least 8 * page_count, else truncated)
 * into out[]; checks every entry: page in range, kind and tag_enc valid and consistent with the
 * session's features, reserved zero, the page's chunk on `channel` (unless TM_CHANNEL_ANY: the
 * body of an URGENT, which is off the striping), and that data_len and tag_len
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
 *   tm_recv_plan_tags(plan)                           then
 *   tm_recv_plan_commit(plan)                         the staged data into guest RAM, then apply
 *                                                     the entries (zero pages), plan->tags by
 *                                                     runs (tm_recv_plan_run_end)
 *
 * Every step checks what it decodes (tm_data_hdr_decode, tm_data_entries_decode,
 * tm_data_tags_expand) before the next step's I/O, so no iovec ever points outside the block.
 * No byte of page data reaches guest RAM before every field of the packet is checked: a packet
 * whose tag payload (which follows the data) holds uniform tag bytes still to check has all its
 * data staged and copied in by tm_recv_plan_commit() after tm_recv_plan_tags().
 * Runs shorter than TM_STAGE_RUN_MAX go through the stage too, whatever the tags: the stage is
 * one contiguous buffer the channel reuses, so the socket's copy lands in cache, and the commit
 * writes the scattered pages by non-temporal stores (common/stream-copy.h), which do not read
 * each destination line from memory first. Long runs go straight into guest RAM (the hardware
 * prefetchers stream those). Errors as the decoders' (no channel named: the caller prefixes it).
 */
/* Page runs shorter than this are received into the plan's stage (see above). */
#define TM_STAGE_RUN_MAX (64u << 10)

/* A staged run: len bytes at stage + off belong at to, in guest RAM. */
typedef struct tm_stage_run {
	uint8_t *to;
	uint32_t off;
	uint32_t len;
} tm_stage_run;

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
	uint8_t *block_host;     /* the block's guest RAM (tm_recv_plan_entries) */
	uint8_t *stage;          /* packet_size bytes, backed by tm_recv_plan_init */
	tm_stage_run *stage_runs; /* [stage_run_count]: where each staged run goes */
	unsigned stage_run_count;
	uint32_t packet_size;
	/* ZDATA (codec/zdata.c): the compressed page data lands in zbuf, not in guest RAM */
	uint32_t features;       /* the agreed features (HELLO_ACK): which codecs may come */
	uint8_t zhdr[TM_ZDATA_HDR_LEN];
	uint8_t zcodec;          /* tm_zcodec of this packet; 0 (none) for a DATA packet */
	uint32_t zlen;           /* compressed bytes, < hdr.data_len */
	uint8_t *zbuf;           /* packet_size bytes, allocated at the first ZDATA */
	uint8_t **zpages;        /* max_entries page pointers for the decoder */
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

/*
 * After tm_recv_plan_tags() succeeded: copies the staged runs into guest RAM (non-temporal
 * stores, fenced before it returns). No-op for a packet received straight into guest RAM.
 */
void tm_recv_plan_commit(tm_recv_plan *plan);

/*
 * Whether page-data iovec i (< data_iov_count) points into the stage rather than guest RAM:
 * what the session must not fault in or madvise as guest memory.
 */
bool tm_recv_plan_iov_staged(const tm_recv_plan *plan, unsigned i);

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
	uint32_t last_page;     /* the last page added (when page_count > 0) */
	/* ZDATA (codec/zdata.c): set up at the first compressed packet of the slot */
	uint8_t *zbuf;          /* the compressed page data */
	size_t zcap;
	uint8_t **zpages;       /* page pointers for the compressor */
	uint8_t zhdr[TM_FRAME_HDR_LEN + TM_ZDATA_HDR_LEN];
	struct iovec ziov[4];   /* frame + ZDATA header, DATA header + entries, zbuf, tags */
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

/* Whether page may be added next: a packet's pages ascend (tm_data_entries_decode). */
static inline bool tm_packet_takes(const tm_packet *pkt, uint32_t page)
{
	return pkt->page_count == 0 || page > pkt->last_page;
}

/*
 * Adds a page, above the last one added (tm_packet_takes). data: the page in guest RAM
 * (referenced, not copied; only for NORMAL). tags: the
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

/* ---- ZDATA: a DATA packet with compressed page data (codec/zdata.c) ---- */
/*
 * Receiver: instead of tm_recv_plan_begin() for a ZDATA frame. features: the agreed ones
 * (HELLO_ACK), which say the codecs the sender may use. Returns the bytes of ZDATA header to
 * receive into plan->zhdr (TM_ZDATA_HDR_LEN), or -EBADMSG for a body too short.
 */
int tm_recv_plan_begin_z(tm_recv_plan *plan, const tm_hello *session, uint32_t features,
			 uint32_t body_len, GError **error);
/*
 * Decodes plan->zhdr: codec agreed (-EPROTO, unknown codec -EBADMSG), reserved 0 (-EBADMSG),
 * zlen >= 1 and within the body (-EBADMSG). Returns TM_DATA_HDR_LEN: then as a DATA packet
 * (tm_recv_plan_header, tm_recv_plan_entries, which also checks 1 <= zlen < data_len and plans
 * the compressed bytes into plan->zbuf, tm_recv_plan_tags).
 */
int tm_recv_plan_zheader(tm_recv_plan *plan, GError **error);
/* For tm_recv_plan_entries(): zlen against data_len; *body_len becomes the DATA body's. */
int tm_recv_plan_zcheck(tm_recv_plan *plan, uint32_t *body_len, GError **error);

/*
 * After tm_recv_plan_tags(): decodes plan->zbuf into the packet's NORMAL pages in guest RAM
 * (block_host), nothing outside them. z: the channel's context (tm_zctx_new for packet_size).
 * Returns 0 or -EBADMSG (the message names the page within the packet), -EOPNOTSUPP.
 */
struct tm_zctx;
int tm_recv_plan_decompress(tm_recv_plan *plan, struct tm_zctx *z, GError **error);

/*
 * Sender, after tm_packet_finish(): compresses the packet's page data with codec (1 lz4,
 * 2 zstd) at level into the slot's buffer; max_pages 0: every page, else a sample, never sent:
 * max_pages consecutive pages of the packet's data from page at % (the places it can start),
 * so that samples at different at cover the whole packet, not only its first pages. Returns
 * the compressed length, 0 when the packet has no page data or compression would not make it
 * smaller (send it as it is), or -errno.
 */
ssize_t tm_packet_compress(tm_packet *pkt, struct tm_zctx *z, uint8_t codec, int level,
			   uint32_t max_pages, uint32_t at, GError **error);
/*
 * Then, for a compressed length zlen > 0: the ZDATA message in pkt->ziov (same seq as the
 * DATA tm_packet_finish() wrote); returns the iovec count, wire length in *ret_len.
 */
unsigned tm_packet_finish_z(tm_packet *pkt, uint8_t codec, size_t zlen, size_t *ret_len);

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

/* The u64 fields of a control body, in wire order (at most 5: LINK_A). */
#define TM_CTRL_MAX_FIELDS 5u

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

/*
 * Why a receiver declined a POSTCOPY offer (HELLO_ACK byte 6, docs/wire-format.md). 0 is "none
 * given"; a sender takes any other value, also one it does not know, and quotes it.
 */
enum {
	TM_PC_DECLINE_NONE = 0,           /* accepted, not offered, or no reason given */
	TM_PC_DECLINE_NOT_CONFIGURED = 1, /* its VMM did not ask for postcopy */
	TM_PC_DECLINE_UFFD_DENIED = 2,    /* userfaultfd not permitted (EPERM, EACCES) */
	TM_PC_DECLINE_UFFD_UNSUPPORTED = 3, /* the kernel lacks userfaultfd or a feature of it */
	TM_PC_DECLINE_UFFD_FAILED = 4,    /* userfaultfd failed otherwise (a borrowed fd, ...) */
};

/* The decline reason's words, for "the destination declined postcopy: <text>". Never NULL. */
const char *tm_pc_decline_text(uint8_t code);

typedef struct tm_hello_ack {
	uint32_t features;          /* accepted: TAGS_MTE4 as offered, POSTCOPY only if offered */
	uint32_t max_outstanding;   /* 1..TM_MAX_OUTSTANDING with POSTCOPY, else 0 (a u16 on the
	                             * wire) */
	uint64_t max_state_section; /* 0..TM_STATE_SECTION_MAX */
	uint64_t max_state_total;   /* max_state_section..TM_STATE_TOTAL_MAX */
	uint64_t resume_token;      /* with RESUME: the session's secret (non-zero), else 0 */
	uint8_t pc_decline;         /* POSTCOPY offered and declined: TM_PC_DECLINE_*; else 0 */
} tm_hello_ack;

/*
 * Checks an acknowledgement against the features the sender offered (its HELLO's): -EBADMSG
 * (reserved feature bit, a limit out of its range, a decline reason where nothing was
 * declined), -EPROTO (accepts what was not offered, or changes TAGS_MTE4). A receiver runs it before sending, the sender after decoding.
 */
int tm_hello_ack_check(const tm_hello_ack *ack, uint32_t offered, GError **error);
/* Encodes frame (protocol 2) + 32-byte body; returns TM_FRAME_HDR_LEN + TM_HELLO_ACK2_LEN. */
size_t tm_hello_ack_encode(uint8_t *out, uint32_t seq, const tm_hello_ack *ack);
/* Decodes a protocol 2 HELLO_ACK body (exactly 32 bytes) and checks it. */
int tm_hello_ack_decode(const uint8_t *buf, size_t len, uint32_t offered, tm_hello_ack *ret,
			GError **error);

/* ---- resume (protocol 2; codec/resume.c, docs/wire-format.md "Resume") ---- */
/* What a receiver applied on one data channel (RESUME_ACK). */
typedef struct tm_resume_pos {
	uint64_t pages_applied;   /* DATA pages applied on the channel since the session began */
	uint64_t packets_applied; /* DATA packets applied */
	uint64_t state_chunks;    /* STATE messages received */
	uint64_t syncs;           /* id of the last SYNC answered (SYNCs are numbered from 1) */
	uint32_t flags;           /* TM_RESUME_RAM_ENDED, TM_RESUME_ENDED */
} tm_resume_pos;
#define TM_RESUME_RAM_ENDED 1u /* RAM_END(FINAL) received */
#define TM_RESUME_ENDED 2u     /* END answered: the channel is done */

/* RESUME (s->r, right after a reconnect's HELLO): frame + u64 token; returns the length. */
size_t tm_resume_encode(uint8_t *out, uint32_t seq, uint64_t token);
/* Decodes a RESUME body: exactly 8 bytes, token non-zero (-EBADMSG). */
int tm_resume_decode(const uint8_t *buf, size_t len, uint64_t *ret_token, GError **error);
/* Whether two tokens are equal, in time independent of where they differ. */
bool tm_resume_token_equal(uint64_t a, uint64_t b);
/* RESUME_ACK (r->s): frame + 40-byte body; returns the length. */
size_t tm_resume_ack_encode(uint8_t *out, uint32_t seq, const tm_resume_pos *pos);
/*
 * Decodes a RESUME_ACK body: exactly 40 bytes, known flags, reserved 0, ENDED only with
 * RAM_ENDED, packets <= pages (-EBADMSG).
 */
int tm_resume_ack_decode(const uint8_t *buf, size_t len, tm_resume_pos *ret, GError **error);

/* ---- resume of the control connection (codec/resume-control.c; "Resume of the control
 * connection") ---- */
/* CTL_RESUME (s->r, right after a control reconnect's HELLO): frame + u64 token + u64 received. */
size_t tm_ctl_resume_encode(uint8_t *out, uint32_t seq, uint64_t token, uint64_t received);
/* Decodes a CTL_RESUME body: exactly 16 bytes, token non-zero (-EBADMSG). */
int tm_ctl_resume_decode(const uint8_t *buf, size_t len, uint64_t *ret_token,
			 uint64_t *ret_received, GError **error);
/* CTL_POS (either way on control): frame + u64 received; returns the length. */
size_t tm_ctl_pos_encode(uint8_t *out, uint32_t seq, uint64_t received);
/* Decodes a CTL_POS body: exactly 8 bytes (-EBADMSG). */
int tm_ctl_pos_decode(const uint8_t *buf, size_t len, uint64_t *ret_received, GError **error);

/* ---- postcopy messages (protocol 2; codec/postcopy.c) ---- */
/*
 * DISCARD, POSTCOPY, PAGE_REQ, URGENT and REQ_END (docs/wire-format.md, "Postcopy messages").
 * RAM_END and READY, which postcopy shares with precopy, are with STATE (codec/state.c).
 * Checked here: every rule of one message given the session and what the caller passes in
 * (the expected req_id, the outstanding count, the request an URGENT answers). Left to the
 * session, which holds the state: "only in postcopy", "once", "after REQ_END", and a page
 * requested twice in an epoch (the sender's answered bits).
 */
#define TM_POSTCOPY_LEN 8u
#define TM_PAGE_REQ_LEN 24u
#define TM_REQ_END_LEN 8u
#define TM_URGENT_ID_LEN 8u /* the req_id in front of an URGENT's DATA body */

/* One DISCARD range: pages [first_page, first_page + npages) of the message's block. */
typedef struct tm_discard_range {
	uint32_t first_page;
	uint32_t npages;
} tm_discard_range;

/*
 * Encodes frame (protocol 2) + DISCARD body for block and count ranges (1..TM_MAX_DISCARD_RANGES)
 * into out, which holds TM_FRAME_HDR_LEN + TM_DISCARD_HDR_LEN + 8 * count bytes; returns that
 * length. The ranges must be valid (the sender runs them past tm_discard_check() in its tests).
 */
size_t tm_discard_encode(uint8_t *out, uint32_t seq, uint32_t block, const tm_discard_range *ranges,
			 uint32_t count);

/*
 * Decodes a DISCARD body of len bytes that arrived on data channel `channel` of session: block
 * < block_count (-ERANGE); count 1..512 (0: -EBADMSG, more: -EMSGSIZE); len exactly
 * 8 + 8 * count (-EBADMSG); each range npages >= 1 (-EBADMSG), inside the block (-ERANGE),
 * inside one striping chunk of this channel (-EPROTO), ascending and disjoint (-EBADMSG).
 * On success *ret_block, ret_ranges[0..count) (room for TM_MAX_DISCARD_RANGES) and *ret_count;
 * nothing is written on failure.
 */
int tm_discard_decode(const uint8_t *buf, size_t len, const tm_hello *session, unsigned channel,
		      uint32_t *ret_block, tm_discard_range *ret_ranges, uint32_t *ret_count,
		      GError **error);

/* POSTCOPY (control, s->r): frame + u64 pages_missing; returns the length. */
size_t tm_postcopy_encode(uint8_t *out, uint32_t seq, uint64_t pages_missing);
/*
 * Decodes a POSTCOPY body: postcopy agreed (HELLO_ACK features) else -EPROTO; exactly 8 bytes
 * (-EBADMSG); pages_missing <= the pages of the session's layout (-ERANGE).
 */
int tm_postcopy_decode(const uint8_t *buf, size_t len, const tm_hello *session, bool postcopy,
		       uint64_t *ret_pages_missing, GError **error);

/* A page request: count pages from page of block. */
typedef struct tm_page_req {
	uint64_t req_id;
	uint32_t block;
	uint32_t page;
	uint16_t count;
} tm_page_req;

/* The request window of an urgent connection, as its sender (the reader of PAGE_REQ) keeps it. */
typedef struct tm_req_window {
	uint64_t next_id;         /* req_id the next PAGE_REQ must carry: 1, 2, ... */
	uint32_t outstanding;     /* requests read and not yet answered */
	uint32_t max_outstanding; /* agreed in HELLO_ACK, 1..TM_MAX_OUTSTANDING */
} tm_req_window;

/* Largest count of a PAGE_REQ for block b: min(TM_MAX_REQ_PAGES, packet_size / page_size). */
uint32_t tm_page_req_max_pages(const tm_hello *session, uint32_t block);

/* PAGE_REQ (urgent, r->s): frame + 24-byte body; returns TM_FRAME_HDR_LEN + TM_PAGE_REQ_LEN. */
size_t tm_page_req_encode(uint8_t *out, uint32_t seq, const tm_page_req *req);
/*
 * Decodes a PAGE_REQ body: exactly 24 bytes and reserved 0 (-EBADMSG); req_id == win->next_id
 * (-EPROTO); win->outstanding < win->max_outstanding (-EPROTO "request flood"); block in range
 * (-ERANGE); count 1..tm_page_req_max_pages() (0: -EBADMSG, more: -EMSGSIZE); page + count
 * within the block (-ERANGE). The caller advances the window (next_id++, outstanding++).
 */
int tm_page_req_decode(const uint8_t *buf, size_t len, const tm_hello *session,
		       const tm_req_window *win, tm_page_req *ret, GError **error);

/*
 * URGENT (urgent, s->r) is u64 req_id and then a DATA body. The sender builds the DATA body with
 * tm_packet_* as usual (block and pages of the request, in order), then, instead of
 * tm_packet_finish(): writes frame header + req_id into prefix and returns the iovec count;
 * the message is prefix (TM_FRAME_HDR_LEN + 8 bytes) followed by pkt->iov[0..count). *ret_len
 * is the whole message's length.
 */
unsigned tm_urgent_finish(tm_packet *pkt, uint32_t seq, uint64_t req_id,
			  uint8_t prefix[TM_FRAME_HDR_LEN + TM_URGENT_ID_LEN], size_t *ret_len);
/*
 * First step of decoding an URGENT body of body_len bytes: the req_id at buf (len >= 8), and a
 * body long enough for req_id and a DATA header (-EBADMSG). The DATA body that follows
 * (body_len - 8 bytes) is decoded with tm_data_hdr_decode(), tm_urgent_check(..., NULL) and
 * tm_data_entries_decode(..., TM_CHANNEL_ANY, body_len - 8, ...), then held against its request
 * by tm_urgent_check() with the entries.
 */
int tm_urgent_id_decode(const uint8_t *buf, size_t len, uint32_t body_len, uint64_t *ret_req_id,
			GError **error);
/*
 * Checks a decoded URGENT against the request it names: req is the outstanding request with
 * req_id (NULL: none is, -EPROTO "URGENT for request 9, which is not outstanding"); the DATA
 * header's block and page_count equal the request's and the entries are its pages in order
 * (-EPROTO); page_count <= TM_MAX_REQ_PAGES (-EMSGSIZE). Call it first with entries NULL, right
 * after tm_data_hdr_decode() (checks the header alone: then entries fit a buffer of
 * TM_MAX_REQ_PAGES), and again with the decoded entries.
 */
int tm_urgent_check(const tm_hello *session, uint64_t req_id, const tm_page_req *req,
		    const tm_data_hdr *hdr, const tm_page_entry *entries, GError **error);

/* REQ_END (urgent, r->s): frame + u64 requests_sent; returns the length. */
size_t tm_req_end_encode(uint8_t *out, uint32_t seq, uint64_t requests_sent);
/* Decodes a REQ_END body: exactly 8 bytes (-EBADMSG); requests_sent == requests_read (-EPROTO). */
int tm_req_end_decode(const uint8_t *buf, size_t len, uint64_t requests_read,
		      uint64_t *ret_requests_sent, GError **error);

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

/* ---- STATE and RAM_END (protocol 2; codec/state.c) ---- */
/* STATE flags */
#define TM_STATE_FIRST 0x1u /* first chunk of a section: carries its name */
#define TM_STATE_LAST 0x2u  /* last chunk of a section (offset + data_len == section_len) */
#define TM_STATE_END 0x4u   /* END_OF_STATE: no more sections; section = sections sent */
#define TM_STATE_FLAGS_KNOWN (TM_STATE_FIRST | TM_STATE_LAST | TM_STATE_END)

/* The 40-byte header of a STATE chunk (docs/wire-format.md, "STATE"). */
typedef struct tm_state_hdr {
	uint32_t section;     /* 0, 1, ... in put_state order; END_OF_STATE: sections sent */
	uint16_t flags;       /* TM_STATE_* */
	uint16_t name_len;    /* FIRST: 1..255, else 0; the name follows the header */
	uint64_t chunk;       /* session-global chunk number g, on channel g mod N */
	uint64_t section_len; /* bytes of the whole section, equal in each of its chunks */
	uint64_t offset;      /* bytes of the section before this chunk */
	uint32_t data_len;    /* bytes of section data after the name */
} tm_state_hdr;

/* What a STATE header is checked against: the session's and this channel's parameters. */
typedef struct tm_state_limits {
	uint32_t packet_size;  /* data_len maximum */
	uint64_t max_section;  /* max_state_section the receiver announced */
	unsigned channels;     /* data channels N */
	unsigned channel;      /* the channel the chunk arrived on */
	uint64_t expected;     /* the chunk this channel must carry next: channel id, then + N */
} tm_state_limits;

/*
 * Checks a section name: 1..255 bytes of valid UTF-8 with no byte below 0x20 and no 0x7f.
 * Returns 0 or -EBADMSG with the offending byte and its offset in *error.
 */
int tm_state_name_check(const char *name, size_t len, GError **error);

/*
 * Encodes the frame header (protocol 2, body 40 + name_len + data_len), the STATE header and
 * the name (hdr->name_len bytes of name; FIRST only) into out, which must hold
 * TM_FRAME_HDR_LEN + TM_STATE_HDR_LEN + TM_MAX_STATE_NAME bytes; the data_len bytes of data
 * follow on the wire (the caller's iovec). Returns the bytes written.
 */
size_t tm_state_encode(uint8_t *out, uint32_t seq, const tm_state_hdr *hdr, const char *name);

/*
 * Decodes the 40-byte header of a STATE body of body_len bytes (len: bytes at buf, at least 40)
 * and checks every rule that needs no other chunk: flags, name_len, the channel and per-channel
 * order of chunk (-EPROTO "STATE chunk 7 belongs on channel 3"), section < 65536, section_len
 * against lim->max_section and data_len against lim->packet_size (-EMSGSIZE), offset + data_len
 * within section_len (-ERANGE), LAST, the END_OF_STATE form, reserved, and
 * body_len == 40 + name_len + data_len. The name is checked by tm_state_name_check() once read.
 */
int tm_state_hdr_decode(const uint8_t *buf, size_t len, uint32_t body_len,
			const tm_state_limits *lim, tm_state_hdr *ret, GError **error);

/*
 * The order of the chunks of a session, across channels (receiver): chunk g after g - 1,
 * sections one after the other, each chunk at the offset the previous one ended, the running
 * total, the expected names, nothing after END_OF_STATE. Set up with tm_state_order_init().
 */
typedef struct tm_state_order {
	/* read-only after init */
	uint64_t max_total;         /* max_state_total */
	const char *const *names;   /* NULL or names_count expected names, in order (borrowed) */
	uint32_t names_count;
	/* progress */
	uint64_t next_chunk;        /* g of the next chunk */
	uint32_t sections;          /* sections started */
	bool in_section;            /* the last section started has not had its LAST chunk */
	uint64_t section_len;       /* of the section in progress */
	uint64_t offset;            /* its bytes so far */
	uint64_t total;             /* section_len of every section started */
	bool ended;                 /* END_OF_STATE seen */
	char name[TM_MAX_STATE_NAME + 1]; /* of the section in progress, for messages */
} tm_state_order;

void tm_state_order_init(tm_state_order *o, uint64_t max_total, const char *const *names);

/*
 * Checks chunk hdr (already through tm_state_hdr_decode; name: its checked name, NUL-terminated,
 * for a FIRST chunk) against everything before it and, if it fits, advances *o past it. -EPROTO:
 * chunk not the next one, section neither the current nor (FIRST) the next, section_len or offset
 * off, a FIRST inside an unfinished section or a follow-up chunk outside one, a name other than
 * the expected one, END_OF_STATE with the wrong count or inside a section, anything after
 * END_OF_STATE; -EMSGSIZE: the running total over max_total. *o is unchanged on failure.
 */
int tm_state_order_check(tm_state_order *o, const tm_state_hdr *hdr, const char *name,
			 GError **error);

/* RAM_END modes */
#define TM_RAM_END_FINAL 1u    /* precopy complete: STATE follows */
#define TM_RAM_END_POSTCOPY 2u /* postcopy switch */
#define TM_RAM_END_LEN 24u
#define TM_READY_LEN 8u

/* RAM_END: frame (protocol 2) + 24-byte body; returns TM_FRAME_HDR_LEN + TM_RAM_END_LEN. */
size_t tm_ram_end_encode(uint8_t *out, uint32_t seq, uint32_t mode, uint64_t pages_sent,
			 uint64_t packets_sent);
/*
 * Decodes a RAM_END body: exactly 24 bytes, mode 1 or 2, reserved 0 (-EBADMSG); POSTCOPY
 * without postcopy agreed: -EPROTO. The counts are the caller's to compare.
 */
int tm_ram_end_decode(const uint8_t *buf, size_t len, bool postcopy, uint32_t *ret_mode,
		      uint64_t *ret_pages, uint64_t *ret_packets, GError **error);

/* READY: frame (protocol 2) + u64 mode (1 precopy, 2 postcopy); returns the length. */
size_t tm_ready_encode(uint8_t *out, uint32_t seq, uint64_t mode);
/* Decodes a READY body: exactly 8 bytes, mode 1 or 2 (-EBADMSG). */
int tm_ready_decode(const uint8_t *buf, size_t len, uint64_t *ret_mode, GError **error);

G_END_DECLS
