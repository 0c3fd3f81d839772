/* SPDX-License-Identifier: MIT */
/*
 * tagmig demo: a loopback migration inside one process. A synthetic guest (anonymous memory plus
 * soft tags) is migrated to a second copy over N TCP channels on 127.0.0.1 in two rounds, the way a
 * VMM's live-migration loop does it: everything, then the pages the guest dirtied meanwhile. The
 * copy is then compared bit for bit, data and tags, and every page must be present.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "args.h"
#include "cli.h"
#include "demo-creds.h"
#include "demo-kvm.h"
#include "demo-live.h"
#include "demo-receiver.h"
#include "map.h"
#include "progress.h"
#include "report.h"
#include "env.h"

#define DEMO_SEED 0x7461676d69672121ull /* "tagmig!!" */
#define DEMO_BLOCK_NAME "pc.ram"

/* What the generator put into a page; counted to print the mix. */
enum {
	GEN_RANDOM_PACKED, /* random data, random per-granule tags */
	GEN_RANDOM_UNIFORM, /* random data, one non-zero tag for the page */
	GEN_RANDOM_UNTAGGED, /* random data, zero tags */
	GEN_ZERO,          /* zero data, zero tags */
	GEN_ZERO_TAGGED,   /* zero data, non-zero tags */
	GEN_COUNT,
};

static const char *const gen_names[GEN_COUNT] = {
	"random_packed_tags", "random_uniform_tags", "random_zero_tags", "zero", "zero_tagged",
};

static inline uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* xorshift64*: cheap enough to fill a GiB in well under a second per core. */
static inline uint64_t xorshift64s(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dull;
}

static void fill_random(uint64_t *words, size_t n, uint64_t *state, uint64_t mask)
{
	for (size_t i = 0; i < n; i++)
		words[i] = xorshift64s(state) & mask;
}

/*
 * Writes page content and tags determined only by seed, so any thread can generate any page.
 * page_size is a multiple of 64, so tags (page_size / 16 bytes) are whole 64-bit words.
 */
static unsigned gen_page(uint8_t *data, uint8_t *tags, uint32_t page_size, uint64_t seed)
{
	uint64_t state = seed;
	uint64_t r = splitmix64(&state);
	uint64_t rng = splitmix64(&state) | 1; /* xorshift state must not be 0 */
	size_t tag_len = page_size / TM_TAG_GRANULE;
	unsigned kind;

	switch (r % 10) {
	case 0: case 1: case 2: case 3:
		kind = GEN_RANDOM_PACKED;
		break;
	case 4: case 5:
		kind = GEN_RANDOM_UNIFORM;
		break;
	case 6:
		kind = GEN_RANDOM_UNTAGGED;
		break;
	case 7: case 8:
		kind = GEN_ZERO;
		break;
	default:
		kind = GEN_ZERO_TAGGED;
	}
	if (kind == GEN_ZERO || kind == GEN_ZERO_TAGGED)
		memset(data, 0, page_size);
	else
		fill_random((uint64_t *)data, page_size / 8, &rng, UINT64_MAX);

	switch (kind) {
	case GEN_RANDOM_PACKED:
		fill_random((uint64_t *)tags, tag_len / 8, &rng, 0x0f0f0f0f0f0f0f0full);
		tags[0] = 1; /* never all zero */
		tags[1] = 2; /* never uniform */
		break;
	case GEN_RANDOM_UNIFORM:
		memset(tags, (int)(1 + (r >> 32) % 15), tag_len);
		break;
	case GEN_ZERO_TAGGED:
		/* Half uniform, half per-granule: both must survive a zero page. */
		if ((r >> 32) & 1) {
			memset(tags, (int)(1 + (r >> 33) % 15), tag_len);
		} else {
			fill_random((uint64_t *)tags, tag_len / 8, &rng, 0x0f0f0f0f0f0f0f0full);
			tags[0] = 3;
		}
		break;
	default:
		memset(tags, 0, tag_len);
	}
	return kind;
}

static uint64_t page_seed(uint64_t round, uint64_t page)
{
	uint64_t s = DEMO_SEED ^ (round << 56) ^ page;

	return splitmix64(&s);
}

