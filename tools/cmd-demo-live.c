/* SPDX-License-Identifier: MIT */
/*
 * tagmig demo --live: a running guest migrated by precopy inside one process, the loop of
 * docs/api.md as a VMM runs it. The guest (common/testing/guest.h) is RAM with soft tags that four
 * writer threads keep dirtying, data and tags, at --dirty-rate, tracked by the kernel's dirty log
 * (userfaultfd write-protect or soft-dirty) the way KVM_GET_DIRTY_LOG tracks a VM. Rounds run until
 * tm_sender_advise() says the rest fits in --max-downtime (or --max-rounds is reached); then the
 * writers are paused, the final dirty log is sent and the copy is compared with the paused guest,
 * data and tags of every page, and device state (a vCPU, a device model) goes after the final
 * round and must arrive intact. Prints each round, the expected and the measured downtime.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "args.h"
#include "cli.h"
#include "demo-creds.h"
#include "demo-live.h"
#include "demo-receiver.h"
#include "env.h"
#include "guest.h"
#include "json.h"
#include "map.h"
#include "report.h"

#define LIVE_SEED 0x6c697665646d6f21ull /* "livedmo!" */
#define LIVE_WRITERS 4u
#define LIVE_MAX_BLOCKS 4u

typedef struct live_round {
	tm_round_stats rs;
	uint64_t dirty_after;     /* pages the dirty log held when the round was done */
	uint64_t expected_us;     /* tm_sender_advise() then */
	uint64_t bandwidth;
} live_round;

/* The destination: anonymous memory shaped like the guest's layout, soft tags. */
typedef struct live_dest {
	cli_map *maps[LIVE_MAX_BLOCKS];
	unsigned n;
	tm_ram_layout *layout;
	tm_tag_store *tags;
} live_dest;

