/* SPDX-License-Identifier: MIT */
/*
 * Tag stores: where a page's memory tags come from (sender) and go to (receiver). The transport
 * never knows the architecture; it asks a tag store. Backends: "none" (no tags), "soft" (tags in
 * a side array, one byte per granule: the stand-in on hosts without MTE) and, on arm64, "kvm-mte".
 *
 * Tag buffer layout everywhere: one byte per 16-byte granule, tag in the low nibble, high nibble
 * zero; the layout KVM_ARM_MTE_COPY_TAGS uses. A range of `length` bytes has length / 16 bytes.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <glib.h>

#include "export.h"
#include "ram.h"

G_BEGIN_DECLS

typedef struct tm_tag_store tm_tag_store;

/*
 * A tag store backend. The ops table is const and static; per-store state lives in a private area
 * of priv_size bytes that the core allocates zeroed (tm_tag_store_priv()).
 *
 * The core guarantees before every get/set call: block < block count of the layout the store was
 * made for, offset and length are multiples of the block's page size, length > 0 and
 * offset + length <= the block's length, buf holds length / 16 bytes. Backends that talk to a
 * kernel check again anyway (defence in depth) and return -ERANGE.
 *
 * Hooks may be called from several channel workers at once for disjoint ranges; they must be
 * thread-safe for that. They never print.
 */
typedef struct tm_tag_store_ops {
	const char *name;
	size_t priv_size;
	/*
	 * Optional. Called once by tm_tag_store_new() with the layout. Returns 0 or -errno with the
	 * reason in *error; on failure fini is not called.
	 */
	int (*init)(tm_tag_store *store, const tm_ram_layout *layout, void *arg, GError **error);
	/* Optional. Releases what init acquired; called once by tm_tag_store_free(). */
	void (*fini)(tm_tag_store *store);
	/*
	 * Required for stores with tags. Reads the tags of [offset, offset + length) of block into
	 * buf (sender side). Must fill all of buf or fail: returns 0 or -errno (-ERANGE for a range
	 * outside guest RAM, -EIO for a short copy).
	 */
	int (*get)(tm_tag_store *store, unsigned block, uint64_t offset, uint64_t length,
		   uint8_t *buf);
	/*
	 * Required for stores with tags. Sets the tags of the range from buf (receiver side), after
	 * the page data has been written and before the pages are marked present. Returns 0 or -errno.
	 */
	int (*set)(tm_tag_store *store, unsigned block, uint64_t offset, uint64_t length,
		   const uint8_t *buf);
	/* 1 if the store carries tags (get and set non-NULL), 0 for "none". */
	int has_tags;
	/*
	 * Atomic postcopy placement (docs/design/postcopy-move.md), optional, for page-resident
	 * stores (tags live with the page, so the usual order is data, tags, wake, and a running
	 * thread can meet the page between the first two). staging_new, staging_free and
	 * place_atomic come together or not at all (tm_tag_store_new() refuses one alone); the
	 * "soft" and "none" stores have none of them (they set tags before the page exists).
	 *
	 * staging_new: called at postcopy's start, once per placer thread (never per page):
	 * returns a staging area of length bytes (a multiple of the host page size) that
	 * place_atomic may use, or NULL with the reason in *error. staging_free releases it
	 * (called once, after the last place_atomic with it).
	 *
	 * place_atomic: the range [offset, offset + length) of block (page aligned, inside the block,
	 * length at most the staging area's, checked by the core), registered with userfaultfd uffd
	 * for MISSING faults and missing, becomes present with data (length bytes) and tags (length
	 * / 16 bytes) in one step: no thread, running or blocked, can see a page of it without its
	 * tags; threads blocked on the range may be woken. staging is one area from staging_new,
	 * used by one thread at a time; its contents afterwards are undefined. Data and tags are
	 * only read. Returns 0, or -errno with *error naming block and offset; after a failure the
	 * pages before the failing one may be placed (the core then fails the session, unless:)
	 * -EOPNOTSUPP or -EINVAL mean "not here, use copy" (the kernel or the mappings cannot do
	 * it) and must leave the whole range missing; the core then places by copy for the rest of
	 * the session and records the message as the reason.
	 */
	void *(*staging_new)(tm_tag_store *store, uint64_t length, GError **error);
	void (*staging_free)(tm_tag_store *store, void *staging, uint64_t length);
	int (*place_atomic)(tm_tag_store *store, int uffd, unsigned block, uint64_t offset,
			    uint64_t length, const void *data, const uint8_t *tags, void *staging,
			    GError **error);
} tm_tag_store_ops;

/*
 * Creates a store of the given backend for layout (which must outlive the store). arg is passed to
 * init (backend specific, see below). Returns 0 or -errno with *error set.
 */
TM_EXPORT int tm_tag_store_new(const tm_tag_store_ops *ops, const tm_ram_layout *layout, void *arg,
			       tm_tag_store **ret, GError **error);

/* NULL is a no-op. */
TM_EXPORT void tm_tag_store_free(tm_tag_store *store);

TM_EXPORT const tm_tag_store_ops *tm_tag_store_get_ops(const tm_tag_store *store);
TM_EXPORT const tm_ram_layout *tm_tag_store_layout(const tm_tag_store *store);
TM_EXPORT void *tm_tag_store_priv(tm_tag_store *store);

/* Checked calls into the backend (the preconditions above are checked; -ERANGE if not). */
TM_EXPORT int tm_tag_store_get(tm_tag_store *store, unsigned block, uint64_t offset,
			       uint64_t length, uint8_t *buf);
TM_EXPORT int tm_tag_store_set(tm_tag_store *store, unsigned block, uint64_t offset,
			       uint64_t length, const uint8_t *buf);

/* The "none" backend: the migration carries no tags. arg unused. */
TM_EXPORT extern const tm_tag_store_ops tm_tag_store_none;

/*
 * The "soft" backend: tags kept in one side array per block, length / 16 bytes, one byte per
 * granule. arg may be NULL (arrays allocated zeroed and owned by the store) or a pointer to an
 * array of block-count `uint8_t *`, each the caller's own buffer of the right size (or NULL to
 * allocate that one); caller buffers must outlive the store. Bytes are copied as they are; the
 * sender refuses a tag byte with a non-zero high nibble and names its offset.
 */
TM_EXPORT extern const tm_tag_store_ops tm_tag_store_soft;

/* Side array of block for the soft store (NULL for other backends or a bad index). */
TM_EXPORT uint8_t *tm_tag_store_soft_array(tm_tag_store *store, unsigned block);

/*
 * Checks len bytes of a tag buffer for the layout above: one byte per granule, high nibble zero.
 * For tags that come from outside (a file, another process) before a soft store gets them: the
 * sender refuses a bad byte too, but only when it sends that page, in the middle of a migration.
 * Returns 0 when every byte is valid (len 0 included), else -EINVAL with *error naming the offset
 * and value of the first bad byte ("byte at offset 4097 has high nibble set (0x35)"). Only reads
 * tags; thread-safe.
 */
TM_EXPORT int tm_tag_buffer_check(const uint8_t *tags, size_t len, GError **error);

/*
 * Finds a backend by name ("none", "soft", "kvm-mte"). Returns 0, or -ENOENT for an unknown name
 * and -EOPNOTSUPP for a backend this build or host cannot offer, with the reason in *error.
 */
TM_EXPORT int tm_tag_store_lookup(const char *name, const tm_tag_store_ops **ret, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(tm_tag_store, tm_tag_store_free)

G_END_DECLS
