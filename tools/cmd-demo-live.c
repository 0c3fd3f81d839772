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
 *
 * With --postcopy-after N: N precopy rounds, then the pause, tm_sender_start_postcopy() and the
 * device state; the destination's "vCPUs" (demo-vcpus.c) touch every page from the end of device
 * state on, faulting the missing ones in through the engine's userfaultfd, while the rest comes
 * in the background. The same verdict, and the postcopy figures of both sides.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"
#include "demo-creds.h"
#include "demo-live.h"
#include "demo-receiver.h"
#include "demo-vcpus.h"
#include "env.h"
#include "guest.h"
#include "json.h"
#include "map.h"
#include "report.h"

#define LIVE_SEED 0x6c697665646d6f21ull /* "livedmo!" */
#define LIVE_WRITERS 4u
#define LIVE_MAX_BLOCKS 4u
#define LIVE_VCPUS 2u

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

/* postcopy: not populated (the library registers the RAM for missing faults); huge pages are
 * the library's business (it drops what a huge page mapped over missing pages). */
static int live_dest_make(live_dest *d, const tm_ram_layout *src, bool postcopy, GError **error)
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

		if (rc < 0 || (rc = cli_map_anon(bi.length, !postcopy, &d->maps[b], error)) < 0)
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
	for (size_t i = 0; i < len; i += sizeof(seed)) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		memcpy(buf + i, &seed, MIN(sizeof(seed), len - i));
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
	tm_delta_stats delta;  /* the sender's, all channels */
	uint64_t guest_writes;
	const char *dirty_log;
	bool verified;
	char *why;
	uint64_t state_bytes;
	unsigned state_sections;
	bool postcopy;
	tm_live_stats src_ls, dst_ls;  /* with postcopy */
	uint64_t vcpu_pages, vcpu_blocked;
} live_result;

/* The destination VMM in postcopy: its vCPUs run from the end of device state on. */
typedef struct live_vcpus {
	live_dest *dst;
	test_guest *src;
	demo_vcpus *running;
} live_vcpus;

static void live_start_vcpus(void *opaque, tm_receiver *r)
{
	live_vcpus *lv = opaque;

	if (lv->running || tm_receiver_phase(r) != TM_PHASE_POSTCOPY)
		return;
	lv->running = demo_vcpus_start(LIVE_VCPUS, lv->dst->layout, lv->dst->tags,
				       test_guest_layout(lv->src), test_guest_tags(lv->src));
}

static void json_postcopy(json_writer *w, const live_result *r)
{
	const tm_live_stats *s = &r->src_ls, *d = &r->dst_ls;

	jw_open(w, "postcopy");
	jw_u64(w, "after_rounds", r->rounds->len);
	jw_u64(w, "vcpus", LIVE_VCPUS);
	jw_u64(w, "vcpu_pages_touched", r->vcpu_pages);
	jw_u64(w, "vcpu_loads_blocked", r->vcpu_blocked);
	jw_open(w, "source");
	jw_u64(w, "postcopy_pages", s->postcopy_pages);
	jw_u64(w, "background_pages", s->background_pages);
	jw_u64(w, "urgent_pages", s->urgent_pages);
	jw_u64(w, "requests", s->requests);
	jw_u64(w, "end_count_mismatches", s->end_count_mismatches);
	jw_u64(w, "service_p50_us", s->service_p50_us);
	jw_u64(w, "service_p99_us", s->service_p99_us);
	jw_double(w, "downtime_ms", s->downtime_us / 1e3);
	jw_close(w);
	jw_open(w, "destination");
	jw_u64(w, "postcopy_pages", d->postcopy_pages);
	jw_u64(w, "discarded_pages", d->discarded_pages);
	jw_u64(w, "background_pages", d->background_pages);
	jw_u64(w, "urgent_pages", d->urgent_pages);
	jw_u64(w, "duplicate_pages", d->duplicate_pages);
	jw_u64(w, "requests", d->requests);
	jw_u64(w, "faults", d->faults);
	jw_u64(w, "fault_p50_us", d->fault_p50_us);
	jw_u64(w, "fault_p99_us", d->fault_p99_us);
	jw_u64(w, "fault_max_us", d->fault_max_us);
	jw_close(w);
	jw_close(w);
}

