/* SPDX-License-Identifier: MIT */
/*
 * Two rounds of a guest with a delta cache, for test-delta.sh (issue 15, the delta choice):
 * round 1 sends every page (random 4 KiB pages), the guest rewrites 5% of each page, round 2
 * sends every page again. Both ends in this process through the public API; with --listen-netns
 * the receiver's listening socket is made in that network namespace (tests/net's host B; the
 * process itself runs in host A), so the data crosses tm-wire's link.
 *
 *   delta-rounds --addr HOST [--listen-netns NAME] [--size 16M] [--channels 4]
 *                [--policy auto|always|off]
 *
 * Prints one line of key=value: round 2's wire bytes and seconds, the delta statistics summed
 * over the channels (pages, skipped, windows_delta, windows_whole) and the last choice's reason
 * per channel. Exit 0 when the destination equals the source, 1 otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tagmig/tagmig.h"

#define PAGE 4096u

static void die(const char *what, GError *error)
{
	fprintf(stderr, "delta-rounds: %s: %s\n", what, error ? error->message : g_strerror(errno));
	exit(1);
}

typedef struct recv_thread {
	tm_ram_layout *layout;
	int listen_fd;
	int ret;
	GError *error;
	tm_receiver *r;
} recv_thread;

static gpointer recv_fn(gpointer data)
{
	recv_thread *t = data;
	tm_receiver_config cfg = { .timeout_ms = 60000 };

	t->ret = tm_receiver_new(&cfg, &t->r, &t->error);
	if (t->ret >= 0)
		t->ret = tm_receiver_accept(t->r, t->listen_fd, &t->error);
	if (t->ret >= 0)
		t->ret = tm_receiver_start(t->r, t->layout, NULL, &t->error);
	if (t->ret >= 0)
		t->ret = tm_receiver_wait(t->r, &t->error);
	return NULL;
}

/* A listening socket on addr, made in network namespace ns (NULL: this one). */
static int listen_in(const char *ns, const char *addr, unsigned *ret_port)
{
	GError *error = NULL;
	int here = -1;

	if (ns) {
		g_autofree char *path = g_strdup_printf("/var/run/netns/%s", ns);
		int there = open(path, O_RDONLY | O_CLOEXEC);
		here = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
		if (there < 0 || here < 0 || setns(there, CLONE_NEWNET) < 0)
			die(path, NULL);
		close(there);
	}
	int fd = tm_listen(addr, "0", ret_port, &error);
	if (fd < 0)
		die("listen", error);
	if (ns && (setns(here, CLONE_NEWNET) < 0 || close(here) < 0))
		die("setns back", NULL);
	return fd;
}

static uint64_t rng = 0x243f6a8885a308d3ull;
static uint64_t rnd(void)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint8_t *ram_new(size_t len, tm_ram_layout **ret)
{
	GError *error = NULL;
	uint8_t *ram = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ram == MAP_FAILED)
		die("mmap", NULL);
	tm_ram_layout_new(ret);
	if (tm_ram_layout_add_block(*ret, "ram0", ram, len, PAGE, 0, &error) < 0)
		die("layout", error);
	return ram;
}

