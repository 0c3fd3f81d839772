/* SPDX-License-Identifier: MIT */
/*
 * The "kvm-mte" tag store: reads (sender) and writes (receiver) the MTE tags of guest RAM through
 * KVM_ARM_MTE_COPY_TAGS on the VM fd the VMM hands in. Tag buffers are already in the kernel's
 * layout (one byte per 16-byte granule, tag in the low nibble), so get and set are plain ioctls.
 *
 * Safety: the core checks every range against the layout before it calls us; we check again
 * against our own copy of the blocks (taken at init, so a block added to the layout later is not
 * ours) before any ioctl, so whatever a peer sends can only reach guest RAM that was registered.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>

#include "kvm-mte-internal.h"
#include "ram/ram-internal.h"
#include "tagmig/error.h"
#include "tagmig/wire.h"

/* The arm64 UAPI this file is written against; a header drift fails the build. */
_Static_assert(KVM_ARM_TAGS_TO_GUEST == 0 && KVM_ARM_TAGS_FROM_GUEST == 1, "COPY_TAGS flags");
_Static_assert(sizeof(struct kvm_arm_copy_mte_tags) == 48, "struct kvm_arm_copy_mte_tags");
_Static_assert(KVM_ARM_MTE_COPY_TAGS == _IOR(KVMIO, 0xb4, struct kvm_arm_copy_mte_tags),
	       "KVM_ARM_MTE_COPY_TAGS");
_Static_assert(TM_TAG_GRANULE == 16, "one tag byte per 16-byte granule");

/* Linux 6.12 refuses lengths above INT_MAX; 1 GiB is a multiple of every host page size. */
#define COPY_MAX (1ull << 30)

int tm_kvm_mte_range(const kvm_mte_priv *p, unsigned block, uint64_t offset, uint64_t length,
		     uint64_t *ret_ipa)
{
	if (block >= p->count)
		return -ERANGE;
	const kvm_mte_block *b = &p->blocks[block];
	if (length == 0 || offset > b->length || length > b->length - offset)
		return -ERANGE;
	if (offset % p->host_page_size || length % p->host_page_size)
		return -ERANGE;
	*ret_ipa = b->guest_base + offset;
	return 0;
}

int tm_kvm_mte_copy(int vm_fd, uint64_t ipa, uint64_t length, void *buf, bool from_guest,
		    uint64_t *ret_done)
{
	uint64_t done = 0;
	int ret = 0;

	while (done < length) {
		struct kvm_arm_copy_mte_tags c = {
			.guest_ipa = ipa + done,
			.length = MIN(length - done, COPY_MAX),
			.addr = (uint8_t *)buf + done / TM_TAG_GRANULE,
			.flags = from_guest ? KVM_ARM_TAGS_FROM_GUEST : KVM_ARM_TAGS_TO_GUEST,
		};
		long r = ioctl(vm_fd, KVM_ARM_MTE_COPY_TAGS, &c);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			ret = -errno;
			break;
		}
		/*
		 * The kernel returns the bytes of guest memory it covered. Short: it stopped on a
		 * page it could not get (no memslot there, or a fault); go on from there, so the
		 * next call either continues or fails with the kernel's reason.
		 */
		if (r == 0 || (uint64_t)r > c.length) {
			ret = -EFAULT;
			break;
		}
		done += (uint64_t)r;
	}
	if (ret_done)
		*ret_done = done;
	return ret;
}

