/* SPDX-License-Identifier: MIT */
/*
 * tagmig send: migrates RAM image files (one per --ram, mapped read-only) and optionally their
 * tag files (one byte per 16-byte granule, low nibble) to a `tagmig recv` in one round. Every file
 * is checked before the first connection, so a bad input never reaches the receiver.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "map.h"
#include "progress.h"
#include "report.h"
#include "env.h"

typedef struct send_opts {
	char *connect;
	char **ram;
	char **tags;
	int channels;
	char *page_size;
	char *chunk_size;
	char *packet_size;
	gboolean json;
	gboolean no_resume;
	char *io;
	int timeout;
	char *tls_creds;
	char *tls_hostname;
	char *rate_limit;
	char *compress;
	char *delta_cache;
	char *delta_policy;
} send_opts;

static void send_opts_clear(send_opts *o)
{
	g_free(o->connect);
	g_strfreev(o->ram);
	g_strfreev(o->tags);
	g_free(o->page_size);
	g_free(o->chunk_size);
	g_free(o->packet_size);
	g_free(o->io);
	g_free(o->tls_creds);
	g_free(o->tls_hostname);
	g_free(o->rate_limit);
	g_free(o->compress);
	g_free(o->delta_cache);
	g_free(o->delta_policy);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(send_opts, send_opts_clear)

typedef struct send_progress {
	tm_sender *sender;
	uint64_t total_pages;
	uint64_t bytes_per_page; /* average, for the rate */
} send_progress;

static void send_progress_fn(void *opaque, uint64_t *done, uint64_t *total, uint64_t *bytes)
{
	send_progress *p = opaque;
	tm_stats st;

	tm_sender_get_stats(p->sender, &st);
	*done = st.pages;
	*total = p->total_pages;
	*bytes = st.pages * p->bytes_per_page;
}

