/* SPDX-License-Identifier: MIT */
/*
 * The precopy loop of docs/api.md as a program a VMM developer can build from the installed
 * library alone:
 *
 *     cc -o precopy precopy.c $(pkg-config --cflags --libs tagmig)
 *     ./precopy [MIB]
 *
 * A "guest" of MIB MiB (default 32) with MTE-style tags (the soft tag store stands in for the
 * hardware) migrates over loopback to a second copy in this process: a first full round, rounds
 * of the pages the guest dirtied meanwhile (this program keeps its own dirty bitmap where a VMM
 * would read KVM_GET_DIRTY_LOG) until tm_sender_advise() says the rest fits in the downtime
 * target, then the guest stops and the last dirty pages go with tm_sender_finish(). It prints
 * each round and the downtime, and exits 0 when the copy is identical, data and tags.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tagmig/tagmig.h>

#define PAGE 4096u

typedef struct dest {
	int listen_fd;
	tm_ram_layout *layout;
	tm_tag_store *tags;
	int ret;
	char why[256];
} dest;

/* The destination VMM: accept the channels, check and acknowledge the layout, apply until END. */
static gpointer destination(gpointer data)
{
	dest *d = data;
	g_autoptr(tm_receiver) r = NULL;
	g_autoptr(GError) err = NULL;
	tm_receiver_config cfg = { .ram_zeroed = true };

	d->ret = tm_receiver_new(&cfg, &r, &err);
	if (d->ret >= 0)
		d->ret = tm_receiver_accept(r, d->listen_fd, &err);
	if (d->ret >= 0)
		d->ret = tm_receiver_start(r, d->layout, d->tags, &err);
	if (d->ret >= 0)
		d->ret = tm_receiver_wait(r, &err);
	if (err)
		snprintf(d->why, sizeof(d->why), "%s", err->message);
	return NULL;
}

/* The guest writes one page (data and tags) and the "dirty log" records it. */
static void guest_write(uint8_t *ram, uint8_t *tags, uint64_t *dirty, uint64_t page, unsigned gen)
{
	uint8_t *p = ram + page * PAGE;

	if ((page + gen) % 7 == 0) {
		memset(p, 0, PAGE); /* zero data that still carries tags */
	} else {
		for (unsigned i = 0; i < PAGE; i += 8)
			memcpy(p + i, &(uint64_t){ page * 0x9e3779b97f4a7c15ull ^ (i + gen) }, 8);
	}
	for (unsigned g = 0; g < PAGE / TM_TAG_GRANULE; g++)
		tags[page * (PAGE / TM_TAG_GRANULE) + g] = (uint8_t)((page + g + gen) & 0xf);
	dirty[page / 64] |= 1ull << (page % 64);
}

static int fail(const char *what, GError *err)
{
	fprintf(stderr, "precopy: %s: %s\n", what, err ? err->message : "failed");
	return 1;
}

