/* SPDX-License-Identifier: MIT */
/*
 * The kvm-mte store's place_atomic hook (tagstore.h) for the session's placers: a staging area
 * per placer thread (anonymous private PROT_MTE, MADV_NOHUGEPAGE, never given to io_uring), then
 * per run tm_kvm_mte_stage() + tm_kvm_mte_place_move() (place-move.c). The contract's "not here,
 * use copy" is -EINVAL / -EOPNOTSUPP from UFFDIO_MOVE (no UFFD_FEATURE_MOVE, guest RAM not
 * PROT_MTE): the kernel validates the two mappings before it moves a page, so the range is still
 * missing then (docs/design/postcopy-move.md, fact 3).
 */
#include <errno.h>
#include <sys/mman.h>

#include "kvm-mte-internal.h"
#include "tagmig/error.h"

#ifndef PROT_MTE
#define PROT_MTE 0x20 /* arm64 uapi asm/mman.h */
#endif

void *tm_kvm_mte_staging_new(tm_tag_store *store, uint64_t length, GError **error)
{
	(void)store;
	void *s = mmap(NULL, length, PROT_READ | PROT_WRITE | PROT_MTE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (s == MAP_FAILED) {
		int e = errno;
		g_set_error(error, TM_ERROR, e,
			    "kvm-mte: staging area of %" G_GUINT64_FORMAT " bytes: mmap with PROT_MTE: %s",
			    length, g_strerror(e));
		return NULL;
	}
	/* A huge page would be split, or moved whole only when everything is PMD aligned. */
	(void)madvise(s, length, MADV_NOHUGEPAGE);
	return s;
}

void tm_kvm_mte_staging_free(tm_tag_store *store, void *staging, uint64_t length)
{
	(void)store;
	if (staging)
		munmap(staging, length);
}

int tm_kvm_mte_place_atomic(tm_tag_store *store, int uffd, unsigned block, uint64_t offset,
			    uint64_t length, const void *data, const uint8_t *tags, void *staging,
			    GError **error)
{
	int r = tm_kvm_mte_stage(staging, data, tags, length, error);
	return r < 0 ? r : tm_kvm_mte_place_move(store, uffd, block, offset, length, staging, error);
}
