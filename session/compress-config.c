/* SPDX-License-Identifier: MIT */
/*
 * Compression settings (tm_live_config.compress, compress_level): parsing the operator's words,
 * checking a configuration, and what a sender offers in its HELLO for it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "session/compress.h"
#include "tagmig/error.h"

const char *tm_compress_mode_name(uint32_t mode)
{
	switch (mode) {
	case TM_COMPRESS_DEFAULT:
	case TM_COMPRESS_AUTO: return "auto";
	case TM_COMPRESS_NONE: return "none";
	case TM_COMPRESS_LZ4: return "lz4";
	case TM_COMPRESS_ZSTD: return "zstd";
	default: return NULL;
	}
}

static int need_codec(tm_zcodec codec, GError **error)
{
	if (tm_zcodec_available() & (1u << codec))
		return 0;
	g_set_error(error, TM_ERROR, EOPNOTSUPP,
		    "compression: %s is not built into this tagmig (libraries missing at build)",
		    tm_zcodec_name(codec));
	return -EOPNOTSUPP;
}

int tm_compress_config_check(tm_live_config *c, GError **error)
{
	if (c->compress > TM_COMPRESS_ZSTD) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "live config: compress %u (0 default, 1 none, 2 auto, 3 lz4, 4 zstd)",
			    c->compress);
		return -EINVAL;
	}
	if (c->compress_level && c->compress != TM_COMPRESS_ZSTD) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "live config: compress_level %d is for zstd only (compress %s)",
			    c->compress_level, tm_compress_mode_name(c->compress));
		return -EINVAL;
	}
	if (c->compress_level < TM_ZSTD_LEVEL_MIN || c->compress_level > TM_ZSTD_LEVEL_MAX) {
		g_set_error(error, TM_ERROR, EINVAL, "live config: compress_level %d (%d..%d)",
			    c->compress_level, TM_ZSTD_LEVEL_MIN, TM_ZSTD_LEVEL_MAX);
		return -EINVAL;
	}
	if (c->compress == TM_COMPRESS_LZ4)
		return need_codec(TM_ZCODEC_LZ4, error);
	if (c->compress == TM_COMPRESS_ZSTD)
		return need_codec(TM_ZCODEC_ZSTD, error);
	/* auto without any codec built is simply none: nothing to offer. */
	if (c->compress == TM_COMPRESS_DEFAULT)
		c->compress = TM_COMPRESS_AUTO;
	return 0;
}

int tm_compress_parse(const char *text, uint32_t *ret_mode, int32_t *ret_level, GError **error)
{
	tm_live_config c = { .size = sizeof(c) };

	if (!text) {
		g_set_error(error, TM_ERROR, EINVAL, "compression: no mode given");
		return -EINVAL;
	}
	if (strcmp(text, "auto") == 0) {
		c.compress = TM_COMPRESS_AUTO;
	} else if (strcmp(text, "none") == 0) {
		c.compress = TM_COMPRESS_NONE;
	} else if (strcmp(text, "lz4") == 0) {
		c.compress = TM_COMPRESS_LZ4;
	} else if (strcmp(text, "zstd") == 0) {
		c.compress = TM_COMPRESS_ZSTD;
	} else if (strncmp(text, "zstd:", 5) == 0) {
		char *end = NULL;
		long v = strtol(text + 5, &end, 10);
		if (text[5] == '\0' || *end != '\0' || v < TM_ZSTD_LEVEL_MIN || v > TM_ZSTD_LEVEL_MAX) {
			g_set_error(error, TM_ERROR, EINVAL,
				    "compression: '%s': the zstd level must be %d..%d", text,
				    TM_ZSTD_LEVEL_MIN, TM_ZSTD_LEVEL_MAX);
			return -EINVAL;
		}
		c.compress = TM_COMPRESS_ZSTD;
		c.compress_level = (int32_t)v;
	} else {
		g_set_error(error, TM_ERROR, EINVAL,
			    "compression: '%s' is none of auto, none, lz4, zstd, zstd:LEVEL", text);
		return -EINVAL;
	}
	int r = tm_compress_config_check(&c, error);
	if (r < 0)
		return r;
	*ret_mode = c.compress;
	*ret_level = c.compress_level;
	return 0;
}

uint32_t tm_zsend_offer(const tm_live_config *live, uint8_t wire)
{
	uint32_t have = tm_zcodec_available();
	uint32_t avail = (have & (1u << TM_ZCODEC_LZ4) ? TM_FEATURE_LZ4 : 0) |
			 (have & (1u << TM_ZCODEC_ZSTD) ? TM_FEATURE_ZSTD : 0);

	if (wire != TM_WIRE_VERSION_2)
		return 0; /* protocol 1 has no ZDATA */
	switch (live->compress) {
	case TM_COMPRESS_DEFAULT:
	case TM_COMPRESS_AUTO: return avail;
	case TM_COMPRESS_LZ4: return avail & TM_FEATURE_LZ4;
	case TM_COMPRESS_ZSTD: return avail & TM_FEATURE_ZSTD;
	default: return 0;
	}
}
