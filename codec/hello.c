/* SPDX-License-Identifier: MIT */
/*
 * HELLO (docs/wire-format.md, "HELLO"): the session parameters and RAM layout, sent once on every
 * channel (protocol 2: on every connection, naming its role). The decoder parses the bytes into a tm_hello and then runs the same tm_hello_check() a
 * sender runs before announcing, so both sides agree on what a valid session is.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "codec/codec.h"
#include "common/escape.h"
#include "tagmig/error.h"

/* A name from the peer may hold any bytes; error messages should stay printable UTF-8. */
static char *name_label(const char *name, size_t len)
{
	g_autofree char *copy = g_strndup(name, len);

	return tm_escape_untrusted(copy);
}

static bool is_pow2(uint64_t v)
{
	return v != 0 && (v & (v - 1)) == 0;
}

bool tm_page_size_valid(uint64_t page_size)
{
	return page_size == 4096 || page_size == 16384 || page_size == 65536;
}

void tm_hello_clear(tm_hello *hello)
{
	if (!hello)
		return;
	g_free(hello->blocks);
	memset(hello, 0, sizeof(*hello));
}

size_t tm_hello_body_len(const tm_hello *hello)
{
	size_t len = TM_HELLO_FIXED_LEN;

	for (uint32_t i = 0; i < hello->block_count; i++)
		len += TM_HELLO_BLOCK_LEN + strnlen(hello->blocks[i].name, TM_MAX_BLOCK_NAME);
	return len;
}

static int check_block(const tm_hello *hello, uint32_t i, GError **error)
{
	const tm_wire_block *b = &hello->blocks[i];
	size_t nlen = strnlen(b->name, sizeof(b->name));

	if (nlen == 0) {
		g_set_error(error, TM_ERROR, EBADMSG, "HELLO block %u: empty name", i);
		return -EBADMSG;
	}
	if (nlen > TM_MAX_BLOCK_NAME) {
		g_set_error(error, TM_ERROR, EMSGSIZE,
			    "HELLO block %u: name longer than the maximum %u bytes", i,
			    TM_MAX_BLOCK_NAME);
		return -EMSGSIZE;
	}

	g_autofree char *label = name_label(b->name, nlen);

	if (!tm_page_size_valid(b->page_size)) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO block %u '%s': page_size %u invalid (4096, 16384 or 65536)", i,
			    label, b->page_size);
		return -EBADMSG;
	}
	if (b->page_size > hello->packet_size) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO block %u '%s': page_size %u larger than packet_size %u", i, label,
			    b->page_size, hello->packet_size);
		return -EBADMSG;
	}
	if (b->length == 0 || b->length % b->page_size != 0) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO block %u '%s': length %" PRIu64
			    " is not a non-zero multiple of page_size %u",
			    i, label, b->length, b->page_size);
		return -EBADMSG;
	}
	if (b->length / b->page_size > UINT32_MAX) {
		g_set_error(error, TM_ERROR, EMSGSIZE,
			    "HELLO block %u '%s': %" PRIu64 " pages, over the maximum %" PRIu32, i,
			    label, b->length / b->page_size, UINT32_MAX);
		return -EMSGSIZE;
	}
	if (b->guest_base % b->page_size != 0) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO block %u '%s': guest_base 0x%" PRIx64
			    " not a multiple of page_size %u",
			    i, label, b->guest_base, b->page_size);
		return -EBADMSG;
	}
	return 0;
}

