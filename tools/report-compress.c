/* SPDX-License-Identifier: MIT */
/* The compression part of a command's summary (report.h): per channel and in total. */
#include <inttypes.h>
#include <stdio.h>

#include "json.h"
#include "tagmig/session.h"
#include "report.h"

static const char *codec_label(uint32_t codec, int32_t level, char *buf, size_t len)
{
	if (codec == 1)
		return "lz4";
	if (codec == 2) {
		g_snprintf(buf, len, "zstd:%d", level ? level : 3);
		return buf;
	}
	return "none";
}

void cli_compress_totals(const cli_compress *z, tm_compress_stats *ret)
{
	*ret = (tm_compress_stats){ .size = sizeof(*ret) };
	for (unsigned i = 0; i < z->channels; i++) {
		const tm_compress_stats *c = &z->stats[i];
		ret->mode = c->mode;
		ret->codecs |= c->codecs;
		for (unsigned k = 0; k < 3; k++)
			ret->packets_by_codec[k] += c->packets_by_codec[k];
		ret->data_bytes += c->data_bytes;
		ret->wire_data_bytes += c->wire_data_bytes;
		ret->cpu_seconds += c->cpu_seconds;
	}
	ret->ratio = ret->data_bytes ? (double)ret->wire_data_bytes / (double)ret->data_bytes : 0;
}

void cli_compress_json(json_writer *w, const cli_compress *z)
{
	tm_compress_stats t;
	char buf[16];

	cli_compress_totals(z, &t);
	jw_open(w, "compression");
	if (z->sender)
		jw_str(w, "mode", tm_compress_mode_name(t.mode));
	/* agreed in the handshake: "", "lz4", "zstd" or "lz4,zstd" */
	jw_str(w, "codecs", (t.codecs & TM_FEATURES_COMPRESS) == TM_FEATURES_COMPRESS ? "lz4,zstd"
			    : t.codecs & TM_FEATURE_LZ4				     ? "lz4"
			    : t.codecs & TM_FEATURE_ZSTD			     ? "zstd"
										     : "");
	jw_u64(w, "data_bytes", t.data_bytes);
	jw_u64(w, "wire_data_bytes", t.wire_data_bytes);
	jw_double(w, "ratio", t.ratio);
	jw_double(w, "cpu_seconds", t.cpu_seconds);
	jw_open_array(w, "channels");
	for (unsigned i = 0; i < z->channels; i++) {
		const tm_compress_stats *c = &z->stats[i];
		jw_open(w, NULL);
		jw_u64(w, "channel", i);
		jw_str(w, "last", codec_label(c->last_codec, c->last_level, buf, sizeof(buf)));
		jw_u64(w, "packets_raw", c->packets_by_codec[0]);
		jw_u64(w, "packets_lz4", c->packets_by_codec[1]);
		jw_u64(w, "packets_zstd", c->packets_by_codec[2]);
		jw_u64(w, "data_bytes", c->data_bytes);
		jw_u64(w, "wire_data_bytes", c->wire_data_bytes);
		jw_double(w, "ratio", c->ratio);
		jw_double(w, "cpu_seconds", c->cpu_seconds);
		if (z->sender)
			jw_u64(w, "link_bytes_per_sec", c->link_bytes_per_sec);
		jw_close(w);
	}
	jw_close_array(w);
	jw_close(w);
}

char *cli_compress_human(const cli_compress *z)
{
	tm_compress_stats t;

	cli_compress_totals(z, &t);
	if (!t.codecs)
		return g_strdup("");
	return g_strdup_printf(", compression %s: %.2f of the page data (packets raw %" PRIu64
			       ", lz4 %" PRIu64 ", zstd %" PRIu64 ")",
			       z->sender ? tm_compress_mode_name(t.mode) : "decoded", t.ratio,
			       t.packets_by_codec[0], t.packets_by_codec[1], t.packets_by_codec[2]);
}

void cli_compress_collect(cli_compress *z, tm_sender *s, tm_receiver *r, unsigned channels)
{
	cli_delta_collect(&z->delta, s, r, MIN(channels, TM_MAX_CHANNELS));
	z->sender = s != NULL;
	z->channels = MIN(channels, TM_MAX_CHANNELS);
	for (unsigned i = 0; i < z->channels; i++) {
		z->stats[i] = (tm_compress_stats){ .size = sizeof(tm_compress_stats) };
		int rc = s ? tm_sender_get_compress_stats(s, i, &z->stats[i])
			   : tm_receiver_get_compress_stats(r, i, &z->stats[i]);
		if (rc < 0) {
			z->channels = i;
			break;
		}
	}
}
