/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <linux/kvm.h>
#include <linux/userfaultfd.h>
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

/* The demand-fault guest (kvm-test.h). */
extern const unsigned char tk_guest_code[], tk_guest_code_end[];
__asm__(".pushsection .rodata\n"
	".balign 4\n"
	/* global symbols: a GOT reference to a local label plus an offset loses the offset */
	".global tk_guest_code, tk_guest_code_end\n"
	".hidden tk_guest_code, tk_guest_code_end\n"
	"tk_guest_code:\n"
	"  movz x1, #0x8010, lsl #16\n" /* x1 = TK_DATA_IPA */
	"  movz x2, #0x9000, lsl #16\n" /* x2 = TK_MMIO_IPA (no memslot) */
	"  ldr  x0, [x1, #0x1000]\n"
	"  str  x0, [x2]\n"
	"  ldr  x3, [x1, #0x3008]\n"
	"  str  x3, [x2, #8]\n"
	"1: b 1b\n"
	"tk_guest_code_end:\n"
	".popsection\n");

void tk_fault_guest_write(uint8_t *code)
{
	memcpy(code, tk_guest_code, (size_t)(tk_guest_code_end - tk_guest_code));
	for (unsigned i = 0x800; i < 0x1000; i += 4)
		memcpy(code + i, &(uint32_t){ 0x14000000 }, 4); /* b . */
}

int tk_fault_store_new(int vm, uint8_t *data, tm_ram_layout **ret_layout,
		       tm_tag_store **ret_store)
{
	g_autoptr(GError) err = NULL;
	tm_ram_layout *layout = NULL;
	tm_ram_layout_new(&layout);
	tm_ram_layout_add_block(layout, "ram", data, TK_DATA_LEN, 4096, TK_DATA_IPA, NULL);
	const tm_tag_store_ops *ops = NULL;
	tm_tag_store *store = NULL;
	tm_kvm_mte_config cfg = { .vm_fd = vm };
	int r = tm_tag_store_lookup("kvm-mte", &ops, &err);
	if (r == 0)
		r = tm_tag_store_new(ops, layout, &cfg, &store, &err);
	TK_CHECK(r == 0, "kvm-mte store over the uffd-registered block: %s", err ? err->message : "ok");
	if (r < 0) {
		tm_ram_layout_free(layout);
		return r;
	}
	*ret_layout = layout;
	*ret_store = store;
	return 0;
}

bool tk_vcpu_new(int kvm, int vm, tk_vcpu *v)
{
	*v = (tk_vcpu){ .fd = ioctl(vm, KVM_CREATE_VCPU, 0) };
	struct kvm_vcpu_init init;
	memset(&init, 0, sizeof(init));
	ioctl(vm, KVM_ARM_PREFERRED_TARGET, &init);
	uint64_t pc = TK_CODE_IPA;
	struct kvm_one_reg oreg = {
		.id = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | KVM_REG_ARM_CORE_REG(regs.pc),
		.addr = (uint64_t)(uintptr_t)&pc,
	};
	uint64_t vbar = TK_CODE_IPA + 0x800;
	struct kvm_one_reg vreg = { .id = ARM64_SYS_REG(3, 0, 12, 0, 0), .addr = (uint64_t)(uintptr_t)&vbar };
	long msz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	bool ok = v->fd >= 0 && ioctl(v->fd, KVM_ARM_VCPU_INIT, &init) == 0 &&
		  ioctl(v->fd, KVM_SET_ONE_REG, &oreg) == 0 && ioctl(v->fd, KVM_SET_ONE_REG, &vreg) == 0 &&
		  msz > 0;
	if (ok) {
		v->run = mmap(NULL, (size_t)msz, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
		ok = v->run != MAP_FAILED;
	}
	TK_CHECK(ok, "vCPU created, initialised, PC at the guest code");
	return ok;
}

static void kick(int sig)
{
	(void)sig;
}

static gpointer vcpu_thread(gpointer data)
{
	tk_vcpu *v = data;
	v->thread = pthread_self();
	while (__atomic_load_n(&v->exits, __ATOMIC_ACQUIRE) < 2) {
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				uint64_t pc = 0;
				struct kvm_one_reg o = {
					.id = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE |
					      KVM_REG_ARM_CORE_REG(regs.pc),
					.addr = (uint64_t)(uintptr_t)&pc,
				};
				ioctl(v->fd, KVM_GET_ONE_REG, &o);
				uint64_t elr = 0, esr = 0, far = 0;
				o.id = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE |
				       KVM_REG_ARM_CORE_REG(elr_el1);
				o.addr = (uint64_t)(uintptr_t)&elr;
				ioctl(v->fd, KVM_GET_ONE_REG, &o);
				o.id = ARM64_SYS_REG(3, 0, 5, 2, 0);
				o.addr = (uint64_t)(uintptr_t)&esr;
				ioctl(v->fd, KVM_GET_ONE_REG, &o);
				o.id = ARM64_SYS_REG(3, 0, 6, 0, 0);
				o.addr = (uint64_t)(uintptr_t)&far;
				ioctl(v->fd, KVM_GET_ONE_REG, &o);
				tk_info("vCPU interrupted at pc 0x%" G_GINT64_MODIFIER "x, elr 0x%" G_GINT64_MODIFIER "x esr 0x%" G_GINT64_MODIFIER "x far 0x%" G_GINT64_MODIFIER "x", pc, elr, esr, far);
				continue;
			}
			__atomic_store_n(&v->error, errno, __ATOMIC_RELEASE);
			return NULL;
		}
		if (v->run->exit_reason != KVM_EXIT_MMIO || !v->run->mmio.is_write) {
			__atomic_store_n(&v->error, 1, __ATOMIC_RELEASE);
			return NULL;
		}
		int i = __atomic_load_n(&v->exits, __ATOMIC_RELAXED);
		v->mmio_addr[i] = v->run->mmio.phys_addr;
		memcpy(&v->mmio_val[i], v->run->mmio.data, 8);
		__atomic_store_n(&v->exits, i + 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

GThread *tk_vcpu_start(tk_vcpu *v)
{
	struct sigaction sa = { .sa_handler = kick };
	sigaction(SIGUSR1, &sa, NULL);
	return g_thread_new("vcpu", vcpu_thread, v);
}

uint64_t tk_wait_fault(int uffd, int ms)
{
	struct pollfd p = { .fd = uffd, .events = POLLIN };
	struct uffd_msg m;
	if (poll(&p, 1, ms) <= 0 || read(uffd, &m, sizeof(m)) != sizeof(m) ||
	    m.event != UFFD_EVENT_PAGEFAULT)
		return 0;
	return m.arg.pagefault.address;
}

bool tk_wait_for(int *what, int value, int ms)
{
	for (int i = 0; i < ms / 10; i++) {
		if (__atomic_load_n(what, __ATOMIC_ACQUIRE) == value)
			return true;
		g_usleep(10000);
	}
	return false;
}

bool tk_tags_are(int vm, uint64_t ipa, uint64_t len, const uint8_t *want)
{
	g_autofree uint8_t *back = g_malloc(len / 16);
	return tk_copy_tags(vm, ipa, len, back, true) == (long)len &&
	       tk_first_diff(want, back, len / 16) == -1;
}
