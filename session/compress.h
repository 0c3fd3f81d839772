/* SPDX-License-Identifier: MIT */
/*
 * Compression of page data in a session (issue 15, docs/design/compression.md): the codecs
 * offered and agreed in the handshake, the sender's per-channel choice of none / lz4 / a zstd
 * level per packet (compress-policy.c: pure, fed with measurements), the sender's packet hook
 * (compress-send.c) and the receiver's ZDATA hooks (compress-recv.c). The wire message is the
 * codec's (codec/zdata.c).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include <glib.h>

#include "codec/codec.h"
#include "codec/compress.h"
#include "tagmig/session.h"

G_BEGIN_DECLS

/* ---- the auto policy (compress-policy.c): no clock, no I/O; the caller measures ---- */

/* What a packet is sent with: codec (TM_ZCODEC_*) and, for zstd, its level. */
typedef struct tm_zchoice {
	uint8_t codec;
	int8_t level;
} tm_zchoice;

#define TM_ZPOLICY_CANDIDATES 4u /* none, lz4, zstd 1, zstd 3 */

/*
 * A channel's auto policy. Per raw byte of page data, choice c takes about
 *     max(k * (cpu_c + ratio_c * s), ratio_c / L)
 * seconds: the worker's CPU (compressing, cpu_c, then handing ratio_c bytes to the kernel, s per
 * wire byte), stretched by k when the worker waits for a CPU it shares, overlapped with the
 * link carrying the packets already handed over (ratio_c / L on a link of L bytes/s: packets
 * in flight keep it busy while the next one is compressed). Raw takes max(k * s, 1 / L). On
 * loopback, where sending is the worker's own CPU (s ~ 1 / L), this is the sum of both; across
 * a slow link the larger. The policy keeps the cheapest, raw unless a codec is clearly (by
 * TM_ZPOLICY_MARGIN) cheaper, from these measurements:
 *  - cpu_c and ratio_c: from every packet sent with c, and for the others from a sample (the
 *    first TM_ZPOLICY_SAMPLE_PAGES pages of every TM_ZPOLICY_SAMPLE_EVERY-th packet, one codec
 *    at a time), so that a codec not in use is known without sending with it;
 *  - per window (TM_ZPOLICY_WINDOW_PACKETS packets and TM_ZPOLICY_WINDOW_NS of busy time): the
 *    worker's thread CPU time and the time it waited for a CPU (tm_zpolicy_sched(); the
 *    kernel's schedstat): k = (CPU + wait) / CPU, and, from windows sent raw, s = CPU outside
 *    compression per wire byte;
 *  - L: at the end of each window, the kernel's delivery rate of the channel's TCP connection
 *    (TCP_INFO): the link's when the window was limited by the link, only a lower bound when it
 *    was limited by the sender: TCP says so (app-limited), or the worker wanted a CPU (ran or
 *    waited for one) for TM_ZPOLICY_LINK_BOUND of the window or more (a worker busy
 *    compressing leaves the congestion window small, and TCP's samples then measure the
 *    worker, not the link). Without TCP_INFO (not a TCP socket): the window's wire bytes per
 *    second, judged the same way.
 * Until the link is known, packets go raw. Idle time (no work) is never measured.
 */
#define TM_ZPOLICY_WINDOW_PACKETS 4u
#define TM_ZPOLICY_WINDOW_NS (20 * 1000 * 1000)
#define TM_ZPOLICY_SAMPLE_EVERY 8u
#define TM_ZPOLICY_SAMPLE_PAGES 8u
#define TM_ZPOLICY_LINK_BOUND 0.8
#define TM_ZPOLICY_MARGIN 0.9

