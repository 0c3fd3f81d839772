/* SPDX-License-Identifier: MIT */
/* The demos' receiver thread (demo-receiver.h). */
#include <string.h>
#include <unistd.h>

#include "demo-receiver.h"
#include "env.h"

static void state_free(gpointer p)
{
	demo_state *s = p;

	g_free(s->name);
	g_bytes_unref(s->data);
	g_free(s);
}

/* Reads every section that waits now, the way a destination VMM loads its devices. */
static int read_sections(demo_receiver *d)
{
	tm_state_info info;
	int rc;

	while ((rc = tm_receiver_next_state(d->receiver, &info, &d->error)) == 1) {
		const bool in_arena = d->arena && info.length <= d->state_reserve - d->arena_used;
		uint8_t *buf = in_arena ? d->arena + d->arena_used : g_malloc(info.length ? info.length : 1);

		/* In pieces, as a device model would take them. */
		for (uint64_t off = 0; off < info.length;) {
			size_t n = (size_t)MIN(info.length - off, (uint64_t)(256 * 1024));

			if ((rc = tm_receiver_read_state(d->receiver, buf + off, n, &d->error)) < 0) {
				if (!in_arena)
					g_free(buf);
				return rc;
			}
			off += n;
		}
		demo_state *s = g_new0(demo_state, 1);
		s->name = g_strdup(info.name);
		s->ok = !d->on_state || d->on_state(d->opaque, info.name, buf, info.length);
		if (in_arena) {
			s->data = g_bytes_new_static(buf, info.length); /* the arena outlives states */
			d->arena_used += info.length;
		} else {
			s->data = g_bytes_new_take(buf, info.length);
		}
		g_ptr_array_add(d->states, s);
	}
	return rc;
}

int demo_receiver_open(demo_receiver *d, const char *io, unsigned timeout_s, const char *creds,
		       unsigned *ret_port, GError **error)
{
	tm_receiver_config rcfg = {
		.io_backend = io,
		.timeout_ms = timeout_s * 1000u,
		.ram_zeroed = true, /* fresh anonymous memory, like a VMM's new guest */
		.tls_creds_dir = creds,
	};

	d->listen_fd = tm_listen("127.0.0.1", "0", ret_port, error);
	if (d->listen_fd < 0)
		return d->listen_fd;
	cli_env_receiver_config(&rcfg);
	return tm_receiver_new(&rcfg, &d->receiver, error);
}

gpointer demo_receiver_thread(gpointer data)
{
	demo_receiver *d = data;

	d->states = g_ptr_array_new_with_free_func(state_free);
	if (d->state_reserve) {
		d->arena = g_malloc(d->state_reserve);
		memset(d->arena, 0, d->state_reserve);
	}
	d->rc = tm_receiver_accept(d->receiver, d->listen_fd, &d->error);
	if (d->rc >= 0)
		d->rc = tm_receiver_start(d->receiver, d->layout, d->tags, &d->error);
	while (d->rc >= 0) {
		d->rc = tm_receiver_wait(d->receiver, &d->error);
		if (d->rc != 1)
			break;
		d->rc = read_sections(d);
		if (d->rc == 0 && d->on_sections_read)
			d->on_sections_read(d->opaque, d->receiver);
	}
	return NULL;
}

void demo_receiver_clear(demo_receiver *d)
{
	g_clear_pointer(&d->receiver, tm_receiver_free);
	if (d->listen_fd >= 0)
		close(d->listen_fd);
	d->listen_fd = -1;
	g_clear_pointer(&d->states, g_ptr_array_unref);
	g_clear_pointer(&d->arena, g_free);
	g_clear_error(&d->error);
}
