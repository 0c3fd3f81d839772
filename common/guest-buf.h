/* SPDX-License-Identifier: MIT */
/*
 * Buffers that hold copies of guest memory (a receive plan's stage, compressed page data, the
 * bodies of deltas): mapped for themselves, not taken from the heap. Freeing one hands its pages
 * back to the kernel, which clears them before any reuse, so no copy of the guest outlives its
 * channel in our address space; and pages never written are never touched (a resident buffer's
 * are, once, below), where clearing a heap buffer before freeing it faulted all of it in (a
 * sender that only sampled its codecs spent 15% of its CPU clearing untouched output buffers at
 * exit). A page no one may touch lies on either side: the buffer (64-byte aligned) ends at the
 * one after it, exactly when its length is a multiple of 64, so an overrun faults in every
 * build, not only under AddressSanitizer (which does not watch mappings of our own). Not part of
 * the API; thread-safe.
 */
#pragma once

#include <stddef.h>

/* len (> 0) bytes, 64-byte aligned, zero-filled. Aborts when no memory can be mapped, as
 * g_malloc() does. */
void *tm_guest_buf_new(size_t len);

/*
 * As tm_guest_buf_new(), with every page of the buffer backed before it returns, for a buffer
 * that every round may write (a receive plan's stage): its faults are paid once at setup, not in
 * the first round that uses it, which may be a migration's last (its downtime). The kernel maps
 * the pages in one call (MADV_POPULATE_WRITE, Linux 5.14; before, the writes fault them in), and
 * one write to each page follows: a host that shadows the guest's page tables (a PVM guest)
 * traps the first user write to a page even after the kernel populated it (measured: 5 us a page
 * after the populate, 11-15 us for a plain fault).
 */
void *tm_guest_buf_new_resident(size_t len);

/* Unmaps a buffer of tm_guest_buf_new(len) or tm_guest_buf_new_resident(len). NULL is ignored. */
void tm_guest_buf_free(void *buf, size_t len);
