/* SPDX-License-Identifier: MIT */
/*
 * The sender's side of compression (compress.h): per channel a context made once after the
 * handshake, the choice per packet (fixed, or the auto policy fed with what the channel
 * achieves), the packet turned into a ZDATA when that made its page data smaller, and the
 * statistics (tm_sender_get_compress_stats).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/error-internal.h"
#include "session/compress.h"
#include "session/delta.h"
#include "session/session-internal.h"
#include "tagmig/error.h"

struct tm_zsend {
	/* read-only after setup */
	tm_zctx *z;          /* NULL: no codec agreed */
	uint32_t mode;       /* tm_compress_mode in force */
	int level;
	uint32_t agreed;
	/* worker-local */
	tm_zpolicy pol;
	int64_t last_ns;     /* the previous packet, 0 after idle */
	int64_t win_cpu_ns;  /* the worker's CPU time when the window began */
	int64_t win_wait_ns; /* its time waiting for a CPU then (-1: not known) */
	int sched_fd;        /* the worker's schedstat; -1 not open yet, -2 none */
	bool no_tcp_info;    /* the channel has no TCP delivery rate */
	uint32_t samples;    /* taken so far: where in its packet the next one starts */
	/* statistics: relaxed atomics (any thread reads) */
	uint64_t packets[TM_ZCODEC_COUNT];
	uint64_t data_bytes, wire_data_bytes, cpu_ns, link_bps;
	uint32_t last_codec;
	int32_t last_level;
};

static int64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

tm_zsend *tm_zsend_new(const tm_live_config *live, uint32_t agreed, uint32_t packet_size)
{
	tm_zsend *z = g_new0(tm_zsend, 1);

	z->agreed = agreed & TM_FEATURES_COMPRESS;
	z->mode = z->agreed ? live->compress : TM_COMPRESS_NONE;
	if (z->mode == TM_COMPRESS_DEFAULT)
		z->mode = TM_COMPRESS_AUTO;
	z->level = live->compress_level;
	/* packet_size was checked by the HELLO: a valid context size. */
	if (z->agreed && tm_zctx_new(packet_size, &z->z, NULL) < 0)
		z->mode = TM_COMPRESS_NONE; /* out of memory for it: send raw */
	tm_zpolicy_init(&z->pol, z->agreed);
	z->sched_fd = -1;
	return z;
}

void tm_zsend_free(tm_zsend *z)
{
	if (!z)
		return;
	tm_zctx_free(z->z);
	if (z->sched_fd >= 0)
		close(z->sched_fd);
	g_free(z);
}

void tm_zsend_idle(send_chan *c)
{
	if (c->z) {
		c->z->last_ns = 0;
		tm_zpolicy_idle(&c->z->pol);
	}
}

/*
 * The worker's CPU time and its time spent runnable but waiting for a CPU (ns), read once per
 * window: the scheduler's per-thread statistics (/proc/thread-self/schedstat: "on-CPU waiting
 * timeslices"), opened by the worker itself on its first packet. Where that file is missing
 * (no CONFIG_SCHED_INFO), the thread's CPU clock and an unknown wait (-1).
 */
static void sched_now(tm_zsend *z, int64_t *ret_cpu, int64_t *ret_wait)
{
	char buf[96];

	if (z->sched_fd == -1) {
		z->sched_fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
		if (z->sched_fd < 0)
			z->sched_fd = -2;
	}
	if (z->sched_fd >= 0) {
		ssize_t n = pread(z->sched_fd, buf, sizeof(buf) - 1, 0);
		uint64_t run, wait;
		if (n > 0) {
			buf[n] = '\0';
			if (sscanf(buf, "%" SCNu64 " %" SCNu64, &run, &wait) == 2) {
				*ret_cpu = (int64_t)run;
				*ret_wait = (int64_t)wait;
				return;
			}
		}
		close(z->sched_fd); /* gone (another thread's, ended) or unreadable: the clock */
		z->sched_fd = -2;
	}
	*ret_cpu = clock_ns(CLOCK_THREAD_CPUTIME_ID);
	*ret_wait = -1;
}

/*
 * The auto policy's bookkeeping after a packet: per packet only the wall clock (vDSO) and the
 * CPU the compression took; per window the worker's CPU and wait (sched_now) and TCP's
 * delivery rate (one getsockopt).
 */
