/* SPDX-License-Identifier: MIT */
/*
 * A hand-made peer for the session tests that speak the wire themselves (test-postcopy-recv.c,
 * test-live-state.c, test-session-faults.c, test-resume-hijack.c, test-postcopy-send.c): HELLOs
 * built with the codec's encoders, HELLO_ACKs read and checked, and a fake protocol 2 sender's
 * connections (data 0, data 1, control, urgent) with their sequence numbers and the messages
 * every such sender ends with. Test code only: a failed step fails the test.
 */
#pragma once

#include "codec/codec.h"
#include "session-fixture.h"

G_BEGIN_DECLS

/* What a hand-made HELLO says: one RAM block. */
typedef struct fake_hello {
	uint8_t version;        /* the frame's and the HELLO's protocol: 1 or 2 (0 means 1) */
	uint8_t role;           /* protocol 2: TM_ROLE_* */
	uint16_t channel_id;
	uint16_t channel_count;
	uint32_t features;
	uint32_t epoch;
	uint32_t packet_size;
	uint64_t chunk_size;
	block_spec block;
	uint64_t guest_base;
	uint8_t sid;            /* every byte of the session id, unless id is set */
	const uint8_t *id;      /* the 16 bytes of the session id, or NULL */
} fake_hello;

/* The HELLO of h as one message (frame and body, checked as a decoder would) in a buffer with
 * room bytes to spare after it (g_free); *ret_len: the HELLO's length. */
uint8_t *fake_hello_bytes(const fake_hello *h, size_t room, size_t *ret_len);

/* Connects to 127.0.0.1:port and writes h's HELLO; returns the socket. */
int fake_connect(const char *port, const fake_hello *h);

/* The HELLO of a hand-made protocol 1 sender: one block as spec says, packets of 512 KiB,
 * chunks of 2 MiB, session id 0x07..., channel id of count, MTE tags if tags. */
fake_hello fake_hello_v1(const block_spec *spec, uint16_t id, uint16_t count, bool tags);
/* fake_connect() with that HELLO. */
int fake_connect_v1(const char *port, const block_spec *spec, uint16_t id, uint16_t count,
		    bool tags);

/* A receiver (peer_start) into *dst, a guest of one 1 MiB block "pc.ram" (soft tags if tags),
 * and a hand-made protocol 1 sender connected to it as channel 0 of 1, its HELLO acknowledged;
 * returns the sender's socket. Then peer_join, peer_free and guest_fini as usual. */
int fake_v1_start(peer *p, guest *dst, bool tags);

/* Reads the HELLO_ACK of protocol version (1 or 2) from fd; with ret, a protocol 2 one is
 * decoded and checked against the features offered. */
void fake_expect_ack(int fd, uint8_t version, uint32_t offered, tm_hello_ack *ret);

/* The fake receiver's side: reads a HELLO of protocol version from fd and decodes it into *ret
 * (tm_hello_clear it). */
void fake_read_hello(int fd, uint8_t version, tm_hello *ret);

/* ---- a fake protocol 2 sender: two data channels, control, and urgent with postcopy ---- */

enum { FAKE_DATA0, FAKE_DATA1, FAKE_CTL, FAKE_URG, FAKE_CONNS };

typedef struct fake_sender {
	int fd[FAKE_CONNS];      /* -1: not connected */
	uint32_t seq[FAKE_CONNS];
	tm_hello_ack ack;        /* the receiver's answer */
	/* per data channel, kept by the test: what it sent, for its RAM_END and END counts */
	uint64_t pages[2], packets[2], chunks[2];
} fake_sender;

/* Connects as a sender does: data 0, control, data 1 and, when h offers TM_FEATURE_POSTCOPY,
 * urgent, each with h's HELLO in its role; then fake_sender_acks(). */
void fake_sender_open(fake_sender *w, const char *port, const fake_hello *h);
/* Reads the HELLO_ACK of every connected connection (into w->ack; h: what was offered) and
 * starts its sequence numbers at 1. */
void fake_sender_acks(fake_sender *w, const fake_hello *h);
/* Writes n bytes on connection ch; the receiver may have given up already, so a refused write
 * is part of a hostile case, not a failure. */
void fake_send(fake_sender *w, unsigned ch, const void *p, size_t n);
/* Reads one whole message of connection ch (a body of at most cap bytes); false at its end. */
bool fake_read(fake_sender *w, unsigned ch, tm_frame *f, uint8_t *body, size_t cap);
/* RAM_END of mode with the counts given (a hostile sender picks them) on connection ch. */
void fake_ram_end(fake_sender *w, unsigned ch, uint32_t mode, uint64_t pages, uint64_t packets);
/* END with the counts given on connection ch. */
void fake_end(fake_sender *w, unsigned ch, uint64_t pages, uint64_t packets, uint64_t chunks);
/*
 * After the control END: what a sender's library does until the end, answering the receiver's
 * keepalive PINGs (the receiver ends control only with none of its PINGs out), then READY (of
 * want_mode, unless it is 0) and END_ACK. Fails the test on anything else.
 */
void fake_finish_control(fake_sender *w, uint64_t want_mode);
void fake_sender_close(fake_sender *w);

G_END_DECLS
