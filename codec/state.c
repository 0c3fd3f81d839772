/* SPDX-License-Identifier: MIT */
/*
 * Device state on the wire (docs/wire-format.md, "STATE", "RAM_END", "READY"): the chunks of
 * the VMM's named state sections, the end of precopy RAM on a data channel that lets them
 * start, and the receiver's answer once it has everything. Two kinds of checks: what one chunk
 * header can tell alone (tm_state_hdr_decode, run by a channel worker as soon as it reads it),
 * and what needs every chunk before it (tm_state_order_check, run when the chunk's turn comes,
 * before any byte of it reaches the VMM).
 */
#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include "codec/codec.h"
#include "common/escape.h"
#include "tagmig/error.h"

#define U64(x) ((guint64)(x))

int tm_state_name_check(const char *name, size_t len, GError **error)
{
	if (len == 0 || len > TM_MAX_STATE_NAME) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "state section name of %zu bytes (1..%u)", len, TM_MAX_STATE_NAME);
		return -EBADMSG;
	}
	for (size_t i = 0; i < len; i++) {
		uint8_t c = (uint8_t)name[i];
		if (c < 0x20 || c == 0x7f) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "state section name: control character 0x%02x at byte %zu", c, i);
			return -EBADMSG;
		}
	}
	const char *end;
	if (!g_utf8_validate(name, (gssize)len, &end)) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "state section name: invalid UTF-8 at byte %zu", (size_t)(end - name));
		return -EBADMSG;
	}
	/* Error messages quote the name: nothing in it may drive a terminal (C1 controls,
	 * bidirectional overrides), which is what the escape would change. */
	g_autofree char *copy = g_strndup(name, len);
	g_autofree char *shown = tm_escape_untrusted(copy);
	if (strcmp(copy, shown) != 0) {
		size_t at = 0;
		while (copy[at] == shown[at])
			at++;
		g_set_error(error, TM_ERROR, EBADMSG,
			    "state section name: control character U+%04X at byte %zu",
			    g_utf8_get_char(copy + at), at);
		return -EBADMSG;
	}
	return 0;
}

size_t tm_state_encode(uint8_t *out, uint32_t seq, const tm_state_hdr *hdr, const char *name)
{
	uint8_t *b = out + TM_FRAME_HDR_LEN;

	tm_frame_encode_v(out, TM_WIRE_VERSION_2, TM_MSG_STATE,
			  TM_STATE_HDR_LEN + hdr->name_len + hdr->data_len, seq);
	tm_put32(b, hdr->section);
	tm_put16(b + 4, hdr->flags);
	tm_put16(b + 6, hdr->name_len);
	tm_put64(b + 8, hdr->chunk);
	tm_put64(b + 16, hdr->section_len);
	tm_put64(b + 24, hdr->offset);
	tm_put32(b + 32, hdr->data_len);
	tm_put32(b + 36, 0);
	if (hdr->name_len)
		memcpy(b + TM_STATE_HDR_LEN, name, hdr->name_len);
	return TM_FRAME_HDR_LEN + TM_STATE_HDR_LEN + hdr->name_len;
}

static int bad(GError **error, int code, const tm_state_hdr *h, const char *fmt, ...)
	G_GNUC_PRINTF(4, 5);
static int bad(GError **error, int code, const tm_state_hdr *h, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	g_autofree char *msg = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	g_set_error(error, TM_ERROR, code, "STATE chunk %" G_GUINT64_FORMAT " (section %u): %s",
		    U64(h->chunk), h->section, msg);
	return -code;
}

