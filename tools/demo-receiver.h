/* SPDX-License-Identifier: MIT */
/*
 * The demos' receiver: accept, start and wait in a thread of its own, reading the device-state
 * sections the sender puts, as a destination VMM loads its devices (demo-receiver.c).
 */
#pragma once

#include <glib.h>

#include "tagmig/tagmig.h"

/* One device-state section as it arrived. */
typedef struct demo_state {
	char *name;
	GBytes *data;
	/* on_state's verdict, e.g. "ramhash" compared with the RAM that had arrived by then */
	bool ok;
} demo_state;

typedef struct demo_receiver {
	tm_receiver *receiver; /* owned (demo_receiver_open) */
	const tm_ram_layout *layout;
	tm_tag_store *tags;
	int listen_fd;         /* owned */
	/* Optional: called on the receiver's thread for each section once it is read whole;
	 * returns whether it is right. */
	bool (*on_state)(void *opaque, const char *name, const void *data, size_t len);
	void *opaque;
	/* Optional: called on the receiver's thread each time the sections that waited are read;
	 * in postcopy the first call with phase TM_PHASE_POSTCOPY is the end of device state (the
	 * guest may run). */
	void (*on_sections_read)(void *opaque, tm_receiver *r);
	/* Optional: bytes of device state to keep room for, touched before the migration (as a
	 * destination VMM's device models are), so that reading it in the downtime does not pay
	 * fresh memory's page faults; sections past it get memory of their own. */
	size_t state_reserve;
	uint8_t *arena;    /* state_reserve bytes (the thread's) */
	size_t arena_used;
	/* written by the thread, read after join */
	int rc;
	GError *error;
	GPtrArray *states; /* demo_state, in arrival order; freed by demo_receiver_clear */
} demo_receiver;

/*
 * Listens on 127.0.0.1 (a port the kernel picks: *ret_port) and makes the receiver: fresh zeroed
 * RAM, the I/O backend io (NULL: default), timeout_s, TLS credentials creds (NULL: plaintext),
 * and the $TAGMIG_* settings. Then set layout and tags, and run demo_receiver_thread. Returns 0
 * or -errno (*error); demo_receiver_clear frees what it made.
 */
int demo_receiver_open(demo_receiver *d, const char *io, unsigned timeout_s, const char *creds,
		       unsigned *ret_port, GError **error);

/* g_thread_new()'s function: accept on listen_fd, start with layout and tags, wait, reading
 * every device-state section into states. */
gpointer demo_receiver_thread(gpointer data);

/* Frees what open and the thread left (receiver, listener, states, error). */
void demo_receiver_clear(demo_receiver *d);

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(demo_receiver, demo_receiver_clear)
