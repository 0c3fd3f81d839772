/* SPDX-License-Identifier: MIT */
/*
 * A running guest migrated by precopy, end to end (issue 12; docs/design/live-engine.md 4.2,
 * "precopy-converge" and "tags-only"): the test guest (tests/guest) dirties its RAM and tags at
 * 100 MB/s from four writer threads while the loop of docs/api.md runs it over the session:
 * rounds from the kernel's dirty log until tm_sender_advise() says switch (or 30 rounds), pause,
 * tm_sender_guest_stopped(), the final dirty log, device state (a vCPU, a device, and a hash of
 * all RAM that the destination recomputes when it reads it), finish. The destination must then
 * hold exactly the guest's data and tags, the tags-only writes included, the state sections in
 * order and intact, delivered after all RAM, and the downtime must be measured.
 * Runs on the sockets and io_uring pairs, plaintext and TLS (the other pairs skip: same code).
 */
#include <errno.h>
#include <string.h>

#include "live-fixture.h"

/* Under the sanitizers everything is slower: a smaller guest keeps the rounds short. */
#if defined(__SANITIZE_ADDRESS__)
#define GUEST_RAM (16u << 20)
#else
#define GUEST_RAM (64u << 20)
#endif
#define GUEST_VRAM (4u << 20)
#define DIRTY_RATE (100u * 1000 * 1000)
#define MAX_ROUNDS 30

/* FNV-1a over every block's RAM and soft tags: the "ramhash" section (design 4.1), which the
 * destination recomputes when it reads it: device state must come after all RAM. */
static uint64_t ram_hash(const tm_ram_layout *layout, tm_tag_store *tags)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (unsigned b = 0; b < tm_ram_layout_block_count(layout); b++) {
		tm_ram_block_info bi;
		const uint8_t *t = tm_tag_store_soft_array(tags, b);

		g_assert_cmpint(tm_ram_layout_block(layout, b, &bi), ==, 0);
		const uint64_t *w = bi.host;
		for (uint64_t i = 0; i < bi.length / 8; i++)
			h = (h ^ w[i]) * 0x100000001b3ull;
		for (uint64_t i = 0; i < bi.length / TM_TAG_GRANULE; i++)
			h = (h ^ t[i]) * 0x100000001b3ull;
	}
	return h;
}

#define CPU_STATE 4096u
#define DEV_STATE (1u << 20)

typedef struct dest_state {
	uint8_t cpu[CPU_STATE], *dev;
	bool cpu_seen, dev_seen, ramhash_seen, ramhash_ok;
	char order[64];
} dest_state;

static void on_state(peer *p, const char *name, const uint8_t *data, size_t len)
{
	dest_state *d = p->opaque;

	g_strlcat(d->order, name, sizeof(d->order));
	g_strlcat(d->order, ",", sizeof(d->order));
	if (!strcmp(name, "cpu0") && len == CPU_STATE) {
		memcpy(d->cpu, data, len);
		d->cpu_seen = true;
	} else if (!strcmp(name, "dev") && len == DEV_STATE) {
		memcpy(d->dev, data, len);
		d->dev_seen = true;
	} else if (!strcmp(name, "ramhash") && len == sizeof(uint64_t)) {
		uint64_t want;
		memcpy(&want, data, sizeof(want));
		d->ramhash_seen = true;
		d->ramhash_ok = ram_hash(p->g->layout, p->g->tags) == want;
	}
}

