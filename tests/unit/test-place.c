/* SPDX-License-Identifier: MIT */
/*
 * Postcopy placement (session/place.c) on real userfaultfd, in one process: guest RAM registered
 * for MISSING faults (UFFD_USER_MODE_ONLY, which works unprivileged), a "vCPU" thread that faults
 * on a page and, the moment its access returns, checks the page's data and tags, the test's main
 * thread reading the fault as the session's fault thread would, and placer threads racing.
 * Without userfaultfd every test skips with the kernel's reason.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <glib.h>

#include "common/uffd-internal.h"
#include "placer-rig.h"
#include "session/histogram.h"
#include "session/place.h"
#include "tagmig/error.h"
#include "tagmig/wire.h"

typedef struct fixture {
	placer_rig rig; /* RAM, its layout, the userfaultfd */
	uint8_t *soft_tags;              /* the soft store's array (caller-owned) */
	tm_tag_store *store;
	tm_placer *placer;
	/* bounce buffer and tags of what is placed */
	uint8_t data[16 * PS];
	uint8_t tags[16 * GRANULES];
	uint8_t zero[16];
} fixture;

/* ---- a page-resident stand-in: a store the placer does not know, with its own array ---- */
typedef struct resident_priv {
	uint8_t *tags;
	fixture *fx;
	_Atomic int sets_after_present; /* set() found the pages present */
	_Atomic int sets_before;        /* set() found a page missing */
} resident_priv;

static _Atomic bool vcpu_woken;

static int resident_init(tm_tag_store *store, const tm_ram_layout *layout, void *arg,
			 GError **error)
{
	resident_priv *p = tm_tag_store_priv(store);
	p->fx = arg;
	p->tags = g_malloc0(NPAGES * GRANULES);
	return 0;
}

static void resident_fini(tm_tag_store *store)
{
	resident_priv *p = tm_tag_store_priv(store);
	g_free(p->tags);
}

static int resident_get(tm_tag_store *store, unsigned block, uint64_t offset, uint64_t length,
			uint8_t *buf)
{
	resident_priv *p = tm_tag_store_priv(store);
	memcpy(buf, p->tags + offset / TM_TAG_GRANULE, length / TM_TAG_GRANULE);
	return 0;
}

static int resident_set(tm_tag_store *store, unsigned block, uint64_t offset, uint64_t length,
			const uint8_t *buf)
{
	resident_priv *p = tm_tag_store_priv(store);
	unsigned char vec[16];

	/* Tags live with the page: it must be present, and no faulter may have run yet. */
	g_assert_cmpuint(length / PS, <=, sizeof(vec));
	g_assert_cmpint(mincore(p->fx->rig.ram + offset, length, vec), ==, 0);
	bool present = true;
	for (unsigned i = 0; i < length / PS; i++)
		present = present && (vec[i] & 1);
	if (present && !atomic_load(&vcpu_woken))
		atomic_fetch_add(&p->sets_after_present, 1);
	else
		atomic_fetch_add(&p->sets_before, 1);
	memcpy(p->tags + offset / TM_TAG_GRANULE, buf, length / TM_TAG_GRANULE);
	return 0;
}

static const tm_tag_store_ops resident_ops = {
	.name = "test-resident",
	.priv_size = sizeof(resident_priv),
	.init = resident_init,
	.fini = resident_fini,
	.get = resident_get,
	.set = resident_set,
	.has_tags = 1,
};

static const uint8_t *store_tags(fixture *fx, uint64_t page)
{
	if (tm_tag_store_get_ops(fx->store) == &resident_ops)
		return ((resident_priv *)tm_tag_store_priv(fx->store))->tags + page * GRANULES;
	return fx->soft_tags + page * GRANULES;
}