int tm_state_hdr_decode(const uint8_t *buf, size_t len, uint32_t body_len,
			const tm_state_limits *lim, tm_state_hdr *ret, GError **error)
{
	tm_state_hdr h;

	if (len < TM_STATE_HDR_LEN || body_len < TM_STATE_HDR_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG, "STATE: header truncated: %zu of %u bytes",
			    MIN(len, (size_t)body_len), TM_STATE_HDR_LEN);
		return -EBADMSG;
	}
	h.section = tm_get32(buf);
	h.flags = tm_get16(buf + 4);
	h.name_len = tm_get16(buf + 6);
	h.chunk = tm_get64(buf + 8);
	h.section_len = tm_get64(buf + 16);
	h.offset = tm_get64(buf + 24);
	h.data_len = tm_get32(buf + 32);
	uint32_t reserved = tm_get32(buf + 36);

	if (h.flags & ~TM_STATE_FLAGS_KNOWN)
		return bad(error, EBADMSG, &h, "unknown flags 0x%04x", h.flags);
	if (reserved)
		return bad(error, EBADMSG, &h, "reserved field is 0x%08x, must be 0", reserved);
	/* Which channel first: a chunk on the wrong one is the likeliest sender bug. */
	if (lim->channels == 0 || h.chunk % lim->channels != lim->channel)
		return bad(error, EPROTO, &h, "belongs on channel %" G_GUINT64_FORMAT,
			   lim->channels ? U64(h.chunk % lim->channels) : U64(0));
	if (h.chunk != lim->expected)
		return bad(error, EPROTO, &h,
			   "out of order: this channel's next chunk is %" G_GUINT64_FORMAT,
			   U64(lim->expected));
	if (h.section >= TM_MAX_STATE_SECTIONS)
		return bad(error, EMSGSIZE, &h, "section number over the maximum %u",
			   TM_MAX_STATE_SECTIONS - 1);
	if (h.flags & TM_STATE_END) {
		if ((h.flags & (TM_STATE_FIRST | TM_STATE_LAST)) || h.name_len || h.data_len ||
		    h.section_len || h.offset)
			return bad(error, EPROTO, &h,
				   "END_OF_STATE with flags 0x%04x, name_len %u, data_len %u, "
				   "section_len %" G_GUINT64_FORMAT ", offset %" G_GUINT64_FORMAT
				   " (all but END must be 0)",
				   h.flags, h.name_len, h.data_len, U64(h.section_len),
				   U64(h.offset));
	} else {
		bool first = h.flags & TM_STATE_FIRST;
		if (first && (h.name_len == 0 || h.name_len > TM_MAX_STATE_NAME))
			return bad(error, EBADMSG, &h, "first chunk with name_len %u (1..%u)",
				   h.name_len, TM_MAX_STATE_NAME);
		if (!first && h.name_len)
			return bad(error, EBADMSG, &h, "name_len %u on a chunk that is not FIRST",
				   h.name_len);
		if (first && h.offset)
			return bad(error, EPROTO, &h, "first chunk at offset %" G_GUINT64_FORMAT,
				   U64(h.offset));
		if (h.section_len > lim->max_section)
			return bad(error, EMSGSIZE, &h,
				   "section_len %" G_GUINT64_FORMAT
				   " over the receiver's max_state_section %" G_GUINT64_FORMAT,
				   U64(h.section_len), U64(lim->max_section));
		if (h.data_len > lim->packet_size)
			return bad(error, EMSGSIZE, &h, "data_len %u over the packet size %u",
				   h.data_len, lim->packet_size);
		if (h.offset > h.section_len || h.data_len > h.section_len - h.offset)
			return bad(error, ERANGE, &h,
				   "bytes %" G_GUINT64_FORMAT "+%u outside the section's %" G_GUINT64_FORMAT,
				   U64(h.offset), h.data_len, U64(h.section_len));
		if (h.data_len == 0 && h.section_len != 0)
			return bad(error, EBADMSG, &h, "no data in a section of %" G_GUINT64_FORMAT
				   " bytes", U64(h.section_len));
		bool ends = h.offset + h.data_len == h.section_len;
		if (ends != !!(h.flags & TM_STATE_LAST))
			return bad(error, EPROTO, &h, "LAST is %s but bytes %" G_GUINT64_FORMAT
				   "+%u %s the section of %" G_GUINT64_FORMAT,
				   ends ? "clear" : "set", U64(h.offset), h.data_len,
				   ends ? "end" : "do not end", U64(h.section_len));
	}
	if (body_len != (uint64_t)TM_STATE_HDR_LEN + h.name_len + h.data_len)
		return bad(error, EBADMSG, &h, "body of %u bytes, header and name_len %u, data_len %u "
			   "make %" G_GUINT64_FORMAT,
			   body_len, h.name_len, h.data_len,
			   U64((uint64_t)TM_STATE_HDR_LEN + h.name_len + h.data_len));
	*ret = h;
	return 0;
}

void tm_state_order_init(tm_state_order *o, uint64_t max_total, const char *const *names)
{
	memset(o, 0, sizeof(*o));
	o->max_total = max_total;
	o->names = names;
	for (uint32_t i = 0; names && names[i]; i++)
		o->names_count = i + 1;
}