static void print_postcopy(const live_result *r)
{
	const tm_live_stats *s = &r->src_ls, *d = &r->dst_ls;

	printf("  postcopy      after %u precopy round%s; %" PRIu64 " pages missing at the switch "
	       "(%" PRIu64 " discarded at the destination)\n", r->rounds->len,
	       r->rounds->len == 1 ? "" : "s", s->postcopy_pages, d->discarded_pages);
	printf("  source        %" PRIu64 " background + %" PRIu64 " urgent pages, %" PRIu64
	       " requests answered, service p50 %" PRIu64 " us p99 %" PRIu64 " us\n",
	       s->background_pages, s->urgent_pages, s->requests, s->service_p50_us,
	       s->service_p99_us);
	printf("  destination   %u vCPUs touched %" PRIu64 " pages (%" PRIu64 " loads blocked > 1 ms); "
	       "%" PRIu64 " faults, %" PRIu64 " requests, fault p50 %" PRIu64 " us p99 %" PRIu64
	       " us max %" PRIu64 " us; %" PRIu64 " background + %" PRIu64 " urgent pages, %"
	       PRIu64 " duplicates\n",
	       LIVE_VCPUS, r->vcpu_pages, r->vcpu_blocked, d->faults, d->requests, d->fault_p50_us,
	       d->fault_p99_us, d->fault_max_us, d->background_pages, d->urgent_pages,
	       d->duplicate_pages);
}

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
	cli_delta_json(&w, &r->delta);
	jw_u64(&w, "guest_writes", r->guest_writes);
	jw_u64(&w, "state_sections", r->state_sections);
	jw_u64(&w, "state_bytes", r->state_bytes);
	if (r->postcopy)
		json_postcopy(&w, r);
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
	if (r->postcopy) {
		printf("  rounds        %u precopy round%s, then the pause and the switch to postcopy "
		       "(--postcopy-after)\n", r->rounds->len, r->rounds->len == 1 ? "" : "s");
		printf("  final log     %" PRIu64 " pages dirtied since the last round, postcopy's\n",
		       r->final_pages);
	} else {
		printf("  rounds        %u precopy round%s, then the final one: %s\n", r->rounds->len,
		       r->rounds->len == 1 ? "" : "s",
		       r->converged ? "converged" : "forced by --max-rounds (not converged)");
		printf("  final round   %" PRIu64 " pages dirtied since the last round, sent with the "
		       "guest paused\n", r->final_pages);
	}
	if (r->postcopy)
		print_postcopy(r);
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

/* Postcopy needs a userfaultfd at the destination: asks for one as the demo's receiver will,
 * before anything else (the test guest's dirty log may want one too, and would say less). */
static int postcopy_probe(void)
{
	g_autoptr(GError) error = NULL;
	tm_receiver *r = NULL;
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true, .uffd_user_mode_only = true };
	int rc = tm_receiver_new(NULL, &r, &error);

	if (rc >= 0)
		rc = tm_receiver_set_live(r, &lc, &error);
	tm_receiver_free(r);
	if (rc < 0)
		return cli_failf("demo --live --postcopy-after: postcopy needs userfaultfd at the "
				 "destination, and it is unavailable here: %s. Allow it as that "
				 "says, or run without --postcopy-after (precopy only)",
				 error ? error->message : g_strerror(-rc));
	return CLI_EXIT_OK;
}

