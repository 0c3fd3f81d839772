/* SPDX-License-Identifier: MIT */
/*
 * Delta encoding of re-sent pages in a session (issue 15; docs/wire-format.md "DELTA"):
 * the sender's side (delta-send.c: per channel a cache of last-sent copies, the choice per page,
 * DELTA packets in page order with DATA, DELTA_NACK heard and its pages re-sent whole) and the
 * receiver's (delta-recv.c: a DELTA read whole, checked, its bases checked page by page, refused
 * pages answered). The wire messages are the codec's (codec/delta-wire.c).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "codec/codec.h"
#include "tagmig/session.h"

G_BEGIN_DECLS

typedef struct send_chan send_chan;
typedef struct recv_chan recv_chan;
typedef struct tm_dsend tm_dsend;
typedef struct tm_drecv tm_drecv;

/* ZDELTA (DELTA + ZSTD agreed): the deltas of a DELTA of at least TM_ZDELTA_MIN bytes are
 * compressed with zstd at TM_ZDELTA_LEVEL, and the packet goes as a ZDELTA when that is
 * shorter (random data's XOR runs do not shrink and go as DELTA). */
#define TM_ZDELTA_MIN 128u
#define TM_ZDELTA_LEVEL 1

/*
 * A delta goes instead of the whole page when it takes at most this share of the page (entry
 * included): below it, a DELTA saves at least a quarter of the page's bytes, more than the CPU
 * and the risk of a refusal cost; above it the page goes whole (and may be compressed).
 */
#define TM_DELTA_MAX_SHARE_NUM 3u
#define TM_DELTA_MAX_SHARE_DEN 4u
/* With compression, a delta must also take at most this share of what the channel's page data
 * compresses to (tm_zsend_ratio()): else the page goes whole and compressed. */
#define TM_DELTA_VS_COMPRESS 0.9

/* The cache size tm_live_config.delta_cache_bytes may ask for: 0 (off) or 1 MiB..1 TiB. */
#define TM_DELTA_CACHE_MIN (1ull << 20)
#define TM_DELTA_CACHE_MAX (1ull << 40)

/* ---- the sender's choice (delta-policy.c): no clock, no I/O; the caller measures ---- */

/*
 * TM_DELTA_AUTO, per channel: a page with a cached copy goes as a delta only while that moves
 * re-sent pages faster than sending them whole, on the compression policy's cost model
 * (compress.h, tm_zpolicy: k the worker's wall seconds per CPU second, s its CPU per wire byte
 * for sending, L the link's bytes/s). Per raw byte of a page:
 *     whole  max(k * (cpu_z + ratio_z * s), ratio_z / L)   (the channel's compression choice,
 *                                                           cpu_z 0 and ratio_z 1 when raw)
 *     delta  max(k * (cpu_d + ratio_d * s), ratio_d / L)
 * with cpu_d (copying the page and encoding its delta) and ratio_d (the delta and its entry per
 * page byte; a page whose delta does not pay counts whole) measured on a sample: every
 * TM_DPOLICY_SAMPLE_EVERY-th page with a copy, encoded aside while deltas are off. Deltas when
 * the link bounds whole pages (its term is the larger) and a delta's cost is below
 * TM_DPOLICY_MARGIN of whole's: a link slower than the sender's CPU. While the CPU bounds whole
 * pages the channel keeps no copies either (the cache is emptied; a copy per page sent costs a
 * hash lookup and a memcpy, ~20% of a loaded sender's CPU on loopback): it starts keeping them
 * again at the first window the link bounds, and deltas follow when those pages come again.
 * On loopback, where
 * sending is the worker's own CPU (the link term is a fraction of k s), pages go whole: the XOR
 * costs the sender about what sending costs (1-1.5 ns per byte each, measured), and the
 * receiver's check and apply, which the sender cannot see, come on top. Decided at the end of every
 * window of the compression policy (tm_dsend_window()), never per page; whole until the link
 * and a sample are measured.
 */
#define TM_DPOLICY_SAMPLE_EVERY 32u
#define TM_DPOLICY_MARGIN 0.9
#define TM_DPOLICY_EWMA 0.25

typedef struct tm_zpolicy tm_zpolicy;

typedef struct tm_dpolicy {
	bool always;    /* TM_DELTA_ALWAYS: never measured, deltas whenever they pay in bytes */
	bool use;       /* the current choice */
	bool keep;      /* keep copies of the pages sent (false while the CPU bounds them) */
	uint32_t reason; /* tm_delta_reason of it */
	double cpu;     /* cpu_d: seconds per page byte */
	double ratio;   /* ratio_d: wire bytes per page byte */
	bool known;
	unsigned since; /* pages with a copy since the last sample */
} tm_dpolicy;

void tm_dpolicy_init(tm_dpolicy *p, uint32_t policy);
/* A page with a cached copy: true when it is to be measured (tm_dpolicy_sample()). */
bool tm_dpolicy_sample_due(tm_dpolicy *p);
/* A measured page: page_size bytes, out the wire bytes its delta took with its entry
 * (page_size when it did not pay), cpu_ns for copying and encoding it. */
