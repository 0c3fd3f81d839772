/* SPDX-License-Identifier: MIT */
/*
 * The TLS layer alone (transport/tls) against plaintext, side by side, over loopback TCP: N
 * channels, each a sender thread and a receiver thread in this process, moving packets shaped
 * like tagmig's DATA packets (a header, page data, a tag buffer) through tm_chan_send/recv. No
 * sessions, no codec: what the layer costs and what it reaches. The AES-128-GCM rate of one core
 * (what `openssl speed -evp aes-128-gcm` measures at 16 KiB) is printed as the ceiling.
 *
 *   tls-layer [--gib N] [--channels 1,2,4] [--backend sockets|io_uring|all] [--shape runs|pages|all]
 *             [--tls both|tls|plain] [--repeat N]
 *
 * --tls tls (or plain) runs one side only, e.g. to profile it (perf record); --repeat runs every
 * configuration N times, alternating plaintext and TLS, for medians on a noisy machine.
 *
 * Shapes: "runs" = 64-byte header + one 512 KiB run of pages + 32 KiB of tags (the sender merges
 * adjacent pages into one iovec); "pages" = header + 128 separate 4 KiB pages + tags (every record
 * spans iovecs: the gathering path). Output: CSV rows, one per configuration.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/testing/tcp-pair.h"
#include "session/channel.h"
#include "transport/tls/tls.h"
#include "transport/transport.h"

#define PKT_PAGES 128u
#define PAGE 4096u
#define HDR 64u
#define TAGS (PKT_PAGES * PAGE / 16u)
#define RING (64u << 20) /* source and destination memory per channel */

typedef struct chan_run {
	tm_chan ch;
	bool sender;
	bool pages; /* shape */
	uint64_t bytes;
	uint8_t *mem;
	int r;
	GError *err;
	GThread *th;
	int64_t end_us;
} chan_run;

static GMutex go_lock;
static GCond go_cond;
static bool go;

static unsigned build_iov(struct iovec *iov, uint8_t *mem, uint64_t pkt, bool pages,
			  uint8_t *hdr, uint8_t *tags)
{
	unsigned n = 0;
	/* Packets walk through the ring; the "pages" shape takes every other page. */
	size_t span = (size_t)PKT_PAGES * PAGE * (pages ? 2 : 1);
	uint8_t *base = mem + (pkt * span) % (RING - span + 1) / PAGE * PAGE;

	iov[n++] = (struct iovec){ hdr, HDR };
	if (pages) {
		for (unsigned i = 0; i < PKT_PAGES; i++)
			iov[n++] = (struct iovec){ base + 2 * i * PAGE, PAGE };
	} else {
		iov[n++] = (struct iovec){ base, (size_t)PKT_PAGES * PAGE };
	}
	iov[n++] = (struct iovec){ tags, TAGS };
	return n;
}

static gpointer chan_fn(gpointer p)
{
	chan_run *c = p;
	struct iovec iov[PKT_PAGES + 2];
	uint8_t hdr[HDR] = { 0 };
	g_autofree uint8_t *tags = g_malloc0(TAGS);
	const size_t len = HDR + (size_t)PKT_PAGES * PAGE + TAGS;

	g_mutex_lock(&go_lock);
	while (!go)
		g_cond_wait(&go_cond, &go_lock);
	g_mutex_unlock(&go_lock);
	for (uint64_t pkt = 0; pkt * len < c->bytes; pkt++) {
		unsigned n = build_iov(iov, c->mem, pkt, c->pages, hdr, tags);
		c->r = c->sender ? tm_chan_send(&c->ch, iov, n, len, &c->err)
				 : tm_io_recv(c->ch.io, iov, n, len);
		if (c->r < 0)
			break;
	}
	c->end_us = tm_now_us();
	return NULL;
}

static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

typedef struct hs_arg {
	tm_tls_ctx *ctx;
	tm_chan *ch;
	int r;
	GError *err;
} hs_arg;

static gpointer hs_fn(gpointer p)
{
	hs_arg *h = p;
	h->r = tm_tls_wrap(h->ctx, &h->ch->io, &h->err);
	return NULL;
}

