/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/utsname.h>

#include <glib.h>

#include "kvm-test.h"

static unsigned npass, nfail;

static void line(const char *prefix, const char *fmt, va_list ap)
{
	/* One write per line: the console is shared with the kernel and other threads. */
	char buf[1024];
	int n = snprintf(buf, sizeof(buf), "%s: ", prefix);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	(void)!write(STDOUT_FILENO, buf, (size_t)n);
}

void tk_pass(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	line("PASS", fmt, ap);
	va_end(ap);
	__atomic_fetch_add(&npass, 1, __ATOMIC_RELAXED);
}

void tk_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	line("FAIL", fmt, ap);
	va_end(ap);
	__atomic_fetch_add(&nfail, 1, __ATOMIC_RELAXED);
}

void tk_info(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	line("INFO", fmt, ap);
	va_end(ap);
}

int tk_finish(void)
{
	tk_info("%u passed, %u failed", npass, nfail);
	return npass > 0 && nfail == 0 ? 0 : 1;
}

int tk_open_kvm(void)
{
	struct utsname u;
	if (uname(&u) == 0)
		tk_info("kernel %s %s", u.release, u.machine);
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		tk_fail("open /dev/kvm: %s", strerror(errno));
		return -1;
	}
	int cap = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_ARM_MTE);
	if (cap <= 0) {
		tk_fail("KVM offers no MTE (KVM_CHECK_EXTENSION(KVM_CAP_ARM_MTE) = %d)", cap);
		close(fd);
		return -1;
	}
	return fd;
}

int tk_vm_new_mte(int kvm)
{
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0) {
		tk_fail("KVM_CREATE_VM: %s", strerror(errno));
		return -1;
	}
	struct kvm_enable_cap cap = { .cap = KVM_CAP_ARM_MTE };
	if (ioctl(vm, KVM_ENABLE_CAP, &cap) < 0) {
		tk_fail("KVM_ENABLE_CAP(KVM_CAP_ARM_MTE): %s", strerror(errno));
		close(vm);
		return -1;
	}
	return vm;
}

uint8_t *tk_ram_new(size_t len)
{
	const size_t align = 65536;
	uint8_t *m = mmap(NULL, len + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			  -1, 0);
	if (m == MAP_FAILED) {
		tk_fail("mmap %zu bytes: %s", len, strerror(errno));
		return NULL;
	}
	/* Trim to an aligned start (the slack is left mapped: test programs are short-lived). */
	return (uint8_t *)(((uintptr_t)m + align - 1) & ~(uintptr_t)(align - 1));
}

int tk_memslot(int vm, uint32_t slot, uint64_t ipa, uint64_t len, void *host)
{
	return tk_memslot_flags(vm, slot, ipa, len, host, 0);
}

int tk_memslot_flags(int vm, uint32_t slot, uint64_t ipa, uint64_t len, void *host,
		     uint32_t flags)
{
	struct kvm_userspace_memory_region r = {
		.slot = slot,
		.flags = flags,
		.guest_phys_addr = ipa,
		.memory_size = len,
		.userspace_addr = (uint64_t)(uintptr_t)host,
	};
	return ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0 ? -errno : 0;
}

long tk_copy_tags(int vm, uint64_t ipa, uint64_t len, void *buf, bool from_guest)
{
	struct kvm_arm_copy_mte_tags c = {
		.guest_ipa = ipa,
		.length = len,
		.addr = buf,
		.flags = from_guest ? KVM_ARM_TAGS_FROM_GUEST : KVM_ARM_TAGS_TO_GUEST,
	};
	long r = ioctl(vm, KVM_ARM_MTE_COPY_TAGS, &c);
	return r < 0 ? -errno : r;
}

void tk_tags_fill(uint8_t *tags, size_t n, uint64_t seed, uint64_t first)
{
	for (size_t i = 0; i < n; i++)
		tags[i] = tk_tag(seed, first + i);
}

long tk_first_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (a[i] != b[i])
			return (long)i;
	return -1;
}

uint64_t tk_rand(void)
{
	static uint64_t state = 0x243f6a8885a308d3ull;
	uint64_t z = (state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}
