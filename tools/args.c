/* SPDX-License-Identifier: MIT */
/* Command-line options and the values they take (args.h). */
#include <errno.h>
#include <string.h>

#include "args.h"
#include "cli.h"

int cli_parse_options(const char *cmd, const char *summary, const char *description,
		      const GOptionEntry *entries, int *argc, char ***argv)
{
	g_autofree char *prgname = g_strdup_printf("tagmig %s", cmd);
	g_autoptr(GOptionContext) ctx = g_option_context_new(NULL);
	g_autoptr(GError) error = NULL;

	/* The usage line GLib prints reads "tagmig CMD [OPTION...]". */
	g_set_prgname(prgname);
	g_option_context_set_summary(ctx, summary);
	if (description)
		g_option_context_set_description(ctx, description);
	g_option_context_add_main_entries(ctx, entries, NULL);
	if (!g_option_context_parse(ctx, argc, argv, &error))
		return cli_usage_error(cmd, "%s", error->message);
	for (int i = 1; i < *argc; i++) {
		if (strcmp((*argv)[i], "--") != 0)
			return cli_usage_error(cmd, "unexpected argument '%s'", (*argv)[i]);
	}
	return 0;
}

int cli_parse_size(const char *text, uint64_t *ret)
{
	static const struct {
		const char *suffix;
		unsigned shift;
	} suffixes[] = {
		{ "", 0 },     { "b", 0 },    { "k", 10 },   { "kb", 10 },  { "kib", 10 },
		{ "m", 20 },   { "mb", 20 },  { "mib", 20 }, { "g", 30 },   { "gb", 30 },
		{ "gib", 30 }, { "t", 40 },   { "tb", 40 },  { "tib", 40 },
	};
	char *end = NULL;

	if (!text || !g_ascii_isdigit(text[0]))
		return -EINVAL;
	errno = 0;
	guint64 v = g_ascii_strtoull(text, &end, 10);
	if (errno || end == text)
		return -EINVAL;
	for (size_t i = 0; i < G_N_ELEMENTS(suffixes); i++) {
		if (g_ascii_strcasecmp(end, suffixes[i].suffix) != 0)
			continue;
		if (suffixes[i].shift && v > (UINT64_MAX >> suffixes[i].shift))
			return -EINVAL;
		*ret = v << suffixes[i].shift;
		return 0;
	}
	return -EINVAL;
}

int cli_parse_uint(const char *text, uint64_t min, uint64_t max, uint64_t *ret)
{
	guint64 v = 0;

	if (!text || !g_ascii_string_to_unsigned(text, 10, min, max, &v, NULL))
		return -EINVAL;
	*ret = v;
	return 0;
}

int cli_parse_hostport(const char *text, char **ret_host, char **ret_port, GError **error)
{
	g_autofree char *host = NULL;
	const char *port;
	guint64 v = 0;

	if (!text || !*text) {
		g_set_error(error, TM_ERROR, EINVAL, "empty address, expected HOST:PORT");
		return -EINVAL;
	}
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (!close || close[1] != ':') {
			g_set_error(error, TM_ERROR, EINVAL, "'%s' is not [ADDRESS]:PORT", text);
			return -EINVAL;
		}
		host = g_strndup(text + 1, (gsize)(close - text - 1));
		port = close + 2;
	} else {
		const char *colon = strrchr(text, ':');
		if (!colon || strchr(text, ':') != colon) {
			g_set_error(error, TM_ERROR, EINVAL,
				    "'%s' is not HOST:PORT (write IPv6 addresses as [ADDRESS]:PORT)",
				    text);
			return -EINVAL;
		}
		host = g_strndup(text, (gsize)(colon - text));
		port = colon + 1;
	}
	if (!*host) {
		g_set_error(error, TM_ERROR, EINVAL, "'%s' has an empty host", text);
		return -EINVAL;
	}
	if (!g_ascii_string_to_unsigned(port, 10, 0, 65535, &v, NULL)) {
		g_set_error(error, TM_ERROR, EINVAL, "'%s': port '%s' is not a number 0..65535", text,
			    port);
		return -EINVAL;
	}
	*ret_host = g_steal_pointer(&host);
	*ret_port = g_strdup_printf("%" G_GUINT64_FORMAT, v);
	return 0;
}

static void file_spec_free(gpointer p)
{
	cli_file_spec *spec = p;

	g_free(spec->name);
	g_free(spec->path);
	g_free(spec);
}

