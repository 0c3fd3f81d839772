/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "arch/arch-internal.h"
#include "codec/codec.h"
#include "ram/ram-internal.h"
#include "tagmig/error.h"
#include "tagmig/wire.h"
#include "tagstore-internal.h"

int tm_tag_store_new(const tm_tag_store_ops *ops, const tm_ram_layout *layout, void *arg,
		     tm_tag_store **ret, GError **error)
{
	g_return_val_if_fail(ops && layout && ret, -EINVAL);
	if (ops->has_tags && (!ops->get || !ops->set)) {
		g_set_error(error, TM_ERROR, EINVAL, "tag store '%s' lacks get or set", ops->name);
		return -EINVAL;
	}
	if (!!ops->staging_new != !!ops->place_atomic || !!ops->staging_free != !!ops->place_atomic ||
	    (ops->place_atomic && !ops->has_tags)) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "tag store '%s': place_atomic, staging_new and staging_free come together, "
			    "in a store with tags",
			    ops->name);
		return -EINVAL;
	}
	tm_tag_store *s = g_malloc0(sizeof(*s) + ops->priv_size);
	s->ops = ops;
	s->layout = layout;
	if (ops->init) {
		int r = ops->init(s, layout, arg, error);
		if (r < 0) {
			g_free(s);
			return r;
		}
	}
	*ret = s;
	return 0;
}

void tm_tag_store_free(tm_tag_store *store)
{
	if (!store)
		return;
	if (store->ops->fini)
		store->ops->fini(store);
	g_free(store);
}

const tm_tag_store_ops *tm_tag_store_get_ops(const tm_tag_store *store)
{
	return store->ops;
}

const tm_ram_layout *tm_tag_store_layout(const tm_tag_store *store)
{
	return store->layout;
}

void *tm_tag_store_priv(tm_tag_store *store)
{
	return store->priv;
}

/* The preconditions promised to every backend (tagstore.h), checked once here. */
static int range_ok(const tm_tag_store *store, unsigned block, uint64_t offset, uint64_t length)
{
	if (!store->ops->has_tags)
		return -EOPNOTSUPP;
	if (block >= store->layout->blocks->len)
		return -ERANGE;
	const tm_ram_block *b = tm_ram_layout_get(store->layout, block);
	if (length == 0 || offset % b->page_size || length % b->page_size || offset > b->length ||
	    length > b->length - offset)
		return -ERANGE;
	return 0;
}

int tm_tag_store_get(tm_tag_store *store, unsigned block, uint64_t offset, uint64_t length,
		     uint8_t *buf)
{
	int r = range_ok(store, block, offset, length);
	return r < 0 ? r : store->ops->get(store, block, offset, length, buf);
}

int tm_tag_store_set(tm_tag_store *store, unsigned block, uint64_t offset, uint64_t length,
		     const uint8_t *buf)
{
	int r = range_ok(store, block, offset, length);
	return r < 0 ? r : store->ops->set(store, block, offset, length, buf);
}

/* The codec's check, the one the sender runs on every page it sends (tagstore.h). */
int tm_tag_buffer_check(const uint8_t *tags, size_t len, GError **error)
{
	g_return_val_if_fail(tags || len == 0, -EINVAL);
	ssize_t bad = tm_tags_find_invalid(tags, len);
	if (bad < 0)
		return 0;
	g_set_error(error, TM_ERROR, EINVAL, "byte at offset %zd has high nibble set (0x%02x)", bad,
		    tags[bad]);
	return -EINVAL;
}

int tm_tag_store_lookup(const char *name, const tm_tag_store_ops **ret, GError **error)
{
	if (g_strcmp0(name, "none") == 0) {
		*ret = &tm_tag_store_none;
		return 0;
	}
	if (g_strcmp0(name, "soft") == 0) {
		*ret = &tm_tag_store_soft;
		return 0;
	}
	if (g_strcmp0(name, "kvm-mte") == 0) {
#if defined(TAGMIG_HAVE_KVM_MTE) && TAGMIG_HAVE_KVM_MTE
		*ret = &tm_tag_store_kvm_mte;
		return 0;
#else
		g_set_error(error, TM_ERROR, EOPNOTSUPP,
			    "tag store 'kvm-mte' needs an arm64 build with KVM MTE; this build is for %s",
#if defined(__aarch64__)
			    "arm64, but its kernel headers lack KVM_ARM_MTE_COPY_TAGS"
#else
			    "another architecture"
#endif
		);
		return -EOPNOTSUPP;
#endif
	}
	g_set_error(error, TM_ERROR, ENOENT, "unknown tag store '%s' (none, soft, kvm-mte)",
		    name ? name : "(null)");
	return -ENOENT;
}