static void account(send_chan *c, tm_zsend *z, const tm_packet *pkt, uint64_t wire,
		    int64_t zcpu, int64_t now)
{
	/* Sent by sync's or finish's caller (tm_send_direct_*): a SYNC, or pages again after a
	 * reconnect or a refused delta. The window is the worker's CPU and wait, and
	 * /proc/thread-self is whichever thread opens it first: not measured. */
	if (c->direct)
		return;
	if (!z->last_ns)
		sched_now(z, &z->win_cpu_ns, &z->win_wait_ns); /* a window begins */
	int64_t busy = z->last_ns ? now - z->last_ns : 0;
	if (pkt ? tm_zpolicy_packet(&z->pol, pkt->data_len, wire, zcpu, busy, 0)
		: tm_zpolicy_other(&z->pol, wire, busy)) {
		int64_t cpu, wait;
		sched_now(z, &cpu, &wait);
		tm_zpolicy_sched(&z->pol, cpu - z->win_cpu_ns,
				 wait >= 0 && z->win_wait_ns >= 0 ? wait - z->win_wait_ns : -1);
		z->win_cpu_ns = cpu;
		z->win_wait_ns = wait;
		/* TCP's own figure; without it (not TCP, an old kernel) the window's. */
		uint64_t rate = 0;
		bool app_limited = false;
		if (!z->no_tcp_info && tm_net_delivery_rate(c->ch.fd, &rate, &app_limited) < 0)
			z->no_tcp_info = true;
		if (rate > 0)
			tm_zpolicy_link(&z->pol, true, rate, app_limited);
		else
			tm_zpolicy_link(&z->pol, false, 0, false);
		__atomic_store_n(&z->link_bps, (uint64_t)z->pol.link, __ATOMIC_RELAXED);
		tm_dsend_window(c, &z->pol); /* the delta choice, once per window (delta-send.c) */
	}
	/* A rate limit (max-bandwidth) is a slower link: each channel gets its share. */
	tm_zpolicy_cap(&z->pol, (double)tm_ratelimit_rate(&c->s->rl) / c->s->nch);
}

double tm_zsend_ratio(const send_chan *c)
{
	const tm_zsend *z = c->z;

	if (!z || z->mode == TM_COMPRESS_NONE)
		return 1.0;
	if (z->mode == TM_COMPRESS_AUTO)
		return z->pol.known[z->pol.cur] ? MIN(z->pol.ratio[z->pol.cur], 1.0) : 1.0;
	uint64_t raw = z->data_bytes, wire = z->wire_data_bytes; /* this worker writes them */
	return raw ? MIN((double)wire / (double)raw, 1.0) : 1.0;
}

static tm_zchoice choose(const tm_zsend *z)
{
	switch (z->mode) {
	case TM_COMPRESS_AUTO: return tm_zpolicy_choice(&z->pol);
	case TM_COMPRESS_LZ4: return (tm_zchoice){ TM_ZCODEC_LZ4, 0 };
	case TM_COMPRESS_ZSTD: return (tm_zchoice){ TM_ZCODEC_ZSTD, (int8_t)z->level };
	default: return (tm_zchoice){ TM_ZCODEC_NONE, 0 };
	}
}

int64_t tm_zsend_packet(send_chan *c, tm_packet *pkt, struct iovec **iov, unsigned *count,
			size_t *len, GError **error)
{
	tm_zsend *z = c->z;
	int64_t now = clock_ns(CLOCK_MONOTONIC), zcpu = 0;
	tm_zchoice ch = choose(z);
	ssize_t zlen = 0;

	int k = z->mode == TM_COMPRESS_AUTO && pkt->data_len ? tm_zpolicy_sample_due(&z->pol) : -1;
	if (c->pc.switched) {
		/* Postcopy background pages go raw: the destination places them from a bounce
		 * buffer, and refuses ZDATA after RAM_END(POSTCOPY) (docs/wire-format.md). */
		ch.codec = TM_ZCODEC_NONE;
		k = -1;
	}
	if (k > 0) {
		/*
		 * A codec not in use, tried on some of the packet's pages (the output is dropped).
		 * Not always its first ones: data laid out in a pattern (an allocator's, or the
		 * bench's mixed image: ten random pages, then two of one byte) would be judged by
		 * one part of it only. Each sample starts 7 windows further on, modulo the places
		 * a window can start in the packet: over a few samples, all of it.
		 */
		tm_zchoice s = z->pol.cand[k];
		int64_t t0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
		uint32_t n = MIN(TM_ZPOLICY_SAMPLE_PAGES, pkt->data_len / pkt->page_size);
		uint32_t at = z->samples++ * 7 * TM_ZPOLICY_SAMPLE_PAGES;
		ssize_t out = tm_packet_compress(pkt, z->z, s.codec, s.level, n, at, NULL);
		int64_t t = clock_ns(CLOCK_THREAD_CPUTIME_ID) - t0;
		__atomic_add_fetch(&z->cpu_ns, (uint64_t)t, __ATOMIC_RELAXED);
		uint64_t raw = (uint64_t)n * pkt->page_size;
		if (out >= 0)
			tm_zpolicy_sample(&z->pol, (unsigned)k, raw, out > 0 ? (uint64_t)out : raw, t);
	}
	if (ch.codec != TM_ZCODEC_NONE && pkt->data_len > 0) {
		g_autoptr(GError) why = NULL;
		int64_t t0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
		zlen = tm_packet_compress(pkt, z->z, ch.codec, ch.level, 0, 0, &why);
		zcpu = clock_ns(CLOCK_THREAD_CPUTIME_ID) - t0;
		__atomic_add_fetch(&z->cpu_ns, (uint64_t)zcpu, __ATOMIC_RELAXED);
		if (zlen < 0) {
			uint64_t first = tm_get32(pkt->hdr + TM_FRAME_HDR_LEN + TM_DATA_HDR_LEN);
			return tm_error_at(error, (int)-zlen, c->ch.id,
					   c->s->hello.blocks[pkt->block].name,
					   first * pkt->page_size, "compressing the packet failed: %s",
					   why->message);
		}
	}
	uint8_t used = zlen > 0 ? ch.codec : TM_ZCODEC_NONE;
	if (zlen > 0) {
		*count = tm_packet_finish_z(pkt, ch.codec, (size_t)zlen, len);
		*iov = pkt->ziov;
	}
	uint64_t wire = zlen > 0 ? (uint64_t)zlen : pkt->data_len;
	tm_count(&z->packets[used], 1);
	tm_count(&z->data_bytes, pkt->data_len);
	tm_count(&z->wire_data_bytes, wire);
	__atomic_store_n(&z->last_codec, used, __ATOMIC_RELAXED);
	__atomic_store_n(&z->last_level, used == TM_ZCODEC_ZSTD ? ch.level : 0, __ATOMIC_RELAXED);
	/* Measured in auto mode, and for the delta choice whenever DELTA was agreed. */
	if (z->mode == TM_COMPRESS_AUTO || c->ds)
		account(c, z, pkt, wire, zcpu, now);
	z->last_ns = now;
	return (int64_t)wire;
}

