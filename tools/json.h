/* SPDX-License-Identifier: MIT */
/*
 * A small JSON writer for the tool's --json output: members are separated by commas as they come,
 * objects and arrays nest with jw_open/jw_close and jw_open_array/jw_close_array (an object in an
 * array: jw_open(w, NULL)). Strings are escaped (control characters as \uXXXX); numbers are
 * locale-independent and never NaN or infinity (not JSON). Start with first = true.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

typedef struct json_writer {
	GString *out;
	bool first; /* no member yet in the innermost open object or array */
} json_writer;

void json_append_string(GString *out, const char *s);
void jw_key(json_writer *w, const char *key);
void jw_open(json_writer *w, const char *key);
void jw_close(json_writer *w);
void jw_open_array(json_writer *w, const char *key);
void jw_close_array(json_writer *w);
void jw_u64(json_writer *w, const char *key, uint64_t v);
void jw_double(json_writer *w, const char *key, double v);
void jw_str(json_writer *w, const char *key, const char *v);
void jw_bool(json_writer *w, const char *key, bool v);

typedef struct cli_compress cli_compress;
/* The "compression" object of a summary (report-compress.c). */
void cli_compress_json(json_writer *w, const cli_compress *z);
