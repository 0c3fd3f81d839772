/* SPDX-License-Identifier: MIT */
/* Peer text made safe to print (escape.h). */
#include <string.h>

#include "common/escape.h"

/* Code points that reorder or hide text on a terminal or in a log viewer (Trojan Source). */
static gboolean is_bidi_control(gunichar c)
{
	return c == 0x061c || c == 0x200e || c == 0x200f || (c >= 0x202a && c <= 0x202e) ||
	       (c >= 0x2066 && c <= 0x2069);
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
		if ((c >= 0x80 && c <= 0x9f) || is_bidi_control(c))
			g_string_append_printf(out, "\\u{%04x}", c);
		else
			g_string_append_len(out, p, next - p);
		p = next;
	}
	return g_string_free(out, FALSE);
}