static int kvm_mte_init(tm_tag_store *store, const tm_ram_layout *layout, void *arg,
			GError **error)
{
	kvm_mte_priv *p = tm_tag_store_priv(store);
	const tm_kvm_mte_config *cfg = arg;

	if (!cfg || cfg->vm_fd < 0 || cfg->reserved) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "kvm-mte tag store: arg must be a tm_kvm_mte_config with the VM fd and "
			    "reserved zero");
		return -EINVAL;
	}
	long hps = sysconf(_SC_PAGESIZE);
	if (hps <= 0)
		hps = 4096;

	/* The VM must offer MTE and have it enabled; a zero-length read says which without
	 * touching memory (EINVAL when KVM_CAP_ARM_MTE is not enabled on this VM). */
	int cap = ioctl(cfg->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_ARM_MTE);
	if (cap < 0) {
		int e = errno;
		g_set_error(error, TM_ERROR, e, "kvm-mte tag store: fd %d is not a KVM VM fd: %s",
			    cfg->vm_fd, g_strerror(e));
		return -e;
	}
	if (cap == 0) {
		g_set_error(error, TM_ERROR, EOPNOTSUPP,
			    "kvm-mte tag store: this host's KVM does not offer MTE (KVM_CAP_ARM_MTE)");
		return -EOPNOTSUPP;
	}
	struct kvm_arm_copy_mte_tags probe = { .flags = KVM_ARM_TAGS_FROM_GUEST };
	if (ioctl(cfg->vm_fd, KVM_ARM_MTE_COPY_TAGS, &probe) < 0) {
		int e = errno;
		if (e == EINVAL)
			g_set_error(error, TM_ERROR, EINVAL,
				    "kvm-mte tag store: MTE is not enabled on VM fd %d (enable "
				    "KVM_CAP_ARM_MTE with KVM_ENABLE_CAP before creating vCPUs)",
				    cfg->vm_fd);
		else
			g_set_error(error, TM_ERROR, e,
				    "kvm-mte tag store: KVM_ARM_MTE_COPY_TAGS on VM fd %d: %s",
				    cfg->vm_fd, g_strerror(e));
		return e == ENOTTY ? -EOPNOTSUPP : -e;
	}

	unsigned n = layout->blocks->len;
	g_autofree kvm_mte_block *blocks = g_new0(kvm_mte_block, n ? n : 1);
	for (unsigned i = 0; i < n; i++) {
		const tm_ram_block *b = tm_ram_layout_get(layout, i);
		if (b->page_size % (uint64_t)hps || b->guest_base % (uint64_t)hps) {
			g_set_error(error, TM_ERROR, EINVAL,
				    "kvm-mte tag store: block '%s' (page size %u, guest base 0x%" G_GINT64_MODIFIER
				    "x) is not aligned to the host page size %ld that "
				    "KVM_ARM_MTE_COPY_TAGS requires",
				    b->name, b->page_size, b->guest_base, hps);
			return -EINVAL;
		}
		if (b->guest_base + b->length < b->guest_base) {
			g_set_error(error, TM_ERROR, EINVAL,
				    "kvm-mte tag store: block '%s' wraps the guest-physical space",
				    b->name);
			return -EINVAL;
		}
		for (unsigned j = 0; j < i; j++) {
			if (b->guest_base < blocks[j].guest_base + blocks[j].length &&
			    blocks[j].guest_base < b->guest_base + b->length) {
				g_set_error(error, TM_ERROR, EINVAL,
					    "kvm-mte tag store: blocks '%s' and '%s' overlap in "
					    "guest-physical space",
					    blocks[j].name, b->name);
				return -EINVAL;
			}
		}
		blocks[i] = (kvm_mte_block){ .name = b->name, .host = b->host,
					     .guest_base = b->guest_base, .length = b->length,
					     .page_size = b->page_size };
	}
	p->vm_fd = cfg->vm_fd;
	p->host_page_size = (uint64_t)hps;
	p->count = n;
	p->blocks = g_steal_pointer(&blocks);
	return 0;
}

static void kvm_mte_fini(tm_tag_store *store)
{
	kvm_mte_priv *p = tm_tag_store_priv(store);

	g_free(p->blocks);
}

static int kvm_mte_get(tm_tag_store *store, unsigned block, uint64_t offset, uint64_t length,
		       uint8_t *buf)
{
	kvm_mte_priv *p = tm_tag_store_priv(store);
	uint64_t ipa;
	int r = tm_kvm_mte_range(p, block, offset, length, &ipa);

	return r < 0 ? r : tm_kvm_mte_copy(p->vm_fd, ipa, length, buf, true, NULL);
}

static int kvm_mte_set(tm_tag_store *store, unsigned block, uint64_t offset, uint64_t length,
		       const uint8_t *buf)
{
	kvm_mte_priv *p = tm_tag_store_priv(store);
	uint64_t ipa;
	int r = tm_kvm_mte_range(p, block, offset, length, &ipa);

	/* TO_GUEST only reads buf; the UAPI struct has no const pointer. */
	return r < 0 ? r : tm_kvm_mte_copy(p->vm_fd, ipa, length, (void *)buf, false, NULL);
}

const tm_tag_store_ops tm_tag_store_kvm_mte = {
	.name = "kvm-mte",
	.priv_size = sizeof(kvm_mte_priv),
	.init = kvm_mte_init,
	.fini = kvm_mte_fini,
	.get = kvm_mte_get,
	.set = kvm_mte_set,
	.has_tags = 1,
	.staging_new = tm_kvm_mte_staging_new,
	.staging_free = tm_kvm_mte_staging_free,
	.place_atomic = tm_kvm_mte_place_atomic,
};