static void live_dest_clear(live_dest *d)
{
	tm_tag_store_free(d->tags);
	tm_ram_layout_free(d->layout);
	for (unsigned i = 0; i < d->n; i++)
		cli_map_free(d->maps[i]);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(live_dest, live_dest_clear)

static int live_dest_make(live_dest *d, const tm_ram_layout *src, GError **error)
{
	unsigned n = tm_ram_layout_block_count(src);

	if (n > LIVE_MAX_BLOCKS) {
		g_set_error(error, TM_ERROR, EINVAL, "guest has %u blocks, at most %u", n,
			    LIVE_MAX_BLOCKS);
		return -EINVAL;
	}
	tm_ram_layout_new(&d->layout);
	for (unsigned b = 0; b < n; b++) {
		tm_ram_block_info bi;
		int rc = tm_ram_layout_block(src, b, &bi);

		if (rc < 0 || (rc = cli_map_anon(bi.length, true, &d->maps[b], error)) < 0)
			return rc;
		d->n = b + 1;
		if ((rc = tm_ram_layout_add_block(d->layout, bi.name, d->maps[b]->addr, bi.length,
						  bi.page_size, bi.guest_base, error)) < 0)
			return rc;
	}
	return tm_tag_store_new(&tm_tag_store_soft, d->layout, NULL, &d->tags, error);
}

/* One dirty bitmap per block, all pages set (round 1 sends everything). */
typedef struct live_bitmaps {
	uint64_t *bm[LIVE_MAX_BLOCKS];
	uint64_t npages[LIVE_MAX_BLOCKS];
	unsigned n;
} live_bitmaps;

static void live_bitmaps_clear(live_bitmaps *b)
{
	for (unsigned i = 0; i < b->n; i++)
		g_free(b->bm[i]);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(live_bitmaps, live_bitmaps_clear)

static void live_bitmaps_init(live_bitmaps *b, const tm_ram_layout *layout)
{
	b->n = MIN(tm_ram_layout_block_count(layout), LIVE_MAX_BLOCKS);
	for (unsigned i = 0; i < b->n; i++) {
		tm_ram_block_info bi;

		tm_ram_layout_block(layout, i, &bi);
		b->npages[i] = bi.length / bi.page_size;
		uint64_t words = (b->npages[i] + 63) / 64;
		b->bm[i] = g_new(uint64_t, words);
		memset(b->bm[i], 0xff, words * sizeof(uint64_t));
		if (b->npages[i] % 64)
			b->bm[i][words - 1] = (1ull << (b->npages[i] % 64)) - 1;
	}
}

static uint64_t live_bitmaps_count(const live_bitmaps *b)
{
	uint64_t c = 0;

	for (unsigned i = 0; i < b->n; i++)
		for (uint64_t w = 0; w < (b->npages[i] + 63) / 64; w++)
			c += (uint64_t)__builtin_popcountll(b->bm[i][w]);
	return c;
}

/* Hands every set bit to the session and clears the bitmaps. */
static int live_queue(tm_sender *s, live_bitmaps *b, GError **error)
{
	for (unsigned i = 0; i < b->n; i++) {
		int rc = tm_sender_queue_bitmap(s, i, b->bm[i], 0, b->npages[i], error);

		if (rc < 0)
			return rc;
		memset(b->bm[i], 0, (b->npages[i] + 63) / 64 * sizeof(uint64_t));
	}
	return 0;
}

/* The device state a VMM would send: vCPU registers and a device model. (The tests also send
 * a hash of all RAM, which the destination recomputes on receipt; hashing 256 MiB twice inside
 * the downtime would make the demo's downtime a measure of the hash.) */
#define STATE_CPU_LEN 4096u
#define STATE_DEV_LEN (1u << 20)
static const char *const state_names[] = { "cpu0", "dev", NULL };

static void state_fill(uint8_t *buf, size_t len, uint64_t seed)
{
	for (size_t i = 0; i < len; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		buf[i] = (uint8_t)(seed >> 56);
	}
}

typedef struct live_result {
	GArray *rounds; /* live_round */
	bool converged;
	uint64_t final_pages;
	uint64_t downtime_us;
	uint64_t expected_us; /* at the switch */
	double seconds;
	tm_stats st;
	uint64_t guest_writes;
	const char *dirty_log;
	bool verified;
	char *why;
	uint64_t state_bytes;
	unsigned state_sections;
} live_result;

static void print_round(const live_round *r)
{
	const tm_round_stats *rs = &r->rs;
	g_autofree char *wire = cli_format_bytes(rs->wire_bytes);

	fprintf(stderr,
		"tagmig demo: round %" PRIu64 ": %" PRIu64 " pages, %s in %.3f s (%.0f MB/s busy); "
		"%" PRIu64 " pages dirtied meanwhile, expected downtime %.1f ms\n",
		rs->round, rs->pages_sent, wire, rs->seconds,
		rs->busy_seconds > 0 ? rs->wire_bytes / rs->busy_seconds / 1e6 : 0.0,
		r->dirty_after, r->expected_us == UINT64_MAX ? -1.0 : r->expected_us / 1e3);
}

static void print_json(const demo_live_opts *o, const live_result *r)
{
	g_autoptr(GString) out = g_string_new(NULL);
	json_writer w = { .out = out, .first = true };

	jw_open(&w, NULL);
	jw_str(&w, "command", "demo");
	jw_bool(&w, "live", true);
	jw_bool(&w, "verified", r->verified);
	jw_u64(&w, "guest_bytes", o->size);
	jw_u64(&w, "dirty_rate", o->dirty_rate);
	jw_str(&w, "dirty_log", r->dirty_log);
	jw_u64(&w, "channels", r->st.channels);
	jw_str(&w, "io_backend", r->st.io_backend);
	jw_double(&w, "max_downtime_ms", o->max_downtime_us / 1e3);
	jw_bool(&w, "converged", r->converged);
	jw_u64(&w, "rounds", r->rounds->len);
	jw_open_array(&w, "round_stats");
	for (guint i = 0; i < r->rounds->len; i++) {
		const live_round *lr = &g_array_index(r->rounds, live_round, i);

		jw_open(&w, NULL);
		jw_u64(&w, "round", lr->rs.round);
		jw_u64(&w, "pages", lr->rs.pages_sent);
		jw_u64(&w, "wire_bytes", lr->rs.wire_bytes);
		jw_double(&w, "seconds", lr->rs.seconds);
		jw_double(&w, "busy_seconds", lr->rs.busy_seconds);
		jw_u64(&w, "dirty_pages_after", lr->dirty_after);
		jw_double(&w, "expected_downtime_ms",
			  lr->expected_us == UINT64_MAX ? -1.0 : lr->expected_us / 1e3);
		jw_close(&w);
	}
	jw_close_array(&w);
	jw_u64(&w, "final_pages", r->final_pages);
	jw_double(&w, "expected_downtime_ms", r->expected_us == UINT64_MAX ? -1.0 : r->expected_us / 1e3);
	jw_double(&w, "downtime_ms", r->downtime_us / 1e3);
	jw_double(&w, "seconds", r->seconds);
	jw_u64(&w, "wire_bytes", r->st.wire_bytes);
	jw_u64(&w, "pages_sent", r->st.pages);
	jw_u64(&w, "guest_writes", r->guest_writes);
	jw_u64(&w, "state_sections", r->state_sections);
	jw_u64(&w, "state_bytes", r->state_bytes);
	jw_close(&w);
	printf("%s\n", out->str);
}

static void print_human(const demo_live_opts *o, const live_result *r)
{
	g_autofree char *size = cli_format_bytes(o->size);
	g_autofree char *wire = cli_format_bytes(r->st.wire_bytes);
	g_autofree char *rate = cli_format_bytes(o->dirty_rate);

	printf("tagmig demo --live: %s guest, %u writers dirtying %s/s (%s dirty log), "
	       "%u channel%s, I/O backend %s\n",
	       size, LIVE_WRITERS, rate, r->dirty_log, r->st.channels,
	       r->st.channels == 1 ? "" : "s", r->st.io_backend);
	printf("  rounds        %u precopy round%s, then the final one: %s\n", r->rounds->len,
	       r->rounds->len == 1 ? "" : "s",
	       r->converged ? "converged" : "forced by --max-rounds (not converged)");
	printf("  final round   %" PRIu64 " pages dirtied since the last round, sent with the guest "
	       "paused\n", r->final_pages);
	printf("  downtime      %.1f ms measured (pause to the destination's READY), %.1f ms "
	       "expected, %.1f ms allowed\n",
	       r->downtime_us / 1e3, r->expected_us == UINT64_MAX ? -1.0 : r->expected_us / 1e3,
	       o->max_downtime_us / 1e3);
	printf("  total         %.2f s, %s on the wire (%.2fx the guest), %" PRIu64
	       " pages sent, %" PRIu64 " guest writes\n",
	       r->seconds, wire, o->size ? (double)r->st.wire_bytes / o->size : 0, r->st.pages,
	       r->guest_writes);
	g_autofree char *state = cli_format_bytes(r->state_bytes);
	printf("  device state  %u sections, %s (a vCPU, a device), after the final "
	       "round\n", r->state_sections, state);
	if (r->st.tls_cipher[0])
		printf("  TLS           %s\n", r->st.tls_cipher);
	printf("  verified:     %s%s%s\n", r->verified ? "yes" : "no",
	       r->verified ? " (data and tags of every page equal the paused guest's, device state "
			     "intact)" : " - ",
	       r->verified ? "" : r->why);
}

int cli_demo_live(const demo_live_opts *o)
{
	g_autoptr(GError) error = NULL;
	g_autoptr(test_guest) g = NULL;
	test_guest_config gc = { .ram_len = o->size, .writers = LIVE_WRITERS,
				 .rate = o->dirty_rate, .seed = LIVE_SEED };

	if (test_guest_new(&gc, &g, &error) < 0)
		return cli_failf("demo --live: the guest: %s", error->message);
	const tm_ram_layout *layout = test_guest_layout(g);
	g_auto(live_dest) dst = { 0 };
	if (live_dest_make(&dst, layout, &error) < 0)
		return cli_fail(error);

	g_autoptr(cli_tmpdir) creds = NULL;
	unsigned port = 0;
	g_auto(demo_receiver) drecv = { .layout = dst.layout, .tags = dst.tags, .listen_fd = -1 };
	if (cli_demo_creds(o->tls, &creds, &error) < 0 ||
	    demo_receiver_open(&drecv, o->io, o->timeout_s, creds, &port, &error) < 0)
		return cli_fail(error);
	tm_receiver *receiver = drecv.receiver;
	tm_live_config rlc = { .size = sizeof(rlc), .state_names = state_names };
	if (tm_receiver_set_live(receiver, &rlc, &error) < 0)
		return cli_fail(error);

	tm_sender_config scfg = { .channels = o->channels, .io_backend = o->io,
				  .timeout_ms = o->timeout_s * 1000u, .tls_creds_dir = creds,
				  .tls_hostname = "localhost" };
	cli_env_sender_config(&scfg);
	g_autoptr(tm_sender) sender = NULL;
	if (tm_sender_new(layout, test_guest_tags(g), &scfg, &sender, &error) < 0)
		return cli_fail(error);
	tm_live_config lc = { .size = sizeof(lc), .max_downtime_us = o->max_downtime_us,
			      .rate_limit = o->rate_limit, .compress = o->compress,
			      .compress_level = o->compress_level };
	if (tm_sender_set_live(sender, &lc, &error) < 0)
		return cli_fail(error);

	g_autoptr(GArray) rounds = g_array_new(false, true, sizeof(live_round));
	live_result res = { .rounds = rounds, .dirty_log = test_guest_dirty_method(g) };
	g_auto(live_bitmaps) dirty = { 0 };
	live_bitmaps_init(&dirty, layout);

	g_autofree uint8_t *cpu_state = g_malloc(STATE_CPU_LEN);
	g_autofree uint8_t *dev_state = g_malloc(STATE_DEV_LEN);
	const uint64_t state_total = STATE_CPU_LEN + STATE_DEV_LEN;

	double t0 = cli_now();
	GThread *rthread = g_thread_new("demo-receiver", demo_receiver_thread, &drecv);
	g_autofree char *port_text = g_strdup_printf("%u", port);
	int rc = tm_sender_connect(sender, "127.0.0.1", port_text, &error);
	bool running = false;
	if (rc >= 0) {
		test_guest_start(g);
		running = true;
	}
	/* Precopy: a round, then the dirty log, then the advice. */
	for (unsigned k = 1; rc >= 0 && k <= o->max_rounds; k++) {
		live_round lr = { 0 };
		tm_switch_advice adv;
		int64_t n;

		if ((rc = live_queue(sender, &dirty, &error)) < 0 ||
		    (rc = tm_sender_sync(sender, &error)) < 0)
			break;
		if ((n = test_guest_collect(g, dirty.bm, &error)) < 0) {
			rc = (int)n;
			break;
		}
		lr.dirty_after = live_bitmaps_count(&dirty);
		tm_sender_get_round(sender, k, &lr.rs);
		if ((rc = tm_sender_advise(sender, lr.dirty_after, state_total, &adv)) < 0) {
			g_set_error(&error, TM_ERROR, -rc, "advise: %s", g_strerror(-rc));
			break;
		}
		lr.expected_us = adv.expected_downtime_us;
		lr.bandwidth = adv.bandwidth;
		g_array_append_val(res.rounds, lr);
		if (!o->json)
			print_round(&lr);
		res.expected_us = adv.expected_downtime_us;
		if (adv.switch_now) {
			res.converged = true;
			break;
		}
	}
	/* Switchover: pause the guest, send what it wrote since the last collection. */
	if (running)
		test_guest_stop(g);
	if (rc >= 0)
		rc = tm_sender_guest_stopped(sender, &error);
	if (rc >= 0) {
		int64_t n = test_guest_collect(g, dirty.bm, &error);

		rc = n < 0 ? (int)n : 0;
		res.final_pages = live_bitmaps_count(&dirty);
	}
	if (rc >= 0)
		rc = live_queue(sender, &dirty, &error);
	/* Device state, read from the paused "devices" now: after the final dirty log, as a VMM
	 * reads vCPU registers after the pause. */
	if (rc >= 0) {
		state_fill(cpu_state, STATE_CPU_LEN, LIVE_SEED);
		state_fill(dev_state, STATE_DEV_LEN, LIVE_SEED ^ 1);
		if ((rc = tm_sender_put_state(sender, "cpu0", cpu_state, STATE_CPU_LEN, 0, &error)) >= 0)
			rc = tm_sender_put_state(sender, "dev", dev_state, STATE_DEV_LEN, 0, &error);
	}
	if (rc >= 0)
		rc = tm_sender_finish(sender, &error);
	if (rc < 0) {
		shutdown(drecv.listen_fd, SHUT_RDWR);
		tm_sender_free(g_steal_pointer(&sender));
	}
	g_thread_join(rthread);
	res.seconds = cli_now() - t0;
	if (rc < 0 || drecv.rc < 0) {
		if (rc < 0)
			cli_failf("sender: %s", error ? error->message : g_strerror(-rc));
		if (drecv.rc < 0)
			cli_failf("receiver: %s", drecv.error ? drecv.error->message : "failed");
		return CLI_EXIT_FAILED;
	}

	tm_live_stats ls = { .size = sizeof(ls) };
	tm_sender_get_live_stats(sender, &ls);
	tm_sender_get_stats(sender, &res.st);
	cli_print_io_note(&res.st);
	res.downtime_us = ls.downtime_us;
	res.guest_writes = test_guest_writes(g);
	g_autofree char *why = NULL;
	res.verified = test_guest_same(g, dst.layout, dst.tags, &why);
	/* The device state: every section, in order, byte for byte, and the RAM hash right. */
	const struct { const char *name; const void *data; size_t len; } want[] = {
		{ "cpu0", cpu_state, STATE_CPU_LEN },
		{ "dev", dev_state, STATE_DEV_LEN },
	};
	if (res.verified && drecv.states->len != G_N_ELEMENTS(want)) {
		res.verified = false;
		why = g_strdup_printf("%u device-state sections arrived, %zu sent",
				      drecv.states->len, G_N_ELEMENTS(want));
	}
	for (guint i = 0; res.verified && i < drecv.states->len; i++) {
		const demo_state *ds = g_ptr_array_index(drecv.states, i);
		size_t len;
		const void *d = g_bytes_get_data(ds->data, &len);

		res.state_bytes += len;
		res.state_sections++;
		if (strcmp(ds->name, want[i].name) || len != want[i].len ||
		    memcmp(d, want[i].data, len)) {
			res.verified = false;
			why = g_strdup_printf("device-state section %u ('%s') differs from '%s'", i,
					      ds->name, want[i].name);
		}
	}
	res.why = why;
	if (o->json)
		print_json(o, &res);
	else
		print_human(o, &res);
	if (!res.verified)
		return cli_failf("verification failed: %s", why ? why : "?");
	return CLI_EXIT_OK;
}
