/* SPDX-License-Identifier: MIT */
/*
 * The KVM MTE tag store ("kvm-mte") and demand-paged placement of a page with its tags, for a VMM
 * that runs an arm64 guest with MTE under KVM. See docs/aarch64.md for how a VMM wires them.
 *
 * This header is architecture-neutral: it declares no kernel types. The backend is built only for
 * arm64 Linux; elsewhere tm_tag_store_lookup("kvm-mte") and tm_kvm_mte_place() return -EOPNOTSUPP
 * with the reason.
 */
#pragma once

#include <stdint.h>

#include <glib.h>

#include "export.h"
#include "tagstore.h"

G_BEGIN_DECLS

/*
 * The `arg` of tm_tag_store_new() for the "kvm-mte" backend (get the ops with
 * tm_tag_store_lookup("kvm-mte", ...)). Copied by init.
 *
 * vm_fd: the VM's KVM file descriptor, with KVM_CAP_ARM_MTE enabled (which KVM only allows before
 * the first vCPU exists). Borrowed: the VMM keeps it open until tm_tag_store_free().
 *
 * Each block of the layout is the host mapping of one guest RAM region whose guest-physical base
 * is the block's guest_base, backed by one or more KVM memslots that cover it exactly. Blocks must
 * not overlap in guest-physical space; their page size and guest_base must be multiples of the
 * host page size, which KVM_ARM_MTE_COPY_TAGS requires (4K, 16K or 64K). init refuses anything
 * else with -EINVAL and the reason.
 *
 * The store calls KVM_ARM_MTE_COPY_TAGS only for ranges inside a registered block (it checks
 * again what the core already checked, -ERANGE otherwise), so a peer can never make it touch the
 * tags of memory that is not guest RAM. get and set return the kernel's reason for a range it
 * cannot reach (-EFAULT for a hole without memslot; tags before that page are set) and -EBUSY
 * on Linux 6.12 and newer while any memslot of the VM has dirty logging on: the receiver must not
 * dirty-log while it receives (docs/aarch64.md, "Short counts" and step 5). get and set are
 * thread-safe (each is one or more independent ioctls).
 */
typedef struct tm_kvm_mte_config {
	int vm_fd;
	uint32_t reserved; /* must be zero */
} tm_kvm_mte_config;

/*
 * Places length bytes of data (and their tags) at offset of block, in guest RAM that the VMM has
 * registered with userfaultfd uffd in MISSING mode (postcopy), so that a vCPU blocked on a fault
 * in the range only resumes once data and tags are both in place:
 *   1. UFFDIO_COPY of data with UFFDIO_COPY_MODE_DONTWAKE (the page becomes present, blocked
 *      faulters stay asleep),
 *   2. KVM_ARM_MTE_COPY_TAGS of tags (length / 16 bytes, one per granule, low nibble),
 *   3. UFFDIO_WAKE of the range.
 * store must be a "kvm-mte" store of the layout that holds block; offset and length must be
 * multiples of the block's page size and inside the block; the block's host pointer must be the
 * uffd-registered mapping. data and tags are only read.
 *
 * Threads: call it from a thread that is NOT the one serving the uffd's faults. Setting tags on a
 * page that is still missing raises a userfault itself; should that page be in the range of
 * another placement still in flight, only the fault-serving thread can resolve it.
 * Thread-safe for disjoint ranges.
 *
 * Atomicity holds for faulters that are blocked when the page is copied (the usual postcopy
 * case). A vCPU that first touches the range in the short window between steps 1 and 2 is not
 * blocked (the page is present) and may see it before its tags; see docs/aarch64.md.
 *
 * Returns 0, or -errno with *error naming block and offset: -ERANGE (range outside the block),
 * -EINVAL (not a kvm-mte store, bad alignment), -EEXIST (a page of the range was already present:
 * nothing is woken, tags are not set), the errno of UFFDIO_COPY, KVM_ARM_MTE_COPY_TAGS or
 * UFFDIO_WAKE otherwise. After a failure past step 1 the range is present but not woken; the VMM
 * is expected to abandon the migration. -EOPNOTSUPP on builds without the kvm-mte backend.
 */
TM_EXPORT int tm_kvm_mte_place(tm_tag_store *store, int uffd, unsigned block, uint64_t offset,
			       uint64_t length, const void *data, const uint8_t *tags,
			       GError **error);

/* UFFD_FEATURE_MOVE of UFFDIO_API (Linux 6.8), whatever the headers know: ask for it when opening
 * the userfaultfd that tm_kvm_mte_place_move() will use; a kernel without it refuses (EINVAL). */
#define TM_KVM_MTE_UFFD_FEATURE_MOVE (1ull << 16)

/*
 * Fills a staging range for tm_kvm_mte_place_move(): copies length bytes of data to staging, then
 * sets the allocation tag of each 16-byte granule i to the low nibble of tags[i] (STG). staging
 * must lie in the caller's anonymous private mapping made with PROT_READ | PROT_WRITE | PROT_MTE
 * (the same protection as guest RAM, which must then be PROT_MTE too), with MADV_NOHUGEPAGE, not
 * registered with io_uring and not shared with a child process. Thread-safe for disjoint ranges.
 * Returns 0 or -EINVAL (NULL or not 16-byte aligned); -EOPNOTSUPP without the kvm-mte backend.
 */
TM_EXPORT int tm_kvm_mte_stage(void *staging, const void *data, const uint8_t *tags,
			       uint64_t length, GError **error);

/*
 * Places [offset, offset + length) of block like tm_kvm_mte_place(), but atomically for every
 * vCPU, running ones too: the pages prepared at staging (tm_kvm_mte_stage) are moved into guest
 * RAM with UFFDIO_MOVE, which makes each one present with its data and tags in one step and wakes
 * the threads blocked on the range. Afterwards the staging range is a hole (writing it again
 * faults in fresh pages). Needs Linux 6.8+, uffd opened with TM_KVM_MTE_UFFD_FEATURE_MOVE, and
 * guest RAM mapped PROT_MTE in the VMM (docs/design/postcopy-move.md gives the kernel's rules).
 *
 * Same threads rule as tm_kvm_mte_place. Returns 0, or -errno with *error naming block, offset
 * and the likely reason: -ERANGE (range outside the block), -EINVAL (not a kvm-mte store, staging
 * misaligned, or the kernel's refusal: no UFFD_FEATURE_MOVE, or the two mappings differ in
 * protection), -EEXIST (a page already present), -EBUSY (a staging page pinned or shared),
 * -ENOENT (a staging page never written), -ENOTTY (no UFFDIO_MOVE). Pages before the failing one
 * are placed. -EOPNOTSUPP on builds without the kvm-mte backend.
 */
TM_EXPORT int tm_kvm_mte_place_move(tm_tag_store *store, int uffd, unsigned block,
				    uint64_t offset, uint64_t length, void *staging,
				    GError **error);

G_END_DECLS
