/* SPDX-License-Identifier: MIT */
/*
 * The vCPU pause around background placement by copy (session/place-pause.c, place.c;
 * tm_live_config.vcpu_pause; docs/design/postcopy-move.md) on real userfaultfd, any architecture:
 * a page-resident stand-in store (tags set after the copy, as kvm-mte without UFFDIO_MOVE), fake
 * pause and resume hooks that record what they see, and a "vCPU" thread blocked in a userfault
 * on a page of the batch. Checks: a background batch is placed between one pause and one resume,
 * every tag written while paused; the blocked thread is woken only after the resume; requested
 * and faulted runs never pause (the deadlock the design names); batches on several threads at
 * once share one pause and the calls alternate; a failed pause places unpaused, counted, with no
 * resume; a side-array store or a run without tags never pauses; the statistics. Without
 * userfaultfd every test skips with the kernel's reason.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

#include <glib.h>

#include "common/uffd-internal.h"
#include "placer-rig.h"
#include "session/place.h"
#include "tagmig/error.h"
#include "tagmig/wire.h"

typedef struct fixture {
	placer_rig rig; /* RAM, its layout, the userfaultfd */
	tm_tag_store *store;
	tm_placer *placer;
	uint8_t tags[NPAGES * GRANULES]; /* the stand-in store's tags */
	/* what the hooks saw */
	_Atomic bool paused;          /* between a pause that returned 0 and its resume */
	_Atomic int pauses, resumes;  /* calls */
	_Atomic int overlaps;         /* a call while another was under way, or out of turn */
	_Atomic int in_call;
	_Atomic int sets, sets_unpaused;
	_Atomic bool vcpu_woken;
	_Atomic int woken_at_resume;  /* resumes that found the vCPU already running */
	int pause_ret;                /* what the pause hook returns */
	unsigned pause_sleep_us, resume_sleep_us, set_sleep_us;
} fixture;

/* ---- the page-resident stand-in: tags beside the page, set once the page is present ---- */
static int r_init(tm_tag_store *store, const tm_ram_layout *layout, void *arg, GError **error)
{
	(void)layout;
	(void)error;
	*(fixture **)tm_tag_store_priv(store) = arg;
	return 0;
}

static int r_get(tm_tag_store *store, unsigned block, uint64_t offset, uint64_t length,
		 uint8_t *buf)
{
	fixture *fx = *(fixture **)tm_tag_store_priv(store);
	(void)block;
	memcpy(buf, fx->tags + offset / TM_TAG_GRANULE, length / TM_TAG_GRANULE);
	return 0;
}

static int r_set(tm_tag_store *store, unsigned block, uint64_t offset, uint64_t length,
		 const uint8_t *buf)
{
	fixture *fx = *(fixture **)tm_tag_store_priv(store);
	(void)block;
	atomic_fetch_add(&fx->sets, 1);
	if (!atomic_load(&fx->paused))
		atomic_fetch_add(&fx->sets_unpaused, 1);
	memcpy(fx->tags + offset / TM_TAG_GRANULE, buf, length / TM_TAG_GRANULE);
	g_usleep(fx->set_sleep_us); /* a placement that takes a while, as KVM's does */
	return 0;
}

static const tm_tag_store_ops resident_ops = {
	.name = "test-resident-pause",
	.priv_size = sizeof(fixture *),
	.init = r_init,
	.get = r_get,
	.set = r_set,
	.has_tags = 1,
};

/* ---- the VMM's hooks ---- */
static int fake_pause(void *opaque)
{
	fixture *fx = opaque;
	if (atomic_fetch_add(&fx->in_call, 1) != 0 || atomic_load(&fx->paused))
		atomic_fetch_add(&fx->overlaps, 1);
	atomic_fetch_add(&fx->pauses, 1);
	g_usleep(fx->pause_sleep_us);
	if (fx->pause_ret == 0)
		atomic_store(&fx->paused, true);
	atomic_fetch_sub(&fx->in_call, 1);
	return fx->pause_ret;
}

static void fake_resume(void *opaque)
{
	fixture *fx = opaque;
	if (atomic_fetch_add(&fx->in_call, 1) != 0 || !atomic_load(&fx->paused))
		atomic_fetch_add(&fx->overlaps, 1);
	atomic_fetch_add(&fx->resumes, 1);
	/* a while, so that a wake before the resume would have let the vCPU run by now */
	g_usleep(fx->resume_sleep_us);
	if (atomic_load(&fx->vcpu_woken))
		atomic_fetch_add(&fx->woken_at_resume, 1);
	atomic_store(&fx->paused, false);
	atomic_fetch_sub(&fx->in_call, 1);
}