int cli_parse_file_specs(const char *option, char **args, GPtrArray **ret, GError **error)
{
	g_autoptr(GPtrArray) specs = g_ptr_array_new_with_free_func(file_spec_free);

	for (size_t i = 0; args && args[i]; i++) {
		const char *eq = strchr(args[i], '=');
		cli_file_spec *spec = g_new0(cli_file_spec, 1);

		g_ptr_array_add(specs, spec);
		if (eq) {
			spec->name = g_strndup(args[i], (gsize)(eq - args[i]));
			spec->path = g_strdup(eq + 1);
		} else {
			spec->path = g_strdup(args[i]);
		}
		if ((spec->name && !*spec->name) || !*spec->path) {
			g_set_error(error, TM_ERROR, EINVAL, "%s '%s': expected [NAME=]PATH", option,
				    args[i]);
			return -EINVAL;
		}
		if (spec->name && strlen(spec->name) > TM_MAX_BLOCK_NAME) {
			g_set_error(error, TM_ERROR, EINVAL, "%s '%s': name longer than %u bytes",
				    option, args[i], TM_MAX_BLOCK_NAME);
			return -EINVAL;
		}
	}
	*ret = g_steal_pointer(&specs);
	return 0;
}

char *cli_ram_name(const cli_file_spec *spec, unsigned index)
{
	return spec->name ? g_strdup(spec->name) : g_strdup_printf("ram%u", index);
}

int cli_pair_tags(GPtrArray *ram, GPtrArray *tags, int *ret_tags_of_ram, GError **error)
{
	g_autofree int *pairs = g_new(int, ram->len ? ram->len : 1);

	for (unsigned i = 0; i < ram->len; i++)
		pairs[i] = -1;
	for (unsigned t = 0; t < tags->len; t++) {
		const cli_file_spec *ts = g_ptr_array_index(tags, t);
		int r = -1;

		if (ts->name) {
			for (unsigned i = 0; i < ram->len && r < 0; i++) {
				g_autofree char *name = cli_ram_name(g_ptr_array_index(ram, i), i);
				if (strcmp(name, ts->name) == 0)
					r = (int)i;
			}
			if (r < 0) {
				g_set_error(error, TM_ERROR, EINVAL,
					    "--tags %s=%s: no --ram is called '%s'", ts->name,
					    ts->path, ts->name);
				return -EINVAL;
			}
		} else {
			if (t >= ram->len) {
				g_set_error(error, TM_ERROR, EINVAL,
					    "--tags %s is number %u but there are only %u --ram",
					    ts->path, t + 1, ram->len);
				return -EINVAL;
			}
			r = (int)t;
		}
		if (pairs[r] >= 0) {
			g_autofree char *name = cli_ram_name(g_ptr_array_index(ram, (guint)r), (unsigned)r);
			g_set_error(error, TM_ERROR, EINVAL, "two --tags for RAM block '%s'", name);
			return -EINVAL;
		}
		pairs[r] = (int)t;
	}
	for (unsigned i = 0; tags->len && i < ram->len; i++) {
		if (pairs[i] < 0) {
			g_autofree char *name = cli_ram_name(g_ptr_array_index(ram, i), i);
			g_set_error(error, TM_ERROR, EINVAL,
				    "--tags given for some RAM blocks but not for '%s' (%s)", name,
				    ((cli_file_spec *)g_ptr_array_index(ram, i))->path);
			return -EINVAL;
		}
	}
	memcpy(ret_tags_of_ram, pairs, ram->len * sizeof(int));
	return 0;
}

int cli_check_io(const char *cmd, const char *io)
{
	if (io && strcmp(io, "io_uring") != 0 && strcmp(io, "uring") != 0 &&
	    strcmp(io, "sockets") != 0)
		return cli_usage_error(cmd, "--io '%s' is not io_uring, uring or sockets", io);
	return 0;
}

int cli_parse_rate(const char *text, uint64_t *ret)
{
	g_autofree char *t = g_strdup(text ? text : "");

	if (g_str_has_suffix(t, "/s"))
		t[strlen(t) - 2] = '\0';
	return cli_parse_size(t, ret);
}

int cli_parse_duration_us(const char *text, uint64_t *ret)
{
	char *end = NULL;
	double v, unit = 1000.0; /* bare number: ms */

	if (!text || !g_ascii_isdigit(text[0]))
		return -EINVAL;
	v = g_ascii_strtod(text, &end);
	if (!strcmp(end, "us"))
		unit = 1.0;
	else if (!strcmp(end, "ms") || !*end)
		unit = 1000.0;
	else if (!strcmp(end, "s"))
		unit = 1e6;
	else
		return -EINVAL;
	v *= unit;
	if (!(v >= 0) || v > 3600e6)
		return -EINVAL;
	*ret = (uint64_t)(v + 0.5);
	return 0;
}

int cli_parse_delta_policy(const char *cmd, const char *text, uint32_t *ret)
{
	if (strcmp(text, "auto") == 0)
		*ret = TM_DELTA_AUTO;
	else if (strcmp(text, "always") == 0)
		*ret = TM_DELTA_ALWAYS;
	else
		return cli_usage_error(cmd, "--delta-policy '%s' is not auto or always", text);
	return 0;
}

int cli_parse_delta_cache(const char *cmd, const char *text, uint64_t *ret)
{
	uint64_t v;

	if (cli_parse_size(text, &v) < 0 || (v && (v < (1ull << 20) || v > (1ull << 40))))
		return cli_usage_error(cmd, "--delta-cache '%s' is not 0 (off) or a size of 1M..1T",
				       text);
	*ret = v;
	return 0;
}