typedef struct tm_zpolicy {
	unsigned ncand;
	tm_zchoice cand[TM_ZPOLICY_CANDIDATES];
	double cpu[TM_ZPOLICY_CANDIDATES];   /* seconds per raw byte */
	double ratio[TM_ZPOLICY_CANDIDATES]; /* wire / raw page data */
	bool known[TM_ZPOLICY_CANDIDATES];
	unsigned cur;           /* index into cand */
	double link;            /* bytes/s, 0: not known yet */
	double cap;             /* the channel's share of a rate limit, bytes/s; 0: none */
	double stretch;         /* k: wall seconds per CPU second the worker gets (>= 1) */
	double send_cpu;        /* s: worker CPU seconds per wire byte outside compression */
	uint64_t packets;
	unsigned next_sample;   /* round-robin position */
	/* the window being measured */
	int64_t win_ns, win_cpu_ns, win_zcpu_ns;
	unsigned win_packets;
	uint64_t win_wire;
	bool win_raw;           /* every packet of the window went raw */
	/* the last window that ended */
	double last_wire_rate;  /* wire bytes/s */
	double last_busy;       /* (thread CPU + wait for a CPU) / wall time */
	int64_t last_ns, last_zcpu_ns;
	uint64_t last_wire;
	bool last_raw;
} tm_zpolicy;

/* Candidates for the agreed features (none always, lz4 and zstd when agreed). */
void tm_zpolicy_init(tm_zpolicy *p, uint32_t features);
/* The choice for the next packet. */
tm_zchoice tm_zpolicy_choice(const tm_zpolicy *p);
/* The candidate to sample on the next packet (compress its first pages aside), or -1. */
int tm_zpolicy_sample_due(tm_zpolicy *p);
/* A sample of candidate k: raw bytes in, out bytes (raw when it did not shrink), CPU ns. */
void tm_zpolicy_sample(tm_zpolicy *p, unsigned k, uint64_t raw, uint64_t out, int64_t cpu_ns);
/*
 * A packet went out with the current choice: raw page data bytes, wire bytes of its page data
 * (compressed or raw), CPU ns spent compressing it (samples included), busy wall ns of the
 * worker since the previous packet (0 after idle) and its thread CPU ns then (0: the caller
 * measures per window instead, with tm_zpolicy_sched()). Returns true when this ended a
 * window: then the caller may report the window's CPU with tm_zpolicy_sched() and reports the
 * link with tm_zpolicy_link(), which may change the choice.
 */
bool tm_zpolicy_packet(tm_zpolicy *p, uint64_t raw, uint64_t wire, int64_t zcpu_ns,
		       int64_t busy_ns, int64_t thread_ns);
/*
 * The window that just ended, as the scheduler saw the worker: thread CPU ns, and ns it waited
 * for a CPU while runnable (-1: not known). Sets k and, for a raw window, s; replaces the
 * thread CPU tm_zpolicy_packet() added up. Call before tm_zpolicy_link().
 */
void tm_zpolicy_sched(tm_zpolicy *p, int64_t cpu_ns, int64_t wait_ns);
/*
 * The link at the end of a window: have_rate false (no TCP_INFO): judge by the window; else the
 * kernel's delivery rate (bytes/s) and whether it was limited by the application.
 */
void tm_zpolicy_link(tm_zpolicy *p, bool have_rate, uint64_t rate, bool app_limited);
/*
 * A packet the codecs did not choose went out (a DELTA, delta-send.c): its wire bytes and the
 * worker's busy wall ns since the previous packet count in the window (never as raw), no
 * codec's ratio. Returns true when it ended a window, as tm_zpolicy_packet().
 */
bool tm_zpolicy_other(tm_zpolicy *p, uint64_t wire, int64_t busy_ns);
/* What the channel can put on the wire (bytes/s: the link as measured, or its share of a rate
 * limit when that is slower); 0 while not known. */
double tm_zpolicy_link_rate(const tm_zpolicy *p);
/* The channel was idle: the window so far is dropped (its time would not be the link's). */
void tm_zpolicy_idle(tm_zpolicy *p);
/*
 * The channel's share of the sender's rate limit (bytes/s on the wire; 0: none): the link is
 * then at most that fast, whatever TCP says, and compression pays sooner. Changes the choice.
 */
