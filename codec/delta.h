/* SPDX-License-Identifier: MIT */
/*
 * Delta encoding of a re-sent page (issue 15), the codec's primitives: a page that was sent
 * before goes as the XOR against the copy sent last (the base), run-length coded, and the
 * receiver applies it to the page it holds after checking, by hash, that its copy is the base.
 * No I/O, no state: the sender's cache of last-sent copies and the wire message come on top.
 *
 * The encoded form of page P against base B (both page_size bytes), D = P xor B: a sequence of
 * tokens, each `skip` then `len` (LEB128 varints, each at most page_size, so at most 3 bytes)
 * then `len` bytes of D: the token says D is zero for `skip` bytes and then holds those bytes.
 * Bytes after the last token are zero in D (unchanged). The tokens never reach past the page.
 * An empty stream is a page equal to its base.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <glib.h>

G_BEGIN_DECLS

/* A 64-bit hash of a page (not cryptographic): the base check of a delta. page_size % 8 == 0. */
uint64_t tm_page_hash(const uint8_t *page, uint32_t page_size);

/*
 * Encodes page against base (page_size bytes each, 4096..65536) into out, at most cap bytes.
 * Returns the encoded length (0: the pages are equal), or -ENOSPC when it would not fit in cap
 * (send the page whole), -EINVAL for a bad page_size.
 */
ssize_t tm_delta_encode(const uint8_t *page, const uint8_t *base, uint32_t page_size,
			uint8_t *out, size_t cap);

/*
 * Applies in[0..len), received from the peer, to page (page_size bytes holding the base), in
 * place. The whole stream is checked before the first byte of page changes: a varint longer
 * than 3 bytes or over page_size, a token past the page's end, a token's bytes past the input:
 * -EBADMSG naming the token and offset, page untouched. Returns 0 or -EBADMSG / -EINVAL.
 */
int tm_delta_apply(uint8_t *page, uint32_t page_size, const uint8_t *in, size_t len,
		   GError **error);

/* The check tm_delta_apply() makes first, alone: 0, -EBADMSG (named in *error), -EINVAL. */
int tm_delta_check(uint32_t page_size, const uint8_t *in, size_t len, GError **error);

G_END_DECLS
