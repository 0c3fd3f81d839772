/* SPDX-License-Identifier: MIT */
/* The demos' receiver thread (demo-receiver.h). */
#include "demo-receiver.h"

gpointer demo_receiver_thread(gpointer data)
{
	demo_receiver *d = data;

	d->rc = tm_receiver_accept(d->receiver, d->listen_fd, &d->error);
	if (d->rc >= 0)
		d->rc = tm_receiver_start(d->receiver, d->layout, d->tags, &d->error);
	if (d->rc >= 0)
		d->rc = tm_receiver_wait(d->receiver, &d->error);
	return NULL;
}