int tm_state_order_check(tm_state_order *o, const tm_state_hdr *h, const char *name,
			 GError **error)
{
	if (o->ended)
		return bad(error, EPROTO, h, "STATE after the end of device state");
	if (h->chunk != o->next_chunk)
		return bad(error, EPROTO, h, "out of order: chunk %" G_GUINT64_FORMAT " is next",
			   U64(o->next_chunk));
	if (h->flags & TM_STATE_END) {
		if (o->in_section)
			return bad(error, EPROTO, h,
				   "END_OF_STATE inside section %u '%s' (%" G_GUINT64_FORMAT
				   " of %" G_GUINT64_FORMAT " bytes)",
				   o->sections - 1, o->name, U64(o->offset), U64(o->section_len));
		if (h->section != o->sections)
			return bad(error, EPROTO, h, "END_OF_STATE counts %u sections, %u arrived",
				   h->section, o->sections);
		if (o->names && o->sections != o->names_count)
			return bad(error, EPROTO, h,
				   "end of device state after %u sections; state_names expects %u "
				   "(next '%s')",
				   o->sections, o->names_count, o->names[o->sections]);
		o->ended = true;
		o->next_chunk++;
		return 0;
	}
	if (h->flags & TM_STATE_FIRST) {
		if (o->in_section)
			return bad(error, EPROTO, h,
				   "new section inside section %u '%s' (%" G_GUINT64_FORMAT
				   " of %" G_GUINT64_FORMAT " bytes)",
				   o->sections - 1, o->name, U64(o->offset), U64(o->section_len));
		if (h->section != o->sections)
			return bad(error, EPROTO, h, "out of order: section %u is next",
				   o->sections);
		if (o->names && o->sections >= o->names_count)
			return bad(error, EPROTO, h,
				   "state section %u is '%s'; state_names expects only %u sections",
				   h->section, name, o->names_count);
		if (o->names && strcmp(name, o->names[o->sections]) != 0)
			return bad(error, EPROTO, h, "state section %u is '%s', expected '%s'",
				   h->section, name, o->names[o->sections]);
		if (h->section_len > o->max_total - MIN(o->total, o->max_total))
			return bad(error, EMSGSIZE, h,
				   "section '%s' of %" G_GUINT64_FORMAT " bytes after %" G_GUINT64_FORMAT
				   " exceeds the receiver's max_state_total %" G_GUINT64_FORMAT,
				   name, U64(h->section_len), U64(o->total), U64(o->max_total));
		o->sections++;
		o->total += h->section_len;
		o->section_len = h->section_len;
		o->offset = 0;
		g_strlcpy(o->name, name, sizeof(o->name));
	} else {
		if (!o->in_section)
			return bad(error, EPROTO, h, "continues no section (FIRST missing)");
		if (h->section != o->sections - 1)
			return bad(error, EPROTO, h, "section %u '%s' is in progress",
				   o->sections - 1, o->name);
		if (h->section_len != o->section_len)
			return bad(error, EPROTO, h,
				   "section_len %" G_GUINT64_FORMAT ", its first chunk said %" G_GUINT64_FORMAT,
				   U64(h->section_len), U64(o->section_len));
		if (h->offset != o->offset)
			return bad(error, EPROTO, h,
				   "offset %" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT " bytes of '%s' arrived",
				   U64(h->offset), U64(o->offset), o->name);
	}
	o->offset += h->data_len;
	o->in_section = !(h->flags & TM_STATE_LAST);
	o->next_chunk++;
	return 0;
}

size_t tm_ram_end_encode(uint8_t *out, uint32_t seq, uint32_t mode, uint64_t pages_sent,
			 uint64_t packets_sent)
{
	uint8_t *b = out + TM_FRAME_HDR_LEN;

	tm_frame_encode_v(out, TM_WIRE_VERSION_2, TM_MSG_RAM_END, TM_RAM_END_LEN, seq);
	tm_put32(b, mode);
	tm_put32(b + 4, 0);
	tm_put64(b + 8, pages_sent);
	tm_put64(b + 16, packets_sent);
	return TM_FRAME_HDR_LEN + TM_RAM_END_LEN;
}

int tm_ram_end_decode(const uint8_t *buf, size_t len, bool postcopy, uint32_t *ret_mode,
		      uint64_t *ret_pages, uint64_t *ret_packets, GError **error)
{
	if (len != TM_RAM_END_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG, "RAM_END: body of %zu bytes, must be %u", len,
			    TM_RAM_END_LEN);
		return -EBADMSG;
	}
	uint32_t mode = tm_get32(buf), reserved = tm_get32(buf + 4);
	if (mode != TM_RAM_END_FINAL && mode != TM_RAM_END_POSTCOPY) {
		g_set_error(error, TM_ERROR, EBADMSG, "RAM_END: mode %u (1 FINAL, 2 POSTCOPY)", mode);
		return -EBADMSG;
	}
	if (reserved) {
		g_set_error(error, TM_ERROR, EBADMSG, "RAM_END: reserved field is 0x%08x, must be 0",
			    reserved);
		return -EBADMSG;
	}
	if (mode == TM_RAM_END_POSTCOPY && !postcopy) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "RAM_END: POSTCOPY in a session that did not agree on postcopy");
		return -EPROTO;
	}
	*ret_mode = mode;
	*ret_pages = tm_get64(buf + 8);
	*ret_packets = tm_get64(buf + 16);
	return 0;
}

size_t tm_ready_encode(uint8_t *out, uint32_t seq, uint64_t mode)
{
	tm_frame_encode_v(out, TM_WIRE_VERSION_2, TM_MSG_READY, TM_READY_LEN, seq);
	tm_put64(out + TM_FRAME_HDR_LEN, mode);
	return TM_FRAME_HDR_LEN + TM_READY_LEN;
}

int tm_ready_decode(const uint8_t *buf, size_t len, uint64_t *ret_mode, GError **error)
{
	if (len != TM_READY_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG, "READY: body of %zu bytes, must be %u", len,
			    TM_READY_LEN);
		return -EBADMSG;
	}
	uint64_t mode = tm_get64(buf);
	if (mode != TM_RAM_END_FINAL && mode != TM_RAM_END_POSTCOPY) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "READY: mode %" G_GUINT64_FORMAT " (1 precopy, 2 postcopy)", U64(mode));
		return -EBADMSG;
	}
	*ret_mode = mode;
	return 0;
}