/* The protocol 2 fields (role, epoch, feature bits); in protocol 1 they must be 0. */
static int check_v2_fields(const tm_hello *hello, GError **error)
{
	uint8_t v = hello->version ? hello->version : TM_WIRE_VERSION_1;

	if (v != TM_WIRE_VERSION_1 && v != TM_WIRE_VERSION_2) {
		g_set_error(error, TM_ERROR, EPROTONOSUPPORT, "HELLO: protocol version %u (1 or 2)",
			    v);
		return -EPROTONOSUPPORT;
	}
	uint32_t known = v == TM_WIRE_VERSION_1 ? TM_FEATURES_KNOWN : TM_FEATURES_KNOWN_V2;
	if (hello->features & ~known) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO: features 0x%08x has reserved bits 0x%08x set", hello->features,
			    hello->features & ~known);
		return -EBADMSG;
	}
	if (v == TM_WIRE_VERSION_1) {
		/* The bytes of role and epoch are reserved in protocol 1: the decoder says so. */
		if (hello->role != 0 || hello->epoch != 0) {
			g_set_error(error, TM_ERROR, EINVAL,
				    "HELLO: role %u, epoch %u in protocol 1 (only 0)", hello->role,
				    hello->epoch);
			return -EINVAL;
		}
		return 0;
	}
	if ((hello->features & TM_FEATURE_RESUME_CONTROL) && !(hello->features & TM_FEATURE_RESUME)) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO: features 0x%08x offer RESUME_CONTROL without RESUME",
			    hello->features);
		return -EBADMSG;
	}
	if ((hello->features & TM_FEATURE_CONN_LOST) && !(hello->features & TM_FEATURE_RESUME)) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO: features 0x%08x offer CONN_LOST without RESUME", hello->features);
		return -EBADMSG;
	}
	if (hello->role >= TM_ROLE_COUNT) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO: role %u invalid (0 data, 1 control, 2 urgent)", hello->role);
		return -EBADMSG;
	}
	if (hello->role != TM_ROLE_DATA && hello->channel_id != 0) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO: channel_id %u on the %s connection, must be 0", hello->channel_id,
			    hello->role == TM_ROLE_CONTROL ? "control" : "urgent");
		return -EBADMSG;
	}
	if (hello->role == TM_ROLE_URGENT && !(hello->features & TM_FEATURE_POSTCOPY)) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "HELLO: urgent connection without the POSTCOPY feature (features 0x%08x)",
			    hello->features);
		return -EPROTO;
	}
	/* A reconnect (docs/wire-format.md, "Resume"): a data channel with RESUME, the urgent
	 * connection (POSTCOPY, checked above: "Resume in postcopy"), the control connection only
	 * with RESUME_CONTROL. */
	if (hello->epoch != 0 && hello->role == TM_ROLE_CONTROL &&
	    !(hello->features & TM_FEATURE_RESUME_CONTROL)) {
		g_set_error(error, TM_ERROR, EOPNOTSUPP,
			    "HELLO: epoch %u on the control connection: only data channels and the "
			    "urgent connection resume (without RESUME_CONTROL)",
			    hello->epoch);
		return -EOPNOTSUPP;
	}
	if (hello->epoch != 0 && !(hello->features & TM_FEATURE_RESUME)) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "HELLO: epoch %u without the RESUME feature (features 0x%08x)",
			    hello->epoch, hello->features);
		return -EPROTO;
	}
	return 0;
}