static void test_precopy_converge(void)
{
	if (!live_pair_runs("precopy"))
		return;
	g_autoptr(GError) err = NULL;
	g_autoptr(test_guest) g = NULL;
	test_guest_config gc = { .ram_len = GUEST_RAM, .vram_len = GUEST_VRAM, .writers = 4,
				 .rate = DIRTY_RATE, .seed = 12 };
	if (!live_guest_new(&gc, &g))
		return;
	const tm_ram_layout *layout = test_guest_layout(g);
	block_spec spec[LIVE_BLOCKS];
	uint64_t npages[LIVE_BLOCKS], *bm[LIVE_BLOCKS]; /* round 1: all */
	unsigned nb = live_guest_blocks(g, spec, npages, bm);
	g_assert_cmpuint(nb, ==, 2);
	g_test_message("dirty log: %s; guest %u MiB + %u MiB vram, 4 writers at %u MB/s",
		       test_guest_dirty_method(g), GUEST_RAM >> 20, GUEST_VRAM >> 20,
		       DIRTY_RATE / 1000000);

	guest dst;
	guest_init(&dst, spec, nb, true);
	peer p;
	dest_state ds = { .dev = g_malloc0(DEV_STATE) };
	g_autofree uint8_t *cpu = g_malloc(CPU_STATE);
	g_autofree uint8_t *dev = g_malloc(DEV_STATE);
	for (unsigned i = 0; i < CPU_STATE; i++)
		cpu[i] = (uint8_t)rnd();
	for (unsigned i = 0; i < DEV_STATE; i++)
		dev[i] = (uint8_t)rnd();
	g_autofree char *port = peer_start_state(&p, &dst, true, 30000, on_state, &ds);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 4,
				 .timeout_ms = 30000 };
	g_autoptr(tm_sender) s = NULL;
	g_assert_cmpint(tm_sender_new(layout, test_guest_tags(g), &cfg, &s, &err), ==, 0);
	tm_live_config lc = { .size = sizeof(lc), .max_downtime_us = 5000 };
	g_assert_cmpint(tm_sender_set_live(s, &lc, &err), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", port, &err), ==, 0);

	test_guest_start(g);
	unsigned rounds = 0;
	tm_switch_advice adv = { 0 };
	uint64_t dirty = 0;
	for (rounds = 1; rounds <= MAX_ROUNDS; rounds++) {
		live_queue_dirty(s, bm, npages, nb);
		g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
		g_assert_no_error(err);
		g_assert_cmpint(test_guest_collect(g, bm, &err), >=, 0);
		dirty = live_dirty_count(bm, npages, nb);
		g_assert_cmpint(tm_sender_advise(s, dirty, 0, &adv), ==, 0);
		g_test_message("round %u: %" G_GUINT64_FORMAT " pages dirty, bandwidth %.1f MB/s, "
			       "expected downtime %.1f ms%s", rounds, dirty, adv.bandwidth / 1e6,
			       adv.expected_downtime_us / 1e3, adv.switch_now ? ": switch" : "");
		if (adv.switch_now)
			break;
	}
	/* At 100 MB/s of writes over loopback precopy converges long before the cap. */
	g_assert_true(adv.switch_now);

	/* Pause, then the final round: what the guest wrote since the last collection. */
	test_guest_stop(g);
	g_assert_cmpint(tm_sender_guest_stopped(s, &err), ==, 0);
	g_assert_cmpint(test_guest_collect(g, bm, &err), >=, 0);
	uint64_t final = live_dirty_count(bm, npages, nb);
	g_test_message("final round: %" G_GUINT64_FORMAT " pages", final);
	/* The guest kept writing during the last round: the final dirty log matters (else the
	 * mutation "final round skipped" could not fail this test). */
	g_assert_cmpuint(dirty + final, >, 0);
	live_queue_dirty(s, bm, npages, nb);
	/* Device state after the final round: vCPU registers, a device model, the RAM hash. */
	uint64_t ramhash = ram_hash(layout, test_guest_tags(g));
	g_assert_cmpint(tm_sender_advise(s, 0, CPU_STATE + DEV_STATE + 8, &adv), ==, 0);
	g_assert_cmpint(tm_sender_put_state(s, "cpu0", cpu, CPU_STATE, 0, &err), ==, 0);
	g_assert_cmpint(tm_sender_put_state(s, "dev", dev, DEV_STATE, TM_STATE_COPY, &err), ==, 0);
	g_assert_cmpint(tm_sender_put_state(s, "ramhash", &ramhash, sizeof(ramhash), TM_STATE_COPY,
					    &err), ==, 0);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	g_assert_no_error(err);
	peer_join(&p);
	g_assert_no_error(p.error);
	g_assert_cmpint(p.ret, ==, 0);

	g_autofree char *why = NULL;
	if (!test_guest_same(g, dst.layout, dst.tags, &why))
		g_error("destination differs from the guest: %s", why);
	g_assert_cmpstr(ds.order, ==, "cpu0,dev,ramhash,");
	g_assert_true(ds.cpu_seen && ds.dev_seen && ds.ramhash_seen);
	g_assert_true(memcmp(ds.cpu, cpu, CPU_STATE) == 0);
	g_assert_true(memcmp(ds.dev, dev, DEV_STATE) == 0);
	g_assert_true(ds.ramhash_ok); /* state after all RAM of the final round */
	g_assert_cmpuint(test_guest_writes(g), >, 0);

	tm_live_stats ls = { .size = sizeof(ls) };
	g_assert_cmpint(tm_sender_get_live_stats(s, &ls), ==, 0);
	g_assert_cmpuint(ls.rounds, >=, rounds);
	g_assert_cmpuint(ls.downtime_us, >, 0);
	g_test_message("%" G_GUINT64_FORMAT " rounds, %" G_GUINT64_FORMAT " guest writes, "
		       "downtime %.2f ms", ls.rounds, test_guest_writes(g), ls.downtime_us / 1e3);
	peer_free(&p);
	guest_fini(&dst);
	g_free(ds.dev);
	for (unsigned b = 0; b < nb; b++)
		g_free(bm[b]);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "precopy-converge", test_precopy_converge, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
