/* SPDX-License-Identifier: MIT */
/* The demos' receiver: accept, start and wait in a thread of its own (demo-receiver.c). */
#pragma once

#include <glib.h>

#include "tagmig/tagmig.h"

typedef struct demo_receiver {
	tm_receiver *receiver;
	const tm_ram_layout *layout;
	tm_tag_store *tags;
	int listen_fd;
	/* written by the thread, read after join */
	int rc;
	GError *error;
} demo_receiver;

/* g_thread_new()'s function: accept on listen_fd, start with layout and tags, wait. */
gpointer demo_receiver_thread(gpointer data);