int main(int argc, char **argv)
{
	uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 32;
	uint64_t len = mib << 20, npages = len / PAGE;
	g_autoptr(tm_ram_layout) src_layout = NULL, dst_layout = NULL;
	g_autoptr(tm_tag_store) src_tags = NULL, dst_tags = NULL;
	g_autoptr(tm_sender) s = NULL;
	g_autoptr(GError) err = NULL;
	tm_sender_config cfg = { .channels = 2 };
	tm_live_config lc = { .size = sizeof(lc), .max_downtime_us = 50000 };
	dest d = { 0 };
	unsigned port;
	tm_stats st;

	if (mib == 0 || mib > 4096) {
		fprintf(stderr, "usage: precopy [MIB], 1..4096\n");
		return 2;
	}
	g_autofree uint8_t *src = g_aligned_alloc0(len, 1, PAGE), *dst = g_aligned_alloc0(len, 1, PAGE);
	g_autofree uint64_t *dirty = g_new0(uint64_t, (npages + 63) / 64);
	if (tm_ram_layout_new(&src_layout) < 0 || tm_ram_layout_new(&dst_layout) < 0 ||
	    tm_ram_layout_add_block(src_layout, "pc.ram", src, len, PAGE, 0, &err) < 0 ||
	    tm_ram_layout_add_block(dst_layout, "pc.ram", dst, len, PAGE, 0, &err) < 0)
		return fail("layout", err);
	if (tm_tag_store_new(&tm_tag_store_soft, src_layout, NULL, &src_tags, &err) < 0 ||
	    tm_tag_store_new(&tm_tag_store_soft, dst_layout, NULL, &dst_tags, &err) < 0)
		return fail("tag store", err);
	uint8_t *tags = tm_tag_store_soft_array(src_tags, 0);

	/* The guest has run for a while before the migration starts. */
	for (uint64_t p = 0; p < npages; p++)
		if (p % 3 != 2)
			guest_write(src, tags, dirty, p, 0);

	d.layout = dst_layout;
	d.tags = dst_tags;
	d.listen_fd = tm_listen("127.0.0.1", "0", &port, &err);
	if (d.listen_fd < 0)
		return fail("listen", err);
	GThread *t = g_thread_new("destination", destination, &d);
	g_autofree char *ports = g_strdup_printf("%u", port);
	if (tm_sender_new(src_layout, src_tags, &cfg, &s, &err) < 0 ||
	    tm_sender_set_live(s, &lc, &err) < 0 ||
	    tm_sender_connect(s, "127.0.0.1", ports, &err) < 0) {
		g_thread_join(t);
		return fail("connect", err);
	}

	/*
	 * Round 1 sends everything; each later round sends what the guest dirtied meanwhile, until
	 * the advice says what is dirty now fits in the downtime target (or 30 rounds did not get
	 * there: a VMM would then throttle its guest or accept a longer downtime).
	 */
	memset(dirty, 0xff, (npages + 63) / 64 * 8);
	for (unsigned round = 1; round <= 30; round++) {
		g_autofree uint64_t *this_round = g_memdup2(dirty, (npages + 63) / 64 * 8);
		memset(dirty, 0, (npages + 63) / 64 * 8);
		if (tm_sender_queue_bitmap(s, 0, this_round, 0, npages, &err) < 0)
			break;
		/* the guest keeps running: 5% of its pages change during the round */
		for (uint64_t i = 0; i < npages / 20; i++)
			guest_write(src, tags, dirty, (i * 7919 + round * 104729) % npages, round);
		if (tm_sender_sync(s, &err) < 0)
			break;
		tm_round_stats rs;
		tm_switch_advice adv;
		uint64_t ndirty = 0;
		for (uint64_t w = 0; w < (npages + 63) / 64; w++)
			ndirty += (uint64_t)__builtin_popcountll(dirty[w]);
		tm_sender_get_round(s, round, &rs);
		tm_sender_advise(s, ndirty, 0, &adv);
		printf("round %u: %" PRIu64 " pages, %" PRIu64 " bytes in %.3f s (%.3f s busy); "
		       "%" PRIu64 " pages dirty, expected downtime %.1f ms\n",
		       round, rs.pages_sent, rs.wire_bytes, rs.seconds, rs.busy_seconds, ndirty,
		       adv.expected_downtime_us == UINT64_MAX ? -1.0
							 : adv.expected_downtime_us / 1e3);
		if (adv.switch_now)
			break;
	}
	/* Stop the guest; its last dirty pages go with the switchover. */
	if (!err && tm_sender_guest_stopped(s, &err) >= 0 &&
	    tm_sender_queue_bitmap(s, 0, dirty, 0, npages, &err) >= 0)
		tm_sender_finish(s, &err);
	g_thread_join(t);
	if (err)
		return fail("migration", err);
	if (d.ret < 0) {
		fprintf(stderr, "precopy: destination: %s\n", d.why);
		return 1;
	}
	tm_sender_get_stats(s, &st);
	tm_live_stats ls = { .size = sizeof(ls) };
	tm_sender_get_live_stats(s, &ls);
	printf("downtime %.1f ms after %" PRIu64 " rounds\n", ls.downtime_us / 1e3, ls.rounds);
	bool same = memcmp(src, dst, len) == 0 &&
		    memcmp(tags, tm_tag_store_soft_array(dst_tags, 0), len / TM_TAG_GRANULE) == 0;
	printf("%" PRIu64 " MiB over %u channels (%s): %" PRIu64 " pages in %.3f s; copy %s\n", mib,
	       st.channels, st.io_backend, st.pages, st.seconds,
	       same ? "identical (data and tags)" : "DIFFERS");
	return same ? 0 : 1;
}