void tm_dpolicy_sample(tm_dpolicy *p, uint32_t page_size, uint64_t out, int64_t cpu_ns);
/* At the end of a window: the choice from z's measurements and the ratio the channel's page
 * data is sent at (tm_zsend_ratio()). Returns the choice. */
bool tm_dpolicy_decide(tm_dpolicy *p, const tm_zpolicy *z, double zratio);

/* ---- sender (delta-send.c); every hook is worker-local unless it says otherwise ---- */

/* HELLO: TM_FEATURE_DELTA when live asks for a cache, the protocol is 2 and postcopy is not
 * offered; else 0. */
uint32_t tm_dsend_offer(const tm_live_config *live, uint8_t wire);
/* After the handshake, per channel, when DELTA was agreed. */
/* zstd: ZSTD was agreed too, so a DELTA whose deltas shrink under zstd goes as a ZDELTA. */
tm_dsend *tm_dsend_new(uint64_t cache_bytes, uint32_t policy, bool zstd, uint32_t packet_size);
/* compress-send.c, at the end of each window of its measurements (z): the delta choice for the
 * next window (TM_DELTA_AUTO). No-op without DELTA. */
void tm_dsend_window(send_chan *c, const tm_zpolicy *z);
void tm_dsend_free(tm_dsend *d);

/*
 * tm_send_pages' hook for every page (data in guest RAM, tags one byte per granule or NULL):
 * returns 1 when the page went into the channel's DELTA packet (the caller does nothing more
 * with it), 0 when it goes whole (the open DELTA was sent first, so the caller's DATA keeps page
 * order, and its copy is cached), or -errno naming channel, block and offset.
 */
int tm_dsend_page(send_chan *c, uint32_t block, uint32_t page, const uint8_t *data,
		  const uint8_t *tags, GError **error);
/* Sends the open DELTA packet, if any (tm_send_flush calls it first). */
int tm_dsend_flush(send_chan *c, GError **error);
/* A DELTA packet is open: pages held that tm_send_flush would send. */
bool tm_dsend_open(const send_chan *c);
/*
 * The data connection is readable between packets: a DELTA_NACK is taken (its pages re-sent
 * later, tm_dsend_resend) and 0 returned; anything else is what tm_chan_recv_unsolicited says.
 * Without DELTA agreed: tm_chan_recv_unsolicited.
 */
int tm_dsend_readable(send_chan *c, GError **error);
/* tm_chan_recv_ctrl() for SYNC_ACK, taking the DELTA_NACKs that come before it. */
int tm_dsend_recv_ctrl(send_chan *c, uint8_t type, uint64_t *ret_a, uint64_t *ret_b,
		       GError **error);
/* Re-sends the refused pages whole (at the end of tm_send_pages and after a SYNC_ACK). */
int tm_dsend_resend(send_chan *c, GError **error);
/*
 * After the SYNC_ACK of round's SYNC (id on the wire): until no DELTA is unanswered and no
 * refused page waits, re-sends the refused pages whole and repeats SYNC id (each copy in the
 * resume log), so that a SYNC still means every page before it is applied (tm_sender_sync) and
 * no refusal comes later.
 */
int tm_dsend_settle(send_chan *c, uint64_t round, uint64_t id, GError **error);
/* Before RAM_END: tm_dsend_settle() with the last acknowledged id (0 before the first). */
int tm_dsend_barrier(send_chan *c, GError **error);
/* A reconnected data connection (resume): the cache starts empty, no DELTA is answerable. */
void tm_dsend_reconnected(send_chan *c);
/*
 * Before tm_dsend_reconnected(): whether DELTAs were still unanswered when the connection
 * broke, so that a refusal (DELTA_NACK) may have gone with it (the receiver counts a refused
 * page as applied, and only the NACK says it is not).
 */
bool tm_dsend_unanswered(const send_chan *c);
/* Whether pages refused (DELTA_NACK read) wait to be re-sent whole: not in the resume log yet,
 * and not at the destination, whatever the receiver counts as applied. */
bool tm_dsend_refused_waiting(const send_chan *c);

/* ---- receiver (delta-recv.c) ---- */
/* At start, per channel: a context when DELTA was agreed (else c->dr stays NULL). */
void tm_drecv_setup(recv_chan *c, uint32_t agreed, uint32_t packet_size);
void tm_drecv_free(tm_drecv *d);
/*
 * A DELTA or ZDELTA frame on c: reads the body whole (a ZDELTA's deltas decoded into the
 * channel's DELTA buffer, every size checked first), checks it (codec), checks each page's base, applies
 * the deltas and tags of the pages that pass and marks them present, and answers the refused ones
 * with one DELTA_NACK. Errors name channel, block and offset; nothing of a bad packet is applied.
 */
int tm_drecv_apply(recv_chan *c, const tm_frame *f, GError **error);

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
/* Tests: tm_drecv_setup() acts as if no zstd context could be had (out of memory), while on. */
void tm_drecv_test_no_zctx(bool on);
#endif

G_END_DECLS
