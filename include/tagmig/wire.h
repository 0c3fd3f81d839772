/* SPDX-License-Identifier: MIT */
/*
 * Wire-format constants of tagmig protocols 1 and 2. docs/wire-format.md is the specification;
 * these names are what the codec and the API use for it.
 */
#pragma once

#include <stdint.h>

/*
 * Protocol versions: sessions speak TM_WIRE_VERSION_MIN..TM_WIRE_VERSION; a sender chooses
 * (protocol 2 unless told otherwise), a receiver serves what the sender's first HELLO says.
 */
#define TM_WIRE_VERSION 2u
#define TM_WIRE_VERSION_MIN 1u
#define TM_WIRE_VERSION_1 1u
#define TM_WIRE_VERSION_2 2u
#define TM_FRAME_HDR_LEN 16u
#define TM_HELLO_FIXED_LEN 48u
#define TM_HELLO_BLOCK_LEN 24u
#define TM_DATA_HDR_LEN 16u
#define TM_PAGE_ENTRY_LEN 8u
#define TM_ERROR_FIXED_LEN 8u
/* Protocol 2 bodies of fixed size (protocol 1: HELLO_ACK 8, END 16, END_ACK 8). */
#define TM_HELLO_ACK2_LEN 32u
#define TM_END2_LEN 24u
#define TM_END_ACK2_LEN 16u
#define TM_STATE_HDR_LEN 40u
#define TM_DISCARD_HDR_LEN 8u
#define TM_RESUME_LEN 8u
#define TM_RESUME_ACK_LEN 40u
#define TM_CTL_RESUME_LEN 16u
#define TM_CTL_POS_LEN 8u
#define TM_ZDATA_HDR_LEN 8u /* codec, reserved, zlen: in front of a ZDATA's DATA body */

#define TM_MAX_CHANNELS 64u
#define TM_MAX_BLOCKS 1024u
#define TM_MAX_BLOCK_NAME 255u
#define TM_MAX_ERROR_MESSAGE 1024u

/* Protocol 2 limits (docs/wire-format.md, "Version 2"). */
#define TM_MAX_REQ_PAGES 16u          /* pages per PAGE_REQ / URGENT */
#define TM_MAX_OUTSTANDING 512u       /* max_outstanding: unanswered PAGE_REQs */
#define TM_MAX_OUTSTANDING_DEFAULT 256u
#define TM_MAX_DISCARD_RANGES 512u    /* ranges per DISCARD */
#define TM_MAX_STATE_SECTIONS 65536u
#define TM_MAX_STATE_NAME 255u
#define TM_STATE_SECTION_MAX (1ull << 40)
#define TM_STATE_TOTAL_MAX (1ull << 42)
#define TM_STATE_SECTION_DEFAULT (1ull << 30)
#define TM_STATE_TOTAL_DEFAULT (4ull << 30)

#define TM_PACKET_SIZE_MIN (64u * 1024u)
#define TM_PACKET_SIZE_MAX (16u * 1024u * 1024u)
#define TM_PACKET_SIZE_DEFAULT (512u * 1024u)
#define TM_CHUNK_SIZE_DEFAULT (2ull * 1024u * 1024u)
#define TM_CHUNK_SIZE_MAX (1ull << 40)

/* Memory tags: one 4-bit tag per 16-byte granule; tag buffers hold one byte per granule. */
#define TM_TAG_GRANULE 16u

/* Feature bits agreed in HELLO, once for the whole migration. */
#define TM_FEATURE_TAGS_MTE4 (1u << 0)
#define TM_FEATURE_POSTCOPY (1u << 1) /* protocol 2 only: offered by the sender */
#define TM_FEATURE_RESUME (1u << 2)   /* protocol 2 only: broken data channels reconnect */
/* Protocol 2 only, with RESUME: a broken control connection reconnects too. */
#define TM_FEATURE_RESUME_CONTROL (1u << 3)
/* Protocol 2 only, with RESUME: the receiver tells the sender on control when one of its data
 * or urgent connections broke (CONN_LOST), which the sender may not see itself. */
#define TM_FEATURE_CONN_LOST (1u << 4)
/* Protocol 2 only: the sender asks on control what the receiver's kernel received and had
 * acknowledged of the session's bytes on a quiet data connection (LINK_Q, LINK_A; each end
 * counts from where its library took the socket, so a VMM's own sockets too), to find a path
 * that acknowledges but does not deliver (a middlebox holding the bytes). */
#define TM_FEATURE_LINK_CHECK (1u << 5)
/* Protocol 2 only: page data may travel compressed (ZDATA) with this codec; the sender offers
 * the codecs it may use, the receiver's HELLO_ACK keeps those it decodes (issue 15). */
