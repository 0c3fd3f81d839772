/* SPDX-License-Identifier: MIT */
/*
 * Demand-paged placement with a real vCPU: guest RAM registered with userfaultfd (MISSING), a
 * vCPU that loads from a missing page and blocks in the fault, the main thread serving faults and
 * a separate placer thread calling tm_kvm_mte_place() (UFFDIO_COPY DONTWAKE, tags through KVM,
 * UFFDIO_WAKE). The vCPU must resume with the placed data (it reports it with an MMIO write), and
 * the tags read back through KVM after its stage-2 fault must be the ones sent. Twice (one page,
 * then two pages at once), plus a placement without a fault and the refusals.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <linux/kvm.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "kvm-test.h"
#include "tagmig/tagmig.h"

/* The demand-fault guest's addresses (kvm-test.h). */
#define CODE_IPA TK_CODE_IPA
#define DATA_IPA TK_DATA_IPA
#define DATA_LEN TK_DATA_LEN
#define MMIO_IPA TK_MMIO_IPA
#define PAGE TK_PAGE

/* The placer: never the thread that serves faults. */
typedef struct place_req {
	tm_tag_store *store;
	int uffd;
	uint64_t off, len;
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
		req->ret = tm_kvm_mte_place(req->store, req->uffd, 0, req->off, req->len, req->data,
					    req->tags, &err);
		req->msg = err ? g_strdup(err->message) : NULL;
		g_clear_error(&err);
		__atomic_store_n(&req->uffd, -1, __ATOMIC_RELEASE); /* done */
	}
	return NULL;
}

