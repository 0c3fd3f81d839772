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
	tm_receiver *receiver;
	const tm_ram_layout *layout;
	tm_tag_store *tags;
	int listen_fd;
	/* Optional: called on the receiver's thread for each section once it is read whole;
	 * returns whether it is right. */
	bool (*on_state)(void *opaque, const char *name, const void *data, size_t len);
	void *opaque;
	/* written by the thread, read after join */
	int rc;
	GError *error;
	GPtrArray *states; /* demo_state, in arrival order; freed by demo_receiver_clear */
} demo_receiver;

/* g_thread_new()'s function: accept on listen_fd, start with layout and tags, wait, reading
 * every device-state section into states. */
gpointer demo_receiver_thread(gpointer data);

/* Frees what the thread left (states, error). */
void demo_receiver_clear(demo_receiver *d);

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(demo_receiver, demo_receiver_clear)
