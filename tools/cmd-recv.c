/* SPDX-License-Identifier: MIT */
/*
 * tagmig recv: receives one migration into RAM image files (and tag files), mapped read-write.
 * The layout comes from the sender's HELLO: each announced block goes to the --ram of its name, or
 * to the unnamed --ram at its position; missing files are created at the announced size. Anything
 * that does not fit (a file of another size, tags on one side only, a block without a file) is
 * refused before a single byte is written, and the sender is told why. An announced size over
 * --max-ram is refused before anything is created; files created for a session that is refused
 * later (a block that cannot be created or mapped, a layout the library refuses) are removed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"
#include "map.h"
#include "progress.h"
#include "report.h"
#include "env.h"

typedef struct recv_opts {
	char *listen;
	char **ram;
	char **tags;
	char *port_file;
	gboolean json;
	gboolean no_resume;
	char *io;
	int timeout;
	char *tls_creds;
	char **tls_authz;
	char *max_ram;
} recv_opts;

static void recv_opts_clear(recv_opts *o)
{
	g_free(o->listen);
	g_strfreev(o->ram);
	g_strfreev(o->tags);
	g_free(o->port_file);
	g_free(o->io);
	g_free(o->tls_creds);
	g_strfreev(o->tls_authz);
	g_free(o->max_ram);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(recv_opts, recv_opts_clear)

/* Where one announced block goes. */
typedef struct recv_target {
	const cli_file_spec *ram;
	const cli_file_spec *tags; /* NULL: no tags */
	tm_ram_block_info info;    /* as announced */
	bool ram_exists;
	bool tags_exists;
} recv_target;

/*
 * Files this run created: removed again when it goes out of scope unless the session started
 * (a refused session leaves nothing behind; a failed migration keeps what it received).
 */
typedef struct created_files {
	GPtrArray *paths;
	bool keep;
} created_files;

