/* SPDX-License-Identifier: MIT */
/*
 * The protocol channel: one channel of a session (its number, the sequence numbers of the tagmig
 * stream both ways, its message and page counters) over one I/O handle (transport.h), which moves
 * the bytes: a byte mover, or TLS wrapping one. The channel never knows which.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include <glib.h>

#include "codec/codec.h"
#include "tagmig/session.h"
#include "transport/transport.h"

/* Counters of a protocol channel: written by its worker only (relaxed atomics), summed by get_stats. */
typedef struct tm_counters {
	uint64_t pages;
	uint64_t by_kind[TM_PAGE_KIND_COUNT];
	uint64_t by_enc[TM_TAG_ENC_COUNT];
	uint64_t packets;
	uint64_t wire_bytes;
	uint64_t data_bytes;
	uint64_t tag_bytes;
} tm_counters;

/* Sums the protocol counters of a channel into ret (pages, bytes, ...); see tm_chan_sum. */
void tm_counters_sum(const tm_counters *c, tm_stats *ret);
/* Copies the counters (each read atomically: they are counted while this runs). */
void tm_counters_load(tm_counters *dst, const tm_counters *src);

/*
 * Deadlines, not idle timers (docs/wire-format.md, "Deadlines"): once a frame header arrived, its
 * body must be complete within TM_BODY_GRACE_MS plus body_len at TM_BODY_MIN_RATE bytes per
 * second, however steadily it trickles; between messages no deadline applies but the
 * handshake's (tm_chan.setup_deadline_us).
 */
#define TM_BODY_GRACE_MS 5000u
#define TM_BODY_MIN_RATE (64u << 10)

/* Bytes of small messages a corked channel holds back (tm_chan_cork): the ends of a session. */
#define TM_CHAN_CORK_MAX 512u

typedef struct tm_chan {
	/* read-only after setup */
	unsigned id;
	tm_io *io;      /* the I/O handle (owned); a wrapper may replace it at setup (tm_tls_wrap) */
	int fd;         /* io's socket, -1 when closed: for the session's poll and shutdown, not I/O */
	tm_net_base base; /* where the session's bytes begin in fd's stream, taken at open, before
	                   * the library's first byte (LINK_CHECK; not ok: not TCP) */
	unsigned depth; /* packet slots the handle took at open (io->depth); 1 without submit */
	uint8_t version; /* protocol of the session: 1 or 2; 0 while a handshake accepts either */
	char label[16];  /* what messages call it: "channel 3", "control" */
	uint8_t peer_version; /* protocol of the last frame received (worker-local) */
	/* worker-local (the thread that owns the channel at the time) */
	uint32_t tx_seq;
	uint32_t rx_seq;
	bool peer_error; /* the failure at hand is the peer's ERROR message */
	int64_t setup_deadline_us; /* 0, or when the connection's handshake must be done */
	uint64_t setup_seq; /* a listener's accept: the order it was accepted in (1, 2, ...) */
	tm_counters st;
	tm_io_counters io_closed; /* I/O counters of the handle once it is closed */
	/* worker-local: small messages held back while corked (tm_chan_cork) */
	bool corked;
	uint16_t cork_len;
	uint8_t cork[TM_CHAN_CORK_MAX];
} tm_chan;

/*
 * Takes fd (closed on failure too) and opens the channel's I/O handle on it with backend ops as
 * cfg says (tm_io_open), after it took fd's stream base (ch->base: what a VMM's socket carried
 * before is not the session's). ch->io is NULL on failure and after tm_chan_close. The channel
 * speaks protocol 1 until the caller sets ch->version.
 */
int tm_chan_open(tm_chan *ch, int fd, unsigned id, const tm_transport_ops *ops,
		 const tm_io_config *cfg, GError **error);
/* Closes the I/O handle (and the socket). Idempotent. */
void tm_chan_close(tm_chan *ch);

/* Gives ch (and its I/O handle, for the handle's messages) the channel number id. */
void tm_chan_set_id(tm_chan *ch, unsigned id);
/* Makes ch a connection of a protocol 2 session beside its data channels, number 0, called name
 * in its messages and its I/O handle's: "control" or "urgent". */
void tm_chan_set_control(tm_chan *ch, const char *name);

/* Changes how long a single blocked read or write of ch may take. */
void tm_chan_set_timeout(tm_chan *ch, unsigned timeout_ms);

/*
 * Sends the message of a packet slot: the handle's submit where it has it, else its send.
 * Counts wire bytes; the error names the channel.
 */
int tm_chan_submit(tm_chan *ch, unsigned slot, const struct iovec *iov, unsigned n, size_t len,
		   GError **error);
/* Waits until the buffers of slot may be reused (no-op without submit). */
int tm_chan_wait_slot(tm_chan *ch, unsigned slot, GError **error);

