/* SPDX-License-Identifier: MIT */
/*
 * The kvm-mte tag store against real KVM with MTE: non-uniform per-granule tags round-trip for
 * whole blocks and for ranges (4K and 64K pages), a block over two memslots (the kernel's short
 * count is continued), a hole (-EFAULT), setup refusals, and ranges outside the registered blocks
 * refused before the ioctl (the memslot right after the block keeps its tags).
 */
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/utsname.h>

#include "arch/aarch64/kvm-mte-internal.h"
#include "kvm-test.h"
#include "tagmig/tagmig.h"

#define MiB (1ull << 20)
#define IPA_RAM0 0x40000000ull /* 4 MiB, 4K pages */
#define IPA_GUARD (IPA_RAM0 + 4 * MiB) /* 64K memslot right after ram0, not in the layout */
#define IPA_RAM1 0x80000000ull /* 1 MiB, 64K pages */
#define IPA_SPLIT 0xa0000000ull /* 2 MiB block over two 1 MiB memslots */
#define IPA_HOLE 0xc0000000ull /* 2 MiB block whose second half has no memslot */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads len bytes of guest memory's tags at ipa through KVM and compares with want. */
static bool kvm_tags_equal(int vm, uint64_t ipa, uint64_t len, const uint8_t *want, long *ret_diff)
{
	g_autofree uint8_t *back = g_malloc(len / 16);
	memset(back, 0xee, len / 16);
	long r = tk_copy_tags(vm, ipa, len, back, true);
	*ret_diff = r == (long)len ? tk_first_diff(want, back, len / 16) : -2;
	return *ret_diff == -1;
}

static void test_setup_refusals(int kvm, int vm, tm_ram_layout *layout, const tm_tag_store_ops *ops)
{
	g_autoptr(GError) err = NULL;
	tm_tag_store *s = NULL;

	TK_CHECK(tm_tag_store_new(ops, layout, NULL, &s, &err) == -EINVAL && !s,
		 "init without a config refused: %s", err ? err->message : "?");
	g_clear_error(&err);

	int plain = ioctl(kvm, KVM_CREATE_VM, 0);
	tm_kvm_mte_config nomte = { .vm_fd = plain };
	int r = tm_tag_store_new(ops, layout, &nomte, &s, &err);
	TK_CHECK(r == -EINVAL && err && strstr(err->message, "not enabled"),
		 "init on a VM without KVM_CAP_ARM_MTE enabled refused (%d): %s", r,
		 err ? err->message : "?");
	g_clear_error(&err);
	close(plain);

	tm_kvm_mte_config cfg = { .vm_fd = vm };
	static uint8_t dummy[65536 * 2] __attribute__((aligned(65536)));
	if (sysconf(_SC_PAGESIZE) > 4096) {
		/* A 4K-page block on a 16K or 64K host cannot be copied page by page. */
		g_autoptr(tm_ram_layout) odd = NULL;
		tm_ram_layout_new(&odd);
		tm_ram_layout_add_block(odd, "odd", dummy, 4096, 4096, IPA_RAM0 + 4096, NULL);
		r = tm_tag_store_new(ops, odd, &cfg, &s, &err);
		TK_CHECK(r == -EINVAL && err && strstr(err->message, "host page size"),
			 "init with 4K pages on a %ld-byte-page host refused: %s",
			 sysconf(_SC_PAGESIZE), err ? err->message : "?");
		g_clear_error(&err);
	} else {
		tk_info("4K host pages: every block page size is a multiple, nothing to refuse");
	}

	g_autoptr(tm_ram_layout) overlap = NULL;
	tm_ram_layout_new(&overlap);
	tm_ram_layout_add_block(overlap, "a", dummy, 131072, 65536, IPA_RAM0, NULL);
	tm_ram_layout_add_block(overlap, "b", dummy, 65536, 65536, IPA_RAM0 + 65536, NULL);
	r = tm_tag_store_new(ops, overlap, &cfg, &s, &err);
	TK_CHECK(r == -EINVAL && err && strstr(err->message, "overlap"),
		 "init with blocks overlapping in guest-physical space refused: %s",
		 err ? err->message : "?");
}