const tm_zpolicy *tm_zsend_policy(const send_chan *c)
{
	return &c->z->pol;
}

void tm_zsend_other(send_chan *c, uint64_t wire)
{
	tm_zsend *z = c->z;
	int64_t now = clock_ns(CLOCK_MONOTONIC);

	if (!z)
		return;
	account(c, z, NULL, wire, 0, now);
	z->last_ns = now;
}

static void fill_stats(tm_compress_stats *out, uint32_t mode, uint32_t agreed,
		       const uint64_t *packets, uint64_t data, uint64_t wire, uint64_t cpu_ns,
		       uint32_t last_codec, int32_t last_level, uint64_t link_bps)
{
	memset(out, 0, sizeof(*out));
	out->size = sizeof(*out);
	out->mode = mode;
	out->codecs = agreed;
	out->last_codec = last_codec;
	out->last_level = last_level;
	for (unsigned i = 0; i < TM_ZCODEC_COUNT; i++)
		out->packets_by_codec[i] = __atomic_load_n(&packets[i], __ATOMIC_RELAXED);
	out->data_bytes = data;
	out->wire_data_bytes = wire;
	out->ratio = data ? (double)wire / (double)data : 0;
	out->cpu_seconds = (double)cpu_ns / 1e9;
	out->link_bytes_per_sec = link_bps;
}

int tm_zstats_copy(const tm_compress_stats *full, tm_compress_stats *ret)
{
	if (ret->size < 8)
		return -EINVAL;
	uint32_t n = MIN(ret->size, (uint32_t)sizeof(*full));
	memcpy(ret, full, n);
	ret->size = n;
	return 0;
}

void tm_zstats_fill(tm_compress_stats *out, uint32_t mode, uint32_t agreed,
		    const uint64_t *packets, const uint64_t *data, const uint64_t *wire,
		    const uint64_t *cpu_ns, const uint32_t *last_codec, const int32_t *last_level,
		    const uint64_t *link_bps)
{
	fill_stats(out, mode, agreed, packets, __atomic_load_n(data, __ATOMIC_RELAXED),
		   __atomic_load_n(wire, __ATOMIC_RELAXED), __atomic_load_n(cpu_ns, __ATOMIC_RELAXED),
		   last_codec ? __atomic_load_n(last_codec, __ATOMIC_RELAXED) : 0,
		   last_level ? __atomic_load_n(last_level, __ATOMIC_RELAXED) : 0,
		   link_bps ? __atomic_load_n(link_bps, __ATOMIC_RELAXED) : 0);
}

int tm_sender_get_compress_stats(tm_sender *s, unsigned channel, tm_compress_stats *ret)
{
	if (ret->size < 8)
		return -EINVAL;
	if (!tm_sender_wire_version(s))
		return -EBADFD;
	if (channel >= s->nch)
		return -ERANGE;
	tm_zsend *z = __atomic_load_n(&s->chans[channel].z, __ATOMIC_ACQUIRE);
	tm_compress_stats full;
	if (!z) {
		static const uint64_t zero[TM_ZCODEC_COUNT];
		fill_stats(&full, TM_COMPRESS_NONE, 0, zero, 0, 0, 0, 0, 0, 0);
	} else {
		tm_zstats_fill(&full, z->mode, z->agreed, z->packets, &z->data_bytes,
			       &z->wire_data_bytes, &z->cpu_ns, &z->last_codec, &z->last_level,
			       &z->link_bps);
	}
	return tm_zstats_copy(&full, ret);
}
