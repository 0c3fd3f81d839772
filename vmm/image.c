/* SPDX-License-Identifier: MIT */
/*
 * Loading a flat guest image: copied to VMM_LOAD_ADDR in guest RAM; when it carries the MTE test
 * guest's parameter block (vmm/guest/guest-params.h: magic "TMGUEST1" at offset 8), the VMM fills
 * in where RAM and the report port are and that the guest powers off through PSCI HVC (and, for
 * a test, hold_ms: the guest holds off part of its window until the port's hold register says
 * go, run.c). The vCPU
 * then starts at the image's first byte at EL1h, interrupts masked, X0 = the block's address.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <linux/kvm.h>

#include "tagmig/error.h"
#include "vmm.h"

/* The parameter block's fields the VMM fills (offsets in guest-params.h's struct tm_guest_params). */
#define PARAMS_OFFSET 8
#define PARAMS_MAGIC 0x3154534555474d54ull
#define P_SIZE 12
#define P_RAM_BASE 16
#define P_RAM_SIZE 24
#define P_PORT 32
#define P_PASSES 56
#define P_STOP 80
#define P_HOLD_MS 84
#define P_MIN_SIZE 88
#define STOP_HVC 1

#define CORE_REG(r) (KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | KVM_REG_ARM_CORE_REG(r))

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

int vmm_image_load(vmm_vm *vm, const char *path, uint32_t hold_ms, GError **error)
{
	g_autofree char *img = NULL;
	gsize len = 0;
	g_autoptr(GError) e = NULL;
	if (!g_file_get_contents(path, &img, &len, &e)) {
		g_set_error(error, TM_ERROR, EIO, "guest image %s: %s", path, e->message);
		return -EIO;
	}
	uint64_t off = VMM_LOAD_ADDR - VMM_RAM_BASE;
	if (len == 0 || len > vm->ram_size - off) {
		g_set_error(error, TM_ERROR, EFBIG,
			    "guest image %s: %zu bytes do not fit at 0x%llx in %" G_GUINT64_FORMAT
			    " MiB of RAM",
			    path, (size_t)len, VMM_LOAD_ADDR, vm->ram_size >> 20);
		return -EFBIG;
	}
	uint8_t *dst = vm->ram + off;
	memcpy(dst, img, len);
	uint8_t *p = dst + PARAMS_OFFSET;
	if (len >= PARAMS_OFFSET + P_MIN_SIZE && get64(p) == PARAMS_MAGIC) {
		uint32_t size = (uint32_t)p[P_SIZE] | (uint32_t)p[P_SIZE + 1] << 8 |
				(uint32_t)p[P_SIZE + 2] << 16 | (uint32_t)p[P_SIZE + 3] << 24;
		if (size < P_MIN_SIZE) {
			g_set_error(error, TM_ERROR, EINVAL,
				    "guest image %s: parameter block of %u bytes, expected %d or more",
				    path, size, P_MIN_SIZE);
			return -EINVAL;
		}
		put64(p + P_RAM_BASE, VMM_RAM_BASE);
		put64(p + P_RAM_SIZE, vm->ram_size);
		put64(p + P_PORT, VMM_PORT_BASE);
		put64(p + P_PASSES, 0); /* forever: the VMM decides when to stop */
		p[P_STOP] = STOP_HVC;
		p[P_STOP + 1] = p[P_STOP + 2] = p[P_STOP + 3] = 0;
		for (int i = 0; i < 4; i++)
			p[P_HOLD_MS + i] = (uint8_t)(hold_ms >> (8 * i));
	} else if (hold_ms) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "guest image %s: no parameter block of the MTE test guest, which a hold "
			    "needs", path);
		return -EINVAL;
	}
	uint64_t pc = VMM_LOAD_ADDR, x0 = VMM_LOAD_ADDR + PARAMS_OFFSET;
	uint64_t pstate = 0x3c5; /* EL1h, D, A, I and F masked */
	int r = vmm_vcpu_set_reg(vm, CORE_REG(regs.pc), &pc, error);
	if (r >= 0)
		r = vmm_vcpu_set_reg(vm, CORE_REG(regs.pstate), &pstate, error);
	if (r >= 0)
		r = vmm_vcpu_set_reg(vm, CORE_REG(regs.regs[0]), &x0, error);
	return r;
}
