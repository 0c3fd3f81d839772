/* SPDX-License-Identifier: MIT */
/* A guest's RAM and a loopback session for bench/ programs (bench-session.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench-session.h"

const char *bench_prog = "bench";

void bench_die(const char *what, GError *error)
{
	fprintf(stderr, "%s: %s: %s\n", bench_prog, what,
		error ? error->message : g_strerror(errno));
	exit(1);
}

uint64_t bench_rnd(void)
{
	static uint64_t rng = 0x9e3779b97f4a7c15ull;
	uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void bench_side_init(bench_side *s, size_t len, bool huge)
{
	s->len = len;
	s->ram = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (s->ram == MAP_FAILED)
		bench_die("mmap", NULL);
	if (huge)
		madvise(s->ram, len, MADV_HUGEPAGE);
	tm_ram_layout_new(&s->layout);
	GError *error = NULL;
	if (tm_ram_layout_add_block(s->layout, "ram0", s->ram, len, BENCH_PAGE, 0, &error) < 0)
		bench_die("layout", error);
}

void bench_side_fini(bench_side *s)
{
	tm_ram_layout_free(s->layout);
	munmap(s->ram, s->len);
}

static gpointer recv_fn(gpointer data)
{
	bench_recv *t = data;
	tm_receiver_config cfg = { .io_backend = t->io, .timeout_ms = t->timeout_ms };

	t->ret = tm_receiver_new(&cfg, &t->r, &t->error);
	if (t->ret >= 0)
		t->ret = tm_receiver_accept(t->r, t->listen_fd, &t->error);
	if (t->ret >= 0)
		t->ret = tm_receiver_start(t->r, t->dst->layout, NULL, &t->error);
	if (t->ret >= 0)
		t->ret = tm_receiver_wait(t->r, &t->error);
	return NULL;
}

tm_sender *bench_session_open(bench_recv *t, bench_side *src, bench_side *dst,
			      const tm_sender_config *cfg, const tm_live_config *live)
{
	unsigned port = 0;
	GError *error = NULL;

	memset(t, 0, sizeof(*t));
	t->dst = dst;
	t->io = cfg->io_backend;
	t->timeout_ms = cfg->timeout_ms;
	t->listen_fd = tm_listen("127.0.0.1", "0", &port, &error);
	if (t->listen_fd < 0)
		bench_die("listen", error);
	t->th = g_thread_new("receiver", recv_fn, t);
	tm_sender *s = NULL;
	char portstr[16];
	g_snprintf(portstr, sizeof(portstr), "%u", port);
	if (tm_sender_new(src->layout, NULL, cfg, &s, &error) < 0 ||
	    (live && tm_sender_set_live(s, live, &error) < 0) ||
	    tm_sender_connect(s, "127.0.0.1", portstr, &error) < 0)
		bench_die("connect", error);
	return s;
}

void bench_session_close(bench_recv *t, tm_sender *s)
{
	g_thread_join(t->th);
	close(t->listen_fd);
	if (t->ret < 0)
		bench_die("receiver", t->error);
	tm_receiver_free(t->r);
	tm_sender_free(s);
}