void tm_zpolicy_cap(tm_zpolicy *p, double cap);

/* ---- configuration ---- */
/* Checks (and normalizes) compress / compress_level of a sender's tm_live_config. */
int tm_compress_config_check(tm_live_config *c, GError **error);

/* ---- sender (compress-send.c) ---- */
typedef struct tm_zsend tm_zsend;
typedef struct send_chan send_chan;
typedef struct tm_sender tm_sender;

/* HELLO: the codec feature bits the sender offers for its live config and wire version. */
uint32_t tm_zsend_offer(const tm_live_config *live, uint8_t wire);
/* After the handshake, per channel: NULL when no codec was agreed (then no hook runs). */
tm_zsend *tm_zsend_new(const tm_live_config *live, uint32_t agreed, uint32_t packet_size);
void tm_zsend_free(tm_zsend *z);
/*
 * flush_packet's hook, after tm_packet_finish(): chooses, compresses and, when that made the
 * page data smaller, points *iov / *count / *len at the ZDATA message. Worker-local. Returns
 * the page data bytes that go on the wire (compressed or raw), or -errno (a library failure,
 * named with the channel, block and offset).
 */
int64_t tm_zsend_packet(send_chan *c, tm_packet *pkt, struct iovec **iov, unsigned *count,
			size_t *len, GError **error);
/* The worker goes idle (no work queued): the policy's window must not count the wait. */
void tm_zsend_idle(send_chan *c);
/* What the channel's page data is expected to shrink to (wire / raw, 1 when it goes raw or
 * nothing is measured yet): a delta must beat it (delta-send.c). Worker-local. */
double tm_zsend_ratio(const send_chan *c);
/* The channel's policy (its measurements; read by delta-send.c). Worker-local. */
const tm_zpolicy *tm_zsend_policy(const send_chan *c);
/* delta-send.c's DELTA of wire bytes went out: it counts in the policy's window (the link is
 * measured while deltas go too). Worker-local. */
void tm_zsend_other(send_chan *c, uint64_t wire);

/* Statistics (compress-send.c): a snapshot from relaxed-atomic counters (pointers may be NULL
 * for last_codec, last_level, link_bps), and the size-aware copy to the caller's struct. */
void tm_zstats_fill(tm_compress_stats *out, uint32_t mode, uint32_t agreed,
		    const uint64_t *packets, const uint64_t *data, const uint64_t *wire,
		    const uint64_t *cpu_ns, const uint32_t *last_codec, const int32_t *last_level,
		    const uint64_t *link_bps);
int tm_zstats_copy(const tm_compress_stats *full, tm_compress_stats *ret);

/* ---- receiver (compress-recv.c) ---- */
typedef struct tm_zrecv tm_zrecv;
typedef struct recv_chan recv_chan;
typedef struct tm_receiver tm_receiver;

/* HELLO_ACK: of the codecs offered, those this receiver decodes. */
uint32_t tm_zrecv_accept(uint32_t offered);
/* At start, per channel: the agreed features; a context when a codec was agreed. */
int tm_zrecv_setup(recv_chan *c, uint32_t agreed, uint32_t packet_size, GError **error);
void tm_zrecv_free(tm_zrecv *z);
/*
 * apply_data's hook for a ZDATA frame, instead of tm_recv_plan_begin(): receives and checks
 * the ZDATA header. Returns the DATA header bytes to receive at plan->head, or -errno with the
 * channel named in *error.
 */
int tm_zrecv_begin(recv_chan *c, uint32_t body_len, GError **error);
/*
 * After the tags were checked: decodes a ZDATA packet's page data into its pages (no-op for
 * DATA) and counts it. Errors name channel, block and the packet's first page offset.
 */
int tm_zrecv_decode(recv_chan *c, const char *block_name, GError **error);

G_END_DECLS
