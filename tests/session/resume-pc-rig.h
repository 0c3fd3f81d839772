/* SPDX-License-Identifier: MIT */
/*
 * The postcopy resume tests' migration through a cutting proxy (test-resume-postcopy.c,
 * test-resume-urgent.c): a destination (a receiver with postcopy in a thread, and VCPUS "vCPU"
 * threads that touch pages once the guest runs, each checking a page's data and tags against
 * the source when its fault returns) and a sender of NCH channels, packets of 64 KiB, to it
 * through cut-proxy.c; RAM of one block "pc.ram", switched to postcopy at once.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "cut-proxy.h"
#include "session-fixture.h"

#define NCH 3u
#define RAM (4u << 20)
#define PAGE 4096u
#define NPAGES (RAM / PAGE)
#define VCPUS 2u
#define CPU_STATE 4096u
#define URGENT_CONN (NCH + 1) /* the proxy's accept index: data 0, control, data 1.., urgent */

extern const block_spec spec[1];
/* The destination's timeout_ms: 20000 unless a test (of a silent path) lowers it. */
extern unsigned dest_timeout_ms;

typedef struct dest dest;

typedef struct vcpu {
	dest *d;
	unsigned index;
	GThread *thread;
	uint64_t touched, bad;
	int64_t max_block_us; /* the longest a touch waited for its page */
	bool done;            /* atomic */
} vcpu;

struct dest {
	guest g;
	guest *src;
	int listen_fd;
	tm_receiver *r;
	GThread *thread;
	int ret;
	GError *error;
	bool vcpus;          /* start vCPUs once the end of device state is reached */
	unsigned stride;     /* a vCPU touches the pages p % stride == its index */
	bool running;        /* atomic: the guest runs (its vCPUs if vcpus) */
	uint8_t cpu[CPU_STATE];
	bool cpu_seen;
	vcpu v[VCPUS];
};

typedef struct run {
	guest src;
	dest d;
	cut_proxy px;
	tm_sender *s;
	GThread *finisher;
	int ret;              /* tm_sender_finish() */
	GError *error;
	uint8_t cpu[CPU_STATE];
	char *port;           /* the receiver's (the proxy connects there) */
	bool finished;        /* atomic: tm_sender_finish() returned */
} run;

/* Where the urgent connection is cut before the switch (run_open). */
typedef enum {
	URG_NONE,
	URG_SETUP_ACK, /* its HELLO_ACK is lost at setup (plaintext: found by its frame header) */
	URG_IDLE,      /* while idle in precopy, between two rounds */
	URG_IDLE_HALF, /* ... only the sender's side: the receiver's stays open and silent */
	URG_IDLE_HALF_RECV, /* ... only the receiver's side: the sender's stays open and silent */
	URG_SETUP_SEND, /* the receiver's send of its HELLO_ACK fails (test hook: TLS too) */
} urg_cut;

/*
 * The guests, the destination, the proxy and the connected sender; with cut, the urgent
 * connection is cut before the switch. Returns 0, or tm_sender_connect()'s failure (x->error).
 */
int run_open(run *x, const tm_live_config *lc, bool vcpus, unsigned stride, urg_cut cut);
/* The final dirty log at rate bytes/s, the switch, device state, finish() in its own thread
 * (hold: no background page until the caller sets a rate); returns once the destination runs. */
void run_switch(run *x, uint64_t rate, bool hold);
/* run_open() without a cut, then run_switch(). */
void run_start(run *x, const tm_live_config *lc, uint64_t rate, bool vcpus, unsigned stride,
	       bool hold);
/* The sender's tm_sender_finish(), in x->finisher (run_switch() starts it). */
gpointer finish_thread(gpointer data);
/* One precopy round of every page at full speed, acknowledged (tm_sender_sync()). */
void run_round(run *x);
/* Both sides ended; the vCPUs (if any) are joined, and none saw a wrong page. */
void run_join(run *x);
void run_free(run *x);
/* Both phases and both errors, for a failure's message (g_free it). */
char *run_state(run *x);
/* The background may end (-EBADFD: the session ended already, through requests). */
void release_background(run *x);
/* Completed bit-exact, one reconnect on each side, the vCPUs touched their share; the proxy
 * cut `cuts` times. */
void assert_resumed(run *x, unsigned cuts);
/* Waits (bounded: 20 s, then fails) until every vCPU touched every page of its share. */
void await_vcpus(run *x, const char *after);
/* The sender's or the receiver's tm_live_stats.reconnects. */
uint64_t reconnects(run *x, bool sender);
/* The session completes bit-exact with one cut (bounded: a hang fails, 20 s). */
void await_complete(run *x);