/* Sets up RAM, store and placer; false (test skipped with the reason) without userfaultfd. */
static bool setup(fixture *fx, bool resident)
{
	g_autoptr(GError) err = NULL;

	memset(fx, 0, sizeof(*fx));
	if (!placer_rig_open(&fx->rig, 0, "no userfaultfd here"))
		return false;
	fx->soft_tags = g_malloc0(NPAGES * GRANULES);
	if (resident) {
		g_assert_cmpint(tm_tag_store_new(&resident_ops, fx->rig.layout, fx, &fx->store, &err), ==, 0);
	} else {
		uint8_t *arrays[1] = { fx->soft_tags };
		g_assert_cmpint(tm_tag_store_new(&tm_tag_store_soft, fx->rig.layout, arrays, &fx->store,
						 &err), ==, 0);
	}
	placer_rig_register(&fx->rig);
	g_assert_cmpint(tm_placer_new(fx->rig.layout, fx->store, fx->rig.uffd, &fx->placer, &err), ==, 0);
	g_assert_true(tm_placer_tags_first(fx->placer) == !resident);
	atomic_store(&vcpu_woken, false);
	return true;
}

static void teardown(fixture *fx)
{
	tm_placer_free(fx->placer);
	tm_tag_store_free(fx->store);
	placer_rig_close(&fx->rig);
	g_free(fx->soft_tags);
}

/* ---- the vCPU: faults on a page, then checks data and tags from its own thread ---- */
typedef struct vcpu {
	fixture *fx;
	uint64_t page;
	bool zero;
	pthread_t thread;
	bool data_ok, tags_ok;
} vcpu;

static void *vcpu_run(void *arg)
{
	vcpu *v = arg;
	uint8_t want[PS], want_tags[GRANULES];
	volatile uint8_t *p = v->fx->rig.ram + v->page * PS;

	(void)p[0]; /* blocks in the userfault until a placer wakes it */
	atomic_store(&vcpu_woken, true);
	/* Right after the access returns: the tags must already be there. */
	placer_rig_tags(v->page, want_tags);
	v->tags_ok = memcmp(store_tags(v->fx, v->page), want_tags, GRANULES) == 0;
	if (v->zero)
		memset(want, 0, PS);
	else
		placer_rig_data(v->page, want);
	v->data_ok = memcmp((const void *)p, want, PS) == 0;
	return NULL;
}

/* ---- placers ---- */
typedef struct placer_arg {
	fixture *fx;
	tm_place_run run;
	pthread_barrier_t *start;
	int ret;
	uint32_t placed;
	char *message;
} placer_arg;

static void *placer_run(void *arg)
{
	placer_arg *a = arg;
	g_autoptr(GError) err = NULL;

	pthread_barrier_wait(a->start);
	a->ret = tm_placer_place(a->fx->placer, &a->run, &a->placed, &err);
	if (err)
		a->message = g_strdup(err->message);
	return NULL;
}

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
/*
 * At each point of a placement: the vCPU is still blocked until the wake, and a side-array
 * store's tags are set before the copy. After the wake a delay, so that tags set any later would
 * be read wrong by the vCPU.
 */
typedef struct hook_state {
	fixture *fx;
	_Atomic int claimed, copied, present, woken;
	_Atomic int early_wake;    /* vCPU ran before the wake */
	_Atomic int tags_late;     /* side-array tags missing at COPIED */
} hook_state;

static void hook(tm_place_point point, unsigned block, uint64_t page, uint32_t npages,
		 void *opaque)
{
	hook_state *h = opaque;
	uint8_t want[GRANULES];

	switch (point) {
	case TM_PLACE_CLAIMED:
		atomic_fetch_add(&h->claimed, 1);
		break;
	case TM_PLACE_COPIED:
		atomic_fetch_add(&h->copied, 1);
		placer_rig_tags(page, want);
		if (tm_placer_tags_first(h->fx->placer) &&
		    memcmp(h->fx->soft_tags + page * GRANULES, want, GRANULES) != 0)
			atomic_fetch_add(&h->tags_late, 1);
		break;
	case TM_PLACE_PRESENT:
		atomic_fetch_add(&h->present, 1);
		g_usleep(1000);
		if (atomic_load(&vcpu_woken))
			atomic_fetch_add(&h->early_wake, 1);
		break;
	case TM_PLACE_WOKEN:
		atomic_fetch_add(&h->woken, 1);
		g_usleep(2000);
		break;
	}
}
#endif

/* Placers that got past the claim so far: with hooks, the CLAIMED points seen; else -1. */
static int claims_seen(void *hs)
{
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	return hs ? atomic_load(&((hook_state *)hs)->claimed) : -1;
#else
	return -1;
#endif
}

/*
 * One round: a vCPU faults on page, two placers race to place it (with zero data when zero).
 * Exactly one places; the vCPU finds data and tags.
 */
