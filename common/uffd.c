/* SPDX-License-Identifier: MIT */
/* userfaultfd: see uffd-internal.h. */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/uffd-internal.h"
#include "tagmig/error.h"

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1 /* Linux 5.11 */
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00) /* Linux 6.1 */
#endif

/* The kernel answers EAGAIN while the address space changes under a copy; give up eventually. */
#define UFFD_RETRIES 1000

static int uffd_new(int flags)
{
#ifdef SYS_userfaultfd
	int fd = (int)syscall(SYS_userfaultfd, flags);
	if (fd >= 0)
		return fd;
	int e = errno;
	if (e != EPERM && e != ENOSYS)
		return -e;
#else
	int e = ENOSYS;
#endif
	/* /dev/userfaultfd: allowed by its file mode instead of the sysctl or a capability. */
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return -e; /* the syscall's reason says more than ENOENT */
	int nfd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
	int e2 = errno;
	close(dev);
	return nfd >= 0 ? nfd : -(e2 == ENOTTY ? e : e2);
}

int tm_uffd_open(bool user_mode_only, bool nonblock, uint64_t features, int *ret_fd,
		 uint64_t *ret_features, GError **error)
{
	int flags = O_CLOEXEC | (nonblock ? O_NONBLOCK : 0) |
		    (user_mode_only ? UFFD_USER_MODE_ONLY : 0);
	int fd = uffd_new(flags);

	if (fd < 0) {
		if (fd == -EPERM)
			g_set_error(error, TM_ERROR, EPERM,
				    "userfaultfd: not permitted (needs CAP_SYS_PTRACE, access to "
				    "/dev/userfaultfd, or vm.unprivileged_userfaultfd=1; "
				    "uffd_user_mode_only works unprivileged but not for KVM)");
		else if (fd == -ENOSYS)
			g_set_error(error, TM_ERROR, ENOSYS,
				    "userfaultfd: this kernel has none (CONFIG_USERFAULTFD)");
		else
			g_set_error(error, TM_ERROR, -fd, "userfaultfd: %s", g_strerror(-fd));
		return fd;
	}
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int e = errno;
		g_set_error(error, TM_ERROR, e,
			    "userfaultfd: UFFDIO_API (features 0x%" G_GINT64_MODIFIER "x): %s",
			    (guint64)features, g_strerror(e));
		close(fd);
		return -e;
	}
	*ret_fd = fd;
	if (ret_features)
		*ret_features = api.features;
	return 0;
}

int tm_uffd_register_missing(int uffd, void *addr, uint64_t len, GError **error)
{
	struct uffdio_register reg = {
		.range = { .start = (uint64_t)(uintptr_t)addr, .len = len },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) {
		int e = errno;
		g_set_error(error, TM_ERROR, e, "UFFDIO_REGISTER (MISSING): %s", g_strerror(e));
		return -e;
	}
	const uint64_t need = (1ull << _UFFDIO_COPY) | (1ull << _UFFDIO_ZEROPAGE) |
			      (1ull << _UFFDIO_WAKE);
	if ((reg.ioctls & need) != need) {
		struct uffdio_range r = reg.range;
		ioctl(uffd, UFFDIO_UNREGISTER, &r);
		g_set_error(error, TM_ERROR, EOPNOTSUPP,
			    "UFFDIO_REGISTER: the range offers ioctls 0x%" G_GINT64_MODIFIER
			    "x, without COPY, ZEROPAGE and WAKE (hugetlbfs or shared memory?)",
			    (guint64)reg.ioctls);
		return -EOPNOTSUPP;
	}
	return 0;
}

int tm_uffd_unregister(int uffd, void *addr, uint64_t len, GError **error)
{
	struct uffdio_range r = { .start = (uint64_t)(uintptr_t)addr, .len = len };
	if (ioctl(uffd, UFFDIO_UNREGISTER, &r) < 0) {
		int e = errno;
		g_set_error(error, TM_ERROR, e, "UFFDIO_UNREGISTER: %s", g_strerror(e));
		return -e;
	}
	return 0;
}

