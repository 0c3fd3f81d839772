/* SPDX-License-Identifier: MIT */
/*
 * The receiver's side of compression (compress.h): the codecs it accepts in HELLO_ACK, a
 * context per channel, the ZDATA header received and checked before anything else of the
 * packet, the page data decoded into the packet's own pages only after the packet's every
 * field and its tags were checked (its pages are marked present only after that succeeded),
 * and the statistics (tm_receiver_get_compress_stats).
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "common/error-internal.h"
#include "session/compress.h"
#include "session/session-internal.h"
#include "tagmig/error.h"

struct tm_zrecv {
	tm_zctx *z;          /* NULL: no codec agreed */
	uint32_t agreed;
	/* statistics: relaxed atomics */
	uint64_t packets[TM_ZCODEC_COUNT];
	uint64_t data_bytes, wire_data_bytes, cpu_ns;
	uint32_t last_codec;
};

uint32_t tm_zrecv_accept(uint32_t offered)
{
	uint32_t have = tm_zcodec_available();

	return offered & ((have & (1u << TM_ZCODEC_LZ4) ? TM_FEATURE_LZ4 : 0) |
			  (have & (1u << TM_ZCODEC_ZSTD) ? TM_FEATURE_ZSTD : 0));
}

int tm_zrecv_setup(recv_chan *c, uint32_t agreed, uint32_t packet_size, GError **error)
{
	tm_zrecv *z = g_new0(tm_zrecv, 1);

	z->agreed = agreed & TM_FEATURES_COMPRESS;
	c->plan.features = agreed;
	if (z->agreed) {
		int r = tm_zctx_new(packet_size, &z->z, error);
		if (r < 0) {
			g_free(z);
			return r;
		}
	}
	__atomic_store_n(&c->z, z, __ATOMIC_RELEASE);
	return 0;
}

void tm_zrecv_free(tm_zrecv *z)
{
	if (!z)
		return;
	tm_zctx_free(z->z);
	g_free(z);
}

int tm_zrecv_begin(recv_chan *c, uint32_t body_len, GError **error)
{
	tm_recv_plan *p = &c->plan;
	int ret = tm_recv_plan_begin_z(p, &c->r->hello, p->features, body_len, error);

	if (ret >= 0 && (ret = tm_chan_recv(&c->ch, p->zhdr, (size_t)ret, error)) < 0)
		return ret; /* the channel's words already */
	if (ret >= 0)
		ret = tm_recv_plan_zheader(p, error);
	if (ret < 0)
		tm_chan_prefix_error(&c->ch, error);
	return ret;
}

static int64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * The decoder writes the pages from user space: fault each run of consecutive NORMAL pages in
 * with one call first, as the raw path does for its socket copy (recv-pages.c, populate()).
 */
static void populate_pages(tm_receiver *r, const tm_recv_plan *p)
{
	for (uint32_t i = 0; i < p->hdr.page_count && !__atomic_load_n(&r->no_populate,
									 __ATOMIC_RELAXED);) {
		uint32_t j = i;
		while (j < p->hdr.page_count && p->entries[j].kind == TM_PAGE_NORMAL &&
		       (j == i || p->entries[j].page == p->entries[j - 1].page + 1))
			j++;
		if (j == i) {
			i++;
			continue;
		}
		size_t len = (size_t)(j - i) * p->page_size;
		if (len >= TM_POPULATE_MIN &&
		    madvise(p->block_host + (uint64_t)p->entries[i].page * p->page_size, len,
			    MADV_POPULATE_WRITE) < 0 && errno == EINVAL)
			__atomic_store_n(&r->no_populate, true, __ATOMIC_RELAXED);
		i = j;
	}
}

int tm_zrecv_decode(recv_chan *c, const char *block_name, GError **error)
{
	tm_recv_plan *p = &c->plan;
	tm_zrecv *z = c->z;

	tm_count(&z->data_bytes, p->hdr.data_len);
	tm_count(&z->packets[p->zcodec], 1);
	__atomic_store_n(&z->last_codec, p->zcodec, __ATOMIC_RELAXED);
	if (!p->zcodec) {
		tm_count(&z->wire_data_bytes, p->hdr.data_len);
		return 0;
	}
	tm_count(&z->wire_data_bytes, p->zlen);
	g_autoptr(GError) why = NULL;
	populate_pages(c->r, p);
	int64_t t0 = cpu_ns();
	int ret = z->z ? tm_recv_plan_decompress(p, z->z, &why) : -EPROTO;
	tm_count(&z->cpu_ns, (uint64_t)(cpu_ns() - t0));
	if (ret < 0)
		return tm_error_at(error, -ret, c->ch.id, block_name,
				   (uint64_t)p->entries[0].page * p->page_size,
				   "ZDATA (%s, %u bytes for %u pages): %s; the packet's pages are "
				   "not applied", tm_zcodec_name(p->zcodec), p->zlen, p->hdr.page_count,
				   why ? why->message : "no codec agreed");
	return 0;
}

int tm_receiver_get_compress_stats(tm_receiver *r, unsigned channel, tm_compress_stats *ret)
{
	if (ret->size < 8)
		return -EINVAL;
	if (!tm_receiver_wire_version(r))
		return -EBADFD;
	if (channel >= r->nch)
		return -ERANGE;
	tm_zrecv *z = __atomic_load_n(&r->chans[channel].z, __ATOMIC_ACQUIRE);
	tm_compress_stats full;
	static const uint64_t zero[TM_ZCODEC_COUNT];
	static const uint64_t zero1;
	if (!z)
		tm_zstats_fill(&full, 0, 0, zero, &zero1, &zero1, &zero1, NULL, NULL, NULL);
	else
		tm_zstats_fill(&full, 0, z->agreed, z->packets, &z->data_bytes, &z->wire_data_bytes,
			       &z->cpu_ns, &z->last_codec, NULL, NULL);
	return tm_zstats_copy(&full, ret);
}