int cli_cmd_send(int argc, char **argv)
{
	g_auto(send_opts) o = { .channels = 4, .timeout = 60 };
	const GOptionEntry entries[] = {
		{ "connect", 'C', 0, G_OPTION_ARG_STRING, &o.connect,
		  "Receiver address (a tagmig recv --listen)", "HOST:PORT" },
		{ "ram", 'r', 0, G_OPTION_ARG_STRING_ARRAY, &o.ram,
		  "RAM image file, one per block, repeatable; NAME defaults to ram0, ram1, ...",
		  "[NAME=]PATH" },
		{ "tags", 't', 0, G_OPTION_ARG_STRING_ARRAY, &o.tags,
		  "Tag file of the RAM block NAME (or of the --ram at the same position): one byte "
		  "per 16-byte granule, tag in the low nibble; repeatable",
		  "[NAME=]PATH" },
		{ "channels", 'c', 0, G_OPTION_ARG_INT, &o.channels,
		  "Parallel TCP channels, 1..64 (default 4)", "N" },
		{ "page-size", 'p', 0, G_OPTION_ARG_STRING, &o.page_size,
		  "Page size of every block: 4K, 16K or 64K (default 4K)", "N" },
		{ "chunk-size", 0, 0, G_OPTION_ARG_STRING, &o.chunk_size,
		  "Striping chunk, a power of two >= the packet size (default 2M)", "SIZE" },
		{ "packet-size", 0, 0, G_OPTION_ARG_STRING, &o.packet_size,
		  "Page data per packet, a power of two 64K..16M (default 512K)", "SIZE" },
		{ "io", 0, 0, G_OPTION_ARG_STRING, &o.io, CLI_IO_HELP,
		  "BACKEND" },
		{ "timeout", 0, 0, G_OPTION_ARG_INT, &o.timeout,
		  "Give up when the setup takes this long or the peer stops answering for this long "
		  "(default 60; idle time between rounds is fine)", "SEC" },
		{ "tls-creds", 0, 0, G_OPTION_ARG_FILENAME, &o.tls_creds,
		  "TLS 1.3 on every channel with ca-cert.pem, client-cert.pem and client-key.pem "
		  "from DIR (docs/tls.md)", "DIR" },
		{ "tls-hostname", 0, 0, G_OPTION_ARG_STRING, &o.tls_hostname,
		  "Name the receiver's certificate must carry (default: the HOST of --connect)",
		  "NAME" },
		{ "rate-limit", 0, 0, G_OPTION_ARG_STRING, &o.rate_limit,
		  "At most this many bytes per second over all channels, as QEMU's "
		  "max-bandwidth (e.g. 100M/s; default 0: no limit)", "BYTES/s" },
		{ "no-resume", 0, 0, G_OPTION_ARG_NONE, &o.no_resume,
		  "Fail when a data connection breaks instead of reconnecting it within 30 s and "
		  "sending only what the receiver lacks (the default)", NULL },
		{ "compress", 0, 0, G_OPTION_ARG_STRING, &o.compress, CLI_COMPRESS_HELP, "MODE" },
		{ "delta-cache", 0, 0, G_OPTION_ARG_STRING, &o.delta_cache,
		  CLI_DELTA_CACHE_HELP "; default 0: send sends every page once", "SIZE" },
		{ "delta-policy", 0, 0, G_OPTION_ARG_STRING, &o.delta_policy, CLI_DELTA_POLICY_HELP,
		  "POLICY" },
		{ "json", 'j', 0, G_OPTION_ARG_NONE, &o.json,
		  "Print one JSON object with the statistics on stdout", NULL },
		G_OPTION_ENTRY_NULL
	};
	uint64_t page_size = 4096, chunk_size = 0, packet_size = 0, rate_limit = 0;
	g_autoptr(GError) error = NULL;
	int rc;

	rc = cli_parse_options("send",
			       "Sends RAM image files and their tag files to 'tagmig recv'.\n"
			       "Every RAM file must be a non-zero multiple of the page size; a tag file "
			       "is 1/16 of\nits RAM file with every high nibble zero. Both are checked "
			       "before connecting.",
			       "Exit status: 0 success, 1 migration failed or refused, 2 usage error.",
			       entries, &argc, &argv);
	if (rc)
		return rc;
	if ((rc = cli_check_io("send", o.io)) != 0)
		return rc;
	if (o.tls_hostname && !o.tls_creds)
		return cli_usage_error("send", "--tls-hostname needs --tls-creds");
	if (!o.connect)
		return cli_usage_error("send", "--connect HOST:PORT is required");
	if (!o.ram || !o.ram[0])
		return cli_usage_error("send", "at least one --ram [NAME=]PATH is required");
	g_autofree char *host = NULL;
	g_autofree char *port = NULL;
	if (cli_parse_hostport(o.connect, &host, &port, &error) < 0)
		return cli_usage_error("send", "--connect %s", error->message);
	if (o.channels < 1 || o.channels > (int)TM_MAX_CHANNELS)
		return cli_usage_error("send", "--channels must be 1..%u, not %d", TM_MAX_CHANNELS,
				       o.channels);
	if (o.page_size && cli_parse_size(o.page_size, &page_size) < 0)
		return cli_usage_error("send", "--page-size '%s' is not a size", o.page_size);
	if (page_size != 4096 && page_size != 16384 && page_size != 65536)
		return cli_usage_error("send", "--page-size must be 4K, 16K or 64K, not %" PRIu64,
				       page_size);
	if (o.chunk_size && (cli_parse_size(o.chunk_size, &chunk_size) < 0 || chunk_size == 0))
		return cli_usage_error("send", "--chunk-size '%s' is not a size", o.chunk_size);
	if (o.packet_size &&
	    (cli_parse_size(o.packet_size, &packet_size) < 0 || packet_size == 0 ||
	     packet_size > UINT32_MAX))
		return cli_usage_error("send", "--packet-size '%s' is not a size", o.packet_size);
	/* The library checks these too, but only when it builds the HELLO; a bad option is a usage
	 * error (exit 2), so say so before connecting. */
	if (packet_size && (packet_size < TM_PACKET_SIZE_MIN || packet_size > TM_PACKET_SIZE_MAX ||
			    (packet_size & (packet_size - 1))))
		return cli_usage_error("send", "--packet-size must be a power of two from 64K to 16M");
	if (chunk_size &&
	    (chunk_size < (packet_size ? packet_size : TM_PACKET_SIZE_DEFAULT) ||
	     chunk_size > TM_CHUNK_SIZE_MAX || (chunk_size & (chunk_size - 1))))
		return cli_usage_error("send",
				       "--chunk-size must be a power of two from the packet size "
				       "(%" PRIu64 ") to 1T",
				       packet_size ? packet_size : TM_PACKET_SIZE_DEFAULT);
	if (o.timeout < 0 || o.timeout > 86400)
		return cli_usage_error("send", "--timeout must be 0..86400 seconds");
	if (o.rate_limit && cli_parse_rate(o.rate_limit, &rate_limit) < 0)
		return cli_usage_error("send", "--rate-limit '%s' is not a size per second",
				       o.rate_limit);
	uint32_t compress = TM_COMPRESS_DEFAULT;
	int32_t compress_level = 0;
	if (o.compress && (rc = tm_compress_parse(o.compress, &compress, &compress_level,
						  &error)) < 0) {
		if (rc == -EOPNOTSUPP)
			return cli_fail(error);
		return cli_usage_error("send", "--compress: %s", error->message);
	}

	uint64_t delta_cache = 0;
	if (o.delta_cache && (rc = cli_parse_delta_cache("send", o.delta_cache, &delta_cache)))
		return rc;
	uint32_t delta_policy = TM_DELTA_AUTO;
	if (o.delta_policy && (rc = cli_parse_delta_policy("send", o.delta_policy, &delta_policy)))
		return rc;

	g_autoptr(GPtrArray) ram_specs = NULL;
	g_autoptr(GPtrArray) tag_specs = NULL;
	if (cli_parse_file_specs("--ram", o.ram, &ram_specs, &error) < 0 ||
	    cli_parse_file_specs("--tags", o.tags, &tag_specs, &error) < 0)
		return cli_usage_error("send", "%s", error->message);
	unsigned nblocks = ram_specs->len;
	if (nblocks > TM_MAX_BLOCKS)
		return cli_usage_error("send", "at most %u --ram", TM_MAX_BLOCKS);
	g_autofree int *tags_of = g_new(int, nblocks);
	if (cli_pair_tags(ram_specs, tag_specs, tags_of, &error) < 0)
		return cli_usage_error("send", "%s", error->message);
	g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
	for (unsigned i = 0; i < nblocks; i++) {
		char *name = cli_ram_name(g_ptr_array_index(ram_specs, i), i);
		for (unsigned j = 0; j < i; j++) {
			if (strcmp(g_ptr_array_index(names, j), name) == 0) {
				g_free(name);
				return cli_usage_error("send", "two --ram blocks are called '%s'",
						       (char *)g_ptr_array_index(names, j));
			}
		}
		g_ptr_array_add(names, name);
	}

	/* Map and check every input before the first connection. */
	g_autoptr(GPtrArray) maps = g_ptr_array_new_with_free_func((GDestroyNotify)cli_map_free);
	g_autofree uint8_t **tag_arrays = g_new0(uint8_t *, nblocks);
	g_autoptr(tm_ram_layout) layout = NULL;
	uint64_t total_pages = 0, total_bytes = 0, max_pages = 0;

	if (tm_ram_layout_new(&layout) < 0)
		return cli_failf("out of memory");
	for (unsigned i = 0; i < nblocks; i++) {
		const cli_file_spec *rs = g_ptr_array_index(ram_specs, i);
		const char *name = g_ptr_array_index(names, i);
		cli_map *ram = NULL;

		if (cli_map_open(rs->path, false, &ram, &error) < 0)
			return cli_fail(error);
		g_ptr_array_add(maps, ram);
		if (ram->size == 0 || ram->size % page_size)
			return cli_failf("RAM file %s is %" PRIu64
					 " bytes, not a non-zero multiple of the page size %" PRIu64,
					 rs->path, ram->size, page_size);
		if (tags_of[i] >= 0) {
			const cli_file_spec *ts = g_ptr_array_index(tag_specs, (guint)tags_of[i]);
			cli_map *tags = NULL;

			if (cli_map_open(ts->path, false, &tags, &error) < 0)
				return cli_fail(error);
			g_ptr_array_add(maps, tags);
			if (tags->size != ram->size / TM_TAG_GRANULE)
				return cli_failf("tags file %s is %" PRIu64 " bytes, expected %" PRIu64
						 " (1/16 of RAM file %s)",
						 ts->path, tags->size, ram->size / TM_TAG_GRANULE,
						 rs->path);
			if (tm_tag_buffer_check(tags->addr, tags->size, &error) < 0)
				return cli_failf("tags file %s: %s", ts->path, error->message);
			tag_arrays[i] = tags->addr;
		}
		if (tm_ram_layout_add_block(layout, name, ram->addr, ram->size, (uint32_t)page_size,
					    total_bytes, &error) < 0)
			return cli_fail(error);
		total_pages += ram->size / page_size;
		total_bytes += ram->size;
		max_pages = MAX(max_pages, ram->size / page_size);
	}

	g_autoptr(tm_tag_store) store = NULL;
	if (tag_specs->len &&
	    tm_tag_store_new(&tm_tag_store_soft, layout, tag_arrays, &store, &error) < 0)
		return cli_fail(error);

	tm_sender_config cfg = {
		.channels = (unsigned)o.channels,
		.chunk_size = chunk_size,
		.packet_size = (uint32_t)packet_size,
		.io_backend = o.io,
		.timeout_ms = (unsigned)o.timeout * 1000u,
		.tls_creds_dir = o.tls_creds,
		.tls_hostname = o.tls_hostname,
	};
	cli_env_sender_config(&cfg);
	g_autoptr(tm_sender) sender = NULL;
	rc = tm_sender_new(layout, store, &cfg, &sender, &error);
	if (rc == -EINVAL)
		return cli_usage_error("send", "%s", error->message);
	if (rc < 0)
		return cli_fail(error);
	tm_live_config live = { .size = sizeof(live), .rate_limit = rate_limit,
				.no_resume = o.no_resume, .compress = compress,
				.compress_level = compress_level, .delta_cache_bytes = delta_cache,
				.delta_policy = delta_policy };
	if ((rate_limit || o.no_resume || o.compress || delta_cache) &&
	    tm_sender_set_live(sender, &live, &error) < 0)
		return cli_fail(error);

	uint64_t nwords = (max_pages + 63) / 64;
	g_autofree uint64_t *bitmap = g_new(uint64_t, nwords);
	memset(bitmap, 0xff, nwords * sizeof(*bitmap));

	double cpu0 = cli_cpu_seconds(), t0 = cli_now();
	if (tm_sender_connect(sender, host, port, &error) < 0)
		return cli_fail(error);
	send_progress prog = {
		.sender = sender,
		.total_pages = total_pages,
		.bytes_per_page = total_bytes / total_pages,
	};
	cli_progress *bar = cli_progress_start("send", send_progress_fn, &prog);
	rc = 0;
	for (unsigned i = 0; i < nblocks && rc >= 0; i++) {
		tm_ram_block_info info;
		tm_ram_layout_block(layout, i, &info);
		rc = tm_sender_queue_bitmap(sender, i, bitmap, 0, info.length / info.page_size,
					    &error);
	}
	if (rc >= 0)
		rc = tm_sender_finish(sender, &error);
	cli_progress_stop(bar);
	if (rc < 0)
		return cli_fail(error);

	tm_stats st;
	tm_sender_get_stats(sender, &st);
	tm_live_stats ls = { .size = sizeof(ls) };
	tm_sender_get_live_stats(sender, &ls);
	g_autofree cli_compress *z = g_new0(cli_compress, 1);
	cli_compress_collect(z, sender, NULL, st.channels);
	cli_report("send", &st, &ls, total_bytes, t0, cpu0, nblocks, z, o.json);
	return CLI_EXIT_OK;
}