/* One UFFDIO_COPY (src) or UFFDIO_ZEROPAGE (src NULL): 0, or -errno and the bytes it did. */
static int fill_once(int uffd, uint8_t *dst, const uint8_t *src, uint64_t len, unsigned flags,
		     int64_t *ret_did)
{
	if (src) {
		struct uffdio_copy c = {
			.dst = (uint64_t)(uintptr_t)dst,
			.src = (uint64_t)(uintptr_t)src,
			.len = len,
			.mode = (flags & TM_UFFD_DONTWAKE) ? UFFDIO_COPY_MODE_DONTWAKE : 0,
		};
		int r = ioctl(uffd, UFFDIO_COPY, &c) < 0 ? -errno : 0;
		*ret_did = c.copy;
		return r;
	}
	struct uffdio_zeropage z = {
		.range = { .start = (uint64_t)(uintptr_t)dst, .len = len },
		.mode = (flags & TM_UFFD_DONTWAKE) ? UFFDIO_ZEROPAGE_MODE_DONTWAKE : 0,
	};
	int r = ioctl(uffd, UFFDIO_ZEROPAGE, &z) < 0 ? -errno : 0;
	*ret_did = z.zeropage;
	return r;
}

static int fill(int uffd, uint8_t *dst, const uint8_t *src, uint64_t len, unsigned flags,
		uint64_t *ret_done, GError **error)
{
	uint64_t done = 0;
	int r = 0;

	for (unsigned tries = 0; done < len;) {
		int64_t did = 0;
		r = fill_once(uffd, dst + done, src ? src + done : NULL, len - done, flags, &did);
		if (r == 0) {
			done = len;
			break;
		}
		/* A partial fill reports its bytes in the field; an error there is negative. */
		if (did > 0)
			done += (uint64_t)did;
		if ((r == -EAGAIN || r == -EINTR) && ++tries < UFFD_RETRIES)
			continue;
		break;
	}
	if (ret_done)
		*ret_done = done;
	if (r < 0)
		g_set_error(error, TM_ERROR, -r, "%s: %s%s", src ? "UFFDIO_COPY" : "UFFDIO_ZEROPAGE",
			    g_strerror(-r), r == -EEXIST ? " (page already present)" : "");
	return r;
}

int tm_uffd_copy(int uffd, void *dst, const void *src, uint64_t len, unsigned flags,
		 uint64_t *ret_done, GError **error)
{
	g_return_val_if_fail(src != NULL, -EINVAL);
	return fill(uffd, dst, src, len, flags, ret_done, error);
}

int tm_uffd_zeropage(int uffd, void *dst, uint64_t len, unsigned flags, uint64_t *ret_done,
		     GError **error)
{
	return fill(uffd, dst, NULL, len, flags, ret_done, error);
}

int tm_uffd_wake(int uffd, void *addr, uint64_t len, GError **error)
{
	struct uffdio_range r = { .start = (uint64_t)(uintptr_t)addr, .len = len };
	if (ioctl(uffd, UFFDIO_WAKE, &r) < 0) {
		int e = errno;
		g_set_error(error, TM_ERROR, e, "UFFDIO_WAKE: %s", g_strerror(e));
		return -e;
	}
	return 0;
}

/* Linux 6.6 (include/uapi/linux/userfaultfd.h); older headers lack them. */
#ifndef UFFDIO_POISON
struct uffdio_poison {
	struct uffdio_range range;
	__u64 mode;
	__s64 updated;
};
#define _UFFDIO_POISON (0x08)
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

int tm_uffd_poison(int uffd, void *addr, uint64_t len, GError **error)
{
	uint64_t done = 0;
	int r = 0;

	for (unsigned tries = 0; done < len;) {
		struct uffdio_poison p = {
			.range = { .start = (uint64_t)(uintptr_t)addr + done, .len = len - done },
		};
		r = ioctl(uffd, UFFDIO_POISON, &p) < 0 ? -errno : 0;
		if (r == 0)
			break;
		if (p.updated > 0)
			done += (uint64_t)p.updated;
		if ((r == -EAGAIN || r == -EINTR) && ++tries < UFFD_RETRIES)
			continue;
		break;
	}
	if (r < 0)
		g_set_error(error, TM_ERROR, -r, "UFFDIO_POISON: %s%s", g_strerror(-r),
			    r == -EINVAL || r == -ENOTTY ? " (needs Linux 6.6 and UFFD_FEATURE_POISON)"
							 : "");
	return r;
}
