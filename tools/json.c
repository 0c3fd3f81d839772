/* SPDX-License-Identifier: MIT */
/* The tool's small JSON writer (json.h). */
#include <inttypes.h>
#include <math.h>

#include "json.h"

void json_append_string(GString *out, const char *s)
{
	g_string_append_c(out, '"');
	for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
		switch (*p) {
		case '"':
			g_string_append(out, "\\\"");
			break;
		case '\\':
			g_string_append(out, "\\\\");
			break;
		case '\n':
			g_string_append(out, "\\n");
			break;
		case '\r':
			g_string_append(out, "\\r");
			break;
		case '\t':
			g_string_append(out, "\\t");
			break;
		default:
			if (*p < 0x20 || *p == 0x7f)
				g_string_append_printf(out, "\\u%04x", *p);
			else
				g_string_append_c(out, (char)*p);
		}
	}
	g_string_append_c(out, '"');
}


void jw_key(json_writer *w, const char *key)
{
	if (!w->first)
		g_string_append_c(w->out, ',');
	w->first = false;
	json_append_string(w->out, key);
	g_string_append_c(w->out, ':');
}

void jw_open(json_writer *w, const char *key)
{
	if (key)
		jw_key(w, key);
	else if (!w->first)
		g_string_append_c(w->out, ','); /* an element of an array */
	g_string_append_c(w->out, '{');
	w->first = true;
}

void jw_close(json_writer *w)
{
	g_string_append_c(w->out, '}');
	w->first = false;
}

void jw_u64(json_writer *w, const char *key, uint64_t v)
{
	jw_key(w, key);
	g_string_append_printf(w->out, "%" PRIu64, v);
}

void jw_double(json_writer *w, const char *key, double v)
{
	char buf[G_ASCII_DTOSTR_BUF_SIZE];

	jw_key(w, key);
	g_string_append(w->out, g_ascii_formatd(buf, sizeof(buf), "%.6g", isfinite(v) ? v : 0));
}

void jw_str(json_writer *w, const char *key, const char *v)
{
	jw_key(w, key);
	json_append_string(w->out, v);
}

void jw_open_array(json_writer *w, const char *key)
{
	jw_key(w, key);
	g_string_append_c(w->out, '[');
	w->first = true;
}

void jw_close_array(json_writer *w)
{
	g_string_append_c(w->out, ']');
	w->first = false;
}

void jw_bool(json_writer *w, const char *key, bool v)
{
	jw_key(w, key);
	g_string_append(w->out, v ? "true" : "false");
}
