/* SPDX-License-Identifier: MIT */
/*
 * Builds without the KVM MTE backend (any host but arm64 Linux, or kernel headers without
 * KVM_ARM_MTE_COPY_TAGS): the public entry point exists and says why it cannot work.
 */
#include <errno.h>

#include "tagmig/error.h"
#include "tagmig/kvm-mte.h"

int tm_kvm_mte_place(tm_tag_store *store, int uffd, unsigned block, uint64_t offset,
		     uint64_t length, const void *data, const uint8_t *tags, GError **error)
{
	g_set_error(error, TM_ERROR, EOPNOTSUPP,
		    "tm_kvm_mte_place: this build has no kvm-mte backend (it needs arm64 Linux with "
		    "KVM_ARM_MTE_COPY_TAGS in the kernel headers)");
	return -EOPNOTSUPP;
}

int tm_kvm_mte_stage(void *staging, const void *data, const uint8_t *tags, uint64_t length,
		     GError **error)
{
	g_set_error(error, TM_ERROR, EOPNOTSUPP,
		    "tm_kvm_mte_stage: this build has no kvm-mte backend (it needs arm64 Linux)");
	return -EOPNOTSUPP;
}

int tm_kvm_mte_place_move(tm_tag_store *store, int uffd, unsigned block, uint64_t offset,
			  uint64_t length, void *staging, GError **error)
{
	g_set_error(error, TM_ERROR, EOPNOTSUPP,
		    "tm_kvm_mte_place_move: this build has no kvm-mte backend (it needs arm64 Linux "
		    "with KVM_ARM_MTE_COPY_TAGS in the kernel headers)");
	return -EOPNOTSUPP;
}
