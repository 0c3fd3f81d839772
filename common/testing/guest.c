/* SPDX-License-Identifier: MIT */
/* The live-migration tests' guest: RAM, tags, writer threads, dirty logs (guest.h). */
#include "guest.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dirty-log.h"

#define MAX_BLOCKS 2
#define POOL_PAGES 64u   /* random pages the writers' data is made from */
#define POOL_PAGE 4096u

typedef struct gblock {
	const char *name;
	uint8_t *ram, *tags;     /* inside their mappings, between the guard pages */
	uint8_t *ram_map, *tags_map;
	size_t len, tags_len, ram_map_len, tags_map_len;
	uint32_t page_size;
	uint64_t pages;
	uint32_t *gen;           /* per page, written by its writer only (atomics for readers) */
	dirty_log *ram_log, *tags_log;
	uint64_t *scratch;       /* one bit per host page of RAM or tag array, for collect */
	uint8_t *tags_seen;      /* the tags as the last collection saw them (see collect) */
} gblock;

typedef struct writer {
	test_guest *g;
	unsigned id;
	GThread *thread;
	uint64_t rng;
} writer;

struct test_guest {
	test_guest_config cfg;
	size_t host_page;
	unsigned nblocks;
	gblock b[MAX_BLOCKS];
	tm_ram_layout *layout;
	tm_tag_store *tags;
	writer *w;
	gint running; /* writers loop while set */
	uint64_t writes; /* atomic */
	uint64_t *pool; /* POOL_PAGES random pages, read-only once made */
};

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

/*
 * Writes page p of block b in generation gen, in the shape (p + gen) % 8. A page's data is a
 * page of the guest's random pool XORed with a 64-bit key of (block, page, gen): as random as
 * the pool (no compressor finds matches between two pages with different keys), and cheap, so
 * that the writers cost about what a real vCPU's stores cost. Generating every word with mix()
 * took ~4 us per 4 KiB page: at 1 GiB/s of writes the "guest" took most of a core of two
 * from the migration it was meant to load.
 */
static void write_page(test_guest *g, unsigned bi, uint64_t p, uint32_t gen)
{
	gblock *b = &g->b[bi];
	uint8_t *data = b->ram + p * b->page_size;
	uint8_t *tags = b->tags + p * (b->page_size / TM_TAG_GRANULE);
	size_t ntags = b->page_size / TM_TAG_GRANULE;
	uint64_t seed = mix(g->cfg.seed ^ ((uint64_t)bi << 56) ^ (p << 20) ^ gen);
	unsigned shape = (unsigned)((p + gen) % 8);
	bool do_data = shape != 5, do_tags = shape != 6;
	bool zero_data = shape == 3 || shape == 4, zero_tags = shape == 4;
	const uint64_t *pool = g->pool + (seed % POOL_PAGES) * (POOL_PAGE / 8);

	if (do_data) {
		if (zero_data) {
			memset(data, 0, b->page_size);
		} else {
			/* pool pages repeat in a 64 KiB page: the key differs per 4 KiB part */
			for (size_t i = 0; i < b->page_size / 8; i++) {
				uint64_t v = pool[i % (POOL_PAGE / 8)] ^ (seed + i / (POOL_PAGE / 8));
				memcpy(data + i * 8, &v, 8);
			}
		}
	}
	if (do_tags) {
		const uint8_t *tpool = (const uint8_t *)pool;
		unsigned key = (unsigned)(seed >> 40);
		for (size_t i = 0; i < ntags; i++)
			tags[i] = zero_tags ? 0 :
				  (uint8_t)(((tpool[(i + (key >> 4)) % POOL_PAGE] ^ key) & 0xf) | 1);
	}
	__atomic_store_n(&b->gen[p], gen, __ATOMIC_RELEASE);
}