/* RAM, store and placer (copy placement: never probed for move); false: skipped. */
static bool setup(fixture *fx, bool soft, bool hooks)
{
	g_autoptr(GError) err = NULL;
	memset(fx, 0, sizeof(*fx));
	if (!placer_rig_open(&fx->rig, 0, "no userfaultfd here"))
		return false;
	if (soft)
		g_assert_cmpint(tm_tag_store_new(&tm_tag_store_soft, fx->rig.layout, NULL, &fx->store,
						 &err), ==, 0);
	else
		g_assert_cmpint(tm_tag_store_new(&resident_ops, fx->rig.layout, fx, &fx->store, &err), ==,
				0);
	placer_rig_register(&fx->rig);
	g_assert_cmpint(tm_placer_new(fx->rig.layout, fx->store, fx->rig.uffd, &fx->placer, &err), ==, 0);
	if (hooks)
		tm_placer_set_pause(fx->placer, fake_pause, fake_resume, fx);
	return true;
}

static void teardown(fixture *fx)
{
	tm_placer_free(fx->placer);
	tm_tag_store_free(fx->store);
	placer_rig_close(&fx->rig);
}

/* Places pages [first, first + n) as one run; kind: 0 background, 1 requested, 2 faulted. */
static void place(fixture *fx, uint64_t first, uint32_t n, int kind, bool with_tags)
{
	g_autofree uint8_t *data = g_malloc(n * PS), *tags = g_malloc(n * GRANULES);
	g_autofree uint8_t *zero = g_malloc0(n);
	for (uint32_t i = 0; i < n; i++) {
		placer_rig_data(first + i, data + i * PS);
		placer_rig_tags(first + i, tags + i * GRANULES);
	}
	tm_place_run run = { .block = 0, .first_page = first, .npages = n, .data = data,
			     .zero = zero, .tags = with_tags ? tags : NULL,
			     .requested = kind == 1,
			     .t_fault_us = kind == 2 ? g_get_monotonic_time() : 0 };
	g_autoptr(GError) err = NULL;
	uint32_t placed = 0;
	g_assert_cmpint(tm_placer_place(fx->placer, &run, &placed, &err), ==, 0);
	g_assert_no_error(err);
	g_assert_cmpuint(placed, ==, n);
}

/* ---- a "vCPU" blocked in a userfault on one page ---- */
typedef struct vcpu {
	fixture *fx;
	uint64_t page;
	pthread_t thread;
	bool data_ok, tags_ok;
} vcpu;

static void *vcpu_run(void *arg)
{
	vcpu *v = arg;
	uint8_t want[PS], want_tags[GRANULES];
	volatile uint8_t *p = v->fx->rig.ram + v->page * PS;
	(void)p[0]; /* blocks until the placer wakes it */
	atomic_store(&v->fx->vcpu_woken, true);
	placer_rig_tags(v->page, want_tags);
	v->tags_ok = memcmp(v->fx->tags + v->page * GRANULES, want_tags, GRANULES) == 0;
	placer_rig_data(v->page, want);
	v->data_ok = memcmp((const void *)p, want, PS) == 0;
	return NULL;
}

/*
 * A background batch of 8 pages, one of which a vCPU is blocked on: one pause before, one
 * resume after, every tag set in between, and the vCPU woken after the resume (the resume
 * sleeps 20 ms: a wake before it would have let the vCPU run by then), with data and tags.
 */
static void test_background(void)
{
	fixture fx;
	if (!setup(&fx, false, true))
		return;
	fx.resume_sleep_us = 20000;
	vcpu v = { .fx = &fx, .page = 13 };
	g_assert_cmpint(pthread_create(&v.thread, NULL, vcpu_run, &v), ==, 0);
	placer_rig_read_fault(&fx.rig, 13);
	place(&fx, 10, 8, 0, true);
	pthread_join(v.thread, NULL);
	g_assert_cmpint(fx.pauses, ==, 1);
	g_assert_cmpint(fx.resumes, ==, 1);
	g_assert_cmpint(fx.overlaps, ==, 0);
	g_assert_cmpint(fx.sets, >=, 1);
	g_assert_cmpint(fx.sets_unpaused, ==, 0);
	g_assert_cmpint(fx.woken_at_resume, ==, 0);
	g_assert_true(v.data_ok);
	g_assert_true(v.tags_ok);
	tm_place_stats st;
	tm_placer_get_stats(fx.placer, &st);
	g_assert_false(st.move);
	g_assert_cmpuint(st.copied_pages, ==, 8);
	g_assert_cmpuint(st.background_nonatomic_pages, ==, 0);
	g_assert_cmpuint(st.paused_batches, ==, 1);
	g_assert_cmpuint(st.pause_us, >=, 20000);
	g_assert_cmpuint(st.pause_failures, ==, 0);
	teardown(&fx);
}

/*
 * A vCPU's own page (requested on the urgent connection, or a fault's run) never waits for a
 * pause: the pause may be waiting for that very vCPU (docs/design/postcopy-move.md, the trap).
 */
