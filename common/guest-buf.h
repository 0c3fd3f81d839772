/* SPDX-License-Identifier: MIT */
/*
 * Buffers that hold copies of guest memory (a receive plan's stage, compressed page data):
 * mapped for themselves, not taken from the heap. Freeing one hands its pages back to the
 * kernel, which clears them before any reuse, so no copy of the guest outlives its channel in
 * our address space; and pages never written are never touched, where clearing a heap buffer
 * before freeing it faulted all of it in (a sender that only sampled its codecs spent 15% of its
 * CPU clearing untouched output buffers at exit). A page no one may touch lies on either side:
 * the buffer (64-byte aligned) ends at the one after it, exactly when its length is a multiple
 * of 64, so an overrun faults in every build, not only under AddressSanitizer (which does not
 * watch mappings of our own). Not part of the API; thread-safe.
 */
#pragma once

#include <stddef.h>

/* len (> 0) bytes, 64-byte aligned, zero-filled. Aborts when no memory can be mapped, as
 * g_malloc() does. */
void *tm_guest_buf_new(size_t len);

/* Unmaps a buffer of tm_guest_buf_new(len). NULL is ignored. */
void tm_guest_buf_free(void *buf, size_t len);
