/* SPDX-License-Identifier: MIT */
/*
 * Records real sessions as inputs of fuzz-session: a real sender and a real receiver (public API,
 * sockets backend) talk through a proxy per connection, and what the sender writes is kept in
 * fuzz-session's input format (fuzz-session.c), interleaved in the order it arrived. Usage:
 * gen-session OUT-DIR (normally tests/fuzz/corpus); writes OUT-DIR/session/. Built, never run by
 * the tests; rerun after a wire change (the recordings differ run to run only in the order
 * of interleaving and in session ids).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "codec/compress.h"
#include "common/testing/tcp-pair.h"
#include "tagmig/ram.h"
#include "tagmig/session.h"
#include "tagmig/tagstore.h"

#define MAX_CONNS 5u

typedef struct {
	GMutex lock;
	GByteArray *out;
} recording;

typedef struct {
	int from, to;
	uint8_t conn;
	recording *rec; /* NULL: the receiver's direction, not recorded */
} pipe_arg;

static void *pipe_thread(void *arg)
{
	pipe_arg *p = arg;
	uint8_t buf[16384];

	for (;;) {
		ssize_t n = read(p->from, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (p->rec) {
			uint8_t hdr[3] = { p->conn, (uint8_t)(n >> 8), (uint8_t)n };

			g_mutex_lock(&p->rec->lock);
			g_byte_array_append(p->rec->out, hdr, 3);
			g_byte_array_append(p->rec->out, buf, (guint)n);
			g_mutex_unlock(&p->rec->lock);
		}
		for (ssize_t done = 0; done < n;) {
			ssize_t w = send(p->to, buf + done, (size_t)(n - done), MSG_NOSIGNAL);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return NULL;
			done += w;
		}
	}
	shutdown(p->to, SHUT_WR);
	return NULL;
}

typedef struct {
	unsigned tags;
	unsigned n;
	int fds[MAX_CONNS];
	int result;
} recv_arg;

static void *recv_thread(void *arg)
{
	recv_arg *a = arg;
	tm_receiver_config cfg = { .io_backend = "sockets", .timeout_ms = 10000, .ram_zeroed = true };
	g_autoptr(GError) error = NULL;
	g_autoptr(tm_ram_layout) layout = NULL;
	tm_tag_store *tags = NULL;
	tm_receiver *r = NULL;
	void *host[2] = { NULL, NULL };

	a->result = tm_receiver_new(&cfg, &r, &error);
	if (!a->result)
		a->result = tm_receiver_attach(r, a->fds, a->n, &error);
	if (!a->result) {
		const tm_ram_layout *ann = tm_receiver_announced_layout(r);

		tm_ram_layout_new(&layout);
		for (unsigned i = 0; i < tm_ram_layout_block_count(ann); i++) {
			tm_ram_block_info b;

			tm_ram_layout_block(ann, i, &b);
			if (posix_memalign(&host[i], b.page_size, b.length))
				g_error("posix_memalign");
			memset(host[i], 0, b.length);
			tm_ram_layout_add_block(layout, b.name, host[i], b.length, b.page_size,
						b.guest_base, NULL);
		}
		if (a->tags)
			tm_tag_store_new(&tm_tag_store_soft, layout, NULL, &tags, NULL);
		a->result = tm_receiver_start(r, layout, tags, &error);
	}
	while (!a->result && (a->result = tm_receiver_wait(r, &error)) == 1) {
		tm_state_info info;
		while ((a->result = tm_receiver_next_state(r, &info, &error)) == 1) {
			g_autofree uint8_t *buf = g_malloc(info.length + 1);
			if ((a->result = tm_receiver_read_state(r, buf, info.length, &error)) < 0)
				break;
		}
	}
	if (a->result)
		g_printerr("gen-session: receiver: %s\n", error ? error->message : "failed");
	tm_receiver_free(r);
	tm_tag_store_free(tags);
	free(host[0]);
	free(host[1]);
	return NULL;
}

/* Page contents the receiver sees in every encoding: data, zero pages, zero pages with tags. */
static void fill(uint8_t *ram, size_t len, uint32_t page_size, uint8_t *tags, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		ram[i] = (uint8_t)(i * 131 + seed);
	for (size_t p = 0; p < len / page_size; p += 3)
		memset(ram + p * page_size, 0, page_size);
	if (tags)
		for (size_t g = 0; g < len / 16; g++)
			tags[g] = (uint8_t)((g / 7 + seed) & 0xf);
}

/* compress: tm_compress_mode of a protocol 2 sender (0: the default, auto, raw on loopback);
 * delta: with a delta cache, so the second round's pages go as DELTA. */
static void record(const char *dir, const char *name, unsigned channels, unsigned wire_version,
		   bool with_tags, uint32_t compress, bool delta)
{
	recording rec = { .out = g_byte_array_new() };
	pipe_arg pipes[2 * MAX_CONNS];
	pthread_t threads[2 * MAX_CONNS], rt;
	recv_arg ra = { .tags = with_tags };
	unsigned n = channels + (wire_version == 2);
	int sfds[MAX_CONNS];
	g_autoptr(GError) error = NULL;
	g_autoptr(tm_ram_layout) layout = NULL;
	tm_tag_store *tags = NULL;
	tm_sender *s = NULL;
	tm_sender_config cfg = { .channels = channels, .io_backend = "sockets",
				 .packet_size = 65536, .chunk_size = 65536, .timeout_ms = 10000 };
	static const struct { const char *name; uint64_t len; uint32_t page; } blocks[] = {
		{ "ram0", 16 * 4096, 4096 },
		{ "ram1", 2 * 65536, 65536 },
	};
	void *host[2];

	ra.n = n;
	g_mutex_init(&rec.lock);
	for (unsigned i = 0; i < n; i++) {
		int p1, p2;

		if (tcp_pair(&sfds[i], &p1, &error) < 0 || tcp_pair(&p2, &ra.fds[i], &error) < 0)
			g_error("tcp_pair: %s", error->message);
		pipes[2 * i] = (pipe_arg){ .from = p1, .to = p2, .conn = (uint8_t)i, .rec = &rec };
		pipes[2 * i + 1] = (pipe_arg){ .from = p2, .to = p1 };
		pthread_create(&threads[2 * i], NULL, pipe_thread, &pipes[2 * i]);
		pthread_create(&threads[2 * i + 1], NULL, pipe_thread, &pipes[2 * i + 1]);
	}
	pthread_create(&rt, NULL, recv_thread, &ra);

	tm_ram_layout_new(&layout);
	for (unsigned i = 0; i < 2; i++) {
		if (posix_memalign(&host[i], blocks[i].page, blocks[i].len))
			g_error("posix_memalign");
		tm_ram_layout_add_block(layout, blocks[i].name, host[i], blocks[i].len,
					blocks[i].page, (uint64_t)i << 32, NULL);
	}
	if (with_tags && tm_tag_store_new(&tm_tag_store_soft, layout, NULL, &tags, &error) < 0)
		g_error("%s", error->message);
	for (unsigned i = 0; i < 2; i++)
		fill(host[i], blocks[i].len, blocks[i].page,
		     tags ? tm_tag_store_soft_array(tags, i) : NULL, i);

	if (delta && compress == TM_COMPRESS_ZSTD) {
		/* Pages zstd does not shrink, so that a delta beats the page compressed. */
		uint64_t x = 0x9e3779b97f4a7c15ull;
		for (size_t i = 0; i < blocks[0].len; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			((uint8_t *)host[0])[i] = (uint8_t)x;
		}
	}
	if (tm_sender_new(layout, tags, &cfg, &s, &error) < 0)
		g_error("%s", error->message);
	if (wire_version == 1 || compress || delta) {
		tm_live_config live = { .size = sizeof(live), .wire_version = wire_version,
					.compress = compress,
					.delta_cache_bytes = delta ? 1u << 20 : 0,
					.delta_policy = TM_DELTA_ALWAYS }; /* deltas on loopback */

		if (tm_sender_set_live(s, &live, &error) < 0)
			g_error("%s", error->message);
	}
	uint64_t all = ~0ull;
	if (tm_sender_attach(s, sfds, n, &error) < 0 ||
	    tm_sender_queue_bitmap(s, 0, &all, 0, 16, &error) < 0 ||
	    tm_sender_queue_bitmap(s, 1, &all, 0, 2, &error) < 0 || tm_sender_sync(s, &error) < 0)
		g_error("sender: %s", error->message);
	/* A second round: a few pages again, one of them changed. */
	uint64_t again[] = { 1, 2, 9 };
	((uint8_t *)host[0])[2 * 4096] ^= 0x5a;
	/* With zstd agreed too, page 9 changes 1 KiB in a pattern: its delta goes as a ZDELTA. */
	if (delta && compress == TM_COMPRESS_ZSTD)
		for (size_t i = 0; i < 1024; i++)
			((uint8_t *)host[0])[9 * 4096 + 512 + i] ^= (uint8_t)(1 + i % 4);
	if (tm_sender_guest_stopped(s, &error) < 0 || tm_sender_queue_pages(s, 0, again, 3, &error) < 0)
		g_error("sender: %s", error->message);
	/* Protocol 2: device state, one section of two chunks (packet_size 64 KiB) and an empty one. */
	static uint8_t dev[65536 + 100];
	for (size_t i = 0; i < sizeof(dev); i++)
		dev[i] = (uint8_t)(i * 7);
	if (wire_version == 2 && (tm_sender_put_state(s, "cpu0", dev, 100, 0, &error) < 0 ||
				  tm_sender_put_state(s, "dev", dev, sizeof(dev), 0, &error) < 0 ||
				  tm_sender_put_state(s, "empty", NULL, 0, 0, &error) < 0))
		g_error("sender: %s", error->message);
	if (tm_sender_finish(s, &error) < 0)
		g_error("sender: %s", error->message);
	tm_sender_free(s);
	pthread_join(rt, NULL);
	for (unsigned i = 0; i < 2 * n; i++)
		pthread_join(threads[i], NULL);
	for (unsigned i = 0; i < n; i++) {
		close(pipes[2 * i].from);
		close(pipes[2 * i].to);
	}
	if (ra.result)
		g_error("the recorded session failed");

	g_autofree char *path = g_build_filename(dir, name, NULL);
	uint8_t first = (uint8_t)(n - 1);
	g_byte_array_prepend(rec.out, &first, 1);
	if (!g_file_set_contents(path, (const char *)rec.out->data, rec.out->len, &error))
		g_error("%s", error->message);
	printf("%s: %u connections, %u bytes\n", path, n, rec.out->len);
	g_byte_array_unref(rec.out);
	tm_tag_store_free(tags);
	free(host[0]);
	free(host[1]);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: gen-session OUT-DIR\n");
		return 2;
	}
	g_autofree char *dir = g_build_filename(argv[1], "session", NULL);
	if (g_mkdir_with_parents(dir, 0755) < 0)
		g_error("cannot create %s", dir);
	record(dir, "v1-1ch-tags", 1, 1, true, 0, false);
	record(dir, "v2-2ch-tags", 2, 2, true, 0, false);
	record(dir, "v2-1ch-notags", 1, 2, false, 0, false);
	/* ZDATA through the whole receiver: each codec where it is built. */
	if (tm_zcodec_available() & (1u << TM_ZCODEC_LZ4))
		record(dir, "v2-2ch-tags-lz4", 2, 2, true, TM_COMPRESS_LZ4, false);
	if (tm_zcodec_available() & (1u << TM_ZCODEC_ZSTD))
		record(dir, "v2-1ch-tags-zstd", 1, 2, true, TM_COMPRESS_ZSTD, false);
	/* DELTA (and a refusal-free DELTA_NACK path) through the whole receiver. */
	record(dir, "v2-2ch-tags-delta", 2, 2, true, TM_COMPRESS_NONE, true);
	record(dir, "v2-2ch-tags-zdelta", 2, 2, true, TM_COMPRESS_ZSTD, true);
	return 0;
}
