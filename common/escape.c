/* SPDX-License-Identifier: MIT */
/* Peer text made safe to print (escape.h). */
#include <string.h>

#include "common/escape.h"

/*
 * Code points that reorder, hide or split text on a terminal or in a log viewer (Trojan Source):
 * C1 controls, every format character (Cf: the bidirectional controls, zero-width space and
 * joiners, the word joiner, U+FEFF, the soft hyphen, ...) and the line and paragraph separators
 * U+2028 and U+2029, which a log viewer may break a line at.
 */
static gboolean is_hiding(gunichar c)
{
	switch (g_unichar_type(c)) {
	case G_UNICODE_CONTROL:
	case G_UNICODE_FORMAT:
	case G_UNICODE_LINE_SEPARATOR:
	case G_UNICODE_PARAGRAPH_SEPARATOR:
		return TRUE;
	default:
		return FALSE;
	}
}

char *tm_escape_untrusted(const char *s)
{
	GString *out = g_string_new(NULL);

	if (!s)
		return g_string_free(out, FALSE);
	const char *p = s, *end = s + strlen(s);
	while (p < end) {
		unsigned char b = (unsigned char)*p;
		if (b < 0x80) {
			if (b < 0x20 || b == 0x7f)
				g_string_append_printf(out, "\\x%02x", b);
			else
				g_string_append_c(out, (char)b);
			p++;
			continue;
		}
		gunichar c = g_utf8_get_char_validated(p, end - p);
		if (c == (gunichar)-1 || c == (gunichar)-2) {
			g_string_append_printf(out, "\\x%02x", b);
			p++;
			continue;
		}
		const char *next = g_utf8_next_char(p);
		if (is_hiding(c))
			g_string_append_printf(out, "\\u{%04x}", c);
		else
			g_string_append_len(out, p, next - p);
		p = next;
	}
	return g_string_free(out, FALSE);
}
