/* SPDX-License-Identifier: MIT */
/*
 * tagmig-vmm: the reference VMM (docs/aarch64.md, "The reference VMM").
 *
 *   tagmig-vmm run --guest IMAGE [--passes N]
 *   tagmig-vmm run --guest IMAGE --migrate-to HOST:PORT [--max-downtime MS] [--migrate-after N]
 *                  [--postcopy-after N]
 *   tagmig-vmm incoming --listen HOST:PORT [--passes N]
 *
 * Exit status: 0 success, 1 failure (the reason on stderr), 2 usage, 3 (run --migrate-to) the
 * migration failed before the destination had the whole guest: the reason on stderr, the guest
 * resumed on the source and passed --passes more passes (default 3) there. A failure after the
 * destination had everything (READY), or after the switch to postcopy ("postcopy paused"), is 1:
 * the guest stays paused on the source.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmm.h"

#define EXIT_MIGRATION_FAILED 3 /* run --migrate-to: failed, the guest resumed on the source */

static void usage_exit(const char *fmt, const char *arg)
{
	fprintf(stderr, "tagmig-vmm: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n(tagmig-vmm run --help, tagmig-vmm incoming --help)\n");
	exit(2);
}

static void on_sigusr1(int sig)
{
	(void)sig; /* only interrupts KVM_RUN (run.c) */
}

/* HOST:PORT (HOST may be [v6]) into its parts. */
static void split_hostport(const char *opt, const char *text, char **host, char **port)
{
	const char *colon = text ? strrchr(text, ':') : NULL;
	if (!colon || colon == text || !colon[1])
		usage_exit("%s wants HOST:PORT", opt);
	const char *h = text, *he = colon;
	if (*h == '[' && he[-1] == ']') {
		h++;
		he--;
	}
	*host = g_strndup(h, (gsize)(he - h));
	*port = g_strdup(colon + 1);
}

static uint64_t ram_bytes(int mib)
{
	if (mib < 64 || mib > 256 || mib % 2)
		usage_exit("--ram-mib must be an even number from 64 to 256 (got %s)",
			   g_strdup_printf("%d", mib));
	return (uint64_t)mib << 20;
}

static bool parse(GOptionEntry *entries, const char *summary, int *argc, char ***argv)
{
	g_autoptr(GOptionContext) ctx = g_option_context_new(NULL);
	g_autoptr(GError) err = NULL;
	g_option_context_set_summary(ctx, summary);
	g_option_context_add_main_entries(ctx, entries, NULL);
	if (!g_option_context_parse(ctx, argc, argv, &err))
		usage_exit("%s", err->message);
	if (*argc > 1)
		usage_exit("unexpected argument '%s'", (*argv)[1]);
	return true;
}

static int fail(const char *what, GError *err)
{
	fprintf(stderr, "tagmig-vmm: %s: %s\n", what, err ? err->message : "failed");
	return 1;
}

/*
 * The migration failed before the destination had the whole guest, which runs on here (resumed if
 * the switchover had paused it): says what failed and shows the guest is still well, `passes`
 * more passes numbered on from its own. EXIT_MIGRATION_FAILED if it is, 1 if it is not.
 */
static int after_failed_migration(vmm_runner *r, const vmm_out_result *res, GError *why,
				  uint64_t passes)
{
	fprintf(stderr, "tagmig-vmm: migration failed: %s\n", why ? why->message : "failed");
	g_mutex_lock(&r->lock);
	uint64_t from = r->port.last_pass, seen = r->port.passes;
	g_mutex_unlock(&r->lock);
	printf("vmm: migration failed before the destination had the guest: %s on the source after "
	       "pass %" PRIu64 "\n", res->resumed ? "resuming the guest" : "the guest keeps running",
	       from);
	g_autoptr(GError) err = NULL;
	if (vmm_runner_wait_passes(r, seen + passes, &err) < 0)
		return fail("the guest after the failed migration", err);
	g_mutex_lock(&r->lock);
	uint64_t now = r->port.last_pass;
	g_mutex_unlock(&r->lock);
	if (now != from + passes) {
		fprintf(stderr, "tagmig-vmm: after the failed migration the guest's pass counter did "
			"not continue: %" PRIu64 " passes after pass %" PRIu64 " it reports pass %"
			PRIu64 "\n", passes, from, now);
		return 1;
	}
	printf("vmm: after the failed migration the guest passed passes %" PRIu64 "..%" PRIu64
	       " on the source, continuing from pass %" PRIu64 "\n", from + 1, now, from);
	return EXIT_MIGRATION_FAILED;
}

