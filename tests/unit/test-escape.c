/* SPDX-License-Identifier: MIT */
/* tm_escape_untrusted(): peer text made safe to print (common/escape.h). */
#include <string.h>

#include <glib.h>

#include "common/escape.h"

static void check(const char *in, const char *want)
{
	g_autofree char *got = tm_escape_untrusted(in);
	g_assert_cmpstr(got, ==, want);
	/* Escaping twice changes nothing: the library and the tool may both escape one message. */
	g_autofree char *again = tm_escape_untrusted(got);
	g_assert_cmpstr(again, ==, want);
}

static void test_controls(void)
{
	check("plain text, 100% ok", "plain text, 100% ok");
	check("a\x1b[31mred\x07\r\nb\tc\x7f", "a\\x1b[31mred\\x07\\x0d\\x0ab\\x09c\\x7f");
	check("back\\slash", "back\\slash");
	check(NULL, "");
}

static void test_unicode(void)
{
	check("caf\xc3\xa9 \xe6\x97\xa5", "caf\xc3\xa9 \xe6\x97\xa5"); /* letters stay */
	check("x\xe2\x80\xaey\xe2\x81\xa6z", "x\\u{202e}y\\u{2066}z");   /* bidi overrides */
	check("\xe2\x80\xaa\xe2\x80\xad\xe2\x81\xa9\xe2\x80\x8f", "\\u{202a}\\u{202d}\\u{2069}\\u{200f}");
	check("c1\xc2\x9b", "c1\\u{009b}");                       /* C1 CSI */
	/* what splits or hides text in a log viewer: line and paragraph separators, zero-width
	 * space and joiner, word joiner, BOM, soft hyphen */
	check("a\xe2\x80\xa8" "b\xe2\x80\xa9" "c", "a\\u{2028}b\\u{2029}c");
	check("z\xe2\x80\x8bw\xe2\x80\x8dj\xe2\x81\xa0\xef\xbb\xbf\xc2\xad",
	      "z\\u{200b}w\\u{200d}j\\u{2060}\\u{feff}\\u{00ad}");
	check("bad\xff\xc3", "bad\\xff\\xc3");                   /* not UTF-8 */
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/escape/controls", test_controls);
	g_test_add_func("/escape/unicode", test_unicode);
	return g_test_run();
}