typedef struct gen_job {
	/* read-only after setup */
	uint8_t *ram;
	uint8_t *tags;
	uint32_t page_size;
	uint64_t round;
	const uint64_t *pages; /* NULL: first_page .. first_page + count - 1 */
	uint64_t first;
	uint64_t count;
	/* worker-local, read after join */
	uint64_t kinds[GEN_COUNT];
} gen_job;

static gpointer gen_worker(gpointer data)
{
	gen_job *job = data;
	size_t tag_len = job->page_size / TM_TAG_GRANULE;

	for (uint64_t i = job->first; i < job->first + job->count; i++) {
		uint64_t page = job->pages ? job->pages[i] : i;
		unsigned kind = gen_page(job->ram + page * job->page_size, job->tags + page * tag_len,
					 job->page_size, page_seed(job->round, page));
		job->kinds[kind]++;
	}
	return NULL;
}

/* Generates round `round` of pages (all of them if pages is NULL) on every CPU. */
static void generate(uint8_t *ram, uint8_t *tags, uint32_t page_size, uint64_t round,
		     const uint64_t *pages, uint64_t count, uint64_t kinds[GEN_COUNT])
{
	unsigned n = CLAMP(g_get_num_processors(), 1, 32);
	gen_job jobs[32];
	GThread *threads[32];

	if (count < 1024)
		n = 1;
	for (unsigned t = 0; t < n; t++) {
		jobs[t] = (gen_job){
			.ram = ram,
			.tags = tags,
			.page_size = page_size,
			.round = round,
			.pages = pages,
			.first = count * t / n,
			.count = count * (t + 1) / n - count * t / n,
		};
		threads[t] = g_thread_new("generate", gen_worker, &jobs[t]);
	}
	for (unsigned t = 0; t < n; t++) {
		g_thread_join(threads[t]);
		for (unsigned k = 0; k < GEN_COUNT; k++)
			kinds[k] += jobs[t].kinds[k];
	}
}

/* The receiver side runs in a thread of its own, as it would in the destination VMM. */
typedef struct demo_progress {
	tm_sender *sender;
	uint32_t page_size;
	_Atomic uint64_t queued; /* pages queued so far: written by the migration thread */
} demo_progress;

static void demo_progress_fn(void *opaque, uint64_t *done, uint64_t *total, uint64_t *bytes)
{
	demo_progress *p = opaque;
	tm_stats st;

	tm_sender_get_stats(p->sender, &st);
	*done = st.pages;
	*total = atomic_load(&p->queued);
	*bytes = st.pages * p->page_size;
}

static uint64_t demo_verify(const cli_map *src, const cli_map *dst, const uint8_t *src_tags,
			    const uint8_t *dst_tags, uint64_t npages, uint32_t page_size,
			    tm_receiver *receiver, GString *why)
{
	uint64_t bad = 0;
	size_t tag_len = page_size / TM_TAG_GRANULE;

	for (uint64_t p = 0; p < npages; p++) {
		const char *what = NULL;
		if (memcmp((uint8_t *)src->addr + p * page_size, (uint8_t *)dst->addr + p * page_size,
			   page_size))
			what = "data differs";
		else if (memcmp(src_tags + p * tag_len, dst_tags + p * tag_len, tag_len))
			what = "tags differ";
		else if (!tm_receiver_page_present(receiver, 0, p))
			what = "not present";
		if (!what)
			continue;
		if (bad++ < 5)
			g_string_append_printf(why, "%spage %" PRIu64 ": %s", why->len ? "; " : "", p,
					       what);
	}
	return bad;
}

typedef struct demo_opts {
	char *size;
	int channels;
	gboolean json;
	char *page_size;
	char *io;
	int timeout;
	gboolean tls;
	gboolean live;
	char *dirty_rate;
	char *max_downtime;
	int max_rounds;
	int postcopy_after;
	char *rate_limit;
	gboolean kvm_guest, any_host;
	char *vmm, *guest_image;
	char *compress;
	char *delta_cache;
	char *delta_policy;
} demo_opts;

