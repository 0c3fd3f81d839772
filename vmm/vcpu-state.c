/* SPDX-License-Identifier: MIT */
/*
 * The vCPU as one device-state section ("arm64.vcpu0"): every register KVM_GET_REG_LIST names,
 * read with KVM_GET_ONE_REG after the pause, as records of (id: u64 little-endian, value:
 * KVM_REG_SIZE(id) bytes as KVM gives them), after an 8-byte magic and a u64 count.
 *
 * The virtual counter (KVM_REG_ARM_TIMER_CNT) is among them, read at the pause: setting it on the
 * destination makes that VM's counter continue from there, so the guest's time never goes back
 * (it stands still for the downtime). The destination's vCPU was made with the same
 * KVM_ARM_VCPU_INIT features, so it has the same register list; a register it does not take is
 * an error naming it.
 */
#include <errno.h>
#include <string.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>

#include "tagmig/error.h"
#include "vmm.h"

#define STATE_MAGIC "TMVCPU01"
#define MAX_REGS 4096

int vmm_vcpu_state_save(vmm_vm *vm, GBytes **ret, GError **error)
{
	struct kvm_reg_list probe = { .n = 0 };
	if (ioctl(vm->vcpu_fd, KVM_GET_REG_LIST, &probe) == 0 || errno != E2BIG ||
	    probe.n > MAX_REGS) {
		g_set_error(error, TM_ERROR, EIO, "KVM_GET_REG_LIST (vCPU 0): no register count (%s)",
			    g_strerror(errno));
		return -EIO;
	}
	g_autofree struct kvm_reg_list *list =
		g_malloc0(sizeof(*list) + probe.n * sizeof(list->reg[0]));
	list->n = probe.n;
	if (ioctl(vm->vcpu_fd, KVM_GET_REG_LIST, list) < 0) {
		int e = errno;
		g_set_error(error, TM_ERROR, e, "KVM_GET_REG_LIST (vCPU 0): %s", g_strerror(e));
		return -e;
	}
	GByteArray *b = g_byte_array_new();
	uint64_t count = GUINT64_TO_LE(list->n);
	g_byte_array_append(b, (const guint8 *)STATE_MAGIC, 8);
	g_byte_array_append(b, (const guint8 *)&count, 8);
	for (uint64_t i = 0; i < list->n; i++) {
		uint64_t id = list->reg[i];
		size_t sz = vmm_reg_size(id);
		uint8_t val[256];
		if (sz > sizeof(val)) {
			g_byte_array_unref(b);
			g_set_error(error, TM_ERROR, EOPNOTSUPP,
				    "vCPU 0: register 0x%" G_GINT64_MODIFIER "x of %zu bytes", id, sz);
			return -EOPNOTSUPP;
		}
		int r = vmm_vcpu_get_reg(vm, id, val, error);
		if (r < 0) {
			g_byte_array_unref(b);
			return r;
		}
		uint64_t le = GUINT64_TO_LE(id);
		g_byte_array_append(b, (const guint8 *)&le, 8);
		g_byte_array_append(b, val, (guint)sz);
	}
	*ret = g_byte_array_free_to_bytes(b);
	return 0;
}

int vmm_vcpu_state_load(vmm_vm *vm, const void *data, size_t len, GError **error)
{
	const uint8_t *p = data, *end = p + len;
	uint64_t count;
	if (len < 16 || memcmp(p, STATE_MAGIC, 8) != 0) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "state section 'arm64.vcpu0': no " STATE_MAGIC " header (%zu bytes)", len);
		return -EBADMSG;
	}
	memcpy(&count, p + 8, 8);
	count = GUINT64_FROM_LE(count);
	p += 16;
	if (count > MAX_REGS) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "state section 'arm64.vcpu0': %" G_GUINT64_FORMAT " registers", count);
		return -EBADMSG;
	}
	for (uint64_t i = 0; i < count; i++) {
		uint64_t id;
		if ((size_t)(end - p) < 8) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "state section 'arm64.vcpu0': truncated at register %" G_GUINT64_FORMAT,
				    i);
			return -EBADMSG;
		}
		memcpy(&id, p, 8);
		id = GUINT64_FROM_LE(id);
		p += 8;
		size_t sz = vmm_reg_size(id);
		if ((id & KVM_REG_ARCH_MASK) != KVM_REG_ARM64 || sz > 256 || (size_t)(end - p) < sz) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "state section 'arm64.vcpu0': register %" G_GUINT64_FORMAT
				    " (0x%" G_GINT64_MODIFIER "x) is not an arm64 register that fits",
				    i, id);
			return -EBADMSG;
		}
		uint8_t val[256];
		memcpy(val, p, sz); /* aligned for KVM */
		p += sz;
		int r = vmm_vcpu_set_reg(vm, id, val, error);
		if (r < 0)
			return r;
	}
	if (p != end) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "state section 'arm64.vcpu0': %zu bytes after the last register",
			    (size_t)(end - p));
		return -EBADMSG;
	}
	return 0;
}