/* One demand fault: the vCPU blocks on `page`, the placer places [page, page + npages). */
static void fault_round(tk_vcpu *v, int vm, int uffd, uint8_t *data, GAsyncQueue *q,
			tm_tag_store *store, const uint8_t *src, const uint8_t *tags, uint64_t page,
			uint64_t npages, uint64_t load_off, int round)
{
	uint64_t addr = tk_wait_fault(uffd, 30000);
	TK_CHECK(addr == (uint64_t)(uintptr_t)(data + page * PAGE),
		 "round %d: the vCPU's load from data page %" G_GUINT64_FORMAT
		 " raised a userfault (0x%" G_GINT64_MODIFIER "x)",
		 round, page, addr);
	if (!addr) {
		pthread_kill(v->thread, SIGUSR1);
		g_usleep(500000);
		tk_info("vCPU state: exits %d, error %d, last exit reason %u",
			__atomic_load_n(&v->exits, __ATOMIC_ACQUIRE),
			__atomic_load_n(&v->error, __ATOMIC_ACQUIRE), v->run->exit_reason);
		return;
	}
	g_usleep(100000);
	TK_CHECK(__atomic_load_n(&v->exits, __ATOMIC_ACQUIRE) == round - 1,
		 "round %d: the vCPU is blocked in the fault", round);

	place_req req = { .store = store, .uffd = uffd, .off = page * PAGE, .len = npages * PAGE,
			  .data = src + page * PAGE, .tags = tags + page * PAGE / 16 };
	g_async_queue_push(q, &req);
	bool done = tk_wait_for(&req.uffd, -1, 60000);
	TK_CHECK(done && req.ret == 0,
		 "round %d: tm_kvm_mte_place of %" G_GUINT64_FORMAT
		 " page(s) on the placer thread: %d %s",
		 round, npages, req.ret, req.msg ? req.msg : "");
	g_free(req.msg);

	bool ran = tk_wait_for(&v->exits, round, 60000);
	uint64_t want;
	memcpy(&want, src + load_off, 8);
	TK_CHECK(ran && v->mmio_addr[round - 1] == MMIO_IPA + (uint64_t)(round - 1) * 8 &&
			 v->mmio_val[round - 1] == want,
		 "round %d: the vCPU resumed and loaded the placed data (0x%" G_GINT64_MODIFIER
		 "x, want 0x%" G_GINT64_MODIFIER "x, error %d)",
		 round, ran ? v->mmio_val[round - 1] : 0, want, v->error);
	TK_CHECK(tk_tags_are(vm, DATA_IPA + page * PAGE, npages * PAGE, tags + page * PAGE / 16),
		 "round %d: tags read back through KVM after the vCPU's access are the ones sent",
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
	int vm = tk_vm_new_mte(kvm);
	if (vm < 0)
		return tk_finish();

	uint8_t *code = tk_ram_new(PAGE), *data = tk_ram_new(DATA_LEN);
	tk_fault_guest_write(code);
	int uffd = (int)syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = {
		.range = { .start = (uint64_t)(uintptr_t)data, .len = DATA_LEN },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	TK_CHECK(uffd >= 0 && ioctl(uffd, UFFDIO_API, &api) == 0 &&
			 ioctl(uffd, UFFDIO_REGISTER, &reg) == 0,
		 "userfaultfd registered (MISSING) over the 64 KiB data region");
	TK_CHECK(tk_memslot(vm, 0, CODE_IPA, PAGE, code) == 0 &&
			 tk_memslot(vm, 1, DATA_IPA, DATA_LEN, data) == 0,
		 "memslots: code page, uffd-registered data");

	g_autoptr(tm_ram_layout) layout = NULL;
	g_autoptr(tm_tag_store) store = NULL;
	int r = tk_fault_store_new(vm, data, &layout, &store);
	if (r < 0)
		return tk_finish();
	tk_vcpu v;
	if (!tk_vcpu_new(kvm, vm, &v))
		return tk_finish();

	/* What the source would send: data and non-uniform tags for every page. */
	g_autofree uint8_t *src = g_malloc(DATA_LEN), *tags = g_malloc(DATA_LEN / 16);
	for (size_t i = 0; i < DATA_LEN; i += 8) {
		uint64_t x = tk_rand();
		memcpy(src + i, &x, 8);
	}
	tk_tags_fill(tags, DATA_LEN / 16, 21, 0);

	GAsyncQueue *q = g_async_queue_new();
	GThread *placer = g_thread_new("placer", placer_thread, q);
	GThread *vt = tk_vcpu_start(&v);

	fault_round(&v, vm, uffd, data, q, store, src, tags, 1, 1, 0x1000, 1);
	fault_round(&v, vm, uffd, data, q, store, src, tags, 3, 2, 0x3008, 2);

	/* Placement ahead of any fault (background postcopy), four pages. */
	place_req req = { .store = store, .uffd = uffd, .off = 8 * PAGE, .len = 4 * PAGE,
			  .data = src + 8 * PAGE, .tags = tags + 8 * PAGE / 16 };
	g_async_queue_push(q, &req);
	bool done = tk_wait_for(&req.uffd, -1, 60000);
	TK_CHECK(done && req.ret == 0 && memcmp(data + 8 * PAGE, src + 8 * PAGE, 4 * PAGE) == 0 &&
			 tk_tags_are(vm, DATA_IPA + 8 * PAGE, 4 * PAGE, tags + 8 * PAGE / 16),
		 "placement of four pages without a fault: data and tags in place (%d %s)", req.ret,
		 req.msg ? req.msg : "");
	g_free(req.msg);

	/* Refusals, from this thread: none of them reaches a missing page. */
	r = tm_kvm_mte_place(store, uffd, 0, DATA_LEN, PAGE, src, tags, &err);
	TK_CHECK(r == -ERANGE, "placement past the block refused: %s", err ? err->message : "?");
	g_clear_error(&err);
	r = tm_kvm_mte_place(store, uffd, 0, 2048, PAGE, src, tags, &err);
	TK_CHECK(r == -ERANGE, "misaligned placement refused: %s", err ? err->message : "?");
	g_clear_error(&err);
	r = tm_kvm_mte_place(store, uffd, 0, 1 * PAGE, PAGE, src, tags, &err);
	TK_CHECK(r == -EEXIST && tk_tags_are(vm, DATA_IPA + PAGE, PAGE, tags + PAGE / 16),
		 "placing an already present page is -EEXIST, its tags untouched: %s",
		 err ? err->message : "?");
	g_clear_error(&err);
	g_autoptr(tm_tag_store) soft = NULL;
	tm_tag_store_new(&tm_tag_store_soft, layout, NULL, &soft, NULL);
	r = tm_kvm_mte_place(soft, uffd, 0, 5 * PAGE, PAGE, src, tags, &err);
	TK_CHECK(r == -EINVAL, "placement through a soft store refused: %s", err ? err->message : "?");
	g_clear_error(&err);

	place_req stop = { 0 };
	g_async_queue_push(q, &stop);
	g_thread_join(placer);
	if (__atomic_load_n(&v.exits, __ATOMIC_ACQUIRE) >= 2 || v.error)
		g_thread_join(vt);
	g_async_queue_unref(q);
	return tk_finish();
}
