/* SPDX-License-Identifier: MIT */
/*
 * Atomic postcopy placement (session/place-atomic.c, docs/design/postcopy-move.md) on real
 * userfaultfd with real UFFDIO_MOVE (Linux 6.8+, any architecture): a page-resident stand-in
 * store whose place_atomic stages the data in its own staging area, records the tags and moves
 * the page in, as kvm-mte does with STG. Checks the mode and its reason, that each placer thread
 * gets one staging area at setup (never one per page), that zero pages without tags go through
 * UFFDIO_ZEROPAGE, that a kernel's refusal (-EINVAL) turns the mode off for the session and the
 * run is still placed by copy, and the statistics. Without userfaultfd or UFFD_FEATURE_MOVE each
 * test skips with the kernel's reason.
 */
#include <errno.h>
#include <linux/userfaultfd.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <glib.h>

#include "common/uffd-internal.h"
#include "placer-rig.h"
#include "session/place.h"
#include "tagmig/error.h"
#include "tagmig/wire.h"

#define SLOT (256u * 1024u)

struct t_uffdio_move {
	uint64_t dst, src, len, mode;
	int64_t move;
};
#define T_UFFDIO_MOVE _IOWR(UFFDIO, 0x05, struct t_uffdio_move)

typedef struct fixture {
	placer_rig rig; /* RAM, its layout, the userfaultfd */
	tm_tag_store *store;
	tm_placer *placer;
	bool staging_exec; /* staging areas PROT_EXEC: the kernel refuses the move (EINVAL) */
	_Atomic int stagings, stagings_freed, atomics, sets;
	uint8_t tags[NPAGES * GRANULES]; /* the store's tags */
} fixture;

static int r_init(tm_tag_store *store, const tm_ram_layout *layout, void *arg, GError **error)
{
	*(fixture **)tm_tag_store_priv(store) = arg;
	return 0;
}

static int r_get(tm_tag_store *store, unsigned block, uint64_t offset, uint64_t length,
		 uint8_t *buf)
{
	fixture *fx = *(fixture **)tm_tag_store_priv(store);
	memcpy(buf, fx->tags + offset / TM_TAG_GRANULE, length / TM_TAG_GRANULE);
	return 0;
}

static int r_set(tm_tag_store *store, unsigned block, uint64_t offset, uint64_t length,
		 const uint8_t *buf)
{
	fixture *fx = *(fixture **)tm_tag_store_priv(store);
	atomic_fetch_add(&fx->sets, 1);
	memcpy(fx->tags + offset / TM_TAG_GRANULE, buf, length / TM_TAG_GRANULE);
	return 0;
}