int tm_hello_check(tm_hello *hello, GError **error)
{
	if (hello->channel_count == 0) {
		g_set_error(error, TM_ERROR, EBADMSG, "HELLO: channel_count 0 (must be 1..%u)",
			    TM_MAX_CHANNELS);
		return -EBADMSG;
	}
	if (hello->channel_count > TM_MAX_CHANNELS) {
		g_set_error(error, TM_ERROR, EMSGSIZE, "HELLO: channel_count %u over the maximum %u",
			    hello->channel_count, TM_MAX_CHANNELS);
		return -EMSGSIZE;
	}
	int r = check_v2_fields(hello, error);
	if (r < 0)
		return r;
	if (hello->channel_id >= hello->channel_count) {
		g_set_error(error, TM_ERROR, ERANGE,
			    "HELLO: channel_id %u out of range (channel_count %u)", hello->channel_id,
			    hello->channel_count);
		return -ERANGE;
	}
	if (!is_pow2(hello->packet_size) || hello->packet_size < TM_PACKET_SIZE_MIN ||
	    hello->packet_size > TM_PACKET_SIZE_MAX) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO: packet_size %u invalid (a power of two, %u..%u)",
			    hello->packet_size, TM_PACKET_SIZE_MIN, TM_PACKET_SIZE_MAX);
		return -EBADMSG;
	}
	if (!is_pow2(hello->chunk_size) || hello->chunk_size < hello->packet_size ||
	    hello->chunk_size > TM_CHUNK_SIZE_MAX) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO: chunk_size %" PRIu64
			    " invalid (a power of two from packet_size %u to %llu)",
			    hello->chunk_size, hello->packet_size, TM_CHUNK_SIZE_MAX);
		return -EBADMSG;
	}
	if (hello->block_count == 0) {
		g_set_error(error, TM_ERROR, EBADMSG, "HELLO: block_count 0 (must be 1..%u)",
			    TM_MAX_BLOCKS);
		return -EBADMSG;
	}
	if (hello->block_count > TM_MAX_BLOCKS) {
		g_set_error(error, TM_ERROR, EMSGSIZE, "HELLO: block_count %u over the maximum %u",
			    hello->block_count, TM_MAX_BLOCKS);
		return -EMSGSIZE;
	}
	if (!hello->blocks) {
		g_set_error(error, TM_ERROR, EINVAL, "HELLO: block_count %u but no blocks",
			    hello->block_count);
		return -EINVAL;
	}

	for (uint32_t i = 0; i < hello->block_count; i++) {
		r = check_block(hello, i, error);
		if (r < 0)
			return r;
	}

	/* Names are NUL-terminated now (check_block); a set finds duplicates in linear time. */
	g_autoptr(GHashTable) names = g_hash_table_new(g_str_hash, g_str_equal);
	for (uint32_t i = 0; i < hello->block_count; i++) {
		const char *name = hello->blocks[i].name;
		gpointer first;

		if (g_hash_table_lookup_extended(names, name, NULL, &first)) {
			g_autofree char *label = tm_escape_untrusted(name);
			g_set_error(error, TM_ERROR, EBADMSG,
				    "HELLO block %u: name '%s' already used by block %u", i, label,
				    GPOINTER_TO_UINT(first));
			return -EBADMSG;
		}
		g_hash_table_insert(names, (gpointer)name, GUINT_TO_POINTER(i));
	}

	/*
	 * Derived fields only once everything passed. No overflow: a block has < 2^32 pages of at
	 * most 64 KiB (< 2^48 bytes), so < 2^33 chunks of >= 64 KiB, times 1024 blocks < 2^43.
	 */
	uint64_t chunk_base = 0;
	for (uint32_t i = 0; i < hello->block_count; i++) {
		tm_wire_block *b = &hello->blocks[i];

		b->npages = b->length / b->page_size;
		b->chunk_base = chunk_base;
		chunk_base += b->length / hello->chunk_size + (b->length % hello->chunk_size != 0);
	}
	return 0;
}

void tm_hello_encode(const tm_hello *hello, uint8_t *out)
{
	memcpy(out, hello->session_id, sizeof(hello->session_id));
	tm_put16(out + 16, hello->channel_id);
	tm_put16(out + 18, hello->channel_count);
	tm_put32(out + 20, hello->features);
	tm_put32(out + 24, hello->packet_size);
	/* protocol 2: role at 28 and epoch at 44; protocol 1 has zeros there (tm_hello_check). */
	tm_put32(out + 28, hello->role);
	tm_put64(out + 32, hello->chunk_size);
	tm_put32(out + 40, hello->block_count);
	tm_put32(out + 44, hello->epoch);

	uint8_t *p = out + TM_HELLO_FIXED_LEN;
	for (uint32_t i = 0; i < hello->block_count; i++) {
		const tm_wire_block *b = &hello->blocks[i];
		size_t nlen = strnlen(b->name, TM_MAX_BLOCK_NAME);

		tm_put64(p, b->length);
		tm_put64(p + 8, b->guest_base);
		tm_put32(p + 16, b->page_size);
		tm_put16(p + 20, (uint16_t)nlen);
		tm_put16(p + 22, 0);
		memcpy(p + TM_HELLO_BLOCK_LEN, b->name, nlen);
		p += TM_HELLO_BLOCK_LEN + nlen;
	}
}