#define TM_FEATURE_LZ4 (1u << 8)
#define TM_FEATURE_ZSTD (1u << 9)
#define TM_FEATURES_COMPRESS (TM_FEATURE_LZ4 | TM_FEATURE_ZSTD)
/* Protocol 2 only: re-sent pages may go as deltas against the copy sent last (DELTA). */
#define TM_FEATURE_DELTA (1u << 10)
#define TM_FEATURES_KNOWN (TM_FEATURE_TAGS_MTE4)                        /* protocol 1 */
#define TM_FEATURES_KNOWN_V2 (TM_FEATURE_TAGS_MTE4 | TM_FEATURE_POSTCOPY | TM_FEATURE_RESUME | \
			      TM_FEATURE_RESUME_CONTROL | TM_FEATURE_CONN_LOST | \
			      TM_FEATURE_LINK_CHECK | TM_FEATURES_COMPRESS | TM_FEATURE_DELTA) /* protocol 2 */

/* Protocol 2: what a connection carries, named by its HELLO. */
typedef enum tm_conn_role {
	TM_ROLE_DATA = 0,
	TM_ROLE_CONTROL = 1,
	TM_ROLE_URGENT = 2,
	TM_ROLE_COUNT = 3,
} tm_conn_role;

typedef enum tm_msg_type {
	TM_MSG_HELLO = 1,
	TM_MSG_HELLO_ACK = 2,
	TM_MSG_DATA = 3,
	TM_MSG_SYNC = 4,
	TM_MSG_SYNC_ACK = 5,
	TM_MSG_END = 6,
	TM_MSG_END_ACK = 7,
	TM_MSG_ERROR = 8,
	/* protocol 2 only */
	TM_MSG_STATE = 9,
	TM_MSG_DISCARD = 10,
	TM_MSG_RAM_END = 11,
	TM_MSG_PING = 12,
	TM_MSG_PONG = 13,
	TM_MSG_POSTCOPY = 14,
	TM_MSG_READY = 15,
	TM_MSG_PAGE_REQ = 16,
	TM_MSG_URGENT = 17,
	TM_MSG_REQ_END = 18,
	TM_MSG_RESUME = 19,     /* a reconnected data channel: the session's secret */
	TM_MSG_RESUME_ACK = 20, /* what the receiver applied on that channel */
	TM_MSG_ZDATA = 21,      /* a DATA packet with compressed page data (compression agreed) */
	TM_MSG_DELTA = 22,      /* re-sent pages as deltas against the copy sent last */
	TM_MSG_DELTA_NACK = 23, /* r->s: pages of a DELTA whose base the receiver refused */
	TM_MSG_CTL_RESUME = 24, /* a reconnected control connection: secret, messages received */
	TM_MSG_CTL_POS = 25,    /* control: the ordered control messages this side received */
	TM_MSG_ZDELTA = 26,     /* a DELTA whose deltas are zstd-compressed (DELTA + ZSTD agreed) */
	TM_MSG_CONN_LOST = 27,  /* control, r->s: this data or urgent connection (epoch) broke */
	TM_MSG_LINK_Q = 28,     /* control, s->r: what did a data connection deliver (LINK_CHECK) */
	TM_MSG_LINK_A = 29,     /* control, r->s: its byte counts there (LINK_CHECK) */
} tm_msg_type;

#define TM_MSG_LAST_V1 TM_MSG_ERROR
#define TM_MSG_LAST_V2 TM_MSG_LINK_A
/* CONN_LOST's connection field for the urgent connection (else a data channel's number). */
#define TM_CONN_LOST_URGENT UINT32_MAX
/* LINK_A's byte counts when the receiver cannot tell (not a TCP socket, no connection now, its
 * counts unreadable when it took the socket). */
#define TM_LINK_UNKNOWN UINT64_MAX

typedef enum tm_page_kind {
	TM_PAGE_NORMAL = 0,      /* page_size bytes of data follow */
	TM_PAGE_ZERO = 1,        /* zero data and zero tags: no payload */
	TM_PAGE_ZERO_TAGGED = 2, /* zero data, non-zero tags: tag payload only */
	TM_PAGE_KIND_COUNT = 3,
} tm_page_kind;

typedef enum tm_tag_enc {
	TM_TAGS_ZERO = 0,    /* all tags zero: nothing sent */
	TM_TAGS_UNIFORM = 1, /* one byte: the tag of every granule */
	TM_TAGS_PACKED = 2,  /* page_size / 32 bytes, two tags per byte, low nibble first */
	TM_TAG_ENC_COUNT = 3,
} tm_tag_enc;

/*
 * Channel of a page under the striping rule of docs/wire-format.md: chunk_base is the global
 * number of the block's first chunk. A rule of the wire format (a receiver refuses a page that
 * arrives on another channel), exposed for VMMs and tests.
 */
static inline unsigned tm_channel_of(uint64_t chunk_base, uint64_t offset, uint64_t chunk_size,
				     unsigned channels)
{
	return (unsigned)((chunk_base + offset / chunk_size) % channels);
}
