/* SPDX-License-Identifier: MIT */
/*
 * The VM (docs/aarch64.md, "Wiring the tag store into a VMM"): KVM_CAP_ARM_MTE before the vCPU,
 * one memslot of anonymous private RAM (what Linux 6.1 requires of an MTE VM), one vCPU made with
 * KVM_ARM_PREFERRED_TARGET and KVM_ARM_VCPU_INIT (PSCI 0.2, so that the guest can power off).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "tagmig/error.h"
#include "vmm.h"

#ifndef PROT_MTE
#define PROT_MTE 0x20 /* arm64 uapi asm/mman.h */
#endif

static int ioctl_err(GError **error, const char *what, const char *detail)
{
	int e = errno;
	g_set_error(error, TM_ERROR, e, "%s%s%s: %s", what, detail ? " " : "", detail ? detail : "",
		    g_strerror(e));
	return -e;
}

static int set_memslot(vmm_vm *vm, uint32_t flags, GError **error)
{
	struct kvm_userspace_memory_region mr = {
		.slot = 0,
		.flags = flags,
		.guest_phys_addr = VMM_RAM_BASE,
		.memory_size = vm->ram_size,
		.userspace_addr = (uint64_t)(uintptr_t)vm->ram,
	};
	if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &mr) < 0)
		return ioctl_err(error, "KVM_SET_USER_MEMORY_REGION",
				 flags ? "(slot 0, KVM_MEM_LOG_DIRTY_PAGES)" : "(slot 0)");
	return 0;
}

int vmm_vm_new(uint64_t ram_size, vmm_vm **ret, GError **error)
{
	g_autoptr(vmm_vm) vm = g_new0(vmm_vm, 1);
	vm->kvm_fd = vm->vm_fd = vm->vcpu_fd = -1;
	vm->ram = MAP_FAILED;
	vm->run = MAP_FAILED;
	vm->ram_size = ram_size;

	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0)
		return ioctl_err(error, "open", "/dev/kvm");
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0)
		return ioctl_err(error, "KVM_CREATE_VM", NULL);
	if (ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_ARM_MTE) <= 0) {
		g_set_error(error, TM_ERROR, EOPNOTSUPP,
			    "KVM_CHECK_EXTENSION: this KVM has no KVM_CAP_ARM_MTE (no MTE in the host "
			    "CPU or kernel)");
		return -EOPNOTSUPP;
	}
	/* Before the vCPU: KVM refuses the capability once one exists. */
	struct kvm_enable_cap cap = { .cap = KVM_CAP_ARM_MTE };
	if (ioctl(vm->vm_fd, KVM_ENABLE_CAP, &cap) < 0)
		return ioctl_err(error, "KVM_ENABLE_CAP", "(KVM_CAP_ARM_MTE)");

	/*
	 * PROT_MTE: postcopy's atomic placement moves staged PROT_MTE pages into guest RAM with
	 * UFFDIO_MOVE, which needs both mappings to have the same protection
	 * (docs/design/postcopy-move.md, fact 4). This VMM's own accesses use untagged pointers and
	 * its threads keep the default PR_MTE_TCF_NONE, so they are never tag-checked.
	 */
	vm->ram = mmap(NULL, ram_size, PROT_READ | PROT_WRITE | PROT_MTE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (vm->ram == MAP_FAILED)
		return ioctl_err(error, "mmap", "of guest RAM");
	int r = set_memslot(vm, 0, error);
	if (r < 0)
		return r;

	vm->vcpu_fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, 0);
	if (vm->vcpu_fd < 0)
		return ioctl_err(error, "KVM_CREATE_VCPU", "(vCPU 0)");
	int sz = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (sz <= 0)
		return ioctl_err(error, "KVM_GET_VCPU_MMAP_SIZE", NULL);
	vm->run_size = (size_t)sz;
	vm->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vm->vcpu_fd, 0);
	if (vm->run == MAP_FAILED)
		return ioctl_err(error, "mmap", "of the vCPU's kvm_run");
	struct kvm_vcpu_init init;
	memset(&init, 0, sizeof(init));
	if (ioctl(vm->vm_fd, KVM_ARM_PREFERRED_TARGET, &init) < 0)
		return ioctl_err(error, "KVM_ARM_PREFERRED_TARGET", NULL);
	init.features[0] |= 1u << KVM_ARM_VCPU_PSCI_0_2;
	if (ioctl(vm->vcpu_fd, KVM_ARM_VCPU_INIT, &init) < 0)
		return ioctl_err(error, "KVM_ARM_VCPU_INIT", "(vCPU 0, PSCI 0.2)");
	*ret = g_steal_pointer(&vm);
	return 0;
}

void vmm_vm_free(vmm_vm *vm)
{
	if (!vm)
		return;
	if (vm->run != MAP_FAILED)
		munmap(vm->run, vm->run_size);
	if (vm->vcpu_fd >= 0)
		close(vm->vcpu_fd);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	if (vm->ram != MAP_FAILED)
		munmap(vm->ram, vm->ram_size);
	g_free(vm);
}