/* Parses one block descriptor at buf[*off]; checks only what tm_hello_check() cannot see. */
static int decode_block(const uint8_t *buf, size_t len, size_t *off, uint32_t i, tm_wire_block *b,
			GError **error)
{
	const uint8_t *p = buf + *off;
	size_t left = len - *off;

	if (left < TM_HELLO_BLOCK_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO block %u: descriptor truncated (%zu of %u bytes left)", i, left,
			    TM_HELLO_BLOCK_LEN);
		return -EBADMSG;
	}
	uint16_t name_len = tm_get16(p + 20);
	uint16_t reserved = tm_get16(p + 22);

	if (reserved != 0) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO block %u: reserved field is 0x%04x, must be 0", i, reserved);
		return -EBADMSG;
	}
	if (name_len == 0) {
		g_set_error(error, TM_ERROR, EBADMSG, "HELLO block %u: name_len 0 (empty name)", i);
		return -EBADMSG;
	}
	if (name_len > TM_MAX_BLOCK_NAME) {
		g_set_error(error, TM_ERROR, EMSGSIZE, "HELLO block %u: name_len %u over the maximum %u",
			    i, name_len, TM_MAX_BLOCK_NAME);
		return -EMSGSIZE;
	}
	if (left - TM_HELLO_BLOCK_LEN < name_len) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO block %u: name truncated (name_len %u, %zu bytes left)", i, name_len,
			    left - TM_HELLO_BLOCK_LEN);
		return -EBADMSG;
	}
	const uint8_t *name = p + TM_HELLO_BLOCK_LEN;
	const uint8_t *nul = memchr(name, 0, name_len);
	if (nul) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO block %u: name contains a NUL byte at offset %td", i, nul - name);
		return -EBADMSG;
	}

	b->length = tm_get64(p);
	b->guest_base = tm_get64(p + 8);
	b->page_size = tm_get32(p + 16);
	memcpy(b->name, name, name_len);
	b->name[name_len] = '\0';
	*off += TM_HELLO_BLOCK_LEN + name_len;
	return 0;
}

int tm_hello_decode(const uint8_t *buf, size_t len, uint8_t version, tm_hello *ret,
		    GError **error)
{
	if (version != TM_WIRE_VERSION_1 && version != TM_WIRE_VERSION_2) {
		g_set_error(error, TM_ERROR, EINVAL, "HELLO: protocol version %u (1 or 2)", version);
		return -EINVAL;
	}
	if (len < TM_HELLO_FIXED_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG, "HELLO truncated: %zu of %u fixed bytes", len,
			    TM_HELLO_FIXED_LEN);
		return -EBADMSG;
	}
	tm_hello h = { 0 };
	h.version = version;
	if (version == TM_WIRE_VERSION_1) {
		uint32_t reserved1 = tm_get32(buf + 28);
		uint32_t reserved2 = tm_get32(buf + 44);
		if (reserved1 != 0 || reserved2 != 0) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "HELLO: reserved field at offset %u is 0x%08x, must be 0",
				    reserved1 ? 28u : 44u, reserved1 ? reserved1 : reserved2);
			return -EBADMSG;
		}
	} else {
		/* role is one byte at 28, then 3 reserved bytes; epoch at 44 (tm_hello_check). */
		uint32_t reserved = tm_get32(buf + 28) >> 8;
		if (reserved != 0) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "HELLO: reserved bytes at offset 29 are 0x%06x, must be 0",
				    reserved);
			return -EBADMSG;
		}
		h.role = buf[28];
		h.epoch = tm_get32(buf + 44);
	}

	memcpy(h.session_id, buf, sizeof(h.session_id));
	h.channel_id = tm_get16(buf + 16);
	h.channel_count = tm_get16(buf + 18);
	h.features = tm_get32(buf + 20);
	/*
	 * Protocol 2's feature bits are offers: one this build does not know is declined (never
	 * in HELLO_ACK, which the sender needs before it uses a feature), so a newer sender is met
	 * with what both know, not refused. Protocol 1 has no offers: its reserved bits stay
	 * errors (check_v2_fields).
	 */
	if (version == TM_WIRE_VERSION_2)
		h.features &= TM_FEATURES_KNOWN_V2;
	h.packet_size = tm_get32(buf + 24);
	h.chunk_size = tm_get64(buf + 32);
	h.block_count = tm_get32(buf + 40);

	/* Bound the count before allocating for it. */
	if (h.block_count == 0) {
		g_set_error(error, TM_ERROR, EBADMSG, "HELLO: block_count 0 (must be 1..%u)",
			    TM_MAX_BLOCKS);
		return -EBADMSG;
	}
	if (h.block_count > TM_MAX_BLOCKS) {
		g_set_error(error, TM_ERROR, EMSGSIZE, "HELLO: block_count %u over the maximum %u",
			    h.block_count, TM_MAX_BLOCKS);
		return -EMSGSIZE;
	}
	/* Every descriptor has at least 25 bytes: refuse a short body before allocating. */
	if ((len - TM_HELLO_FIXED_LEN) / (TM_HELLO_BLOCK_LEN + 1) < h.block_count) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO truncated: %zu bytes cannot hold block_count %u descriptors", len,
			    h.block_count);
		return -EBADMSG;
	}

	h.blocks = g_new0(tm_wire_block, h.block_count);
	size_t off = TM_HELLO_FIXED_LEN;
	int r;
	for (uint32_t i = 0; i < h.block_count; i++) {
		r = decode_block(buf, len, &off, i, &h.blocks[i], error);
		if (r < 0)
			goto fail;
	}
	if (off != len) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO: %zu trailing bytes after the last block (body_len %zu)", len - off,
			    len);
		r = -EBADMSG;
		goto fail;
	}
	r = tm_hello_check(&h, error);
	if (r < 0)
		goto fail;
	*ret = h;
	return 0;

