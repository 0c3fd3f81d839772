/* SPDX-License-Identifier: MIT */
/*
 * The resume tests' migration through a cutting proxy (test-resume-control.c, setup-cuts.c):
 * a receiver with live settings in its own thread (rpeer) that checks each device-state
 * section it reads against the sender's, and a sender of 3 channels, packets of 64 KiB, to it
 * through cut-proxy.c (run); 16 MiB of RAM in one block "pc.ram".
 */
#pragma once

#include <stdint.h>

#include "cut-proxy.h"
#include "session-fixture.h"

#define RIG_RAM (16u << 20)
#define RIG_STATE_LEN (4u << 20) /* the one device-state section a test may send */

/* The receivers' timeout_ms (their accept deadline among others): 20000 unless a test says. */
extern unsigned rig_recv_timeout_ms;
/* The sender's timeout_ms: 20000 unless a test says. */
extern unsigned rig_send_timeout_ms;
/* The sender's channels: 3 unless a test says. */
extern unsigned rig_channels;
/*
 * Attach mode (set before run_start(); docs/api.md, "Resume"): the "VMMs" dial (through the
 * proxy, in the sender's setup order, so the proxy's accept indices are the same as
 * tm_sender_connect()'s) and accept the session's RIG_CONNECTIONS sockets themselves, hand them
 * to tm_sender_attach() / tm_receiver_attach(), and give both sides the reconnect hook: the
 * sender's dials the proxy, the receiver's accepts on the receiver's listener.
 */
extern bool rig_attach;
#define RIG_CONNECTIONS (rig_channels + 1) /* the data channels and control */

/* The next connection on listen_fd within timeout_ms, or -errno. */
int rig_accept_within(int listen_fd, unsigned timeout_ms);

typedef struct rpeer {
	guest *g;
	tm_live_config live;
	int listen_fd;
	tm_receiver *r;
	GError *error;
	int ret;
	const uint8_t *state; /* the device-state section it must read (RIG_STATE_LEN), or NULL */
	unsigned state_delay_ms; /* a slow VMM: waits this long before it reads device state */
	unsigned states;
	double secs;          /* accept to the end of wait */
	bool attach;          /* rig_attach when started */
	unsigned hooked;      /* attach: connections its reconnect hook handed over (atomic) */
	GThread *thread;
} rpeer;

/* Listens on 127.0.0.1 and receives into g in a thread; returns the port (g_free). */
char *rpeer_start(rpeer *p, guest *g, uint32_t resume_deadline_ms);
void rpeer_join(rpeer *p);
void rpeer_free(rpeer *p);

typedef struct run {
	guest src, dst;
	rpeer p;
	cut_proxy px;
	char *port, *pport;
	tm_sender *s;
	GError *err;
	int r;
	uint8_t *state;
	unsigned dialled;     /* attach: connections the sender's reconnect hook dialled (atomic) */
} run;

/* Guests, the receiver (recv_deadline_ms: its resume_deadline_ms), the proxy, the sender with
 * lc (NULL: none set). */
void run_start(run *t, const tm_live_config *lc, uint32_t recv_deadline_ms);
int run_connect(run *t);            /* through the proxy; the error in t->err */
int run_queue_all(run *t);          /* every page of the block, one bitmap */
void run_end(run *t);
/* A random device-state section of RIG_STATE_LEN in t->state, which the receiver must read. */
void run_fill_state(run *t);
/* The whole migration through the proxy: connect, every page, sync, the guest stopped, the
 * state section (run_fill_state first), finish. The sender's result; its error in t->err. */
int run_migrate(run *t);
/* Its two halves, for a test that does more between them: connect, every page and sync
 * (run_first_round); the guest stopped, the state section and finish (run_stop_and_finish). */
int run_first_round(run *t);
int run_stop_and_finish(run *t);

/* Both sides returned 0, the copy is exact, the sender's phase is complete and the receiver
 * applied every page once; *ss and *rs: the live statistics, for the caller's own checks. */
void run_assert_complete(run *t, tm_live_stats *ss, tm_live_stats *rs);