int cli_demo_live(const demo_live_opts *o)
{
	g_autoptr(GError) error = NULL;
	g_autoptr(test_guest) g = NULL;
	const bool postcopy = o->postcopy_after >= 0;
	int prc;
	if (postcopy && (prc = postcopy_probe()) != CLI_EXIT_OK)
		return prc;
	test_guest_config gc = { .ram_len = o->size, .writers = LIVE_WRITERS,
				 .rate = o->dirty_rate, .seed = LIVE_SEED };

	if (test_guest_new(&gc, &g, &error) < 0)
		return cli_failf("demo --live: the guest: %s", error->message);
	const tm_ram_layout *layout = test_guest_layout(g);
	g_auto(live_dest) dst = { 0 };
	if (live_dest_make(&dst, layout, postcopy, &error) < 0)
		return cli_fail(error);

	g_autoptr(cli_tmpdir) creds = NULL;
	unsigned port = 0;
	g_auto(demo_receiver) drecv = { .layout = dst.layout, .tags = dst.tags, .listen_fd = -1 };
	if (cli_demo_creds(o->tls, &creds, &error) < 0 ||
	    demo_receiver_open(&drecv, o->io, o->timeout_s, creds, &port, &error) < 0)
		return cli_fail(error);
	tm_receiver *receiver = drecv.receiver;
	drecv.state_reserve = STATE_CPU_LEN + STATE_DEV_LEN;
	tm_live_config rlc = { .size = sizeof(rlc), .state_names = state_names,
			       .postcopy = postcopy, .uffd_user_mode_only = postcopy };
	if (tm_receiver_set_live(receiver, &rlc, &error) < 0)
		return cli_fail(error);
	live_vcpus lv = { .dst = &dst, .src = g };
	if (postcopy) {
		drecv.on_sections_read = live_start_vcpus;
		drecv.opaque = &lv;
	}

	tm_sender_config scfg = { .channels = o->channels, .io_backend = o->io,
				  .timeout_ms = o->timeout_s * 1000u, .tls_creds_dir = creds,
				  .tls_hostname = "localhost" };
	cli_env_sender_config(&scfg);
	g_autoptr(tm_sender) sender = NULL;
	if (tm_sender_new(layout, test_guest_tags(g), &scfg, &sender, &error) < 0)
		return cli_fail(error);
	tm_live_config lc = { .size = sizeof(lc), .max_downtime_us = o->max_downtime_us,
			      .rate_limit = o->rate_limit, .compress = o->compress,
			      .compress_level = o->compress_level, .postcopy = postcopy,
			      .delta_cache_bytes = postcopy ? 0 : o->delta_cache,
			      .delta_policy = o->delta_policy };
	if (tm_sender_set_live(sender, &lc, &error) < 0)
		return cli_fail(error);

	g_autoptr(GArray) rounds = g_array_new(false, true, sizeof(live_round));
	live_result res = { .rounds = rounds, .dirty_log = test_guest_dirty_method(g),
			    .postcopy = postcopy };
	const unsigned max_rounds = postcopy ? (unsigned)o->postcopy_after : o->max_rounds;
	g_auto(live_bitmaps) dirty = { 0 };
	live_bitmaps_init(&dirty, layout);

	g_autofree uint8_t *cpu_state = g_malloc(STATE_CPU_LEN);
	g_autofree uint8_t *dev_state = g_malloc(STATE_DEV_LEN);
	/* A VMM's device models live in memory it touched long before the pause: fault the
	 * buffers in now, not inside the downtime. */
	memset(cpu_state, 0, STATE_CPU_LEN);
	memset(dev_state, 0, STATE_DEV_LEN);
	const uint64_t state_total = STATE_CPU_LEN + STATE_DEV_LEN;

	double t0 = cli_now();
	GThread *rthread = g_thread_new("demo-receiver", demo_receiver_thread, &drecv);
	g_autofree char *port_text = g_strdup_printf("%u", port);
	int rc = tm_sender_connect(sender, "127.0.0.1", port_text, &error);
	bool running = false;
	/* --dirty-rate 0 is an idle guest: the test guest's writers take 0 as "no limit" */
	if (rc >= 0 && o->dirty_rate) {
		test_guest_start(g);
		running = true;
	}
	/* Precopy: a round, then the dirty log, then the advice. */
	for (unsigned k = 1; rc >= 0 && k <= max_rounds; k++) {
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
		if (adv.switch_now && !postcopy) {
			res.converged = true;
			break;
		}
	}
	/* Switchover: pause the guest, send what it wrote since the last collection. */
	if (running)
		test_guest_stop(g);
	if (rc >= 0 && !postcopy)
		rc = tm_sender_guest_stopped(sender, &error);
	if (rc >= 0) {
		int64_t n = test_guest_collect(g, dirty.bm, &error);

		rc = n < 0 ? (int)n : 0;
		res.final_pages = live_bitmaps_count(&dirty);
	}
	if (rc >= 0)
		rc = live_queue(sender, &dirty, &error);
	/* Postcopy: whatever is still queued or never went is missing at the destination now, and
	 * comes in the background (--rate-limit applies again) or when a vCPU faults on it. */
	if (rc >= 0 && postcopy)
		rc = tm_sender_start_postcopy(sender, &error);
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
		if (lv.running) {
			/* The vCPUs may wait on pages that will never come, and freeing the
			 * receiver poisons them (SIGBUS): leave without joining or freeing. */
			fflush(NULL);
			_exit(CLI_EXIT_FAILED);
		}
		return CLI_EXIT_FAILED;
	}
	g_autofree char *vcpu_bad = NULL;
	if (lv.running)
		demo_vcpus_join(lv.running, &res.vcpu_pages, &res.vcpu_blocked, &vcpu_bad);

	tm_live_stats ls = { .size = sizeof(ls) };
	tm_sender_get_live_stats(sender, &ls);
	tm_sender_get_stats(sender, &res.st);
	cli_delta_collect(&res.delta, sender, NULL, res.st.channels);
	cli_print_io_note(&res.st);
	res.downtime_us = ls.downtime_us;
	res.guest_writes = test_guest_writes(g);
	g_autofree char *why = NULL;
	res.verified = test_guest_same(g, dst.layout, dst.tags, &why);
	if (postcopy) {
		res.src_ls = ls;
		res.dst_ls = (tm_live_stats){ .size = sizeof(res.dst_ls) };
		tm_receiver_get_live_stats(receiver, &res.dst_ls);
		uint64_t npages = 0;
		for (unsigned b = 0; b < dirty.n; b++)
			npages += dirty.npages[b];
		if (res.verified && vcpu_bad) {
			res.verified = false;
			why = g_steal_pointer(&vcpu_bad);
		} else if (res.verified && res.vcpu_pages != npages) {
			res.verified = false;
			why = g_strdup_printf("the vCPUs touched %" PRIu64 " of %" PRIu64 " pages",
					      res.vcpu_pages, npages);
		}
	}
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