int main(void)
{
	g_autoptr(GError) err = NULL;
	int kvm = tk_open_kvm();
	if (kvm < 0)
		return tk_finish();
	tk_info("host page size %ld", sysconf(_SC_PAGESIZE));

	const tm_tag_store_ops *ops = NULL;
	int r = tm_tag_store_lookup("kvm-mte", &ops, &err);
	TK_CHECK(r == 0 && ops && strcmp(ops->name, "kvm-mte") == 0 && ops->has_tags,
		 "tm_tag_store_lookup(\"kvm-mte\") finds the backend on arm64");
	if (r < 0)
		return tk_finish();

	int vm = tk_vm_new_mte(kvm);
	if (vm < 0)
		return tk_finish();
	const uint64_t len0 = 4 * MiB, len1 = 1 * MiB, lensplit = 2 * MiB;
	uint8_t *ram0 = tk_ram_new(len0), *guard = tk_ram_new(64 * 1024), *ram1 = tk_ram_new(len1);
	uint8_t *split = tk_ram_new(lensplit), *hole = tk_ram_new(lensplit);
	TK_CHECK(tk_memslot(vm, 0, IPA_RAM0, len0, ram0) == 0 &&
			 tk_memslot(vm, 1, IPA_GUARD, 64 * 1024, guard) == 0 &&
			 tk_memslot(vm, 2, IPA_RAM1, len1, ram1) == 0 &&
			 tk_memslot(vm, 3, IPA_SPLIT, lensplit / 2, split) == 0 &&
			 tk_memslot(vm, 4, IPA_SPLIT + lensplit / 2, lensplit / 2,
				    split + lensplit / 2) == 0 &&
			 tk_memslot(vm, 5, IPA_HOLE, lensplit / 2, hole) == 0,
		 "memslots: ram0, guard right after it, ram1, split (two slots), hole (one slot)");

	g_autoptr(tm_ram_layout) layout = NULL;
	tm_ram_layout_new(&layout);
	tm_ram_layout_add_block(layout, "ram0", ram0, len0, 4096, IPA_RAM0, NULL);
	tm_ram_layout_add_block(layout, "ram1", ram1, len1, 65536, IPA_RAM1, NULL);
	tm_ram_layout_add_block(layout, "split", split, lensplit, 4096, IPA_SPLIT, NULL);
	tm_ram_layout_add_block(layout, "hole", hole, lensplit, 4096, IPA_HOLE, NULL);

	test_setup_refusals(kvm, vm, layout, ops);

	tm_kvm_mte_config cfg = { .vm_fd = vm };
	g_autoptr(tm_tag_store) store = NULL;
	r = tm_tag_store_new(ops, layout, &cfg, &store, &err);
	TK_CHECK(r == 0, "tm_tag_store_new(kvm-mte) on an MTE VM: %s", err ? err->message : "ok");
	if (r < 0)
		return tk_finish();

	/* The guard slot gets its own pattern; nothing below may change it. */
	uint8_t guard_tags[64 * 1024 / 16];
	tk_tags_fill(guard_tags, sizeof(guard_tags), 99, 0);
	TK_CHECK(tk_copy_tags(vm, IPA_GUARD, 64 * 1024, guard_tags, false) == 64 * 1024,
		 "guard memslot tagged through KVM");

	/* Whole block, set through the store, read back through KVM and through the store. */
	g_autofree uint8_t *t0 = g_malloc(len0 / 16), *b0 = g_malloc(len0 / 16);
	tk_tags_fill(t0, len0 / 16, 1, 0);
	long diff;
	double ts = now();
	r = tm_tag_store_set(store, 0, 0, len0, t0);
	double te = now();
	TK_CHECK(r == 0 && kvm_tags_equal(vm, IPA_RAM0, len0, t0, &diff),
		 "whole block ram0 (4 MiB, 4K pages): non-uniform tags set through the store read "
		 "back through KVM (r=%d, first diff %ld, %.0f MB/s)",
		 r, diff, (double)len0 / 1e6 / (te - ts));
	memset(b0, 0xee, len0 / 16);
	r = tm_tag_store_get(store, 0, 0, len0, b0);
	TK_CHECK(r == 0 && tk_first_diff(t0, b0, len0 / 16) == -1,
		 "whole block ram0: get through the store returns the same tags (r=%d)", r);

	/* The sender's direction: tags the guest (here: KVM) holds come out of get. */
	tk_tags_fill(t0, len0 / 16, 2, 0);
	TK_CHECK(tk_copy_tags(vm, IPA_RAM0, len0, t0, false) == (long)len0, "ram0 retagged through KVM");
	r = tm_tag_store_get(store, 0, 0, len0, b0);
	TK_CHECK(r == 0 && tk_first_diff(t0, b0, len0 / 16) == -1,
		 "whole block ram0: tags set through KVM come out of get (first diff %ld)",
		 tk_first_diff(t0, b0, len0 / 16));

	/* Ranges: only the range changes, neighbours keep their tags. */
	static const struct { uint64_t off, len; } ranges[] = {
		{ 0, 4096 }, { 12 * 4096, 5 * 4096 }, { len0 - 4096, 4096 }, { 1 * MiB + 4096, 1 * MiB },
	};
	for (size_t i = 0; i < G_N_ELEMENTS(ranges); i++) {
		uint64_t off = ranges[i].off, len = ranges[i].len;
		g_autofree uint8_t *rt = g_malloc(len / 16);
		tk_tags_fill(rt, len / 16, 10 + i, off / 16);
		r = tm_tag_store_set(store, 0, off, len, rt);
		memcpy(t0 + off / 16, rt, len / 16); /* expected state of the whole block */
		bool whole = kvm_tags_equal(vm, IPA_RAM0, len0, t0, &diff);
		memset(rt, 0xee, len / 16);
		int g = tm_tag_store_get(store, 0, off, len, rt);
		TK_CHECK(r == 0 && g == 0 && whole && tk_first_diff(t0 + off / 16, rt, len / 16) == -1,
			 "range ram0+0x%" G_GINT64_MODIFIER "x len 0x%" G_GINT64_MODIFIER
			 "x: set and get round-trip, rest of the block unchanged (first diff %ld)",
			 off, len, diff);
	}

	/* 64K pages. */
	g_autofree uint8_t *t1 = g_malloc(len1 / 16), *b1 = g_malloc(len1 / 16);
	tk_tags_fill(t1, len1 / 16, 3, 0);
	r = tm_tag_store_set(store, 1, 0, len1, t1);
	TK_CHECK(r == 0 && kvm_tags_equal(vm, IPA_RAM1, len1, t1, &diff),
		 "whole block ram1 (64K pages) round-trips through KVM (first diff %ld)", diff);
	tk_tags_fill(t1 + 2 * 65536 / 16, 2 * 65536 / 16, 4, 0);
	r = tm_tag_store_set(store, 1, 2 * 65536, 2 * 65536, t1 + 2 * 65536 / 16);
	memset(b1, 0xee, len1 / 16);
	int g = tm_tag_store_get(store, 1, 0, len1, b1);
	TK_CHECK(r == 0 && g == 0 && tk_first_diff(t1, b1, len1 / 16) == -1 &&
			 kvm_tags_equal(vm, IPA_RAM1, len1, t1, &diff),
		 "range of two 64K pages in ram1 round-trips, neighbours unchanged");

	/* A block over two memslots is one range for the store. */
	g_autofree uint8_t *ts_ = g_malloc(lensplit / 16), *bs = g_malloc(lensplit / 16);
	tk_tags_fill(ts_, lensplit / 16, 6, 0);
	r = tm_tag_store_set(store, 2, 0, lensplit, ts_);
	memset(bs, 0xee, lensplit / 16);
	g = tm_tag_store_get(store, 2, 0, lensplit, bs);
	TK_CHECK(r == 0 && g == 0 && kvm_tags_equal(vm, IPA_SPLIT, lensplit / 2, ts_, &diff) &&
			 kvm_tags_equal(vm, IPA_SPLIT + lensplit / 2, lensplit / 2,
					ts_ + lensplit / 32, &diff) &&
			 tk_first_diff(ts_, bs, lensplit / 16) == -1,
		 "block over two memslots: whole block set and read (r=%d g=%d)", r, g);

	/*
	 * A block whose second half has no memslot: the kernel answers the whole-block call with a
	 * short count (the first half), the store continues at the hole and the kernel says why.
	 */
	long k = tk_copy_tags(vm, IPA_HOLE, lensplit, bs, true);
	tk_info("raw COPY_TAGS over the block with a hole covers %ld of %" G_GUINT64_FORMAT
		" bytes (short count)", k, lensplit);
	tk_tags_fill(ts_, lensplit / 16, 7, 0);
	r = tm_tag_store_set(store, 3, 0, lensplit, ts_);
	TK_CHECK(r == -EFAULT && kvm_tags_equal(vm, IPA_HOLE, lensplit / 2, ts_, &diff),
		 "block with a hole: the short count is continued, the memslot part gets its tags, "
		 "then -EFAULT at the hole (%d)", r);
	g = tm_tag_store_get(store, 3, lensplit / 2, 4096, bs);
	TK_CHECK(g == -EFAULT, "block with a hole: get in the hole fails with -EFAULT (%d)", g);

	/* Out of range: refused by the core and again by the backend itself, before the ioctl. */
	uint8_t junk[2 * 65536 / 16];
	memset(junk, 0x0f, sizeof(junk));
	TK_CHECK(tm_tag_store_set(store, 0, len0 - 4096, 8192, junk) == -ERANGE,
		 "core: set running past the end of ram0 is -ERANGE");
	TK_CHECK(ops->set(store, 0, len0 - 4096, 8192, junk) == -ERANGE &&
			 ops->set(store, 0, len0, 4096, junk) == -ERANGE &&
			 ops->set(store, 0, UINT64_MAX - 4095, 8192, junk) == -ERANGE &&
			 ops->set(store, 0, 2048, 4096, junk) == -ERANGE &&
			 ops->set(store, 0, 0, 2048, junk) == -ERANGE &&
			 ops->set(store, 0, 0, 0, junk) == -ERANGE &&
			 ops->set(store, 4, 0, 4096, junk) == -ERANGE &&
			 ops->get(store, 0, len0, 4096, junk) == -ERANGE,
		 "backend hook called directly: past the end, overflow, misaligned, empty and "
		 "unknown-block ranges are -ERANGE");
	TK_CHECK(kvm_tags_equal(vm, IPA_GUARD, 64 * 1024, guard_tags, &diff),
		 "the memslot right after ram0 (not guest RAM of the layout) kept its tags");
	TK_CHECK(kvm_tags_equal(vm, IPA_RAM0, len0, t0, &diff),
		 "ram0 unchanged by the refused writes");

	/* Dirty logging on any memslot: 6.12 and newer refuse to write tags (EBUSY), reads go on. */
	TK_CHECK(tk_memslot_flags(vm, 2, IPA_RAM1, len1, ram1, KVM_MEM_LOG_DIRTY_PAGES) == 0,
		 "dirty logging switched on for ram1's memslot");
	struct utsname u;
	uname(&u);
	unsigned maj = 0, min = 0;
	sscanf(u.release, "%u.%u", &maj, &min);
	bool busy = maj > 6 || (maj == 6 && min >= 12);
	r = tm_tag_store_set(store, 0, 0, 4096, t0);
	g = tm_tag_store_get(store, 1, 0, 65536, b1);
	TK_CHECK(r == (busy ? -EBUSY : 0) && g == 0,
		 "with dirty logging on, set is %s on %s and get works (set %d, get %d)",
		 busy ? "-EBUSY" : "allowed", u.release, r, g);
	TK_CHECK(tk_memslot_flags(vm, 2, IPA_RAM1, len1, ram1, 0) == 0 &&
			 tm_tag_store_set(store, 0, 0, 4096, t0) == 0,
		 "dirty logging off again: set works");

	/* A block added to the layout after the store was made is not the store's. */
	tm_ram_layout_add_block(layout, "late", guard, 65536, 4096, IPA_GUARD, NULL);
	TK_CHECK(tm_tag_store_set(store, 4, 0, 4096, junk) == -ERANGE &&
			 kvm_tags_equal(vm, IPA_GUARD, 64 * 1024, guard_tags, &diff),
		 "a block added after init is refused (-ERANGE), its tags untouched");
	return tk_finish();
}