static void run(const tm_transport_ops *ops, bool tls, unsigned channels, bool pages,
		uint64_t total, tm_tls_ctx *cctx, tm_tls_ctx *sctx, uint8_t **mem,
		const char *host, const char *kernel)
{
	chan_run *c = g_new0(chan_run, 2 * channels);
	int64_t hs_us = 0;
	tm_io_config ioc = { .timeout_ms = 60000, .depth = 1 };

	for (unsigned i = 0; i < channels; i++) {
		int a, b;
		g_autoptr(GError) err = NULL;
		if (tcp_pair(&a, &b, &err) < 0)
			g_error("%s", err->message);
		chan_run *s = &c[2 * i], *r = &c[2 * i + 1];
		if (tm_chan_open(&s->ch, a, i, ops, &ioc, &err) < 0 ||
		    tm_chan_open(&r->ch, b, i, ops, &ioc, &err) < 0)
			g_error("%s", err->message);
		s->sender = true;
		s->pages = r->pages = pages;
		s->bytes = r->bytes = total / channels;
		s->mem = mem[2 * i];
		r->mem = mem[2 * i + 1];
		if (tls) {
			/* channel 0 first: the others resume its session */
			int64_t t0 = tm_now_us();
			hs_arg h = { sctx, &r->ch, 0, NULL };
			GThread *th = g_thread_new("hs", hs_fn, &h);
			if (tm_tls_wrap(cctx, &s->ch.io, &err) < 0)
				g_error("%s", err->message);
			g_thread_join(th);
			if (h.r < 0)
				g_error("%s", h.err->message);
			hs_us += tm_now_us() - t0;
		}
	}
	go = false;
	for (unsigned i = 0; i < 2 * channels; i++)
		c[i].th = g_thread_new("chan", chan_fn, &c[i]);
	double cpu0 = cpu_seconds();
	int64_t t0 = tm_now_us();
	g_mutex_lock(&go_lock);
	go = true;
	g_cond_broadcast(&go_cond);
	g_mutex_unlock(&go_lock);
	int64_t end = t0;
	uint64_t moved = 0;
	for (unsigned i = 0; i < 2 * channels; i++) {
		g_thread_join(c[i].th);
		if (c[i].r < 0)
			g_error("channel %u: %s", i / 2,
				c[i].err ? c[i].err->message : g_strerror(-c[i].r));
		end = MAX(end, c[i].end_us);
		if (!c[i].sender) {
			const size_t len = HDR + (size_t)PKT_PAGES * PAGE + TAGS;
			moved += (c[i].bytes + len - 1) / len * len;
		}
	}
	double cpu = cpu_seconds() - cpu0;
	double secs = (double)(end - t0) / 1e6;
	double gib = (double)moved / (double)(1ull << 30);
	const char *cipher = tls ? tm_tls_cipher(c[0].ch.io) : "none";
	for (unsigned i = 0; i < 2 * channels; i++)
		tm_chan_close(&c[i].ch); /* sends close_notify */
	printf("%s,%s,%s,%u,%s,%s,%s,%.3f,%.3f,%.2f,%.2f,%.1f\n", host, kernel, ops->name, channels,
	       tls ? "tls1.3" : "plain", cipher, pages ? "pages" : "runs", gib, secs, gib / secs,
	       cpu / gib, (double)hs_us / 1000.0);
	fflush(stdout);
	g_free(c);
}

/* One core's AES-128-GCM rate on 16 KiB blocks, like `openssl speed -evp aes-128-gcm`. */
static double gcm_ceiling(void)
{
	static uint8_t key[16], iv[12], tag[16];
	g_autofree uint8_t *in = g_malloc0(16384), *out = g_malloc(16384 + 16);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	uint64_t bytes = 0;
	int64_t t0 = tm_now_us(), t;
	int n;

	EVP_EncryptInit_ex(ctx, EVP_aes_128_gcm(), NULL, key, iv);
	do {
		for (int i = 0; i < 256; i++) {
			EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv);
			EVP_EncryptUpdate(ctx, out, &n, in, 16384);
			EVP_EncryptFinal_ex(ctx, out + n, &n);
			EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag);
			bytes += 16384;
		}
		t = tm_now_us();
	} while (t - t0 < 500000);
	EVP_CIPHER_CTX_free(ctx);
	return (double)bytes / (double)(t - t0) * 1e6 / (double)(1ull << 30);
}

