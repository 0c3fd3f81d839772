/* SPDX-License-Identifier: MIT */
/*
 * userfaultfd for postcopy placement: open, API handshake, register, and the three ioctls that
 * make a missing page present (UFFDIO_COPY, UFFDIO_ZEROPAGE) and wake its faulters (UFFDIO_WAKE).
 * Shared by the session's placers (session/place.c) and tm_kvm_mte_place() (arch/aarch64), so
 * that the EAGAIN / partial-copy retry lives in one place. Not part of the API.
 *
 * Every function returns 0 or -errno and sets *error to a message that names the ioctl and the
 * kernel's reason, but not the RAM block: callers prefix block and offset (g_prefix_error), using
 * *ret_done where given. All are thread-safe: each is one or more independent ioctls on an fd
 * the caller keeps open.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

G_BEGIN_DECLS

/* Flags of tm_uffd_copy() and tm_uffd_zeropage(). */
#define TM_UFFD_DONTWAKE 1u /* leave threads blocked on the range asleep (UFFDIO_*_MODE_DONTWAKE) */

/*
 * Opens a userfaultfd (O_CLOEXEC; O_NONBLOCK with nonblock) through userfaultfd(2) and, where
 * that is refused (EPERM, or ENOSYS in a seccomp sandbox), /dev/userfaultfd's USERFAULTFD_IOC_NEW,
 * then does UFFDIO_API asking for features (UFFD_FEATURE_* bits; 0 is enough for MISSING
 * faults). user_mode_only: UFFD_USER_MODE_ONLY, which unprivileged processes may use, but whose
 * fd only sees faults raised in user mode (never a KVM vCPU's). On success *ret_fd is the new fd
 * (the caller closes it) and *ret_features (may be NULL) what the kernel offers. -EPERM names
 * the three ways to be allowed; -ENOSYS: the kernel has no userfaultfd; -EINVAL from UFFDIO_API:
 * a feature asked for is not supported.
 */
int tm_uffd_open(bool user_mode_only, bool nonblock, uint64_t features, int *ret_fd,
		 uint64_t *ret_features, GError **error);

/*
 * Registers [addr, addr + len) (page aligned, mapped) for MISSING faults and checks that the
 * range supports UFFDIO_COPY, UFFDIO_ZEROPAGE and UFFDIO_WAKE (-EOPNOTSUPP otherwise, e.g.
 * hugetlbfs has no ZEROPAGE).
 */
int tm_uffd_register_missing(int uffd, void *addr, uint64_t len, GError **error);
int tm_uffd_unregister(int uffd, void *addr, uint64_t len, GError **error);

/*
 * UFFDIO_COPY of len bytes from src to dst (registered, missing, page aligned). The kernel may
 * copy part and answer EAGAIN (the address space changed) or be interrupted: it goes on from where
 * the kernel stopped, up to 1000 times. *ret_done (may be NULL) gets the bytes copied (all of len
 * on success; on failure those before the page that failed). -EEXIST: a page of the range was
 * already present (nothing after it was copied); nothing is woken on failure.
 */
int tm_uffd_copy(int uffd, void *dst, const void *src, uint64_t len, unsigned flags,
		 uint64_t *ret_done, GError **error);

/* UFFDIO_ZEROPAGE of [dst, dst + len): maps the zero page, same rules and retries as copy. */
int tm_uffd_zeropage(int uffd, void *dst, uint64_t len, unsigned flags, uint64_t *ret_done,
		     GError **error);

/* UFFDIO_WAKE of [addr, addr + len): threads blocked on a fault in the range resume. */
int tm_uffd_wake(int uffd, void *addr, uint64_t len, GError **error);

/* UFFD_FEATURE_MOVE of UFFDIO_API (Linux 6.8): UFFDIO_MOVE, for atomic placement (place.h). */
#define TM_UFFD_FEATURE_MOVE (1ull << 16)

/* UFFD_FEATURE_POISON of UFFDIO_API (Linux 6.6), whatever the headers know. */
#define TM_UFFD_FEATURE_POISON (1ull << 14)

/*
 * UFFDIO_POISON of [addr, addr + len) (registered, missing): a thread touching a page of it gets
 * SIGBUS instead of waiting (threads waiting now are woken to get it). Needs the fd opened with
 * TM_UFFD_FEATURE_POISON; -EINVAL otherwise (or before Linux 6.6).
 */
int tm_uffd_poison(int uffd, void *addr, uint64_t len, GError **error);

G_END_DECLS