static void race_once(fixture *fx, void *hs, uint64_t page, bool zero)
{
	int claims_before = claims_seen(hs);
	pthread_barrier_t start;
	placer_arg a[2];
	vcpu v = { .fx = fx, .page = page, .zero = zero };
	uint8_t *data = g_malloc(PS), *tags = g_malloc(GRANULES);
	uint8_t zflag = zero;

	placer_rig_data(page, data);
	placer_rig_tags(page, tags);
	atomic_store(&vcpu_woken, false);
	g_assert_cmpint(pthread_create(&v.thread, NULL, vcpu_run, &v), ==, 0);
	placer_rig_read_fault(&fx->rig, page);
	g_assert_false(tm_placer_present(fx->placer, 0, page));

	pthread_barrier_init(&start, NULL, 2);
	pthread_t pt[2];
	for (unsigned i = 0; i < 2; i++) {
		a[i] = (placer_arg){ .fx = fx, .start = &start };
		a[i].run = (tm_place_run){ .block = 0, .first_page = page, .npages = 1, .data = data,
					   .zero = &zflag, .tags = tags,
					   .t_fault_us = g_get_monotonic_time() };
		g_assert_cmpint(pthread_create(&pt[i], NULL, placer_run, &a[i]), ==, 0);
	}
	pthread_join(v.thread, NULL);
	pthread_join(pt[0], NULL);
	pthread_join(pt[1], NULL);
	/* Exactly one placer took the page (with hooks: counted at the point past the claim). */
	if (claims_before >= 0 && claims_seen(hs) - claims_before != 1)
		g_error("page %" PRIu64 ": %d placers went past the claim (double placement); "
			"placer results %d, %d", page, claims_seen(hs) - claims_before, a[0].ret, a[1].ret);
	for (unsigned i = 0; i < 2; i++)
		if (a[i].ret < 0)
			g_error("placer %u: %d: %s", i, a[i].ret, a[i].message);
	g_assert_cmpuint(a[0].placed + a[1].placed, ==, 1);
	g_assert_true(v.data_ok);
	g_assert_true(v.tags_ok);
	g_assert_true(tm_placer_present(fx->placer, 0, page));
	g_assert_true(tm_placer_claimed(fx->placer, 0, page));
	pthread_barrier_destroy(&start);
	g_free(a[0].message);
	g_free(a[1].message);
	g_free(data);
	g_free(tags);
}

static void race(bool resident)
{
	fixture fx;

	if (!setup(&fx, resident))
		return;
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	hook_state h = { .fx = &fx };
	tm_place_set_test_hook(hook, &h);
	void *hs = &h;
#else
	void *hs = NULL;
#endif
	const unsigned rounds = 16;
	for (unsigned i = 0; i < rounds; i++)
		race_once(&fx, hs, 3 + i * 2, i % 4 == 3);

	tm_place_stats st;
	tm_placer_get_stats(fx.placer, &st);
	g_assert_cmpuint(st.placed_pages, ==, rounds);
	g_assert_cmpuint(st.duplicate_pages, ==, rounds);
	g_assert_cmpuint(st.zeropage_pages, ==, resident ? 0 : rounds / 4);
	g_assert_cmpuint(st.faults, ==, rounds); /* one sample per placing call */
	g_assert_cmpuint(st.fault_p50_us, <=, st.fault_p99_us);
	g_assert_cmpuint(st.fault_p99_us, <=, st.fault_max_us);
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	tm_place_set_test_hook(NULL, NULL);
	g_assert_cmpint(h.claimed, ==, rounds);
	g_assert_cmpint(h.copied, ==, rounds);
	g_assert_cmpint(h.woken, ==, rounds);
	g_assert_cmpint(h.early_wake, ==, 0);
	g_assert_cmpint(h.tags_late, ==, 0);
#else
	g_test_message("built without -Dtest_hooks=true: no delays at the placement points");
#endif
	if (resident) {
		resident_priv *rp = tm_tag_store_priv(fx.store);
		/* every set() came after the copy and before the wake */
		g_assert_cmpint(rp->sets_after_present, ==, rounds);
		g_assert_cmpint(rp->sets_before, ==, 0);
	}
	teardown(&fx);
}

/* Two placers + one faulting vCPU on one page, side-array (soft) store. */
static void test_race_soft(void)
{
	race(false);
}

