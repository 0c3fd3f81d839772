/* SPDX-License-Identifier: MIT */
/*
 * Placement by stage + move (docs/design/postcopy-move.md), Linux 6.8+: guest RAM mapped PROT_MTE
 * and registered with userfaultfd (MISSING), a PROT_MTE staging area filled by tm_kvm_mte_stage()
 * (data, then STG tags), and tm_kvm_mte_place_move() (UFFDIO_MOVE) on a placer thread. A vCPU
 * blocked on a missing page must resume with the data, and the tags read back through KVM after
 * its stage-2 fault must be the staged ones (KVM does not clear a tagged page; the move kept
 * them). Then a move without a fault (the background case) and the refusals, among them a staging
 * area without PROT_MTE (-EINVAL: the kernel moves only between mappings of equal protection).
 * On a kernel without UFFD_FEATURE_MOVE (6.1) it says SKIP and exits 77.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <linux/kvm.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "kvm-test.h"
#include "tagmig/tagmig.h"

#ifndef PROT_MTE
#define PROT_MTE 0x20
#endif

/* The demand-fault guest's addresses (kvm-test.h). */
#define CODE_IPA TK_CODE_IPA
#define DATA_IPA TK_DATA_IPA
#define DATA_LEN TK_DATA_LEN
#define MMIO_IPA TK_MMIO_IPA
#define PAGE TK_PAGE

/* The placer: never the thread that serves faults. Stages, then moves. */
typedef struct place_req {
	tm_tag_store *store;
	int uffd;
	uint64_t off, len;
	uint8_t *staging;
	const uint8_t *data, *tags;
	int ret;
	char *msg;
} place_req;

static gpointer placer_thread(gpointer data)
{
	GAsyncQueue *q = data;
	place_req *req;
	while ((req = g_async_queue_pop(q)) && req->store) {
		GError *err = NULL;
		req->ret = tm_kvm_mte_stage(req->staging, req->data, req->tags, req->len, &err);
		if (req->ret == 0)
			req->ret = tm_kvm_mte_place_move(req->store, req->uffd, 0, req->off, req->len,
							 req->staging, &err);
		req->msg = err ? g_strdup(err->message) : NULL;
		g_clear_error(&err);
		__atomic_store_n(&req->uffd, -1, __ATOMIC_RELEASE); /* done */
	}
	return NULL;
}

static uint8_t *mte_map(size_t len, bool mte)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE | (mte ? PROT_MTE : 0),
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	madvise(p, len, MADV_NOHUGEPAGE);
	return p;
}

/* One demand fault: the vCPU blocks on `page`, the placer stages and moves [page, page + npages). */
static void fault_round(tk_vcpu *v, int vm, int uffd, uint8_t *data, uint8_t *staging,
			GAsyncQueue *q, tm_tag_store *store, const uint8_t *src, const uint8_t *tags,
			uint64_t page, uint64_t npages, uint64_t load_off, int round)
{
	uint64_t addr = tk_wait_fault(uffd, 30000);
	TK_CHECK(addr == (uint64_t)(uintptr_t)(data + page * PAGE),
		 "round %d: the vCPU's load from data page %" G_GUINT64_FORMAT
		 " raised a userfault (0x%" G_GINT64_MODIFIER "x)",
		 round, page, addr);
	if (!addr) {
		pthread_kill(v->thread, SIGUSR1);
		return;
	}
	g_usleep(100000);
	TK_CHECK(__atomic_load_n(&v->exits, __ATOMIC_ACQUIRE) == round - 1,
		 "round %d: the vCPU is blocked in the fault", round);

	place_req req = { .store = store, .uffd = uffd, .off = page * PAGE, .len = npages * PAGE,
			  .staging = staging, .data = src + page * PAGE,
			  .tags = tags + page * PAGE / 16 };
	g_async_queue_push(q, &req);
	bool done = tk_wait_for(&req.uffd, -1, 60000);
	TK_CHECK(done && req.ret == 0,
		 "round %d: stage + tm_kvm_mte_place_move of %" G_GUINT64_FORMAT
		 " page(s) on the placer thread: %d %s",
		 round, npages, req.ret, req.msg ? req.msg : "");
	g_free(req.msg);

	bool ran = tk_wait_for(&v->exits, round, 60000);
	uint64_t want;
	memcpy(&want, src + load_off, 8);
	TK_CHECK(ran && v->mmio_addr[round - 1] == MMIO_IPA + (uint64_t)(round - 1) * 8 &&
			 v->mmio_val[round - 1] == want,
		 "round %d: the vCPU woke from the move and loaded the staged data (0x%" G_GINT64_MODIFIER
		 "x, want 0x%" G_GINT64_MODIFIER "x, error %d)",
		 round, ran ? v->mmio_val[round - 1] : 0, want, v->error);
	TK_CHECK(tk_tags_are(vm, DATA_IPA + page * PAGE, npages * PAGE, tags + page * PAGE / 16),
		 "round %d: tags read back through KVM after the vCPU's stage-2 fault are the staged "
		 "ones",
		 round);
}