static void test_urgent_never_pauses(void)
{
	fixture fx;
	if (!setup(&fx, false, true))
		return;
	vcpu v = { .fx = &fx, .page = 5 };
	g_assert_cmpint(pthread_create(&v.thread, NULL, vcpu_run, &v), ==, 0);
	placer_rig_read_fault(&fx.rig, 5);
	place(&fx, 5, 1, 1, true);
	pthread_join(v.thread, NULL);
	g_assert_true(v.data_ok && v.tags_ok);
	place(&fx, 20, 4, 2, true);
	g_assert_cmpint(fx.pauses, ==, 0);
	g_assert_cmpint(fx.resumes, ==, 0);
	tm_place_stats st;
	tm_placer_get_stats(fx.placer, &st);
	g_assert_cmpuint(st.paused_batches, ==, 0);
	g_assert_cmpuint(st.background_nonatomic_pages, ==, 0);
	teardown(&fx);
}

typedef struct batch_arg {
	fixture *fx;
	uint64_t first;
	pthread_barrier_t *start;
} batch_arg;

static void *batch_run(void *arg)
{
	batch_arg *a = arg;
	pthread_barrier_wait(a->start);
	place(a->fx, a->first, 4, 0, true);
	return NULL;
}

/*
 * Four data channels place background batches at once: the pause is shared (the first pauses,
 * the last resumes), the calls alternate and never overlap, and no tag is set unpaused.
 */
static void test_threads(void)
{
	fixture fx;
	if (!setup(&fx, false, true))
		return;
	fx.pause_sleep_us = 30000; /* the others arrive while the first pause is under way */
	fx.set_sleep_us = 50000;   /* and join it while the first batch places */
	for (unsigned round = 0; round < 3; round++) {
		pthread_barrier_t start;
		pthread_barrier_init(&start, NULL, 4);
		pthread_t t[4];
		batch_arg a[4];
		for (unsigned i = 0; i < 4; i++) {
			a[i] = (batch_arg){ .fx = &fx, .first = round * 16 + i * 4, .start = &start };
			g_assert_cmpint(pthread_create(&t[i], NULL, batch_run, &a[i]), ==, 0);
		}
		for (unsigned i = 0; i < 4; i++)
			pthread_join(t[i], NULL);
		pthread_barrier_destroy(&start);
	}
	g_assert_cmpint(fx.overlaps, ==, 0);
	g_assert_cmpint(fx.pauses, ==, fx.resumes);
	g_assert_cmpint(fx.pauses, >=, 3);
	g_assert_cmpint(fx.pauses, <, 12); /* shared: 4 batches at once took fewer pauses */
	g_assert_false(fx.paused);
	g_assert_cmpint(fx.sets_unpaused, ==, 0);
	tm_place_stats st;
	tm_placer_get_stats(fx.placer, &st);
	g_assert_cmpuint(st.paused_batches, ==, 12);
	g_assert_cmpuint(st.background_nonatomic_pages, ==, 0);
	g_test_message("12 batches on 4 threads: %d pauses", fx.pauses);
	teardown(&fx);
}

/* A pause that fails: the batch is placed anyway, unpaused and counted so; no resume for it. */
static void test_pause_fails(void)
{
	fixture fx;
	if (!setup(&fx, false, true))
		return;
	fx.pause_ret = -EBUSY;
	place(&fx, 0, 4, 0, true);
	g_assert_cmpint(fx.pauses, ==, 1);
	g_assert_cmpint(fx.resumes, ==, 0);
	g_assert_cmpint(fx.sets_unpaused, ==, 1);
	fx.pause_ret = 0;
	place(&fx, 8, 4, 0, true);
	g_assert_cmpint(fx.pauses, ==, 2);
	g_assert_cmpint(fx.resumes, ==, 1);
	g_assert_cmpint(fx.overlaps, ==, 0);
	tm_place_stats st;
	tm_placer_get_stats(fx.placer, &st);
	g_assert_cmpuint(st.pause_failures, ==, 1);
	g_assert_cmpuint(st.paused_batches, ==, 1);
	g_assert_cmpuint(st.background_nonatomic_pages, ==, 4);
	teardown(&fx);
}

/* No window, no pause: a side-array store (tags before the page), or a run without tags. */
static void test_no_window_no_pause(void)
{
	fixture fx;
	if (!setup(&fx, true, true))
		return;
	place(&fx, 0, 4, 0, true);
	g_assert_cmpint(fx.pauses, ==, 0);
	teardown(&fx);
	if (!setup(&fx, false, true))
		return;
	place(&fx, 0, 4, 0, false);
	g_assert_cmpint(fx.pauses, ==, 0);
	/* and without hooks a background copy is counted as exposed, as before */
	teardown(&fx);
	if (!setup(&fx, false, false))
		return;
	place(&fx, 0, 4, 0, true);
	tm_place_stats st;
	tm_placer_get_stats(fx.placer, &st);
	g_assert_cmpuint(st.background_nonatomic_pages, ==, 4);
	g_assert_cmpuint(st.paused_batches, ==, 0);
	teardown(&fx);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/place-pause/background", test_background);
	g_test_add_func("/place-pause/urgent-never-pauses", test_urgent_never_pauses);
	g_test_add_func("/place-pause/threads", test_threads);
	g_test_add_func("/place-pause/pause-fails", test_pause_fails);
	g_test_add_func("/place-pause/no-window-no-pause", test_no_window_no_pause);
	return g_test_run();
}