static void *r_staging_new(tm_tag_store *store, uint64_t length, GError **error)
{
	fixture *fx = *(fixture **)tm_tag_store_priv(store);
	int prot = PROT_READ | PROT_WRITE | (fx->staging_exec ? PROT_EXEC : 0);
	void *s = mmap(NULL, length, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	g_assert_true(s != MAP_FAILED);
	madvise(s, length, MADV_NOHUGEPAGE);
	atomic_fetch_add(&fx->stagings, 1);
	return s;
}

static void r_staging_free(tm_tag_store *store, void *staging, uint64_t length)
{
	fixture *fx = *(fixture **)tm_tag_store_priv(store);
	atomic_fetch_add(&fx->stagings_freed, 1);
	munmap(staging, length);
}

/* Tags first (kvm-mte: STG in staging), then the page moves in with them. */
static int r_place_atomic(tm_tag_store *store, int uffd, unsigned block, uint64_t offset,
			  uint64_t length, const void *data, const uint8_t *tags, void *staging,
			  GError **error)
{
	fixture *fx = *(fixture **)tm_tag_store_priv(store);
	atomic_fetch_add(&fx->atomics, 1);
	g_assert_cmpuint(length, <=, SLOT);
	memcpy(staging, data, length);
	memcpy(fx->tags + offset / TM_TAG_GRANULE, tags, length / TM_TAG_GRANULE);
	struct t_uffdio_move m = { .dst = (uintptr_t)(fx->rig.ram + offset), .src = (uintptr_t)staging,
				   .len = length };
	if (ioctl(uffd, T_UFFDIO_MOVE, &m) < 0) {
		int e = errno;
		g_set_error(error, TM_ERROR, e, "test store: UFFDIO_MOVE at 0x%" G_GINT64_MODIFIER
			    "x: %s", offset, g_strerror(e));
		return -e;
	}
	return 0;
}

static const tm_tag_store_ops resident_ops = {
	.name = "test-resident-move",
	.priv_size = sizeof(fixture *),
	.init = r_init,
	.get = r_get,
	.set = r_set,
	.has_tags = 1,
	.staging_new = r_staging_new,
	.staging_free = r_staging_free,
	.place_atomic = r_place_atomic,
};

/* RAM, store and placer with uffd_features as the receiver would pass them; false: skipped. */
static bool setup(fixture *fx, bool soft, uint64_t features, unsigned threads, bool exec)
{
	g_autoptr(GError) err = NULL;
	memset(fx, 0, sizeof(*fx));
	fx->staging_exec = exec;
	if (!placer_rig_open(&fx->rig, TM_UFFD_FEATURE_MOVE,
			     "no userfaultfd with UFFD_FEATURE_MOVE here (Linux 6.8+)"))
		return false;
	if (soft)
		g_assert_cmpint(tm_tag_store_new(&tm_tag_store_soft, fx->rig.layout, NULL, &fx->store,
						 &err), ==, 0);
	else
		g_assert_cmpint(tm_tag_store_new(&resident_ops, fx->rig.layout, fx, &fx->store, &err), ==,
				0);
	placer_rig_register(&fx->rig);
	g_assert_cmpint(tm_placer_new(fx->rig.layout, fx->store, fx->rig.uffd, &fx->placer, &err), ==, 0);
	tm_placer_probe_atomic(fx->placer, features, threads);
	return true;
}

static void teardown(fixture *fx)
{
	tm_placer_free(fx->placer);
	tm_tag_store_free(fx->store);
	placer_rig_close(&fx->rig);
}

/*
 * One background run of 12 pages from first: kinds by index, 0-5 NORMAL, 6-8 ZERO_TAGGED, 9-11
 * ZERO without tags (the codec sends zero tags for them). Returns the pages placed.
 */
static uint32_t place_mixed_as(fixture *fx, uint64_t first, bool requested)
{
	static uint8_t data[12 * PS], tags[12 * GRANULES], zero[12];
	memset(data, 0, sizeof(data));
	memset(tags, 0, sizeof(tags));
	for (unsigned i = 0; i < 12; i++) {
		zero[i] = i >= 6;
		if (i < 6)
			placer_rig_data(first + i, data + i * PS);
		if (i < 9)
			placer_rig_tags(first + i, tags + i * GRANULES);
	}
	tm_place_run run = { .block = 0, .first_page = first, .npages = 12, .data = data,
			     .zero = zero, .tags = tags, .requested = requested };
	g_autoptr(GError) err = NULL;
	uint32_t placed = 0;
	int r = tm_placer_place(fx->placer, &run, &placed, &err);
	g_assert_no_error(err);
	g_assert_cmpint(r, ==, 0);
	return placed;
}

static uint32_t place_mixed(fixture *fx, uint64_t first)
{
	return place_mixed_as(fx, first, false);
}

/* Data and tags of place_mixed's pages are in place. */
static void check_mixed(fixture *fx, uint64_t first)
{
	uint8_t want[PS], wtags[GRANULES];
	for (unsigned i = 0; i < 12; i++) {
		memset(want, 0, sizeof(want));
		memset(wtags, 0, sizeof(wtags));
		if (i < 6)
			placer_rig_data(first + i, want);
		if (i < 9)
			placer_rig_tags(first + i, wtags);
		g_assert_cmpmem(fx->rig.ram + (first + i) * PS, PS, want, PS);
		g_assert_cmpmem(fx->tags + (first + i) * GRANULES, GRANULES, wtags, GRANULES);
		g_assert_true(tm_placer_present(fx->placer, 0, first + i));
	}
}

/* UFFD_FEATURE_MOVE and a store with place_atomic: every tagged page moves in with its tags. */
static void test_move_mode(void)
{
	fixture fx;
	if (!setup(&fx, false, TM_UFFD_FEATURE_MOVE, 3, false))
		return;
	g_assert_cmpint(atomic_load(&fx.stagings), ==, 3); /* one per placer thread, at setup */
	g_assert_cmpuint(place_mixed(&fx, 0), ==, 12);
	g_assert_cmpuint(place_mixed(&fx, 20), ==, 12);
	check_mixed(&fx, 0);
	check_mixed(&fx, 20);
	tm_place_stats st;
	tm_placer_get_stats(fx.placer, &st);
	g_assert_true(st.move);
	g_assert_nonnull(strstr(st.reason, "UFFDIO_MOVE"));
	g_assert_cmpuint(st.placed_pages, ==, 24);
	g_assert_cmpuint(st.moved_pages, ==, 18);   /* NORMAL and ZERO_TAGGED */
	g_assert_cmpuint(st.zeropage_pages, ==, 6); /* ZERO without tags */
	g_assert_cmpuint(st.copied_pages, ==, 0);
	g_assert_cmpuint(st.background_nonatomic_pages, ==, 0);
	g_assert_cmpint(atomic_load(&fx.sets), ==, 0);     /* no tags after a copy */
	g_assert_cmpint(atomic_load(&fx.stagings), ==, 3); /* never one per page */
	teardown(&fx);
	g_assert_cmpint(atomic_load(&fx.stagings_freed), ==, 3);
}

/* A userfaultfd without UFFD_FEATURE_MOVE: copy, said why, background pages counted. */
static void test_copy_without_feature(void)
{
	fixture fx;
	if (!setup(&fx, false, TM_UFFD_FEATURE_POISON, 3, false))
		return;
	g_assert_cmpint(atomic_load(&fx.stagings), ==, 0);
	g_assert_cmpuint(place_mixed(&fx, 30), ==, 12);
	g_assert_cmpuint(place_mixed_as(&fx, 44, true), ==, 12); /* requested: a vCPU waits */
	check_mixed(&fx, 30);
	check_mixed(&fx, 44);
	tm_place_stats st;
	tm_placer_get_stats(fx.placer, &st);
	g_assert_false(st.move);
	g_assert_nonnull(strstr(st.reason, "UFFD_FEATURE_MOVE"));
	g_assert_cmpuint(st.moved_pages, ==, 0);
	g_assert_cmpuint(st.copied_pages, ==, 24);
	g_assert_cmpuint(st.background_nonatomic_pages, ==, 12); /* not the requested ones */
	g_assert_cmpint(atomic_load(&fx.atomics), ==, 0);
	teardown(&fx);
}

/* The kernel refuses the first move (staging and guest RAM differ in protection): off for the
 * session with the kernel's reason, that run and the next placed by copy. */
static void test_refusal_turns_off(void)
{
	fixture fx;
	if (!setup(&fx, false, TM_UFFD_FEATURE_MOVE, 2, true))
		return;
	g_assert_cmpuint(place_mixed(&fx, 40), ==, 12);
	g_assert_cmpuint(place_mixed(&fx, 52), ==, 12);
	check_mixed(&fx, 40);
	check_mixed(&fx, 52);
	tm_place_stats st;
	tm_placer_get_stats(fx.placer, &st);
	g_assert_false(st.move);
	g_assert_nonnull(strstr(st.reason, "UFFDIO_MOVE refused"));
	g_assert_nonnull(strstr(st.reason, "Invalid argument"));
	g_assert_cmpuint(st.moved_pages, ==, 0);
	g_assert_cmpuint(st.copied_pages, ==, 24);
	g_assert_cmpint(atomic_load(&fx.atomics), ==, 1); /* asked once, never again */
	teardown(&fx);
}

/* The soft store sets tags before the page exists: copy, atomic already, nothing counted. */
static void test_soft_store(void)
{
	fixture fx;
	if (!setup(&fx, true, TM_UFFD_FEATURE_MOVE, 2, false))
		return;
	g_assert_cmpuint(place_mixed(&fx, 0), ==, 12);
	tm_place_stats st;
	tm_placer_get_stats(fx.placer, &st);
	g_assert_false(st.move);
	g_assert_nonnull(strstr(st.reason, "before the page exists"));
	g_assert_cmpuint(st.copied_pages, ==, 12);
	g_assert_cmpuint(st.background_nonatomic_pages, ==, 0);
	teardown(&fx);
}

/* A store with place_atomic but not the staging hooks is refused. */
static void test_hooks_together(void)
{
	tm_tag_store_ops half = resident_ops;
	half.staging_free = NULL;
	g_autoptr(tm_ram_layout) layout = NULL;
	g_autoptr(GError) err = NULL;
	tm_tag_store *store = NULL;
	static uint8_t ram[PS] __attribute__((aligned(PS)));
	g_assert_cmpint(tm_ram_layout_new(&layout), ==, 0);
	g_assert_cmpint(tm_ram_layout_add_block(layout, "b", ram, PS, PS, 0, &err), ==, 0);
	g_assert_cmpint(tm_tag_store_new(&half, layout, NULL, &store, &err), ==, -EINVAL);
	g_assert_nonnull(strstr(err->message, "come together"));
	g_assert_null(store);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/place-atomic/move", test_move_mode);
	g_test_add_func("/place-atomic/copy-without-feature", test_copy_without_feature);
	g_test_add_func("/place-atomic/refusal-turns-off", test_refusal_turns_off);
	g_test_add_func("/place-atomic/soft-store", test_soft_store);
	g_test_add_func("/place-atomic/hooks-together", test_hooks_together);
	return g_test_run();
}