int vmm_vm_set_dirty_log(vmm_vm *vm, bool on, GError **error)
{
	int r = set_memslot(vm, on ? KVM_MEM_LOG_DIRTY_PAGES : 0, error);
	if (r == 0)
		vm->dirty_log = on;
	return r;
}

int vmm_vm_get_dirty_log(vmm_vm *vm, uint64_t *bitmap, GError **error)
{
	struct kvm_dirty_log log = { .slot = 0, .dirty_bitmap = bitmap };
	if (ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
		return ioctl_err(error, "KVM_GET_DIRTY_LOG", "(slot 0, block '" VMM_BLOCK_NAME "')");
	return 0;
}

size_t vmm_reg_size(uint64_t id)
{
	return (size_t)1 << ((id & KVM_REG_SIZE_MASK) >> KVM_REG_SIZE_SHIFT);
}

int vmm_vcpu_get_reg(vmm_vm *vm, uint64_t id, void *val, GError **error)
{
	struct kvm_one_reg o = { .id = id, .addr = (uint64_t)(uintptr_t)val };
	if (ioctl(vm->vcpu_fd, KVM_GET_ONE_REG, &o) < 0) {
		char d[48];
		snprintf(d, sizeof(d), "(register 0x%" G_GINT64_MODIFIER "x)", id);
		return ioctl_err(error, "KVM_GET_ONE_REG", d);
	}
	return 0;
}

int vmm_vcpu_set_reg(vmm_vm *vm, uint64_t id, const void *val, GError **error)
{
	struct kvm_one_reg o = { .id = id, .addr = (uint64_t)(uintptr_t)val };
	if (ioctl(vm->vcpu_fd, KVM_SET_ONE_REG, &o) < 0) {
		char d[48];
		snprintf(d, sizeof(d), "(register 0x%" G_GINT64_MODIFIER "x)", id);
		return ioctl_err(error, "KVM_SET_ONE_REG", d);
	}
	return 0;
}

int vmm_vm_copy_tags(vmm_vm *vm, uint64_t ipa, uint64_t len, uint8_t *tags, bool from_guest,
		     GError **error)
{
	struct kvm_arm_copy_mte_tags c = {
		.guest_ipa = ipa,
		.length = len,
		.addr = tags,
		.flags = from_guest ? KVM_ARM_TAGS_FROM_GUEST : KVM_ARM_TAGS_TO_GUEST,
	};
	long n = ioctl(vm->vm_fd, KVM_ARM_MTE_COPY_TAGS, &c);
	if (n < 0) {
		char d[96];
		snprintf(d, sizeof(d), "(%s, block '" VMM_BLOCK_NAME "' offset 0x%" G_GINT64_MODIFIER "x)",
			 from_guest ? "from guest" : "to guest", (uint64_t)(ipa - VMM_RAM_BASE));
		return ioctl_err(error, "KVM_ARM_MTE_COPY_TAGS", d);
	}
	if ((uint64_t)n != len) {
		g_set_error(error, TM_ERROR, EFAULT,
			    "KVM_ARM_MTE_COPY_TAGS: short copy at block '" VMM_BLOCK_NAME
			    "' offset 0x%" G_GINT64_MODIFIER "x: %ld of %" G_GUINT64_FORMAT " bytes",
			    (uint64_t)(ipa - VMM_RAM_BASE), n, len);
		return -EFAULT;
	}
	return 0;
}

uint8_t vmm_tag_pattern(uint64_t granule)
{
	/* differs granule by granule (QEMU before 8.0 kept one tag per page: docs/aarch64.md) */
	uint64_t z = granule * 0x9e3779b97f4a7c15ull;
	return (uint8_t)(((z >> 59) + granule) & 0xf);
}

int vmm_tag_pattern_write(vmm_vm *vm, GError **error)
{
	uint64_t off = vm->ram_size / 2, len = vm->ram_size - off;
	g_autofree uint8_t *tags = g_malloc(len / 16);
	for (uint64_t i = 0; i < len / 16; i++)
		tags[i] = vmm_tag_pattern(off / 16 + i);
	return vmm_vm_copy_tags(vm, VMM_RAM_BASE + off, len, tags, false, error);
}

int vmm_tag_pattern_check(vmm_vm *vm, GError **error)
{
	uint64_t off = vm->ram_size / 2, len = vm->ram_size - off;
	g_autofree uint8_t *tags = g_malloc(len / 16);
	int r = vmm_vm_copy_tags(vm, VMM_RAM_BASE + off, len, tags, true, error);
	if (r < 0)
		return r;
	for (uint64_t i = 0; i < len / 16; i++) {
		if (tags[i] != vmm_tag_pattern(off / 16 + i)) {
			g_set_error(error, TM_ERROR, EIO,
				    "tag pattern: block '" VMM_BLOCK_NAME "' offset 0x%" G_GINT64_MODIFIER
				    "x: tag %u, expected %u",
				    off + i * 16, tags[i], vmm_tag_pattern(off / 16 + i));
			return -EIO;
		}
	}
	return 0;
}