fail:
	tm_hello_clear(&h);
	return r;
}

static int differ(GError **error, const char *what, const char *a, const char *b)
{
	g_set_error(error, TM_ERROR, EPROTO, "HELLO: %s differs between channels: %s vs %s", what,
		    a, b);
	return -EPROTO;
}

static int block_differs(GError **error, uint32_t i, const char *name, const char *field,
			 const char *a, const char *b)
{
	g_autofree char *label = tm_escape_untrusted(name);
	g_autofree char *what = g_strdup_printf("block %u '%s' %s", i, label, field);

	return differ(error, what, a, b);
}

int tm_hello_same_session(const tm_hello *a, const tm_hello *b, GError **error)
{
	char sa[64], sb[64];

	if (memcmp(a->session_id, b->session_id, sizeof(a->session_id)) != 0) {
		for (unsigned i = 0; i < sizeof(a->session_id); i++) {
			g_snprintf(sa + 2 * i, 3, "%02x", a->session_id[i]);
			g_snprintf(sb + 2 * i, 3, "%02x", b->session_id[i]);
		}
		return differ(error, "session id", sa, sb);
	}
#define CMP_NUM(field, fmt, name)                                  \
	do {                                                       \
		if (a->field != b->field) {                        \
			g_snprintf(sa, sizeof(sa), fmt, a->field); \
			g_snprintf(sb, sizeof(sb), fmt, b->field); \
			return differ(error, name, sa, sb);        \
		}                                                  \
	} while (0)
	/* version 0 is 1 (a struct a protocol 1 caller zeroed) */
	if ((a->version ? a->version : 1) != (b->version ? b->version : 1)) {
		g_snprintf(sa, sizeof(sa), "%u", a->version ? a->version : 1);
		g_snprintf(sb, sizeof(sb), "%u", b->version ? b->version : 1);
		return differ(error, "protocol version", sa, sb);
	}
	CMP_NUM(epoch, "%u", "epoch");
	CMP_NUM(channel_count, "%u", "channel count");
	CMP_NUM(features, "0x%08x", "features");
	CMP_NUM(packet_size, "%u", "packet size");
	CMP_NUM(chunk_size, "%" PRIu64, "chunk size");
	CMP_NUM(block_count, "%u", "block count");
#undef CMP_NUM

	for (uint32_t i = 0; i < a->block_count; i++) {
		const tm_wire_block *x = &a->blocks[i], *y = &b->blocks[i];

		if (strcmp(x->name, y->name) != 0) {
			g_autofree char *lx = tm_escape_untrusted(x->name);
			g_autofree char *ly = tm_escape_untrusted(y->name);
			g_autofree char *qx = g_strdup_printf("'%s'", lx);
			g_autofree char *qy = g_strdup_printf("'%s'", ly);
			g_autofree char *what = g_strdup_printf("block %u name", i);
			return differ(error, what, qx, qy);
		}
#define CMP_BLOCK(field, fmt, what)                                            \
	do {                                                                   \
		if (x->field != y->field) {                                    \
			g_snprintf(sa, sizeof(sa), fmt, x->field);             \
			g_snprintf(sb, sizeof(sb), fmt, y->field);             \
			return block_differs(error, i, x->name, what, sa, sb); \
		}                                                              \
	} while (0)
		CMP_BLOCK(length, "%" PRIu64, "length");
		CMP_BLOCK(page_size, "%u", "page size");
		CMP_BLOCK(guest_base, "0x%" PRIx64, "guest_base");
#undef CMP_BLOCK
	}
	return 0;
}