static int cmd_run(int argc, char **argv)
{
	g_autofree char *guest = NULL, *to = NULL, *tls = NULL;
	gint passes = 3, ram_mib = 64, max_downtime = 300, after = 1, channels = 2, rounds = 30;
	gint postcopy_after = -1, max_bandwidth = 0, hold_ms = 0;
	gboolean tag_pattern = FALSE, verbose = FALSE, skip_final = FALSE;
	GOptionEntry entries[] = {
		{ "guest", 0, 0, G_OPTION_ARG_FILENAME, &guest, "flat guest image, loaded at 0x40200000", "IMAGE" },
		{ "ram-mib", 0, 0, G_OPTION_ARG_INT, &ram_mib, "guest RAM at 0x40000000 (64..256, default 64)", "MIB" },
		{ "passes", 0, 0, G_OPTION_ARG_INT, &passes, "without --migrate-to: run until the guest reported N passes; with it, after a failed migration: N more passes on the source, then exit 3 (default 3)", "N" },
		{ "migrate-to", 0, 0, G_OPTION_ARG_STRING, &to, "live-migrate the running guest to tagmig-vmm incoming there", "HOST:PORT" },
		{ "migrate-after", 0, 0, G_OPTION_ARG_INT, &after, "start migrating after N passes (default 1)", "N" },
		{ "max-downtime", 0, 0, G_OPTION_ARG_INT, &max_downtime, "switchover target in ms (default 300)", "MS" },
		{ "max-rounds", 0, 0, G_OPTION_ARG_INT, &rounds, "switch over after N precopy rounds at the latest (default 30)", "N" },
		{ "channels", 0, 0, G_OPTION_ARG_INT, &channels, "data channels (default 2)", "N" },
		{ "max-bandwidth", 0, 0, G_OPTION_ARG_INT, &max_bandwidth, "rate limit of the RAM pages in KiB/s: precopy rounds and postcopy's background pages, never the pages the destination asks for (default 0: none)", "KIB" },
		{ "postcopy-after", 0, 0, G_OPTION_ARG_INT, &postcopy_after, "switch to postcopy after N precopy rounds (0: at once), at the end of a guest pass; the destination resumes the guest then and faults the missing pages in", "N" },
		{ "tls-creds", 0, 0, G_OPTION_ARG_FILENAME, &tls, "TLS 1.3: ca-cert.pem, client-cert.pem and client-key.pem there (docs/tls.md)", "DIR" },
		{ "tag-pattern", 0, 0, G_OPTION_ARG_NONE, &tag_pattern, "write a tag pattern into the upper half of RAM through KVM before the guest starts (incoming --check-tag-pattern checks it)", NULL },
		{ "verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "print every guest line, passes too", NULL },
#if VMM_TEST_HOOKS
		{ "test-skip-final-round", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE, &skip_final, "test mutation", NULL },
		{ "test-guest-hold-ms", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_INT, &hold_ms, "test hook: the MTE guest's hold_ms", "MS" },
#endif
		{ NULL },
	};
	parse(entries, "Runs an arm64 KVM guest with MTE; optionally live-migrates it.", &argc, &argv);
	if (!guest)
		usage_exit("%s", "run needs --guest IMAGE");
	if (postcopy_after >= 0 && !to)
		usage_exit("%s", "--postcopy-after needs --migrate-to");
	if (passes < 1 || after < 0 || max_downtime < 1 || channels < 1 || channels > 64 || rounds < 1 ||
	    max_bandwidth < 0 || hold_ms < 0)
		usage_exit("%s", "--passes, --max-rounds and --max-downtime must be at least 1, "
				 "--migrate-after and --max-bandwidth at least 0, --channels 1..64");

	g_autoptr(GError) err = NULL;
	g_autoptr(vmm_vm) vm = NULL;
	if (vmm_vm_new(ram_bytes(ram_mib), &vm, &err) < 0)
		return fail("creating the VM", err);
	if (vmm_image_load(vm, guest, (uint32_t)hold_ms, &err) < 0)
		return fail("loading the guest", err);
	if (tag_pattern && vmm_tag_pattern_write(vm, &err) < 0)
		return fail("--tag-pattern", err);
	printf("vmm: VM with MTE, %d MiB of RAM at 0x%llx, guest %s, test port at 0x%llx\n", ram_mib,
	       VMM_RAM_BASE, guest, VMM_PORT_BASE);

	vmm_runner r;
	vmm_runner_init(&r, vm);
	r.verbose = verbose;
	int ret = 0;
	if (vmm_runner_start(&r, &err) < 0) {
		ret = fail("starting the vCPU", err);
	} else if (!to) {
		if (vmm_runner_wait_passes(&r, (uint64_t)passes, &err) < 0)
			ret = fail("running the guest", err);
		else
			printf("vmm: the guest reported %d passes ok\n", passes);
	} else {
		g_autofree char *host = NULL, *port = NULL;
		split_hostport("--migrate-to", to, &host, &port);
		vmm_out_config oc = { .host = host, .port = port, .max_downtime_ms = (uint64_t)max_downtime,
				      .channels = (unsigned)channels, .after_passes = (uint64_t)after,
				      .max_rounds = (unsigned)rounds, .skip_final_round = skip_final,
				      .tls_creds = tls, .postcopy_after = postcopy_after,
				      .rate_limit = (uint64_t)max_bandwidth * 1024 };
		vmm_out_result res;
		if (vmm_migrate_out(&r, &oc, &res, &err) < 0) {
			if (res.postcopy)
				printf("vmm: postcopy paused: the guest stays paused here with its RAM "
				       "intact (the destination may be running it); not resumed\n");
			ret = res.running ? after_failed_migration(&r, &res, err, (uint64_t)passes)
					  : fail(res.postcopy ? "postcopy paused" : "migration", err);
		}
	}
	vmm_runner_clear(&r);
	return ret;
}

static int cmd_incoming(int argc, char **argv)
{
	g_autofree char *listen = NULL, *tls = NULL;
	gint passes = 3, ram_mib = 64;
	gboolean check = FALSE, verbose = FALSE, no_tags = FALSE, die_at_state = FALSE;
	gboolean no_postcopy = FALSE, hold_bg = FALSE, no_pause = FALSE, force_copy = FALSE;
	gint place_delay = 0, place_delay_bg = 0;
	GOptionEntry entries[] = {
		{ "listen", 0, 0, G_OPTION_ARG_STRING, &listen, "where tagmig-vmm run --migrate-to connects", "HOST:PORT" },
		{ "ram-mib", 0, 0, G_OPTION_ARG_INT, &ram_mib, "guest RAM, as on the source (default 64)", "MIB" },
		{ "passes", 0, 0, G_OPTION_ARG_INT, &passes, "after resuming, run until the guest reported N more passes (default 3)", "N" },
		{ "tls-creds", 0, 0, G_OPTION_ARG_FILENAME, &tls, "TLS 1.3: ca-cert.pem, server-cert.pem and server-key.pem there (docs/tls.md)", "DIR" },
		{ "check-tag-pattern", 0, 0, G_OPTION_ARG_NONE, &check, "before resuming, check the tags run --tag-pattern wrote", NULL },
		{ "no-postcopy", 0, 0, G_OPTION_ARG_NONE, &no_postcopy, "decline postcopy (by default accepted where userfaultfd is allowed)", NULL },
		{ "verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "print every guest line, passes too", NULL },
		{ "test-no-tags", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE, &no_tags, "test mutation", NULL },
#if VMM_TEST_HOOKS
		{ "test-die-at-state", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE, &die_at_state, "test hook", NULL },
		{ "test-place-delay-ms", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_INT, &place_delay, "test hook", "MS" },
		{ "test-place-delay-bg-ms", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_INT, &place_delay_bg, "test hook", "MS" },
		{ "test-hold-bg", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE, &hold_bg, "test hook", NULL },
		{ "test-no-pause", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE, &no_pause, "test mutation", NULL },
		{ "test-force-copy", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE, &force_copy, "test hook", NULL },
#endif
		{ NULL },
	};
	parse(entries, "Receives a live-migrated guest into a new VM and resumes it.", &argc, &argv);
	if (!listen)
		usage_exit("%s", "incoming needs --listen HOST:PORT");
	if (passes < 1 || place_delay < 0 || place_delay > 1000 || place_delay_bg < 0 ||
	    place_delay_bg > 1000)
		usage_exit("%s", "--passes must be at least 1, --test-place-delay-[bg-]ms 0..1000");
	g_autofree char *host = NULL, *port = NULL;
	split_hostport("--listen", listen, &host, &port);
	vmm_in_config ic = { .host = host, .port = port, .ram_size = ram_bytes(ram_mib),
			     .passes = (uint64_t)passes, .no_tags = no_tags,
			     .check_tag_pattern = check, .verbose = verbose, .tls_creds = tls,
			     .die_at_state = die_at_state, .no_postcopy = no_postcopy,
			     .place_delay_ms = (unsigned)place_delay,
			     .place_delay_bg_ms = (unsigned)place_delay_bg, .hold_bg = hold_bg,
			     .no_pause = no_pause, .force_copy = force_copy };
	g_autoptr(GError) err = NULL;
	bool stuck;
	if (vmm_migrate_in(&ic, &stuck, &err) < 0) {
		fail("incoming migration", err);
		if (stuck) {
			/* a vCPU may wait on a page that never comes: leave without joining it */
			fflush(NULL);
			_exit(1);
		}
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	struct sigaction sa = { .sa_handler = on_sigusr1 }; /* no SA_RESTART: KVM_RUN returns */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		printf("Usage: tagmig-vmm run --guest IMAGE [--passes N]\n"
		       "       tagmig-vmm run --guest IMAGE --migrate-to HOST:PORT [--max-downtime MS]\n"
		       "                      [--postcopy-after N]\n"
		       "       tagmig-vmm incoming --listen HOST:PORT [--passes N]\n"
		       "The reference arm64 KVM VMM of tagmig (docs/aarch64.md).\n"
		       "Exit status: 0 success, 1 failure, 2 usage, 3 run --migrate-to: the migration\n"
		       "failed before the destination had the guest, which resumed on the source.\n");
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "run") == 0)
		return cmd_run(argc - 1, argv + 1);
	if (strcmp(argv[1], "incoming") == 0)
		return cmd_incoming(argc - 1, argv + 1);
	usage_exit("unknown command '%s'", argv[1]);
	return 2;
}
