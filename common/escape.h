/* SPDX-License-Identifier: MIT */
/*
 * Text from the peer (an ERROR message, a RAM block name of a HELLO) made safe to print: the one
 * escape every message that quotes the peer goes through, in the library and in the tool (which
 * compiles this file in itself: it uses the public API only). Not part of the API.
 */
#pragma once

#include <glib.h>

/*
 * Returns a new string (g_free) that shows s without letting it drive a terminal: control
 * characters (C0 with ESC, CR, LF, BEL, TAB; DEL; C1 U+0080..U+009F) become \xNN (\u{NNNN} for
 * C1), every format character (Unicode Cf: the bidirectional controls U+061C, U+200E, U+200F,
 * U+202A..U+202E, U+2066..U+2069, the zero-width characters U+200B..U+200D, U+2060, U+FEFF, the
 * soft hyphen, ...) and the line and paragraph separators U+2028 and U+2029 become \u{NNNN}, and
 * bytes that are not UTF-8 become \xNN. Printable text, non-ASCII letters
 * and backslashes included, stays as it is, so escaping twice changes nothing (the library escapes
 * what it quotes, the tool escapes every line it prints). s NULL gives "". Thread-safe.
 */
char *tm_escape_untrusted(const char *s);