static gpointer writer_fn(gpointer data)
{
	writer *w = data;
	test_guest *g = w->g;
	unsigned n = g->cfg.writers;
	/* each writer's share of the rate, spent in page-sized tokens */
	double rate = g->cfg.rate ? (double)g->cfg.rate / n : 0;
	gint64 t0 = g_get_monotonic_time();
	double spent = 0;

	while (g_atomic_int_get(&g->running)) {
		w->rng = w->rng * 6364136223846793005ull + 1442695040888963407ull;
		uint64_t r = w->rng >> 16;
		unsigned bi = g->nblocks > 1 && (r & 7) == 0 ? 1 : 0; /* vram gets 1 write in 8 */
		gblock *b = &g->b[bi];
		uint64_t owned = (b->pages + n - 1 - w->id) / n; /* pages p with p % n == id */
		if (!owned)
			continue;
		uint64_t p = w->id + ((r >> 4) % owned) * n;
		write_page(g, bi, p, __atomic_load_n(&b->gen[p], __ATOMIC_RELAXED) + 1);
		__atomic_add_fetch(&g->writes, 1, __ATOMIC_RELAXED);
		if (rate > 0) {
			spent += b->page_size;
			double ahead = spent / rate - (double)(g_get_monotonic_time() - t0) / 1e6;
			if (ahead > 0.0005)
				g_usleep((gulong)(ahead * 1e6));
		}
	}
	return NULL;
}

/*
 * An anonymous mapping of len bytes aligned to align (a page multiple), between PROT_NONE guard
 * pages: the whole mapping starts PROT_NONE and only the block becomes read-write.
 */