int main(int argc, char **argv)
{
	double gib = 1.0;
	g_autofree char *chans = g_strdup("1,2,4");
	g_autofree char *backend = g_strdup("all");
	g_autofree char *shape = g_strdup("all");
	g_autofree char *creds = NULL;
	g_autofree char *sides = g_strdup("both");
	int repeat = 1;
	GOptionEntry entries[] = {
		{ "gib", 0, 0, G_OPTION_ARG_DOUBLE, &gib, "GiB per configuration (1)", "N" },
		{ "channels", 0, 0, G_OPTION_ARG_STRING, &chans, "channel counts (1,2,4)", "LIST" },
		{ "backend", 0, 0, G_OPTION_ARG_STRING, &backend, "sockets, io_uring or all", "B" },
		{ "shape", 0, 0, G_OPTION_ARG_STRING, &shape, "runs, pages or all", "S" },
		{ "tls", 0, 0, G_OPTION_ARG_STRING, &sides, "both, tls or plain (both)", "S" },
		{ "repeat", 0, 0, G_OPTION_ARG_INT, &repeat, "runs of each configuration (1)", "N" },
		{ "creds", 0, 0, G_OPTION_ARG_FILENAME, &creds,
		  "credentials directory (default: made with make-tls-creds.sh)", "DIR" },
		{ NULL },
	};
	g_autoptr(GOptionContext) oc = g_option_context_new("- the TLS layer against plaintext");
	g_autoptr(GError) err = NULL;
	g_option_context_add_main_entries(oc, entries, NULL);
	if (!g_option_context_parse(oc, &argc, &argv, &err))
		g_error("%s", err->message);

	g_autofree char *tmp = NULL;
	if (!creds) {
		tmp = g_dir_make_tmp("tagmig-bench-tls-XXXXXX", NULL);
		creds = g_build_filename(tmp, "creds", NULL);
		g_autofree char *script = g_build_filename(TAGMIG_SOURCE_ROOT, "scripts",
							   "make-tls-creds.sh", NULL);
		const char *av[] = { "/bin/sh", script, creds, "localhost", NULL };
		int status;
		if (!g_spawn_sync(NULL, (char **)av, NULL, G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL,
				  NULL, NULL, &status, &err) ||
		    !g_spawn_check_wait_status(status, &err))
			g_error("make-tls-creds.sh: %s", err->message);
	}
	g_autoptr(tm_tls_ctx) cctx = NULL;
	g_autoptr(tm_tls_ctx) sctx = NULL;
	if (tm_tls_ctx_new(TM_TLS_CLIENT, creds, "localhost", &cctx, &err) < 0 ||
	    tm_tls_ctx_new(TM_TLS_SERVER, creds, NULL, &sctx, &err) < 0)
		g_error("%s", err->message);
	/* a tool: it maps the environment onto the tuning, as tagmig's tools/env.c does */
	tm_tuning tune = {
		.tls_openssl_records = g_strcmp0(g_getenv("TAGMIG_TLS_RECORDS"), "openssl") == 0,
		.no_ktls = g_strcmp0(g_getenv("TAGMIG_KTLS"), "0") == 0,
	};
	tm_tls_ctx_tune(cctx, &tune);
	tm_tls_ctx_tune(sctx, &tune);

	struct utsname u;
	uname(&u);
	char host[256];
	gethostname(host, sizeof(host));
	host[sizeof(host) - 1] = 0;
	printf("# %s\n", tm_tls_ctx_ktls_reason(cctx));
	printf("# AES-128-GCM, 16 KiB blocks, one core: %.2f GiB/s (the crypto ceiling)\n",
	       gcm_ceiling());
	printf("host,kernel,backend,channels,tls,cipher,shape,gib,seconds,gib_per_s,"
	       "cpu_s_per_gib,handshake_ms\n");

	g_auto(GStrv) clist = g_strsplit(chans, ",", -1);
	unsigned maxc = 1;
	for (char **s = clist; *s; s++)
		maxc = MAX(maxc, (unsigned)atoi(*s));
	uint8_t **mem = g_new0(uint8_t *, 2 * maxc);
	for (unsigned i = 0; i < 2 * maxc; i++) {
		mem[i] = g_malloc(RING);
		for (size_t j = 0; j < RING; j += 8) /* random-looking data, touched once */
			*(uint64_t *)(mem[i] + j) = (j * 0x9e3779b97f4a7c15ull) ^ i;
	}
	const tm_transport_ops *backends[] = { &tm_transport_socket, &tm_transport_io_uring };
	for (size_t b = 0; b < G_N_ELEMENTS(backends); b++) {
		const tm_transport_ops *ops = backends[b];
		if (strcmp(backend, "all") != 0 && strcmp(backend, ops->name) != 0)
			continue;
		g_autoptr(GError) why = NULL;
		if (ops->probe && ops->probe(&why) < 0) {
			printf("# %s: skipped: %s\n", ops->name, why->message);
			continue;
		}
		for (int p = 0; p < 2; p++) {
			if (strcmp(shape, "all") != 0 && strcmp(shape, p ? "pages" : "runs") != 0)
				continue;
			for (char **s = clist; *s; s++) {
				unsigned n = (unsigned)atoi(*s);
				if (n == 0 || n > maxc)
					continue;
				for (int k = 0; k < repeat; k++) {
					for (int tls = 0; tls < 2; tls++) {
						if (strcmp(sides, "both") != 0 &&
						    strcmp(sides, tls ? "tls" : "plain") != 0)
							continue;
						run(ops, tls, n, p,
						    (uint64_t)(gib * (1ull << 30)), cctx, sctx,
						    mem, host, u.release);
					}
				}
			}
		}
	}
	for (unsigned i = 0; i < 2 * maxc; i++)
		g_free(mem[i]);
	g_free(mem);
	tm_tls_stats st;
	tm_tls_ctx_get_stats(cctx, &st);
	printf("# handshakes: %" G_GUINT64_FORMAT " full, %" G_GUINT64_FORMAT " resumed\n",
	       st.full_handshakes, st.resumed_handshakes);
	if (tmp) {
		const char *names[] = { "ca-cert.pem", "ca-key.pem", "server-cert.pem",
					"server-key.pem", "client-cert.pem", "client-key.pem" };
		for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
			g_autofree char *f = g_build_filename(creds, names[i], NULL);
			unlink(f);
		}
		rmdir(creds);
		rmdir(tmp);
	}
	return 0;
}
