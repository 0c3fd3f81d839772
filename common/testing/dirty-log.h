/* SPDX-License-Identifier: MIT */
/*
 * Dirty-page tracking for the test "guest" of the live-migration tests: the loop those tests run
 * is the one a VMM runs with KVM_GET_DIRTY_LOG, fed by a real kernel mechanism instead of KVM:
 *
 * - "uffd-wp-async" (Linux 6.7+): the range is registered with userfaultfd in write-protect mode
 *   with UFFD_FEATURE_WP_ASYNC (and WP_UNPOPULATED, so never-touched pages are tracked too); a
 *   write to a protected page is resolved by the kernel itself, which marks it written. Collecting
 *   is one PAGEMAP_SCAN that reports the written pages and write-protects them again in the same
 *   page-table walk, so a write racing with the collection lands in this round or the next, never
 *   in neither (as CRIU does).
 * - "soft-dirty" (older kernels with CONFIG_MEM_SOFT_DIRTY): /proc/self/pagemap bit 55, cleared
 *   for the whole process through /proc/self/clear_refs. A write between the read and the clear
 *   can be lost, so it serves only where the first is missing.
 *
 * Pages are the host's base pages; back the range with MADV_NOHUGEPAGE memory, or a write marks
 * a whole huge page. Not thread-safe: one thread collects; any number of threads may write.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <glib.h>

typedef struct dirty_log dirty_log;

typedef enum dirty_log_method {
	DIRTY_LOG_AUTO,          /* uffd-wp-async where the kernel has it, else soft-dirty */
	DIRTY_LOG_UFFD_WP_ASYNC,
	DIRTY_LOG_SOFT_DIRTY,
} dirty_log_method;

/*
 * Starts tracking [base, base + len) (page-aligned): from this call on, every page written is
 * reported by the next dirty_log_collect(). Returns 0, or -EOPNOTSUPP when the method (or, for
 * AUTO, none) is available here, -errno otherwise; the reason in *error.
 */
int dirty_log_new(void *base, size_t len, dirty_log_method method, dirty_log **ret, GError **error);

/* "uffd-wp-async" or "soft-dirty". */
const char *dirty_log_name(const dirty_log *log);

/*
 * Sets bit i of bitmap (one bit per page of the range, uint64_t words, little-endian bit order
 * within a word) for every page written since the previous collection (or since dirty_log_new),
 * and starts the next interval. Bits of clean pages are left as they are (the caller clears the
 * bitmap, or ORs rounds together). Returns the number of pages reported (a page may be reported
 * once per call at most), or -errno with the reason in *error.
 */
int64_t dirty_log_collect(dirty_log *log, uint64_t *bitmap, GError **error);

/* Stops tracking; the memory stays as it is. NULL: no-op. */
void dirty_log_free(dirty_log *log);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(dirty_log, dirty_log_free)