int main(int argc, char **argv)
{
	g_autofree char *addr = NULL, *ns = NULL, *size = NULL, *policy = NULL;
	int channels = 4;
	GOptionEntry entries[] = {
		{ "addr", 0, 0, G_OPTION_ARG_STRING, &addr, "Address the receiver listens on", "HOST" },
		{ "listen-netns", 0, 0, G_OPTION_ARG_STRING, &ns, "Its network namespace", "NAME" },
		{ "size", 0, 0, G_OPTION_ARG_STRING, &size, "Guest RAM in MiB (default 16)", "MIB" },
		{ "channels", 0, 0, G_OPTION_ARG_INT, &channels, "Data channels (default 4)", "N" },
		{ "policy", 0, 0, G_OPTION_ARG_STRING, &policy, "auto, always or off", "P" },
		G_OPTION_ENTRY_NULL
	};
	g_autoptr(GOptionContext) ctx = g_option_context_new("- two rounds with deltas");
	GError *error = NULL;
	g_option_context_add_main_entries(ctx, entries, NULL);
	if (!g_option_context_parse(ctx, &argc, &argv, &error))
		die("options", error);
	size_t len = (size ? strtoull(size, NULL, 10) : 16) << 20;
	bool off = policy && strcmp(policy, "off") == 0;
	uint32_t pol = policy && strcmp(policy, "always") == 0 ? TM_DELTA_ALWAYS : TM_DELTA_AUTO;
	if (!addr || len == 0 || channels < 1 || channels > 64)
		die("usage: --addr HOST [--listen-netns NAME] [--size MIB] [--channels N] [--policy P]",
		    NULL);

	tm_ram_layout *sl, *dl;
	uint8_t *src = ram_new(len, &sl), *dst = ram_new(len, &dl);
	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = rnd();
		memcpy(src + i, &v, 8);
	}
	recv_thread t = { .layout = dl };
	unsigned port = 0;
	t.listen_fd = listen_in(ns, addr, &port);
	GThread *th = g_thread_new("receiver", recv_fn, &t);
	tm_sender_config cfg = { .channels = (unsigned)channels, .timeout_ms = 60000 };
	tm_live_config live = { .size = sizeof(live), .compress = TM_COMPRESS_NONE,
				.delta_cache_bytes = off ? 0 : MAX(len / (unsigned)channels * 2, 1u << 20),
				.delta_policy = pol };
	tm_sender *s = NULL;
	g_autofree char *portstr = g_strdup_printf("%u", port);
	if (tm_sender_new(sl, NULL, &cfg, &s, &error) < 0 ||
	    tm_sender_set_live(s, &live, &error) < 0 ||
	    tm_sender_connect(s, addr, portstr, &error) < 0)
		die("connect", error);
	uint64_t npages = len / PAGE;
	g_autofree uint64_t *all = g_new(uint64_t, (npages + 63) / 64);
	memset(all, 0xff, (npages + 63) / 64 * 8);
	if (tm_sender_queue_bitmap(s, 0, all, 0, npages, &error) < 0 || tm_sender_sync(s, &error) < 0)
		die("round 1", error);
	/* 5% of each page: one 8-byte word in every 20, at random within them. */
	for (uint64_t p = 0; p < npages; p++)
		for (unsigned w = 0; w < PAGE / 8; w += 20) {
			uint64_t v = rnd() | 1;
			unsigned at = w + (unsigned)(rnd() % MIN(20u, PAGE / 8 - w));
			memcpy(src + p * PAGE + (size_t)at * 8, &v, 8);
		}
	tm_stats st;
	tm_sender_get_stats(s, &st);
	uint64_t before = st.wire_bytes;
	int64_t t0 = g_get_monotonic_time();
	if (tm_sender_queue_bitmap(s, 0, all, 0, npages, &error) < 0 || tm_sender_sync(s, &error) < 0)
		die("round 2", error);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	tm_sender_get_stats(s, &st);
	tm_delta_stats sum = { 0 };
	GString *reasons = g_string_new("");
	for (int i = 0; i < channels; i++) {
		tm_delta_stats d = { .size = sizeof(d) };
		if (tm_sender_get_delta_stats(s, (unsigned)i, &d) < 0)
			die("delta stats", NULL);
		sum.pages += d.pages;
		sum.skipped += d.skipped;
		sum.windows_delta += d.windows_delta;
		sum.windows_whole += d.windows_whole;
		g_string_append_printf(reasons, "%s%u", i ? "," : "", d.reason);
	}
	if (tm_sender_finish(s, &error) < 0)
		die("finish", error);
	g_thread_join(th);
	if (t.ret < 0)
		die("receiver", t.error);
	printf("round2_pages=%" G_GUINT64_FORMAT " round2_wire_bytes=%" G_GUINT64_FORMAT
	       " round2_seconds=%.3f delta_pages=%" G_GUINT64_FORMAT " skipped=%" G_GUINT64_FORMAT
	       " windows_delta=%" G_GUINT64_FORMAT " windows_whole=%" G_GUINT64_FORMAT
	       " reasons=%s\n",
	       npages, st.wire_bytes - before, secs, sum.pages, sum.skipped, sum.windows_delta,
	       sum.windows_whole, reasons->str);
	g_string_free(reasons, TRUE);
	int same = memcmp(src, dst, len) == 0;
	if (!same)
		fprintf(stderr, "delta-rounds: the destination differs from the source\n");
	close(t.listen_fd);
	tm_receiver_free(t.r);
	tm_sender_free(s);
	tm_ram_layout_free(sl);
	tm_ram_layout_free(dl);
	return same ? 0 : 1;
}