int main(void)
{
	g_autoptr(GError) err = NULL;
	int kvm = tk_open_kvm();
	if (kvm < 0)
		return tk_finish();
	if (sysconf(_SC_PAGESIZE) != (long)PAGE) {
		tk_fail("this test is written for 4K host pages");
		return tk_finish();
	}
	int uffd = (int)syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	struct uffdio_api api = { .api = UFFD_API, .features = TM_KVM_MTE_UFFD_FEATURE_MOVE };
	if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) < 0) {
		/* 6.1: no UFFDIO_MOVE. The harness runs this program on 6.12 only. */
		printf("SKIP: the kernel has no UFFD_FEATURE_MOVE (Linux 6.8+): %s\n",
		       strerror(errno));
		fflush(stdout);
		return 77;
	}
	tk_pass("userfaultfd with UFFD_FEATURE_MOVE");
	int vm = tk_vm_new_mte(kvm);
	if (vm < 0)
		return tk_finish();

	uint8_t *code = tk_ram_new(PAGE), *data = mte_map(DATA_LEN, true);
	uint8_t *staging = mte_map(DATA_LEN, true), *plain = mte_map(PAGE, false);
	if (!code || !data || !staging || !plain) {
		tk_fail("mmap of guest RAM / staging with PROT_MTE: %s", strerror(errno));
		return tk_finish();
	}
	tk_fault_guest_write(code);
	struct uffdio_register reg = {
		.range = { .start = (uint64_t)(uintptr_t)data, .len = DATA_LEN },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	TK_CHECK(ioctl(uffd, UFFDIO_REGISTER, &reg) == 0,
		 "userfaultfd registered (MISSING) over the 64 KiB PROT_MTE data region");
	TK_CHECK(tk_memslot(vm, 0, CODE_IPA, PAGE, code) == 0 &&
			 tk_memslot(vm, 1, DATA_IPA, DATA_LEN, data) == 0,
		 "memslots: code page, PROT_MTE uffd-registered data (an MTE VM accepts it)");

	g_autoptr(tm_ram_layout) layout = NULL;
	g_autoptr(tm_tag_store) store = NULL;
	int r = tk_fault_store_new(vm, data, &layout, &store);
	if (r < 0)
		return tk_finish();
	tk_vcpu v;
	if (!tk_vcpu_new(kvm, vm, &v))
		return tk_finish();

	g_autofree uint8_t *src = g_malloc(DATA_LEN), *tags = g_malloc(DATA_LEN / 16);
	for (size_t i = 0; i < DATA_LEN; i += 8) {
		uint64_t x = tk_rand();
		memcpy(src + i, &x, 8);
	}
	tk_tags_fill(tags, DATA_LEN / 16, 33, 0);

	GAsyncQueue *q = g_async_queue_new();
	GThread *placer = g_thread_new("placer", placer_thread, q);
	GThread *vt = tk_vcpu_start(&v);

	fault_round(&v, vm, uffd, data, staging, q, store, src, tags, 1, 1, 0x1000, 1);
	fault_round(&v, vm, uffd, data, staging + 2 * PAGE, q, store, src, tags, 3, 2, 0x3008, 2);

	/* A move ahead of any fault (the background case), four pages. */
	place_req req = { .store = store, .uffd = uffd, .off = 8 * PAGE, .len = 4 * PAGE,
			  .staging = staging + 8 * PAGE, .data = src + 8 * PAGE,
			  .tags = tags + 8 * PAGE / 16 };
	g_async_queue_push(q, &req);
	bool done = tk_wait_for(&req.uffd, -1, 60000);
	TK_CHECK(done && req.ret == 0 && memcmp(data + 8 * PAGE, src + 8 * PAGE, 4 * PAGE) == 0 &&
			 tk_tags_are(vm, DATA_IPA + 8 * PAGE, 4 * PAGE, tags + 8 * PAGE / 16),
		 "move of four pages without a fault: data and tags in place (%d %s)", req.ret,
		 req.msg ? req.msg : "");
	g_free(req.msg);
	unsigned char vec[4] = { 1, 1, 1, 1 };
	TK_CHECK(mincore(staging + 8 * PAGE, 4 * PAGE, vec) == 0 && !(vec[0] | vec[1] | vec[2] | vec[3]),
		 "the staging range is a hole after the move (the pages moved, nothing was copied)");

	/* Refusals, from this thread: none of them makes a page present. */
	r = tm_kvm_mte_stage(plain, src, tags, PAGE, NULL);
	r = r == 0 ? tm_kvm_mte_place_move(store, uffd, 0, 5 * PAGE, PAGE, plain, &err) : r;
	TK_CHECK(r == -EINVAL, "a staging page without PROT_MTE is refused (protections differ): %s",
		 err ? err->message : "?");
	g_clear_error(&err);
	r = tm_kvm_mte_stage(staging + 5 * PAGE, src, tags, PAGE, NULL);
	r = r == 0 ? tm_kvm_mte_place_move(store, uffd, 0, 1 * PAGE, PAGE, staging + 5 * PAGE, &err) : r;
	TK_CHECK(r == -EEXIST && tk_tags_are(vm, DATA_IPA + PAGE, PAGE, tags + PAGE / 16),
		 "moving onto an already present page is -EEXIST, its tags untouched: %s",
		 err ? err->message : "?");
	g_clear_error(&err);
	r = tm_kvm_mte_place_move(store, uffd, 0, DATA_LEN, PAGE, staging, &err);
	TK_CHECK(r == -ERANGE, "a move past the block is refused: %s", err ? err->message : "?");
	g_clear_error(&err);

	place_req stop = { 0 };
	g_async_queue_push(q, &stop);
	g_thread_join(placer);
	if (__atomic_load_n(&v.exits, __ATOMIC_ACQUIRE) >= 2 || v.error)
		g_thread_join(vt);
	g_async_queue_unref(q);
	return tk_finish();
}