static uint8_t *map_guarded(size_t len, size_t align, size_t host_page, uint8_t **ret_map,
			    size_t *ret_map_len)
{
	size_t map_len = len + 2 * host_page + align;
	uint8_t *m = mmap(NULL, map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	uint8_t *start = (uint8_t *)(((uintptr_t)m + host_page + align - 1) / align * align);
	if (mprotect(start, len, PROT_READ | PROT_WRITE) < 0) {
		munmap(m, map_len);
		return NULL;
	}
	madvise(start, len, MADV_NOHUGEPAGE);
	*ret_map = m;
	*ret_map_len = map_len;
	return start;
}

int test_guest_new(const test_guest_config *cfg, test_guest **ret, GError **error)
{
	g_autoptr(test_guest) g = g_new0(test_guest, 1);
	g->cfg = *cfg;
	if (!g->cfg.ram_len)
		g->cfg.ram_len = 64u << 20;
	if (!g->cfg.writers)
		g->cfg.writers = 2;
	g->host_page = (size_t)sysconf(_SC_PAGESIZE);
	if (g->cfg.ram_len % 4096 || g->cfg.vram_len % 65536) {
		g_set_error(error, TM_ERROR, EINVAL, "test guest: RAM lengths must be page multiples");
		return -EINVAL;
	}
	const struct { const char *name; size_t len; uint32_t ps; } spec[MAX_BLOCKS] = {
		{ "pc.ram", g->cfg.ram_len, 4096 },
		{ "vram", g->cfg.vram_len, 65536 },
	};
	int r = tm_ram_layout_new(&g->layout);
	if (r < 0)
		return r;
	uint8_t *arrays[MAX_BLOCKS] = { 0 };
	for (unsigned i = 0; i < MAX_BLOCKS && spec[i].len; i++) {
		gblock *b = &g->b[g->nblocks++];
		b->name = spec[i].name;
		b->len = spec[i].len;
		b->page_size = spec[i].ps;
		b->pages = b->len / b->page_size;
		b->tags_len = b->len / TM_TAG_GRANULE;
		b->ram = map_guarded(b->len, MAX(b->page_size, g->host_page), g->host_page, &b->ram_map,
				     &b->ram_map_len);
		b->tags = map_guarded(b->tags_len, g->host_page, g->host_page, &b->tags_map,
				      &b->tags_map_len);
		if (!b->ram || !b->tags) {
			g_set_error(error, TM_ERROR, ENOMEM, "test guest: mapping block '%s' failed", b->name);
			return -ENOMEM;
		}
		b->gen = g_new0(uint32_t, b->pages);
		b->scratch = g_new0(uint64_t, (b->len / g->host_page + 63) / 64);
		arrays[i] = b->tags;
		r = tm_ram_layout_add_block(g->layout, b->name, b->ram, b->len, b->page_size,
					    i ? 0x100000000ull : 0, error);
		if (r < 0)
			return r;
	}
	r = tm_tag_store_new(&tm_tag_store_soft, g->layout, arrays, &g->tags, error);
	if (r < 0)
		return r;
	g->pool = g_new(uint64_t, POOL_PAGES * POOL_PAGE / 8);
	for (size_t i = 0; i < POOL_PAGES * POOL_PAGE / 8; i++)
		g->pool[i] = mix(g->cfg.seed ^ 0x706f6f6cull ^ (i * 0x9e3779b97f4a7c15ull));
	/* The guest has run before the migration: every page written once, then tracking starts. */
	for (unsigned bi = 0; bi < g->nblocks; bi++)
		for (uint64_t p = 0; p < g->b[bi].pages; p++)
			write_page(g, bi, p, 1);
	for (unsigned bi = 0; bi < g->nblocks; bi++) {
		gblock *b = &g->b[bi];
		b->tags_seen = g_memdup2(b->tags, b->tags_len);
		if ((r = dirty_log_new(b->ram, b->len, DIRTY_LOG_AUTO, &b->ram_log, error)) < 0 ||
		    (r = dirty_log_new(b->tags, b->tags_len, DIRTY_LOG_AUTO, &b->tags_log, error)) < 0)
			return r;
	}
	g->w = g_new0(writer, g->cfg.writers);
	*ret = g_steal_pointer(&g);
	return 0;
}

const tm_ram_layout *test_guest_layout(test_guest *g)
{
	return g->layout;
}

tm_tag_store *test_guest_tags(test_guest *g)
{
	return g->tags;
}

const char *test_guest_dirty_method(test_guest *g)
{
	return dirty_log_name(g->b[0].ram_log);
}

void test_guest_start(test_guest *g)
{
	if (g_atomic_int_get(&g->running))
		return;
	g_atomic_int_set(&g->running, 1);
	for (unsigned i = 0; i < g->cfg.writers; i++) {
		g->w[i] = (writer){ .g = g, .id = i, .rng = mix(g->cfg.seed + i + 1) };
		g->w[i].thread = g_thread_new("vcpu", writer_fn, &g->w[i]);
	}
}

void test_guest_stop(test_guest *g)
{
	if (!g_atomic_int_get(&g->running))
		return;
	g_atomic_int_set(&g->running, 0);
	for (unsigned i = 0; i < g->cfg.writers; i++) {
		g_thread_join(g->w[i].thread);
		g->w[i].thread = NULL;
	}
}

/* Sets bit p of bm; returns 1 if it was clear. */
static int set_bit(uint64_t *bm, uint64_t p)
{
	uint64_t m = 1ull << (p % 64);
	int was_clear = !(bm[p / 64] & m);
	bm[p / 64] |= m;
	return was_clear;
}

int64_t test_guest_collect(test_guest *g, uint64_t **bitmaps, GError **error)
{
	int64_t added = 0;
	for (unsigned bi = 0; bi < g->nblocks; bi++) {
		gblock *b = &g->b[bi];
		size_t words = (b->len / g->host_page + 63) / 64;
		/* RAM: host pages to guest pages */
		memset(b->scratch, 0, words * 8);
		int64_t r = dirty_log_collect(b->ram_log, b->scratch, error);
		if (r < 0)
			return r;
		uint64_t per = b->page_size / g->host_page; /* host pages per guest page (>= 1) */
		for (uint64_t h = 0; h < b->len / g->host_page; h++)
			if (b->scratch[h / 64] & (1ull << (h % 64)))
				added += set_bit(bitmaps[bi], h / per);
		/* Tags: a tag-array host page holds the tags of host_page * 16 bytes of RAM */
		memset(b->scratch, 0, words * 8);
		r = dirty_log_collect(b->tags_log, b->scratch, error);
		if (r < 0)
			return r;
		uint64_t covered = g->host_page * TM_TAG_GRANULE; /* RAM bytes per tag-array page */
		for (uint64_t h = 0; h < (b->tags_len + g->host_page - 1) / g->host_page; h++) {
			if (!(b->scratch[h / 64] & (1ull << (h % 64))))
				continue;
			/*
			 * A tag-array page holds the tags of 16 (4 KiB) guest pages: only those whose
			 * tags differ from what the last collection saw are dirty, as a VMM that
			 * tracks tags per page would report (else one tag write would dirty 16
			 * pages). The dirty log re-protected the page before this read, so a write
			 * racing with it dirties the page again for the next collection.
			 */
			uint64_t first = h * covered / b->page_size;
			uint64_t last = MIN(((h + 1) * covered + b->page_size - 1) / b->page_size, b->pages);
			size_t ntags = b->page_size / TM_TAG_GRANULE;
			for (uint64_t p = first; p < last; p++) {
				uint8_t *now = b->tags + p * ntags, *seen = b->tags_seen + p * ntags;

				if (memcmp(now, seen, ntags) == 0)
					continue;
				memcpy(seen, now, ntags);
				added += set_bit(bitmaps[bi], p);
			}
		}
	}
	return added;
}

uint64_t test_guest_writes(test_guest *g)
{
	return __atomic_load_n(&g->writes, __ATOMIC_RELAXED);
}

uint32_t test_guest_generation(test_guest *g, unsigned b, uint64_t p)
{
	if (b >= g->nblocks || p >= g->b[b].pages)
		return 0;
	return __atomic_load_n(&g->b[b].gen[p], __ATOMIC_ACQUIRE);
}

bool test_guest_same(test_guest *g, const tm_ram_layout *other, tm_tag_store *other_tags,
		     char **ret_why)
{
	if (tm_ram_layout_block_count(other) != g->nblocks) {
		*ret_why = g_strdup_printf("%u blocks, the guest has %u",
					   tm_ram_layout_block_count(other), g->nblocks);
		return false;
	}
	for (unsigned bi = 0; bi < g->nblocks; bi++) {
		gblock *b = &g->b[bi];
		tm_ram_block_info oi;
		tm_ram_layout_block(other, bi, &oi);
		if (strcmp(oi.name, b->name) || oi.length != b->len || oi.page_size != b->page_size) {
			*ret_why = g_strdup_printf("block %u is '%s', the guest's '%s'", bi, oi.name, b->name);
			return false;
		}
		const uint8_t *ot = other_tags ? tm_tag_store_soft_array(other_tags, bi) : NULL;
		size_t ntags = b->page_size / TM_TAG_GRANULE;
		for (uint64_t p = 0; p < b->pages; p++) {
			const char *what = NULL;
			if (memcmp((uint8_t *)oi.host + p * b->page_size, b->ram + p * b->page_size,
				   b->page_size))
				what = "data differ";
			else if (!ot)
				what = "no tags on the other side";
			else if (memcmp(ot + p * ntags, b->tags + p * ntags, ntags))
				what = "tags differ";
			if (what) {
				*ret_why = g_strdup_printf("block '%s' page %" G_GUINT64_FORMAT " (generation %u): %s",
							   b->name, p, b->gen[p], what);
				return false;
			}
		}
	}
	return true;
}

void test_guest_free(test_guest *g)
{
	if (!g)
		return;
	test_guest_stop(g);
	tm_tag_store_free(g->tags);
	tm_ram_layout_free(g->layout);
	for (unsigned bi = 0; bi < g->nblocks; bi++) {
		gblock *b = &g->b[bi];
		dirty_log_free(b->ram_log);
		dirty_log_free(b->tags_log);
		if (b->ram_map)
			munmap(b->ram_map, b->ram_map_len);
		if (b->tags_map)
			munmap(b->tags_map, b->tags_map_len);
		g_free(b->gen);
		g_free(b->scratch);
		g_free(b->tags_seen);
	}
	g_free(g->w);
	g_free(g->pool);
	g_free(g);
}
