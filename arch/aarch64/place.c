/* SPDX-License-Identifier: MIT */
/*
 * Demand-paged placement (postcopy): a page and its tags become visible to a vCPU blocked on a
 * userfaultfd MISSING fault together. UFFDIO_COPY with DONTWAKE makes the page present without
 * waking the faulter, KVM_ARM_MTE_COPY_TAGS sets its tags (the page is present now, so this
 * cannot fault), and only then UFFDIO_WAKE lets the vCPU run; its stage-2 fault then maps the
 * page with the tags already set. The userfaultfd ioctls and their retries are common/uffd.c's,
 * shared with the session's placers (session/place.c).
 */
#include <errno.h>
#include <string.h>

#include "common/uffd-internal.h"
#include "kvm-mte-internal.h"
#include "tagmig/error.h"

int tm_kvm_mte_place(tm_tag_store *store, int uffd, unsigned block, uint64_t offset,
		     uint64_t length, const void *data, const uint8_t *tags, GError **error)
{
	if (!store || tm_tag_store_get_ops(store) != &tm_tag_store_kvm_mte || !data || !tags) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "tm_kvm_mte_place: needs a kvm-mte tag store, data and tags");
		return -EINVAL;
	}
	kvm_mte_priv *p = tm_tag_store_priv(store);
	uint64_t ipa;
	if (tm_kvm_mte_range(p, block, offset, length, &ipa) < 0 ||
	    offset % p->blocks[block].page_size || length % p->blocks[block].page_size) {
		g_set_error(error, TM_ERROR, ERANGE,
			    "place: block %u, offset 0x%" G_GINT64_MODIFIER "x, length 0x%" G_GINT64_MODIFIER
			    "x: not a page-aligned range inside a registered block",
			    block, offset, length);
		return -ERANGE;
	}
	const kvm_mte_block *b = &p->blocks[block];
	if (!b->host) {
		g_set_error(error, TM_ERROR, EINVAL, "place: block '%s' has no host mapping", b->name);
		return -EINVAL;
	}

	/* 1. The data: present, but the blocked faulters stay asleep. */
	uint64_t done = 0;
	int r = tm_uffd_copy(uffd, b->host + offset, data, length, TM_UFFD_DONTWAKE, &done, error);
	if (r < 0) {
		g_prefix_error(error, "place: block '%s', offset 0x%" G_GINT64_MODIFIER "x: ", b->name,
			       offset + done);
		return r;
	}

	/* 2. The tags, before anyone can run on the page. */
	r = tm_kvm_mte_copy(p->vm_fd, ipa, length, (void *)tags, false, &done);
	if (r < 0) {
		g_set_error(error, TM_ERROR, -r,
			    "place: block '%s', offset 0x%" G_GINT64_MODIFIER
			    "x: KVM_ARM_MTE_COPY_TAGS: %s (the range is present but not woken)",
			    b->name, offset + done, g_strerror(-r));
		return r;
	}

	/* 3. Wake whoever faulted on the range. */
	r = tm_uffd_wake(uffd, b->host + offset, length, error);
	if (r < 0) {
		g_prefix_error(error, "place: block '%s', offset 0x%" G_GINT64_MODIFIER "x: ", b->name,
			       offset);
		return r;
	}
	return 0;
}