/*
 * Corking: while corked, tm_chan_send() copies a message that fits into ch->cork instead of
 * sending it, so that messages that leave back to back (RAM_END, END_OF_STATE and END; READY and
 * END_ACK) take one system call, one TCP segment and one wake-up of the peer instead of one each.
 * Nothing waits behind a corked message: tm_chan_submit() and every receive send the held bytes
 * first (a peer never waits for an answer to a message we still hold), and so does
 * tm_chan_uncork(). Whoever writes to ch->io directly (a TLS close_notify) calls
 * tm_chan_flush() first; tm_chan_send_error() sends what is held ahead of its ERROR.
 * Worker-local, like the rest of the channel's sending state.
 */
void tm_chan_cork(tm_chan *ch);
/* Sends what is held (if anything) in one send; stays corked. Returns 0 or -errno (*error). */
int tm_chan_flush(tm_chan *ch, GError **error);
/* tm_chan_flush(), then no longer corked. */
int tm_chan_uncork(tm_chan *ch, GError **error);

/* Send/receive with the channel named in *error; both count wire bytes. */
int tm_chan_send(tm_chan *ch, const struct iovec *iov, unsigned n, size_t len, GError **error);
int tm_chan_recv(tm_chan *ch, void *buf, size_t len, GError **error);
/*
 * Receives exactly len bytes into iov[0..n) and counts them. Returns 0 or -errno without a message:
 * the caller names what was being received (tm_chan_io_reason() has the words).
 */
int tm_chan_recv_iov(tm_chan *ch, const struct iovec *iov, unsigned n, size_t len);

/* Reads and decodes the next frame header; checks its sequence number. */
int tm_chan_recv_frame(tm_chan *ch, uint32_t packet_size, tm_frame *ret, GError **error);

/* Sends a control message (tm_ctrl_encode_v) of ch->version; protocol 2 END's third field is 0. */
int tm_chan_send_ctrl(tm_chan *ch, uint8_t type, uint64_t a, uint64_t b, GError **error);
/* The same with every field (tm_ctrl_body_len(ch->version, type) / 8 of vals are sent). */
int tm_chan_send_ctrl_v(tm_chan *ch, uint8_t type, const uint64_t vals[TM_CTRL_MAX_FIELDS],
			GError **error);

/*
 * Receives the next message, which must be a control message of type `type`; an ERROR from the
 * peer becomes -code with its message ("channel N: receiver: ..."), anything else -EPROTO.
 */
int tm_chan_recv_ctrl(tm_chan *ch, uint8_t type, uint64_t *ret_a, uint64_t *ret_b,
		      GError **error);

/* Receives an ERROR body of f (already read) and turns it into *error. Returns -code. */
int tm_chan_recv_peer_error(tm_chan *ch, const tm_frame *f, const char *peer, GError **error);

/* Best effort, never blocks: tells the peer why we give up. */
void tm_chan_send_error(tm_chan *ch, int code, const char *message);

/* Whether the peer closed or reset ch's connection, with nothing left to read; never blocks
 * nor consumes (a peek at the socket). true for a closed handle. */
bool tm_chan_broke(const tm_chan *ch);

/* Frames tm_chan_peer_error passes over before the peer's ERROR, at most. */
#define TM_PEER_ERROR_FRAMES 16

/*
 * After a send failed because the peer went away: waits up to a second (reads included) for an
 * ERROR the peer sent before closing and turns it into *error (returns -code), else returns 0.
 * In a session
 * (ch->version set), up to TM_PEER_ERROR_FRAMES frames before it that nobody read are passed over
 * (packet_size: the session's, which bounds their bodies); in a handshake only the first frame
 * is looked at (an answer there means the refusal is elsewhere).
 */
int tm_chan_peer_error(tm_chan *ch, uint32_t packet_size, const char *peer, GError **error);

/*
 * The channel is readable where the peer has nothing to say (the sender between SYNCs): reads
 * what came. Returns the peer's ERROR as -code ("<label>: <peer> failed: ..."), -ECONNRESET when
 * it closed, -EPROTO naming any other message as unsolicited (a SYNC_ACK no SYNC asked for), or
 * the frame's decode error. Never 0.
 */
int tm_chan_recv_unsolicited(tm_chan *ch, const char *peer, GError **error);

/* " (the handshake's deadline passed)" and the like after an -ETIMEDOUT of a deadline, or "". */
const char *tm_chan_deadline_note(const tm_chan *ch, int err);

/* Words for a failed send or receive: the I/O handle's explanation, or the errno's. */
const char *tm_chan_io_reason(const tm_chan *ch, int err);

/* Prefixes *error with "channel N: ". */
void tm_chan_prefix_error(const tm_chan *ch, GError **error);

/* Adds ch's counters (the protocol's and its I/O handle's) to ret. */
void tm_chan_sum(const tm_chan *ch, tm_stats *ret);
