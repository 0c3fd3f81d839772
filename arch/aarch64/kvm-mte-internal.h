/* SPDX-License-Identifier: MIT */
/* Shared by the KVM MTE tag store (kvm-mte.c) and the userfaultfd placement (place.c). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "arch/arch-internal.h"
#include "tagmig/kvm-mte.h"

/* One registered block, copied at init: read-only afterwards. */
typedef struct kvm_mte_block {
	const char *name; /* owned by the layout, which outlives the store */
	uint8_t *host;
	uint64_t guest_base;
	uint64_t length;
	uint32_t page_size;
} kvm_mte_block;

typedef struct kvm_mte_priv {
	/* read-only after init */
	int vm_fd;
	uint64_t host_page_size;
	unsigned count;
	kvm_mte_block *blocks;
} kvm_mte_priv;

/*
 * Checks that [offset, offset + length) lies inside registered block `block`, is non-empty and
 * aligned to the host page size. Returns 0 and the guest-physical address in *ret_ipa, or -ERANGE.
 * Every KVM_ARM_MTE_COPY_TAGS of the store goes through it first.
 */
int tm_kvm_mte_range(const kvm_mte_priv *p, unsigned block, uint64_t offset, uint64_t length,
		     uint64_t *ret_ipa);

/*
 * KVM_ARM_MTE_COPY_TAGS over [ipa, ipa + length) (host-page aligned), buf holding length / 16
 * bytes, in calls of at most 1 GiB (Linux 6.12 refuses 2 GiB and more). A short count continues
 * from where the kernel stopped, so the next call fails with the kernel's reason if it cannot go
 * on either; a call that copies nothing is -EFAULT.
 * EINTR is retried. Returns 0 or -errno; *ret_done (may be NULL) gets the bytes of guest memory
 * completed before a failure.
 */
int tm_kvm_mte_copy(int vm_fd, uint64_t ipa, uint64_t length, void *buf, bool from_guest,
		    uint64_t *ret_done);

/* The store's place_atomic hooks (place-atomic.c; contracts in tagstore.h). */
void *tm_kvm_mte_staging_new(tm_tag_store *store, uint64_t length, GError **error);
void tm_kvm_mte_staging_free(tm_tag_store *store, void *staging, uint64_t length);
int tm_kvm_mte_place_atomic(tm_tag_store *store, int uffd, unsigned block, uint64_t offset,
			    uint64_t length, const void *data, const uint8_t *tags, void *staging,
			    GError **error);
