/* SPDX-License-Identifier: MIT */
/*
 * What test-session.c (migrations) and test-session-faults.c (injected faults) share: guests with
 * RAM and soft tags, a receiver in a thread, and the main loop that runs every test for every
 * pair of I/O backends, in plaintext and over TLS.
 */
#pragma once

#include "tagmig/tagmig.h"

G_BEGIN_DECLS

/* The I/O backends of the test being run (set by session_tests_run for each pair). */
extern const char *send_io;
extern const char *recv_io;
/* TLS credentials of the test being run (NULL: plaintext); one directory holds both sides'. */
extern const char *tls_dir;

typedef struct guest {
	tm_ram_layout *layout;
	tm_tag_store *tags;
	uint8_t *ram[4];
	uint8_t *map[4]; /* mapping behind ram[], which is aligned to 64 KiB */
	size_t len[4];
	unsigned nblocks;
} guest;

typedef struct block_spec {
	const char *name;
	size_t len;
	uint32_t page_size;
} block_spec;

/* Deterministic test data (splitmix64). */
uint64_t rnd(void);

/* Probes userfaultfd as a postcopy receiver does (user-mode faults only); false: the test is
 * skipped with the reason. */
bool uffd_usable(void);

/* n blocks of zeroed RAM as spec says, with a soft tag store if with_tags. */
void guest_init(guest *g, const block_spec *spec, unsigned n, bool with_tags);
void guest_fini(guest *g);
/* Fills page p of block b with one of five interesting shapes (data, zero, tags), by shape % 5. */
void fill_page(guest *g, unsigned b, uint64_t p, unsigned shape);
/* Every page of g, each in a random shape. */
void guest_fill(guest *g);
/* RAM, and tags where both have them, are equal. */
void assert_same(guest *a, guest *b);

struct peer;
/* A device-state section the peer read whole (on the receiver's thread). */
typedef void (*peer_state_fn)(struct peer *p, const char *name, const uint8_t *data, size_t len);

/* A receiver run in its own thread: new, accept, start, wait (reading device state with
 * on_state, if set, whenever wait asks for it). */
typedef struct peer {
	guest *g;
	bool ram_zeroed;
	unsigned timeout_ms; /* 0: 20 s */
	bool waive_all;      /* tm_receiver_waive_pages() of every page: a partial migration may end */
	int listen_fd;
	tm_receiver *r;
	GError *error;
	int ret;
	uint64_t presented; /* pages reported by on_present */
	peer_state_fn on_state;
	void *opaque;
	unsigned states;    /* device-state sections read */
	GThread *thread;
} peer;

/* Starts a receiver into g on 127.0.0.1; returns its port (g_free it). */
char *peer_start(peer *p, guest *g);
/* The same, for a destination that starts zeroed, and a timeout other than 20 s (0: 20 s). */
char *peer_start_ex(peer *p, guest *g, bool ram_zeroed, unsigned timeout_ms);
/* The same, reading every device-state section whole and handing it to fn. */
char *peer_start_state(peer *p, guest *g, bool ram_zeroed, unsigned timeout_ms, peer_state_fn fn,
		       void *opaque);
/* The same for a VMM that waives every page (tm_receiver_waive_pages): sending none completes. */
char *peer_start_waived(peer *p, guest *g, unsigned timeout_ms);
/* Waits for the receiver thread to end; p->ret and p->error say how it did. */
void peer_join(peer *p);
void peer_free(peer *p);

/* A device-state section read whole by receiver_read_states() (on the receiver's thread). */
typedef void (*state_section_fn)(void *opaque, const char *name, const uint8_t *data, size_t len);

/*
 * What a destination does each time tm_receiver_wait() returns 1: reads every device-state
 * section r has ready, whole, and hands each to fn (if set). Returns 0 once none is left, or the
 * negative errno of tm_receiver_next_state() / tm_receiver_read_state() with *error set.
 */
int receiver_read_states(tm_receiver *r, state_section_fn fn, void *opaque, GError **error);

/*
 * A hand-made protocol 2 peer's first words (test-session-compress.c, test-session-delta.c):
 * connects to 127.0.0.1:port and sends a HELLO of role with features, one 1 MiB block
 * "pc.ram" of 4 KiB pages, packets of 512 KiB, one channel, every session id byte
 * session_byte. Returns the socket (the test closes it).
 */
int raw_hello2(const char *port, uint8_t role, uint32_t features, uint8_t session_byte);

/*
 * Cancels the sender, and the receiver *r if r, unless stopped within secs: a call that hangs
 * fails its test with why (the cancel's reason) instead of hanging the suite.
 */
typedef struct watchdog {
	GMutex lock;
	GCond cond;
	bool done, fired;
	tm_sender *s;
	tm_receiver *const *r; /* read when it fires: a peer's receiver may come later */
	unsigned secs;
	const char *why;
	GThread *thread;
} watchdog;
void watchdog_start(watchdog *w, tm_sender *s, tm_receiver *const *r, unsigned secs,
		    const char *why);
/* The watched call returned: the watchdog stops. Whether it had to cancel. */
bool watchdog_stop(watchdog *w);

typedef struct session_test {
	const char *path;
	void (*fn)(void);
	bool raw; /* speaks the wire protocol by hand: plaintext only */
} session_test;

/*
 * main(): registers /session/<pair>/<path> for every test and every backend pair (plaintext and
 * TLS), runs them, removes the TLS credentials. Returns g_test_run()'s result.
 */
int session_tests_run(int *argc, char ***argv, const session_test *tests, size_t n);

G_END_DECLS