static void demo_opts_clear(demo_opts *o)
{
	g_free(o->size);
	g_free(o->page_size);
	g_free(o->io);
	g_free(o->dirty_rate);
	g_free(o->max_downtime);
	g_free(o->rate_limit);
	g_free(o->vmm);
	g_free(o->guest_image);
	g_free(o->compress);
	g_free(o->delta_cache);
	g_free(o->delta_policy);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(demo_opts, demo_opts_clear)

static void print_human(const cli_summary *s, uint32_t page_size, uint64_t npages,
			uint64_t ndirty, const uint64_t kinds[GEN_COUNT], const char *why)
{
	const tm_stats *st = s->stats;
	g_autofree char *size = cli_format_bytes(npages * page_size);
	g_autofree char *tags = cli_format_bytes(st->tag_bytes);
	g_autofree char *wire = cli_format_bytes(st->wire_bytes);
	double gib = s->bytes / (1024.0 * 1024.0 * 1024.0);

	printf("tagmig demo: %s guest, page size %u, %u channel%s, I/O backend %s\n", size,
	       page_size, st->channels, st->channels == 1 ? "" : "s", st->io_backend);
	printf("  guest mix     ");
	for (unsigned k = 0; k < GEN_COUNT; k++)
		printf("%s%s %.0f%%", k ? ", " : "", gen_names[k], 100.0 * kinds[k] / npages);
	printf("\n");
	printf("  rounds        2: %" PRIu64 " pages, then %" PRIu64 " dirtied pages\n", npages,
	       ndirty);
	printf("  throughput    %.2f GiB/s (%.3f s wall for %.2f GiB)\n",
	       cli_gib_per_s(s->bytes, s->wall_seconds), s->wall_seconds, gib);
	printf("  CPU           %.2f s per GiB (sender and receiver, user + sys)\n",
	       gib > 0 ? s->cpu_seconds / gib : 0);
	printf("  pages sent    %" PRIu64 ": normal %" PRIu64 ", zero %" PRIu64
	       ", zero-tagged %" PRIu64 "\n",
	       st->pages, st->pages_by_kind[TM_PAGE_NORMAL], st->pages_by_kind[TM_PAGE_ZERO],
	       st->pages_by_kind[TM_PAGE_ZERO_TAGGED]);
	printf("  tag encodings zero %" PRIu64 ", uniform %" PRIu64 ", packed %" PRIu64 "\n",
	       st->pages_by_tag_enc[TM_TAGS_ZERO], st->pages_by_tag_enc[TM_TAGS_UNIFORM],
	       st->pages_by_tag_enc[TM_TAGS_PACKED]);
	printf("  tag bytes     %s of %s on the wire (%.2f%%), %" PRIu64 " packets\n", tags, wire,
	       st->wire_bytes ? 100.0 * st->tag_bytes / st->wire_bytes : 0, st->packets);
	if (st->tls_cipher[0])
		printf("  TLS           %s, %" PRIu64 " full + %" PRIu64
		       " resumed handshakes in %.1f ms; %s\n",
		       st->tls_cipher, st->tls_full_handshakes, st->tls_resumed_handshakes,
		       st->tls_handshake_seconds * 1e3, st->tls_note);
	printf("  verified:     %s%s%s\n", s->verified ? "yes" : "no", why && *why ? " - " : "",
	       why ? why : "");
}

int cli_cmd_demo(int argc, char **argv)
{
	g_auto(demo_opts) o = { .channels = 4, .timeout = 60, .max_rounds = 30,
				.postcopy_after = -1 };
	const GOptionEntry entries[] = {
		{ "size", 's', 0, G_OPTION_ARG_STRING, &o.size,
		  "Guest RAM size, suffixes K, M, G (default 1G)", "SIZE" },
		{ "channels", 'c', 0, G_OPTION_ARG_INT, &o.channels,
		  "Parallel TCP channels, 1..64 (default 4)", "N" },
		{ "page-size", 'p', 0, G_OPTION_ARG_STRING, &o.page_size,
		  "Page size: 4K, 16K or 64K (default 4K)", "N" },
		{ "io", 0, 0, G_OPTION_ARG_STRING, &o.io, CLI_IO_HELP,
		  "BACKEND" },
		{ "timeout", 0, 0, G_OPTION_ARG_INT, &o.timeout,
		  "Give up when the setup takes this long or the peer stops answering for this long "
		  "(default 60; idle time between rounds is fine)", "SEC" },
		{ "tls", 0, 0, G_OPTION_ARG_NONE, &o.tls,
		  "TLS 1.3 on every channel, with credentials created for the run", NULL },
		{ "json", 'j', 0, G_OPTION_ARG_NONE, &o.json,
		  "Print one JSON object on stdout instead of the summary", NULL },
		{ "kvm-guest", 0, 0, G_OPTION_ARG_NONE, &o.kvm_guest,
		  "Migrate a running arm64 KVM guest with MTE with the reference VMM (tagmig-vmm) "
		  "and print the guest's verdict; elsewhere say what to run instead", NULL },
		{ "vmm", 0, 0, G_OPTION_ARG_FILENAME, &o.vmm,
		  "With --kvm-guest: the tagmig-vmm to run (default: BUILD/vmm/tagmig-vmm beside "
		  "this tagmig, else PATH)", "PATH" },
		{ "guest-image", 0, 0, G_OPTION_ARG_FILENAME, &o.guest_image,
		  "With --kvm-guest: the guest (default: guest/guest.bin beside the VMM)", "IMAGE" },
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
		/* test hook: run --vmm (a stand-in) on any host (tests/cli demo-kvm-guest-run) */
		{ "test-any-host", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE, &o.any_host, "", NULL },
#endif
		{ "live", 0, 0, G_OPTION_ARG_NONE, &o.live,
		  "Migrate a running guest by precopy: writer threads dirty it while rounds run "
		  "until the rest fits in --max-downtime, then it is paused for the final round", NULL },
		{ "dirty-rate", 0, 0, G_OPTION_ARG_STRING, &o.dirty_rate,
		  "With --live: bytes per second the guest writes, K/M/G suffixes (default 100M; 0: "
		  "an idle guest)",
		  "RATE" },
		{ "max-downtime", 0, 0, G_OPTION_ARG_STRING, &o.max_downtime,
		  "With --live: switch over when the rest is expected to take this long, e.g. 50ms "
		  "(default 50ms)", "TIME" },
		{ "max-rounds", 0, 0, G_OPTION_ARG_INT, &o.max_rounds,
		  "With --live: switch over after this many rounds even if not converged "
		  "(default 30)", "N" },
		{ "rate-limit", 0, 0, G_OPTION_ARG_STRING, &o.rate_limit,
		  "With --live: bytes per second for all channels until the pause, and for the "
		  "background pages after a switch to postcopy (default none)", "RATE" },
		{ "postcopy-after", 0, 0, G_OPTION_ARG_INT, &o.postcopy_after,
		  "With --live: run N precopy rounds (0 allowed), then pause the guest and switch "
		  "to postcopy; the destination's vCPU threads fault missing pages in through "
		  "userfaultfd while the rest comes in the background. With --kvm-guest: the "
		  "reference VMM's source switches to postcopy after N rounds", "N" },
		{ "compress", 0, 0, G_OPTION_ARG_STRING, &o.compress, CLI_COMPRESS_HELP, "MODE" },
		{ "delta-cache", 0, 0, G_OPTION_ARG_STRING, &o.delta_cache,
		  CLI_DELTA_CACHE_HELP "; default with --live 32M (--delta-policy auto sends deltas "
		  "only where the link is the bottleneck, and keeps no copies where the CPU is), "
		  "else 0", "SIZE" },
		{ "delta-policy", 0, 0, G_OPTION_ARG_STRING, &o.delta_policy, CLI_DELTA_POLICY_HELP,
		  "POLICY" },
		G_OPTION_ENTRY_NULL
	};
	uint64_t size = 1ull << 30, page_size = 4096;
	int rc;

	rc = cli_parse_options("demo",
			       "Migrates a synthetic guest (random, zero and tagged pages) to a second "
			       "copy over\nloopback TCP in this process, in two rounds, and verifies "
			       "data and tags bit for bit.\nWith --live the guest keeps running "
			       "(default 256M): precopy rounds until it converges,\nthen a pause "
			       "and the final round; the measured downtime is printed.\nExits 0 if "
			       "the copy is verified, 1 otherwise, 2 on a usage error.\nWith --kvm-guest "
			       "a running arm64 KVM guest with MTE, migrated by the reference VMM.",
			       NULL, entries, &argc, &argv);
	if (rc)
		return rc;
	if (o.kvm_guest || o.vmm || o.guest_image || o.any_host) {
		if (!o.kvm_guest || o.size || o.page_size || o.io || o.tls || o.json || o.live ||
		    o.channels != 4 || o.timeout != 60 || o.max_rounds != 30 || o.dirty_rate ||
		    o.max_downtime || o.rate_limit || o.postcopy_after < -1 ||
		    o.postcopy_after > 10000)
			return cli_usage_error("demo", "--kvm-guest takes only --vmm, --guest-image "
					       "(which need it) and --postcopy-after 0..10000");
		return cli_demo_kvm(o.vmm, o.guest_image, o.any_host, o.postcopy_after);
	}
	if (!o.json)
		cli_demo_kvm_note();
	if ((rc = cli_check_io("demo", o.io)) != 0)
		return rc;
	if (o.size && (cli_parse_size(o.size, &size) < 0 || size == 0))
		return cli_usage_error("demo", "--size '%s' is not a size like 256M or 1G", o.size);
	if (o.page_size && cli_parse_size(o.page_size, &page_size) < 0)
		return cli_usage_error("demo", "--page-size '%s' is not a size", o.page_size);
	if (page_size != 4096 && page_size != 16384 && page_size != 65536)
		return cli_usage_error("demo", "--page-size must be 4K, 16K or 64K, not %" PRIu64,
				       page_size);
	if (size % page_size)
		return cli_usage_error("demo", "--size %" PRIu64 " is not a multiple of the page size %" PRIu64,
				       size, page_size);
	if (o.channels < 1 || o.channels > (int)TM_MAX_CHANNELS)
		return cli_usage_error("demo", "--channels must be 1..%u", TM_MAX_CHANNELS);
	if (o.timeout < 0 || o.timeout > 86400)
		return cli_usage_error("demo", "--timeout must be 0..86400 seconds");
	uint32_t zmode = TM_COMPRESS_DEFAULT;
	int32_t zlevel = 0;
	g_autoptr(GError) zerr = NULL;
	if (o.compress && (rc = tm_compress_parse(o.compress, &zmode, &zlevel, &zerr)) < 0)
		return rc == -EOPNOTSUPP ? cli_fail(zerr)
					 : cli_usage_error("demo", "--compress: %s", zerr->message);
	/* --live: a modest cache. Its auto policy costs nothing where the CPU is the bottleneck
	 * (loopback: no copies kept, the live demo converges as without it) and sends deltas
	 * where the link is. One round (no --live) never re-sends a page: none. */
	uint64_t delta_cache = o.live && o.postcopy_after < 0 ? 32ull << 20 : 0;
	if (o.delta_cache && (rc = cli_parse_delta_cache("demo", o.delta_cache, &delta_cache)))
		return rc;
	uint32_t delta_policy = TM_DELTA_AUTO;
	if (o.delta_policy && (rc = cli_parse_delta_policy("demo", o.delta_policy, &delta_policy)))
		return rc;
	if (!o.live && (o.dirty_rate || o.max_downtime || o.rate_limit || o.max_rounds != 30 ||
			o.postcopy_after != -1))
		return cli_usage_error("demo", "--dirty-rate, --max-downtime, --max-rounds, "
				       "--rate-limit and --postcopy-after need --live "
				       "(--postcopy-after also goes with --kvm-guest)");
	if (o.live) {
		demo_live_opts lo = { .size = o.size ? size : 256ull << 20,
				      .channels = (unsigned)o.channels, .io = o.io,
				      .timeout_s = (unsigned)o.timeout, .tls = o.tls, .json = o.json,
				      .dirty_rate = 100ull << 20, .max_downtime_us = 50000,
				      .max_rounds = (unsigned)o.max_rounds, .compress = zmode,
				      .compress_level = zlevel, .postcopy_after = o.postcopy_after,
				      .delta_cache = delta_cache, .delta_policy = delta_policy };
		if (o.page_size && page_size != 4096)
			return cli_usage_error("demo", "--live runs a guest of 4K pages");
		if (o.dirty_rate && cli_parse_rate(o.dirty_rate, &lo.dirty_rate) < 0)
			return cli_usage_error("demo", "--dirty-rate '%s' is not a size per second",
					       o.dirty_rate);
		if (o.max_downtime && (cli_parse_duration_us(o.max_downtime, &lo.max_downtime_us) < 0 ||
				       lo.max_downtime_us == 0))
			return cli_usage_error("demo", "--max-downtime '%s' is not a time like 50ms",
					       o.max_downtime);
		if (o.rate_limit && cli_parse_rate(o.rate_limit, &lo.rate_limit) < 0)
			return cli_usage_error("demo", "--rate-limit '%s' is not a size per second",
					       o.rate_limit);
		if (o.max_rounds < 1 || o.max_rounds > 10000)
			return cli_usage_error("demo", "--max-rounds must be 1..10000");
		if (o.postcopy_after < -1 || o.postcopy_after > 10000)
			return cli_usage_error("demo", "--postcopy-after must be 0..10000");
		if (o.postcopy_after >= 0 && o.max_rounds != 30)
			return cli_usage_error("demo", "--postcopy-after N sets the rounds; drop "
					       "--max-rounds");
		return cli_demo_live(&lo);
	}

	g_autoptr(GError) error = NULL;
	g_autoptr(cli_map) src = NULL;
	g_autoptr(cli_map) dst = NULL;
	uint64_t npages = size / page_size;

	/* The destination is faulted in up front, as a VMM's guest RAM is: the measurement is
	 * about migrating, not about the kernel handing out fresh pages. */
	if (cli_map_anon(size, true, &src, &error) < 0 ||
	    cli_map_anon(size, true, &dst, &error) < 0)
		return cli_fail(error);

	g_autoptr(tm_ram_layout) src_layout = NULL;
	g_autoptr(tm_ram_layout) dst_layout = NULL;
	g_autoptr(tm_tag_store) src_tags = NULL;
	g_autoptr(tm_tag_store) dst_tags = NULL;
	if (tm_ram_layout_new(&src_layout) < 0 || tm_ram_layout_new(&dst_layout) < 0)
		return cli_failf("out of memory");
	if (tm_ram_layout_add_block(src_layout, DEMO_BLOCK_NAME, src->addr, size,
				    (uint32_t)page_size, 0, &error) < 0 ||
	    tm_ram_layout_add_block(dst_layout, DEMO_BLOCK_NAME, dst->addr, size,
				    (uint32_t)page_size, 0, &error) < 0 ||
	    tm_tag_store_new(&tm_tag_store_soft, src_layout, NULL, &src_tags, &error) < 0 ||
	    tm_tag_store_new(&tm_tag_store_soft, dst_layout, NULL, &dst_tags, &error) < 0)
		return cli_fail(error);
	uint8_t *src_tag_array = tm_tag_store_soft_array(src_tags, 0);
	uint8_t *dst_tag_array = tm_tag_store_soft_array(dst_tags, 0);
	if (!src_tag_array || !dst_tag_array)
		return cli_failf("soft tag store has no side array for block 0");

	uint64_t kinds[GEN_COUNT] = { 0 };
	generate(src->addr, src_tag_array, (uint32_t)page_size, 0, NULL, npages, kinds);

	/* --tls: credentials made for this run, removed at the end. The receiver listens before
	 * the sender connects and runs in its own thread. */
	g_autoptr(cli_tmpdir) creds = NULL;
	unsigned port = 0;
	g_auto(demo_receiver) drecv = { .layout = dst_layout, .tags = dst_tags, .listen_fd = -1 };
	if (cli_demo_creds(o.tls, &creds, &error) < 0 ||
	    demo_receiver_open(&drecv, o.io, (unsigned)o.timeout, creds, &port, &error) < 0)
		return cli_fail(error);
	tm_receiver *receiver = drecv.receiver;

	tm_sender_config scfg = {
		.channels = (unsigned)o.channels,
		.io_backend = o.io,
		.timeout_ms = (unsigned)o.timeout * 1000u,
		.tls_creds_dir = creds,
		.tls_hostname = "localhost",
	};
	cli_env_sender_config(&scfg);
	g_autoptr(tm_sender) sender = NULL;
	if (tm_sender_new(src_layout, src_tags, &scfg, &sender, &error) < 0)
		return cli_fail(error);
	tm_live_config lc = { .size = sizeof(lc), .compress = zmode, .compress_level = zlevel,
			      .delta_cache_bytes = delta_cache, .delta_policy = delta_policy };
	if ((o.compress || delta_cache) && tm_sender_set_live(sender, &lc, &error) < 0)
		return cli_fail(error);

	double cpu0 = cli_cpu_seconds(), t0 = cli_now();
	GThread *rthread = g_thread_new("demo-receiver", demo_receiver_thread, &drecv);
	g_autofree char *port_text = g_strdup_printf("%u", port);
	demo_progress prog = { .sender = sender, .page_size = (uint32_t)page_size };
	cli_progress *bar = NULL;
	uint64_t ndirty = MAX(npages / 100, 1);
	g_autofree uint64_t *dirty = g_new(uint64_t, ndirty);
	uint64_t nwords = (npages + 63) / 64;
	g_autofree uint64_t *bitmap = g_new(uint64_t, nwords);

	memset(bitmap, 0xff, nwords * sizeof(*bitmap));
	if (npages % 64)
		bitmap[nwords - 1] = (1ull << (npages % 64)) - 1;

	rc = tm_sender_connect(sender, "127.0.0.1", port_text, &error);
	if (rc >= 0) {
		bar = cli_progress_start("demo", demo_progress_fn, &prog);
		/* Round 1: every page. */
		atomic_store(&prog.queued, npages);
		rc = tm_sender_queue_bitmap(sender, 0, bitmap, 0, npages, &error);
	}
	if (rc >= 0)
		rc = tm_sender_sync(sender, &error);
	if (rc >= 0) {
		/* Round 2: the guest dirtied about 1% of its pages (new data and tags, maybe of
		 * another kind, so stale tags of round 1 must be cleared). */
		uint64_t state = DEMO_SEED ^ 0xd1e7;
		uint64_t round2_kinds[GEN_COUNT] = { 0 };
		for (uint64_t i = 0; i < ndirty; i++)
			dirty[i] = splitmix64(&state) % npages;
		generate(src->addr, src_tag_array, (uint32_t)page_size, 1, dirty, ndirty,
			 round2_kinds);
		atomic_store(&prog.queued, npages + ndirty);
		rc = tm_sender_queue_pages(sender, 0, dirty, ndirty, &error);
	}
	if (rc >= 0)
		rc = tm_sender_finish(sender, &error);
	if (rc < 0) {
		/* Wake a receiver still waiting in accept; a started one sees the channels close. */
		shutdown(drecv.listen_fd, SHUT_RDWR);
		tm_sender_free(g_steal_pointer(&sender));
	}
	g_thread_join(rthread);
	double wall = cli_now() - t0, cpu = cli_cpu_seconds() - cpu0;
	cli_progress_stop(bar);

	if (rc < 0 || drecv.rc < 0) {
		if (rc < 0)
			cli_failf("sender: %s", error->message);
		if (drecv.rc < 0)
			cli_failf("receiver: %s", drecv.error ? drecv.error->message : "failed");
		return CLI_EXIT_FAILED;
	}

	tm_stats st;
	tm_sender_get_stats(sender, &st);
	cli_print_io_note(&st);
	g_autoptr(GString) why = g_string_new(NULL);
	uint64_t bad = demo_verify(src, dst, src_tag_array, dst_tag_array, npages,
				   (uint32_t)page_size, receiver, why);
	if (bad)
		g_string_append_printf(why, " (%" PRIu64 " bad pages)", bad);
	cli_summary sum = {
		.command = "demo",
		.stats = &st,
		.bytes = st.pages * page_size,
		.wall_seconds = wall,
		.cpu_seconds = cpu,
		.verified = bad == 0,
		.blocks = 1,
	};
	g_autofree cli_compress *z = g_new0(cli_compress, 1);
	cli_compress_collect(z, sender, NULL, st.channels);
	sum.compress = z;
	if (o.json)
		cli_print_json(&sum);
	else
		print_human(&sum, (uint32_t)page_size, npages, ndirty, kinds, why->str);
	if (bad && o.json)
		cli_failf("verification failed: %s", why->str);
	return bad ? CLI_EXIT_FAILED : CLI_EXIT_OK;
}
