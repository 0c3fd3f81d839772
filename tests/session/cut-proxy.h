/* SPDX-License-Identifier: MIT */
/*
 * A TCP proxy for resume tests: forwards every connection between a sender and a receiver and
 * cuts one (closes both of its sockets) once a number of bytes went through it, or right before
 * a frame of a given type (plaintext only: it reads frame headers), or right after a receiver's
 * frame of a given type, before the sender's answer; after the cut it can refuse or hold every
 * new connection. Shared by every resume test (grep -l cut_proxy tests/session).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

#define MAXP 160 /* connections, redials included (64 channels set up twice) */

typedef struct cut_proxy {
	int listen_fd;
	const char *port;
	GThread *thread;
	GMutex lock;
	/* protected by lock */
	int cut_conn;        /* accept index to cut, -1: none (tm_sender_connect(): 0 data 0,
	                      * 1 control, k + 1 data k) */
	uint64_t cut_at;     /* ... once this many sender-to-receiver bytes went through it */
	uint8_t cut_before;  /* plaintext: ... instead, right before a frame of this type */
	bool from_sender;    /* ... sent by the sender (else by the receiver) */
	uint8_t cut_reply_to; /* plaintext: pass on the receiver's first frame of this type, then
	                       * cut instead of passing on the sender's next bytes */
	bool reply_due;      /* that frame went: the sender's next bytes are the cut */
	bool exact;          /* a cut by bytes falls exactly at cut_at (else up to one 64 KiB read
	                      * past it) */
	bool half;           /* the cut closes only the sender's side: the receiver's stays open
	                      * and silent (a dead path) */
	bool half_recv;      /* the cut closes only the receiver's side: the sender's stays open
	                      * and silent */
	bool reset;          /* the cut resets the sender's side (its next send fails at once) */
	bool refuse_after;   /* after the cut, new connections are closed at once */
	bool hold_after;     /* after the cut, new connections are held open, never answered
	                      * (counted in refused) */
	bool hold_to_end;    /* plaintext: cut_conn's sender bytes are held, not passed on, until
	                      * the sender's END went by; then what came before the first STATE
	                      * frame passes and the connection is cut (a chunk lost in flight
	                      * while the sender already waits for END_ACKs) */
	int next_conn;       /* once a cut came, the next is armed at once: this connection
	                      * (accept index, -1: none) ... */
	uint64_t next_bytes; /* ... once this many more sender bytes went through it */
	/* Set before the first connection (attach mode, a VMM's own sockets): */
	unsigned greet_in;   /* a handshake with the proxy itself before it forwards (an HTTP
	                      * CONNECT): it reads greet_in bytes from the sender's side ... */
	unsigned greet_out;  /* ... and answers this many, neither of which the receiver sees */
	unsigned pre_s, pre_r; /* bytes each way ahead of the session's frames on every connection
	                        * (the VMMs' own preamble): the frame parser passes over them */
	bool stop;
	unsigned cuts, accepted, refused;
	uint64_t fwd[MAXP];
} cut_proxy;

/* Starts a proxy to the receiver at 127.0.0.1:port; returns the proxy's port (g_free it). */
char *proxy_start(cut_proxy *p, const char *port);
void proxy_stop(cut_proxy *p);
/* Cuts connection conn (accept index) once more_bytes more went from the sender through it. */
void proxy_arm(cut_proxy *p, int conn, uint64_t more_bytes);
/* Cuts connection conn right before a frame of type from the sender (or the receiver). */
void proxy_arm_frame(cut_proxy *p, int conn, uint8_t type, bool from_sender);
/* Passes the receiver's first frame of type on conn, then cuts instead of passing the sender's
 * next bytes (plaintext). */
void proxy_arm_reply(cut_proxy *p, int conn, uint8_t type);
/* From now on holds conn's sender bytes until END, then cuts before the first STATE (above). */
void proxy_arm_hold_to_end(cut_proxy *p, int conn);
/* Once the armed cut came, cuts connection conn (accept index; a reconnect's may not exist yet)
 * more_bytes after it, armed by the proxy itself: a starved test thread cannot arm it too late. */
void proxy_arm_next(cut_proxy *p, int conn, uint64_t more_bytes);
unsigned proxy_cuts(cut_proxy *p);
/* One of p's counters (&p->cuts, &p->accepted, &p->refused), read under the lock. */
unsigned proxy_get(cut_proxy *p, const unsigned *field);
