/* SPDX-License-Identifier: MIT */
/*
 * The fault thread of a postcopy destination (docs/design/live-engine.md 3.3): it alone reads
 * the userfaultfd. For each missing-page fault it finds the block and page, then: a page present
 * already lost a race with its placer's wake, so it is woken here; a page claimed or requested
 * is someone else's to place (the placer wakes it); any other page gets an open fault record
 * (its time, for the latency) and goes to the urgent thread's queue. It never places a page nor
 * touches guest RAM or tags: with a page-resident tag store that could raise a userfault only
 * this thread could serve.
 */
#include <errno.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <unistd.h>

#include "common/uffd-internal.h"
#include "ram/ram-internal.h"
#include "session/postcopy-recv.h"
#include "session/session-internal.h"
#include "tagmig/error.h"

/* TM_EVENT_FAULTS at most this often (design 1.5: at most 10 a second). */
#define FAULTS_EVENT_US 100000

/* Block of a faulting address, or -1 (not guest RAM: nothing of ours is registered there). */
static int find_block(tm_receiver *r, uint64_t addr, uint64_t *ret_page)
{
	/* Few blocks in practice; the layout keeps them in the HELLO's order, not by address. */
	for (unsigned b = 0; b < r->hello.block_count; b++) {
		const tm_ram_block *blk = tm_ram_layout_get(r->layout, b);
		uint64_t base = (uint64_t)(uintptr_t)blk->host;
		if (addr >= base && addr - base < blk->length) {
			*ret_page = (addr - base) / blk->page_size;
			return (int)b;
		}
	}
	return -1;
}

static void close_record(tm_pc_recv *pc, unsigned block, uint64_t page)
{
	int64_t key = (int64_t)((uint64_t)block << 48 | page);
	g_mutex_lock(&pc->qlock);
	gpointer v = g_hash_table_lookup(pc->open, &key);
	if (v) {
		g_hash_table_remove(pc->open, &key);
		g_free(v);
	}
	g_mutex_unlock(&pc->qlock);
}

static int one_fault(tm_receiver *r, uint64_t addr, GError **error)
{
	tm_pc_recv *pc = r->pc;
	uint64_t page;
	int b = find_block(r, addr, &page);

	if (b < 0)
		return 0;
	__atomic_add_fetch(&pc->faults, 1, __ATOMIC_RELAXED);
	int64_t now = g_get_monotonic_time();
	int64_t last = __atomic_load_n(&pc->faults_event_us, __ATOMIC_RELAXED);
	if (now - last >= FAULTS_EVENT_US) {
		__atomic_store_n(&pc->faults_event_us, now, __ATOMIC_RELAXED);
		tm_events_raise(&r->events, TM_EVENT_FAULTS);
	}
	const tm_ram_block *blk = tm_ram_layout_get(r->layout, (unsigned)b);
	uint8_t *at = blk->host + page * blk->page_size;
	if (tm_placer_present(pc->placer, (unsigned)b, page))
		return tm_uffd_wake(pc->uffd, at, blk->page_size, error); /* lost a race with WAKE */
	uint64_t bit = 1ull << (page % 64);
	if (__atomic_fetch_or(&pc->requested[b][page / 64], bit, __ATOMIC_ACQ_REL) & bit)
		return 0; /* its record is open: the page is on its way */
	int64_t *rec = g_new(int64_t, 2); /* { key, t_fault } */
	rec[0] = (int64_t)((uint64_t)b << 48 | page);
	rec[1] = now;
	g_mutex_lock(&pc->qlock);
	g_hash_table_replace(pc->open, rec, rec);
	g_mutex_unlock(&pc->qlock);
	/* A placer that made it present before the requested bit was set did not see the record. */
	if (tm_placer_present(pc->placer, (unsigned)b, page)) {
		if (__atomic_fetch_and(&pc->requested[b][page / 64], ~bit, __ATOMIC_ACQ_REL) & bit)
			close_record(pc, (unsigned)b, page);
		return tm_uffd_wake(pc->uffd, at, blk->page_size, error);
	}
	if (tm_placer_claimed(pc->placer, (unsigned)b, page))
		return 0; /* being placed: its placer wakes it and closes the record */
	pc_fault f = { .block = (unsigned)b, .page = page };
	g_mutex_lock(&pc->qlock);
	g_array_append_val(pc->queue, f);
	g_mutex_unlock(&pc->qlock);
	tm_pc_urgent_wake(pc);
	return 0;
}

static gpointer fault_thread(gpointer data)
{
	tm_receiver *r = data;
	tm_pc_recv *pc = r->pc;
	g_autoptr(GError) err = NULL;
	struct uffd_msg msgs[32];

	for (;;) {
		struct pollfd p[2] = { { .fd = pc->uffd, .events = POLLIN },
				       { .fd = pc->stop_fd, .events = POLLIN } };
		if (poll(p, 2, -1) < 0 && errno != EINTR) {
			int e = errno;
			g_set_error(&err, TM_ERROR, e, "postcopy: fault thread: poll: %s", g_strerror(e));
			break;
		}
		if (p[1].revents)
			return NULL;
		if (!(p[0].revents & POLLIN))
			continue;
		ssize_t n = read(pc->uffd, msgs, sizeof(msgs));
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n < 0) {
			int e = errno;
			g_set_error(&err, TM_ERROR, e, "postcopy: reading the userfaultfd: %s",
				    g_strerror(e));
			break;
		}
		bool failed = false;
		for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]) && !failed; i++)
			if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
				failed = one_fault(r, msgs[i].arg.pagefault.address, &err) < 0;
		if (failed)
			break;
	}
	tm_receiver_fail(r, NULL, g_steal_pointer(&err), false);
	return NULL;
}

int tm_pc_fault_start(tm_receiver *r, GError **error)
{
	r->pc->fault_thread = g_thread_try_new("tm-recv-fault", fault_thread, r, error);
	return r->pc->fault_thread ? 0 : -EAGAIN;
}