static void created_files_clear(created_files *c)
{
	for (unsigned i = 0; c->paths && !c->keep && i < c->paths->len; i++)
		unlink(g_ptr_array_index(c->paths, i));
	if (c->paths)
		g_ptr_array_free(c->paths, TRUE);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(created_files, created_files_clear)

/* Creates path with size bytes (cli_file_create) and remembers it in c. */
static int create_file(created_files *c, const char *path, uint64_t size, GError **error)
{
	int r = cli_file_create(path, size, error);
	if (r == 0)
		g_ptr_array_add(c->paths, g_strdup(path));
	return r;
}

/*
 * The most RAM a session may make this receiver create when --max-ram is not given: the host's
 * physical memory (a guest larger than that cannot run here anyway). Existing files are bound by
 * their own sizes, which must match exactly.
 */
static uint64_t default_max_ram(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
	return pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size : UINT64_C(1) << 40;
}

/*
 * Refuses the session: tells the sender (ERROR on every channel) and prints the same message.
 * Returns CLI_EXIT_FAILED.
 */
static int refuse(tm_receiver *receiver, int code, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static int refuse(tm_receiver *receiver, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	g_autofree char *msg = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	tm_receiver_abort(receiver, code, msg);
	return cli_failf("%s", msg);
}

static GString *announced_names(const tm_ram_layout *layout)
{
	GString *s = g_string_new(NULL);

	for (unsigned i = 0; i < tm_ram_layout_block_count(layout); i++) {
		tm_ram_block_info info;
		tm_ram_layout_block(layout, i, &info);
		g_string_append_printf(s, "%s'%s'", i ? ", " : "", info.name);
	}
	return s;
}

/*
 * Decides which files each announced block goes to and checks every existing file's size. Writes
 * nothing. Returns 0 or CLI_EXIT_FAILED after refusing the session.
 */
static int plan_targets(tm_receiver *receiver, GPtrArray *ram_specs, GPtrArray *tag_specs,
			const int *tags_of, uint64_t max_ram, bool max_ram_given, recv_target *targets)
{
	const tm_ram_layout *announced = tm_receiver_announced_layout(receiver);
	unsigned nblocks = tm_ram_layout_block_count(announced);
	g_autofree bool *used = g_new0(bool, ram_specs->len);
	g_autoptr(GError) error = NULL;
	bool sends_tags = tm_receiver_peer_sends_tags(receiver);

	if (sends_tags && !tag_specs->len)
		return refuse(receiver, EINVAL,
			      "the sender sends memory tags but no --tags was given to the receiver");
	if (!sends_tags && tag_specs->len)
		return refuse(receiver, EINVAL,
			      "--tags was given to the receiver but the sender sends no memory tags");

	for (unsigned b = 0; b < nblocks; b++) {
		recv_target *t = &targets[b];
		int spec = -1;

		tm_ram_layout_block(announced, b, &t->info);
		for (unsigned i = 0; i < ram_specs->len && spec < 0; i++) {
			const cli_file_spec *rs = g_ptr_array_index(ram_specs, i);
			if (rs->name && strcmp(rs->name, t->info.name) == 0)
				spec = (int)i;
		}
		if (spec < 0 && b < ram_specs->len &&
		    !((cli_file_spec *)g_ptr_array_index(ram_specs, b))->name)
			spec = (int)b;
		if (spec < 0)
			return refuse(receiver, EINVAL,
				      "the sender announces RAM block %u '%s' (%" PRIu64
				      " bytes) but no --ram of the receiver takes it",
				      b, t->info.name, t->info.length);
		used[spec] = true;
		t->ram = g_ptr_array_index(ram_specs, (guint)spec);
		if (tags_of[spec] >= 0)
			t->tags = g_ptr_array_index(tag_specs, (guint)tags_of[spec]);
	}
	for (unsigned i = 0; i < ram_specs->len; i++) {
		if (used[i])
			continue;
		const cli_file_spec *rs = g_ptr_array_index(ram_specs, i);
		g_autoptr(GString) names = announced_names(announced);
		return refuse(receiver, EINVAL,
			      "--ram %s%s%s matches no RAM block the sender announces (%s)",
			      rs->name ? rs->name : "", rs->name ? "=" : "", rs->path, names->str);
	}

	/* Sizes of existing files, all of them before anything is created. */
	for (unsigned b = 0; b < nblocks; b++) {
		recv_target *t = &targets[b];
		uint64_t size = 0;
		int r = cli_file_size(t->ram->path, &size, &error);

		if (r < 0 && r != -ENOENT)
			return refuse(receiver, -r, "%s", error->message);
		t->ram_exists = r == 0;
		if (t->ram_exists && size != t->info.length)
			return refuse(receiver, EINVAL,
				      "RAM file %s is %" PRIu64
				      " bytes, sender announces block '%s' of %" PRIu64 " bytes",
				      t->ram->path, size, t->info.name, t->info.length);
		if (!t->tags)
			continue;
		r = cli_file_size(t->tags->path, &size, &error);
		if (r < 0 && r != -ENOENT)
			return refuse(receiver, -r, "%s", error->message);
		t->tags_exists = r == 0;
		if (t->tags_exists && size != t->info.length / TM_TAG_GRANULE)
			return refuse(receiver, EINVAL,
				      "tags file %s is %" PRIu64 " bytes, block '%s' of %" PRIu64
				      " bytes needs %" PRIu64,
				      t->tags->path, size, t->info.name, t->info.length,
				      t->info.length / TM_TAG_GRANULE);
	}

	/* What the session would make this receiver create, before anything is. */
	uint64_t to_create = 0;
	for (unsigned b = 0; b < nblocks; b++)
		if (!targets[b].ram_exists)
			to_create += targets[b].info.length; /* each < 2^48: no overflow */
	if (to_create > max_ram)
		return refuse(receiver, EFBIG,
			      "the sender announces %" PRIu64 " bytes of RAM to create, more than the "
			      "%" PRIu64 " bytes this receiver accepts (%s; raise it with --max-ram)",
			      to_create, max_ram,
			      max_ram_given ? "--max-ram" : "the host's physical memory");
	return 0;
}

typedef struct recv_progress {
	tm_receiver *receiver;
	uint64_t total_pages;
	uint64_t bytes_per_page;
} recv_progress;

static void recv_progress_fn(void *opaque, uint64_t *done, uint64_t *total, uint64_t *bytes)
{
	recv_progress *p = opaque;
	tm_stats st;

	tm_receiver_get_stats(p->receiver, &st);
	*done = st.pages;
	*total = p->total_pages;
	*bytes = st.pages * p->bytes_per_page;
}

int cli_cmd_recv(int argc, char **argv)
{
	g_auto(recv_opts) o = { .timeout = 60 };
	const GOptionEntry entries[] = {
		{ "listen", 'l', 0, G_OPTION_ARG_STRING, &o.listen,
		  "Address to listen on (HOST * for any); port 0 picks a free one, see --port-file",
		  "HOST:PORT" },
		{ "ram", 'r', 0, G_OPTION_ARG_STRING_ARRAY, &o.ram,
		  "RAM image file for the announced block NAME (without NAME: the block at the same "
		  "position); created if missing; repeatable",
		  "[NAME=]PATH" },
		{ "tags", 't', 0, G_OPTION_ARG_STRING_ARRAY, &o.tags,
		  "Tag file of the RAM block NAME (or of the --ram at the same position), 1/16 of "
		  "its size; created if missing; repeatable",
		  "[NAME=]PATH" },
		{ "port-file", 0, 0, G_OPTION_ARG_FILENAME, &o.port_file,
		  "Once listening, write the bound port (decimal and a newline) to PATH, atomically",
		  "PATH" },
		{ "io", 0, 0, G_OPTION_ARG_STRING, &o.io, CLI_IO_HELP,
		  "BACKEND" },
		{ "timeout", 0, 0, G_OPTION_ARG_INT, &o.timeout,
		  "Give up when the setup takes this long or the peer stops answering for this long "
		  "(default 60; idle time between rounds is fine); connections that fail their "
		  "handshake (at most min(SEC, 10) s each) are dropped while listening goes on",
		  "SEC" },
		{ "tls-creds", 0, 0, G_OPTION_ARG_FILENAME, &o.tls_creds,
		  "TLS 1.3 on every channel with ca-cert.pem, server-cert.pem and server-key.pem "
		  "from DIR; the sender must present a certificate from that CA (docs/tls.md)",
		  "DIR" },
		{ "tls-authz", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o.tls_authz,
		  "Let in only a sender whose certificate carries this subject, in RFC 2253 form as "
		  "'openssl x509 -noout -subject -nameopt RFC2253' prints it; repeatable (with "
		  "--tls-creds)",
		  "SUBJECT" },
		{ "max-ram", 0, 0, G_OPTION_ARG_STRING, &o.max_ram,
		  "Refuse a session that would create more than SIZE bytes of RAM files (suffixes "
		  "K, M, G, T; default: the host's physical memory); existing files must match the "
		  "announced sizes anyway",
		  "SIZE" },
		{ "no-resume", 0, 0, G_OPTION_ARG_NONE, &o.no_resume,
		  "Fail when a data connection breaks instead of taking the sender's reconnect "
		  "(the default: the listening socket stays open for it until the end)", NULL },
		{ "json", 'j', 0, G_OPTION_ARG_NONE, &o.json,
		  "Print one JSON object with the statistics on stdout", NULL },
		G_OPTION_ENTRY_NULL
	};
	g_autoptr(GError) error = NULL;
	int rc;

	rc = cli_parse_options("recv",
			       "Receives one migration from 'tagmig send' into RAM image files and "
			       "tag files.\nExisting files must have the announced size; missing ones "
			       "are created. Nothing is\nwritten when the session is refused: files created for it are removed "
			       "again.",
			       "Exit status: 0 success, 1 migration failed or refused, 2 usage error.",
			       entries, &argc, &argv);
	if (rc)
		return rc;
	if ((rc = cli_check_io("recv", o.io)) != 0)
		return rc;
	if (!o.listen)
		return cli_usage_error("recv", "--listen HOST:PORT is required");
	if (!o.ram || !o.ram[0])
		return cli_usage_error("recv", "at least one --ram [NAME=]PATH is required");
	g_autofree char *host = NULL;
	g_autofree char *port = NULL;
	if (cli_parse_hostport(o.listen, &host, &port, &error) < 0)
		return cli_usage_error("recv", "--listen %s", error->message);
	if (o.timeout < 0 || o.timeout > 86400)
		return cli_usage_error("recv", "--timeout must be 0..86400 seconds");
	if (o.tls_authz && !o.tls_creds)
		return cli_usage_error("recv", "--tls-authz needs --tls-creds");
	uint64_t max_ram = default_max_ram();
	if (o.max_ram && cli_parse_size(o.max_ram, &max_ram) < 0)
		return cli_usage_error("recv", "--max-ram '%s' is not a size", o.max_ram);
	g_autoptr(GPtrArray) ram_specs = NULL;
	g_autoptr(GPtrArray) tag_specs = NULL;
	if (cli_parse_file_specs("--ram", o.ram, &ram_specs, &error) < 0 ||
	    cli_parse_file_specs("--tags", o.tags, &tag_specs, &error) < 0)
		return cli_usage_error("recv", "%s", error->message);
	for (unsigned i = 0; i < ram_specs->len; i++) {
		const cli_file_spec *a = g_ptr_array_index(ram_specs, i);
		for (unsigned j = 0; j < i; j++) {
			const cli_file_spec *b = g_ptr_array_index(ram_specs, j);
			if (a->name && b->name && strcmp(a->name, b->name) == 0)
				return cli_usage_error("recv", "two --ram blocks are called '%s'",
						       a->name);
		}
	}
	g_autofree int *tags_of = g_new(int, ram_specs->len);
	if (cli_pair_tags(ram_specs, tag_specs, tags_of, &error) < 0)
		return cli_usage_error("recv", "%s", error->message);

	unsigned bound = 0;
	cli_autofd int listen_fd = tm_listen(strcmp(host, "*") ? host : NULL, port, &bound, &error);
	if (listen_fd < 0)
		return cli_fail(error);
	if (o.port_file) {
		/* g_file_set_contents() renames a complete file into place: readers never see
		 * half a number. */
		g_autofree char *text = g_strdup_printf("%u\n", bound);
		if (!g_file_set_contents(o.port_file, text, -1, &error))
			return cli_fail(error);
	}

	/*
	 * Declared before the receiver so they are freed after it: its workers write into the
	 * mappings through the layout and the store until tm_receiver_free() stops them.
	 */
	g_auto(created_files) created = { .paths = g_ptr_array_new_with_free_func(g_free) };
	g_autoptr(GPtrArray) maps = g_ptr_array_new_with_free_func((GDestroyNotify)cli_map_free);
	g_autoptr(tm_ram_layout) layout = NULL;
	g_autoptr(tm_tag_store) store = NULL;
	g_autofree uint8_t **tag_arrays = NULL;
	uint64_t total_pages = 0, total_bytes = 0;

	/* New output files are all zeros: zero pages then need no write at all. */
	bool all_new = true;
	for (unsigned i = 0; i < ram_specs->len; i++) {
		const cli_file_spec *spec = g_ptr_array_index(ram_specs, i);
		all_new = all_new && !g_file_test(spec->path, G_FILE_TEST_EXISTS);
	}
	tm_receiver_config cfg = {
		.io_backend = o.io,
		.timeout_ms = (unsigned)o.timeout * 1000u,
		.ram_zeroed = all_new,
		.tls_creds_dir = o.tls_creds,
		.tls_authz = (const char *const *)o.tls_authz,
	};
	cli_env_receiver_config(&cfg);
	g_autoptr(tm_receiver) receiver = NULL;
	/* No VMM takes device state here: no section is expected, any one fails the session
	 * (tm_receiver_wait() would return 1 for it, not a finished migration). */
	static const char *const no_state[] = { NULL };
	tm_live_config live = { .size = sizeof(live), .state_names = no_state,
				.no_resume = o.no_resume };
	if (tm_receiver_new(&cfg, &receiver, &error) < 0 ||
	    tm_receiver_set_live(receiver, &live, &error) < 0 ||
	    tm_receiver_accept(receiver, listen_fd, &error) < 0)
		return cli_fail(error);
	double cpu0 = cli_cpu_seconds(), t0 = cli_now();

	const tm_ram_layout *announced = tm_receiver_announced_layout(receiver);
	unsigned nblocks = tm_ram_layout_block_count(announced);
	g_autofree recv_target *targets = g_new0(recv_target, nblocks ? nblocks : 1);
	rc = plan_targets(receiver, ram_specs, tag_specs, tags_of, max_ram, o.max_ram != NULL,
			  targets);
	if (rc)
		return rc;

	/* Only now create and map: the session fits. */
	tag_arrays = g_new0(uint8_t *, nblocks ? nblocks : 1);
	if (tm_ram_layout_new(&layout) < 0)
		return refuse(receiver, ENOMEM, "out of memory");
	for (unsigned b = 0; b < nblocks; b++) {
		recv_target *t = &targets[b];
		cli_map *ram = NULL;

		if (!t->ram_exists && create_file(&created, t->ram->path, t->info.length, &error) < 0)
			return refuse(receiver, error->code, "%s", error->message);
		if (cli_map_open(t->ram->path, true, &ram, &error) < 0)
			return refuse(receiver, error->code, "%s", error->message);
		g_ptr_array_add(maps, ram);
		/* Re-checked after mapping: the file may have changed since the plan. */
		if (ram->size != t->info.length)
			return refuse(receiver, EINVAL,
				      "RAM file %s is %" PRIu64
				      " bytes, sender announces block '%s' of %" PRIu64 " bytes",
				      ram->path, ram->size, t->info.name, t->info.length);
		if (t->tags) {
			cli_map *tags = NULL;
			uint64_t want = t->info.length / TM_TAG_GRANULE;

			if (!t->tags_exists && create_file(&created, t->tags->path, want, &error) < 0)
				return refuse(receiver, error->code, "%s", error->message);
			if (cli_map_open(t->tags->path, true, &tags, &error) < 0)
				return refuse(receiver, error->code, "%s", error->message);
			g_ptr_array_add(maps, tags);
			if (tags->size != want)
				return refuse(receiver, EINVAL,
					      "tags file %s is %" PRIu64 " bytes, block '%s' needs %" PRIu64,
					      tags->path, tags->size, t->info.name, want);
			tag_arrays[b] = tags->addr;
		}
		if (tm_ram_layout_add_block(layout, t->info.name, ram->addr, t->info.length,
					    t->info.page_size, t->info.guest_base, &error) < 0)
			return refuse(receiver, error->code, "%s", error->message);
		total_pages += t->info.length / t->info.page_size;
		total_bytes += t->info.length;
	}
	if (tag_specs->len &&
	    tm_tag_store_new(&tm_tag_store_soft, layout, tag_arrays, &store, &error) < 0)
		return refuse(receiver, error->code, "%s", error->message);

	/* start() refuses by itself (and tells the sender) if the layout does not match. */
	if (tm_receiver_start(receiver, layout, store, &error) < 0)
		return cli_fail(error);
	created.keep = true;
	recv_progress prog = {
		.receiver = receiver,
		.total_pages = total_pages,
		.bytes_per_page = total_pages ? total_bytes / total_pages : 0,
	};
	cli_progress *bar = cli_progress_start("recv", recv_progress_fn, &prog);
	rc = tm_receiver_wait(receiver, &error);
	cli_progress_stop(bar);
	if (rc < 0)
		return cli_fail(error);
	for (unsigned i = 0; i < maps->len; i++) {
		if (cli_map_sync(g_ptr_array_index(maps, i), &error) < 0)
			return cli_fail(error);
	}

	tm_stats st;
	tm_receiver_get_stats(receiver, &st);
	tm_live_stats ls = { .size = sizeof(ls) };
	tm_receiver_get_live_stats(receiver, &ls);
	g_autofree cli_compress *z = g_new0(cli_compress, 1);
	cli_compress_collect(z, NULL, receiver, st.channels);
	cli_report("recv", &st, &ls, total_bytes, t0, cpu0, nblocks, z, o.json);
	return CLI_EXIT_OK;
}