/* The same with a store the placer does not know: tags after the copy, before the wake. */
static void test_race_resident(void)
{
	race(true);
}

/* A page present behind the placers' back: -EEXIST naming block and offset. */
static void test_eexist(void)
{
	g_autoptr(GError) err = NULL;
	fixture fx;
	uint64_t done = 99;

	if (!setup(&fx, false))
		return;
	placer_rig_data(5, fx.data);
	placer_rig_tags(5, fx.tags);
	g_assert_cmpint(tm_uffd_copy(fx.rig.uffd, fx.rig.ram + 5 * PS, fx.data, PS, 0, &done, &err),
			==, 0);
	g_assert_cmpuint(done, ==, PS);
	/* common/uffd.c itself */
	int r = tm_uffd_copy(fx.rig.uffd, fx.rig.ram + 4 * PS, fx.data, 2 * PS, TM_UFFD_DONTWAKE,
			     &done, &err);
	g_assert_cmpint(r, ==, -EEXIST);
	g_assert_error(err, TM_ERROR, EEXIST);
	g_assert_nonnull(strstr(err->message, "UFFDIO_COPY"));
	g_assert_nonnull(strstr(err->message, "page already present"));
	g_assert_cmpuint(done, ==, PS); /* page 4 went in, page 5 was there */
	g_clear_error(&err);
	/* through the placer: page 5 claimed by nobody, present anyway */
	tm_place_run run = { .block = 0, .first_page = 5, .npages = 1, .data = fx.data,
			     .tags = fx.tags };
	uint32_t placed = 77;
	r = tm_placer_place(fx.placer, &run, &placed, &err);
	g_assert_cmpint(r, ==, -EEXIST);
	g_assert_cmpuint(placed, ==, 77);
	g_assert_error(err, TM_ERROR, EEXIST);
	g_assert_nonnull(strstr(err->message, "place: block 'pc.ram', offset 0x5000: UFFDIO_COPY"));
	g_assert_nonnull(strstr(err->message, "something else wrote guest RAM"));
	g_clear_error(&err);
	g_assert_false(tm_placer_present(fx.placer, 0, 5));
	/* pages marked present at the barrier are never copied again: no EEXIST for them */
	tm_placer_mark_present(fx.placer, 0, 4, 2);
	placer_rig_data(4, fx.data);
	placer_rig_data(5, fx.data + PS);
	run = (tm_place_run){ .block = 0, .first_page = 4, .npages = 2, .data = fx.data };
	g_assert_cmpint(tm_placer_place(fx.placer, &run, &placed, &err), ==, 0);
	g_assert_no_error(err);
	g_assert_cmpuint(placed, ==, 0);
	teardown(&fx);
}

/* PFN of the page at addr from /proc/self/pagemap, 0 when unknown (no privilege) or absent. */
static uint64_t pfn_of(const void *addr)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	uint64_t e = 0;

	if (fd < 0)
		return 0;
	if (pread(fd, &e, 8, (off_t)((uintptr_t)addr / PS * 8)) != 8)
		e = 0;
	close(fd);
	return (e >> 63) & 1 ? e & ((1ull << 55) - 1) : 0;
}

/*
 * A run mixing present, zero and data pages: ZERO pages go through UFFDIO_ZEROPAGE (the shared
 * zero page, where pagemap shows it), their tags are set, nothing present is copied again, and
 * the fault latency is the time since the fault.
 */
