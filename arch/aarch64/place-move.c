/* SPDX-License-Identifier: MIT */
/*
 * Postcopy placement by stage + move (docs/design/postcopy-move.md): the page and its tags are
 * prepared in the VMM's own PROT_MTE staging memory (data written, tags set with STG) and moved
 * into guest RAM with UFFDIO_MOVE (Linux 6.8+). The physical page moves, so its tags and
 * PG_mte_tagged move with it, and the guest address goes from missing to present with data and
 * tags in one step: atomic for a vCPU blocked on the page and for one that is running alike
 * (tm_kvm_mte_place's copy path leaves a running vCPU a window with zero tags).
 */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/userfaultfd.h>

#include "kvm-mte-internal.h"
#include "tagmig/error.h"

/* The uAPI of Linux 6.8 (include/uapi/linux/userfaultfd.h), whatever the headers know. */
struct tm_uffdio_move {
	uint64_t dst, src, len, mode;
	int64_t move; /* out: bytes moved, or -errno */
};
#define TM_UFFDIO_MOVE _IOWR(UFFDIO, 0x05, struct tm_uffdio_move)

/* STG stores the pointer's logical tag (bits 56-59) as the granule's allocation tag. */
__attribute__((target("arch=armv8.5-a+memtag"))) static void stg_granules(uintptr_t s,
									   const uint8_t *tags,
									   uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		uintptr_t p = (s + i * 16) | ((uintptr_t)(tags[i] & 0xf) << 56);
		__asm__ volatile("stg %0, [%0]" : : "r"(p) : "memory");
	}
}

int tm_kvm_mte_stage(void *staging, const void *data, const uint8_t *tags, uint64_t length,
		     GError **error)
{
	uintptr_t s = (uintptr_t)staging;
	if (!staging || !data || !tags || length % 16 || s % 16) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "tm_kvm_mte_stage: needs staging, data and tags, 16-byte aligned");
		return -EINVAL;
	}
	memcpy(staging, data, length);
	stg_granules(s, tags, length / 16);
	return 0;
}

int tm_kvm_mte_place_move(tm_tag_store *store, int uffd, unsigned block, uint64_t offset,
			  uint64_t length, void *staging, GError **error)
{
	if (!store || tm_tag_store_get_ops(store) != &tm_tag_store_kvm_mte || !staging) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "tm_kvm_mte_place_move: needs a kvm-mte tag store and a staging area");
		return -EINVAL;
	}
	kvm_mte_priv *p = tm_tag_store_priv(store);
	uint64_t ipa;
	if (tm_kvm_mte_range(p, block, offset, length, &ipa) < 0 ||
	    offset % p->blocks[block].page_size || length % p->blocks[block].page_size) {
		g_set_error(error, TM_ERROR, ERANGE,
			    "place (move): block %u, offset 0x%" G_GINT64_MODIFIER
			    "x, length 0x%" G_GINT64_MODIFIER
			    "x: not a page-aligned range inside a registered block",
			    block, offset, length);
		return -ERANGE;
	}
	const kvm_mte_block *b = &p->blocks[block];
	if (!b->host || (uintptr_t)staging % p->host_page_size) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "place (move): block '%s': %s", b->name,
			    b->host ? "the staging area is not page aligned" : "no host mapping");
		return -EINVAL;
	}

	/* Mode 0: whoever faulted on the range wakes once its pages are present. The kernel may
	 * move part and answer EAGAIN (the page tables changed under it): go on from there. */
	uint64_t done = 0;
	int r = 0;
	for (unsigned tries = 0; done < length && tries < 1000; tries++) {
		struct tm_uffdio_move m = {
			.dst = (uint64_t)(uintptr_t)(b->host + offset + done),
			.src = (uint64_t)(uintptr_t)((uint8_t *)staging + done),
			.len = length - done,
		};
		r = ioctl(uffd, TM_UFFDIO_MOVE, &m) < 0 ? -errno : 0;
		if (r == 0) {
			done = length;
			break;
		}
		if (m.move > 0)
			done += (uint64_t)m.move;
		if (r != -EAGAIN && r != -EINTR)
			break;
	}
	if (r == 0 && done == length)
		return 0;
	if (r == 0)
		r = -EAGAIN;
	const char *why = "";
	if (r == -EINVAL)
		why = " (the kernel needs Linux 6.8+ with UFFD_FEATURE_MOVE asked for in UFFDIO_API, "
		      "and guest RAM and staging both anonymous private PROT_MTE with the same "
		      "protection)";
	else if (r == -ENOTTY)
		why = " (no UFFDIO_MOVE in this kernel: Linux 6.8+)";
	else if (r == -EBUSY)
		why = " (a staging page is pinned or shared: not an io_uring fixed buffer, not forked)";
	else if (r == -EEXIST)
		why = " (a page of the range is already present)";
	else if (r == -ENOENT)
		why = " (a staging page was never written)";
	g_set_error(error, TM_ERROR, -r,
		    "place (move): block '%s', offset 0x%" G_GINT64_MODIFIER "x: UFFDIO_MOVE: %s%s",
		    b->name, offset + done, g_strerror(-r), why);
	return r;
}
