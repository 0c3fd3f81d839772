/* SPDX-License-Identifier: MIT */
/*
 * What the postcopy destination tests share (test-postcopy-recv*.c): a receiver with postcopy in
 * a thread, one block "pc.ram" of NPAGES pages, the hand-made protocol 2 sender (fake-peer.h)
 * with its DATA, ZERO, DISCARD, POSTCOPY and END_OF_STATE messages, the fake's return path that
 * answers page requests, and destination "vCPU" threads that touch missing pages.
 */
#pragma once

#include <setjmp.h>

#include "codec/codec.h"
#include "fake-peer.h"
#include "session-fixture.h"

G_BEGIN_DECLS

#define PS (64u * 1024u) /* packet_size and chunk_size: 16 pages per chunk */
#define PAGE 4096u
#define NPAGES 64u       /* one block "pc.ram" of 256 KiB: chunks 0..3, channel = chunk % 2 */
#define CH_DATA0 FAKE_DATA0
#define CH_DATA1 FAKE_DATA1
#define CH_CTL FAKE_CTL
#define CH_URG FAKE_URG

extern const block_spec spec[1];

/* ---- the destination: a receiver with postcopy in a thread ---- */

typedef struct dest {
	guest g;
	int listen_fd;
	bool no_postcopy; /* the receiver does not ask for postcopy */
	bool ram_zeroed;  /* tm_receiver_config.ram_zeroed */
	uint32_t max_outstanding;
	tm_receiver *r;
	GThread *thread;
	int ret;
	GError *error;
	unsigned wait_ones;
	gint done;
} dest;

/* ---- the fake's return path: answers PAGE_REQ with URGENT, REQ_END with END_ACK ---- */

typedef struct responder {
	fake_sender *w;
	unsigned gen;       /* generation of the pages it answers with */
	int wrong_page;     /* hostile: answer the first request with this page (-1: honest) */
	unsigned delay_ms;  /* wait this long before each answer, watching for more requests */
	/* hold the first answer until the watched receiver has read this many faults (5 s at most):
	 * what queues behind an unanswered request, however slowly the vCPU threads start */
	tm_receiver *watch;
	unsigned hold_faults;
	GThread *thread;
	/* results */
	unsigned requests, max_count;
	unsigned over;      /* requests beyond max_outstanding seen while one was unanswered */
	uint64_t req_end;   /* REQ_END's requests_sent */
	bool req_end_seen;
} responder;

/* ---- destination "vCPUs": each touches its pages and checks data and tags when it wakes ---- */

typedef struct vcpu {
	dest *d;
	unsigned first, step, count; /* pages first, first + step, ... */
	unsigned gen;
	GThread *thread;
	unsigned bad;                 /* pages whose data or tags were wrong when the load returned */
	int64_t max_wait_us;
} vcpu;

typedef struct bus_vcpu {
	const volatile uint8_t *page;
	GThread *thread;
	gint started;
	bool sigbus;
	uint8_t seen;
} bus_vcpu;

/* Page p of generation gen: data and per-granule tags derived from both. */
void make_page(unsigned p, unsigned gen, uint8_t *data, uint8_t *tags);

/* The data channel of page p (its chunk % 2). */
unsigned channel_of(unsigned p);

/* g_thread_new()'s function of dest_start: new, live (postcopy unless no_postcopy), accept,
 * start, wait (reading no state) until the end; then done. */
gpointer dest_thread(gpointer data);

/* guest_init of spec, a listener on 127.0.0.1 and the receiver thread; returns the port
 * (g_free). */
char *dest_start(dest *d);

/* With userfaultfd: dest_start(d) and w connected to it, postcopy offered (raw_open); true.
 * Without: false, the test skipped with the reason. */
bool dest_open(dest *d, fake_sender *w);

/* Waits (10 s at most) for the receiver to end. */
void dest_join(dest *d, const char *what);

/* Frees the receiver, its error and the guest. */
void dest_free(dest *d);

/* Closes w's connections, then dest_free(d): the end of a test. */
void dest_close(dest *d, fake_sender *w);

/* Waits (10 s at most) for the receiver to reach phase p; fails the test otherwise. */
void wait_phase(dest *d, tm_phase p);

/* Connects as a sender does (data 0, control, data 1, urgent) and reads every HELLO_ACK. */
void raw_open(fake_sender *w, const char *port, bool postcopy);

/* Builds a DATA body (URGENT with req_id) of pages [first, first + n) of gen into a message. */
uint8_t *data_msg(uint32_t seq, bool urgent, uint64_t req_id, unsigned first, unsigned n,
		  unsigned gen, size_t *ret_len);

/* DATA of pages [first, first + n) of gen on their channel (one chunk). */
void raw_data(fake_sender *w, unsigned first, unsigned n, unsigned gen);

/* ZERO pages (tag 0) or, with tag != 0, ZERO_TAGGED pages: zero data, every granule tagged. */
void raw_zero_tagged(fake_sender *w, unsigned first, unsigned n, uint8_t tag);

/* ZERO pages [first, first + n) (zero data, zero tags) on their channel (one chunk). */
void raw_zero(fake_sender *w, unsigned first, unsigned n);

/* DISCARD of pages [first, first + n) on channel ch. */
void raw_discard(fake_sender *w, unsigned ch, unsigned first, unsigned n);

/* RAM_END of mode on channel ch, counting what the fake sent there. */
void raw_ram_end(fake_sender *w, unsigned ch, uint32_t mode);

/* POSTCOPY on control: missing pages. */
void raw_postcopy(fake_sender *w, uint64_t missing);

/* END_OF_STATE without sections: chunk 0, on channel 0. */
void raw_eos(fake_sender *w);

/* END on connection ch, counting what the fake sent on it (control: zeros). */
void raw_end(fake_sender *w, unsigned ch);

/* The switch before any page (round 0): RAM_END(POSTCOPY) on both data channels, the end of
 * device state if eos, then waits for the receiver's phase POSTCOPY. */
void raw_switch_round0(dest *d, fake_sender *w, bool eos);

/* Control after its END: PONGs for the receiver's PINGs; READY (mode 2) then END_ACK. */
void raw_finish_control(fake_sender *w, uint64_t want_mode);

/* g_thread_new()'s function of responder_start. */
gpointer responder_thread(gpointer data);

/* Starts the fake's return path on w's urgent connection, answering with generation gen. */
void responder_start(responder *rs, fake_sender *w, unsigned gen);

/* g_thread_new()'s function of a vcpu: touches its pages, checks them when each load returns. */
gpointer vcpu_thread(gpointer data);

/* The SIGBUS handler of bus_vcpu_thread (sigaction it around the test). */
void on_sigbus(int sig);

/* g_thread_new()'s function of a bus_vcpu: reads its page, catching the SIGBUS of a poisoned
 * one. */
gpointer bus_vcpu_thread(gpointer data);

/* RAM and tags of the destination equal generation gen_of(p) of every page. */
void check_pages(dest *d, unsigned gen_low, unsigned gen_high, unsigned split);

G_END_DECLS