static void test_zero_and_runs(void)
{
	g_autoptr(GError) err = NULL;
	fixture fx;

	if (!setup(&fx, false))
		return;
	/* pages 16..23: 17 and 20 present from precopy, 18, 19 and 22 zero */
	tm_placer_mark_present(fx.placer, 0, 17, 1);
	tm_placer_mark_present(fx.placer, 0, 20, 1);
	uint8_t zero[8] = { 0, 0, 1, 1, 0, 0, 1, 0 };
	for (unsigned i = 0; i < 8; i++) {
		placer_rig_data(16 + i, fx.data + i * PS);
		placer_rig_tags(16 + i, fx.tags + i * GRANULES);
	}
	/* the precopy pages' contents: written before registration in a session; here by copy */
	uint64_t done;
	g_assert_cmpint(tm_uffd_copy(fx.rig.uffd, fx.rig.ram + 17 * PS, fx.data + PS, PS, 0, &done,
				     &err), ==, 0);
	g_assert_cmpint(tm_uffd_copy(fx.rig.uffd, fx.rig.ram + 20 * PS, fx.data + 4 * PS, PS, 0, &done,
				     &err), ==, 0);

	tm_place_run run = { .block = 0, .first_page = 16, .npages = 8, .data = fx.data,
			     .zero = zero, .tags = fx.tags,
			     .t_fault_us = g_get_monotonic_time() - 1500 };
	uint32_t placed = 0;
	g_assert_cmpint(tm_placer_place(fx.placer, &run, &placed, &err), ==, 0);
	g_assert_no_error(err);
	g_assert_cmpuint(placed, ==, 6);

	tm_place_stats st;
	tm_placer_get_stats(fx.placer, &st);
	g_assert_cmpuint(st.placed_pages, ==, 6);
	g_assert_cmpuint(st.zeropage_pages, ==, 3);
	g_assert_cmpuint(st.duplicate_pages, ==, 2);
	g_assert_cmpuint(st.faults, ==, 1);
	g_assert_cmpuint(st.fault_p50_us, >=, 1500);
	g_assert_cmpuint(st.fault_max_us, >=, st.fault_p99_us);

	uint8_t want[PS];
	for (unsigned i = 0; i < 8; i++) {
		uint64_t pg = 16 + i;
		g_assert_true(tm_placer_present(fx.placer, 0, pg));
		if (zero[i])
			memset(want, 0, PS);
		else
			placer_rig_data(pg, want);
		g_assert_cmpmem(fx.rig.ram + pg * PS, PS, want, PS);
		uint8_t wt[GRANULES];
		placer_rig_tags(pg, wt);
		if (pg == 17 || pg == 20)
			memset(wt, 0, GRANULES); /* not placed again: its tags untouched */
		g_assert_cmpmem(fx.soft_tags + pg * GRANULES, GRANULES, wt, GRANULES);
	}
	/* The zero pages map the shared zero page: the PFN a fresh anonymous page reads from, where
	 * the kernel maps one on a read fault (two fresh pages read the same PFN). Some kernels map
	 * a fresh page on a read fault (seen: 6.18.44-fc, paravirtualised): then the zero pages must
	 * still share one PFN that no data page has, which a copy per page could not give. */
	uint8_t *fresh = mmap(NULL, 2 * PS, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	g_assert_true(fresh != MAP_FAILED);
	(void)*(volatile uint8_t *)fresh;
	(void)*(volatile uint8_t *)(fresh + PS);
	uint64_t f0 = pfn_of(fresh), f1 = pfn_of(fresh + PS);
	uint64_t z18 = pfn_of(fx.rig.ram + 18 * PS), z19 = pfn_of(fx.rig.ram + 19 * PS),
		 z22 = pfn_of(fx.rig.ram + 22 * PS), d16 = pfn_of(fx.rig.ram + 16 * PS);
	if (f0 && f0 == f1) {
		g_assert_cmpuint(z18, ==, f0);
		g_assert_cmpuint(d16, !=, f0);
	} else if (z18) {
		g_test_message("a read fault maps a fresh page here (PFN %" PRIu64 " and %" PRIu64
			       "): the zero pages checked for one shared PFN", f0, f1);
		g_assert_cmpuint(z19, ==, z18);
		g_assert_cmpuint(z22, ==, z18);
		g_assert_cmpuint(d16, !=, z18);
	} else {
		g_test_message("pagemap shows no PFNs here: the zero page is checked by the counter only");
	}
	munmap(fresh, 2 * PS);
	teardown(&fx);
}

/*
 * A range that wraps past 2^64 (first page near UINT64_MAX) is refused by the guards, not taken
 * for a short one: nothing is marked or placed outside the block. In a subprocess: a guard that
 * lets it through writes far outside the bitmaps.
 */
static void test_wrap(void)
{
	if (!g_test_subprocess()) {
		g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
		g_test_trap_assert_passed();
		return;
	}
	g_autoptr(GError) err = NULL;
	fixture fx;

	if (!setup(&fx, false))
		return;
	g_test_expect_message(NULL, G_LOG_LEVEL_CRITICAL, "*assertion*failed*");
	tm_placer_mark_present(fx.placer, 0, UINT64_MAX, 2);
	g_test_assert_expected_messages();
	tm_place_run run = { .block = 0, .first_page = UINT64_MAX - 1, .npages = 3,
			     .data = fx.data };
	uint32_t placed = 0;
	g_test_expect_message(NULL, G_LOG_LEVEL_CRITICAL, "*assertion*failed*");
	g_assert_cmpint(tm_placer_place(fx.placer, &run, &placed, &err), ==, -EINVAL);
	g_test_assert_expected_messages();
	g_assert_cmpuint(placed, ==, 0);
	for (uint64_t pg = 0; pg < NPAGES; pg++)
		g_assert_false(tm_placer_claimed(fx.placer, 0, pg));
	teardown(&fx);
}

/* The latency histogram: a percentile is its bucket's upper bound, at most 12.5 % high. */
static void test_histogram(void)
{
	tm_histogram *h = g_new0(tm_histogram, 1);

	g_assert_cmpuint(tm_histogram_percentile(h, 0.5), ==, 0);
	for (uint64_t v = 1; v <= 1000; v++)
		tm_histogram_record(h, v);
	g_assert_cmpuint(tm_histogram_total(h), ==, 1000);
	g_assert_cmpuint(tm_histogram_max(h), ==, 1000);
	uint64_t p50 = tm_histogram_percentile(h, 0.5), p99 = tm_histogram_percentile(h, 0.99);
	g_assert_cmpuint(p50, >=, 500);
	g_assert_cmpuint(p50, <=, 500 * 9 / 8);
	g_assert_cmpuint(p99, >=, 990);
	g_assert_cmpuint(p99, <=, 1000); /* never above the maximum */
	g_assert_cmpuint(tm_histogram_percentile(h, 0.001), ==, 1); /* small values are exact */
	tm_histogram_record(h, UINT64_MAX);      /* clamped into the last bucket */
	g_assert_cmpuint(tm_histogram_max(h), ==, UINT64_MAX);
	g_assert_cmpuint(tm_histogram_percentile(h, 1.0), >, 1000);
	g_free(h);
}

/*
 * userfaultfd(2) refused (as vm.unprivileged_userfaultfd=0 or a seccomp sandbox would):
 * tm_uffd_open() goes through /dev/userfaultfd, or says why it cannot. In a subprocess, since
 * the seccomp filter stays for the life of the process.
 */
static void test_open_fallback(void)
{
	if (!g_test_subprocess()) {
		g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
		g_test_trap_assert_passed();
		return;
	}
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_userfaultfd, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = G_N_ELEMENTS(f), .filter = f };
	g_assert_cmpint(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), ==, 0);
	g_assert_cmpint(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), ==, 0);
	g_assert_cmpint(syscall(SYS_userfaultfd, 0), ==, -1);
	g_assert_cmpint(errno, ==, EPERM);

	g_autoptr(GError) err = NULL;
	int fd = -1;
	int r = tm_uffd_open(false, false, 0, &fd, NULL, &err);
	if (access("/dev/userfaultfd", R_OK | W_OK) == 0) {
		g_assert_no_error(err);
		g_assert_cmpint(r, ==, 0);
		/* a working userfaultfd: it registers memory */
		uint8_t *m = mmap(NULL, PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		g_assert_cmpint(tm_uffd_register_missing(fd, m, PS, &err), ==, 0);
		g_assert_cmpint(tm_uffd_unregister(fd, m, PS, &err), ==, 0);
		munmap(m, PS);
		close(fd);
	} else {
		g_assert_cmpint(r, ==, -EPERM);
		g_assert_error(err, TM_ERROR, EPERM);
		g_assert_nonnull(strstr(err->message, "/dev/userfaultfd"));
		g_assert_nonnull(strstr(err->message, "uffd_user_mode_only works unprivileged"));
	}
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/place/race-soft", test_race_soft);
	g_test_add_func("/place/race-resident", test_race_resident);
	g_test_add_func("/place/eexist", test_eexist);
	g_test_add_func("/place/zero-and-runs", test_zero_and_runs);
	g_test_add_func("/place/histogram", test_histogram);
	g_test_add_func("/place/wrap", test_wrap);
	g_test_add_func("/place/open-fallback", test_open_fallback);
	return g_test_run();
}
