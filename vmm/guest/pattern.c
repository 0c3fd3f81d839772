/* What a pass writes into the window, and the two sweeps that check it.
 *
 * The window is cut into 4 KiB pages of four kinds (page index modulo 4), so that every pass
 * exercises what a migration must carry:
 *   0  data and tags: STG per granule, then the data through the tagged pointer;
 *   1  zero data, non-zero tags: STZ2G (zeroes 32 bytes, tags both granules);
 *   2  tags change, data does not: the data is written once (the first pass this guest runs),
 *      later passes only retag with ST2G, so only the tags of the page change;
 *   3  STGP: a pair of doublewords and the tag in one instruction.
 * Tags derive from the granule's address and the generation (the pass number), so consecutive
 * passes give every granule a different tag; data words from the address and the generation. */
#include "guest.h"

#define KINDS 4

static uint64_t mix(uint64_t x)
{
	/* a 64-bit finalizer: every input bit reaches every output bit */
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

static unsigned kind_of(uint64_t base, uint64_t addr)
{
	return (unsigned)(((addr - base) / PAGE) % KINDS);
}

uint64_t pattern_tag(uint64_t granule_addr, uint64_t gen)
{
	return (mix(granule_addr / GRANULE) + gen) & 0xf;
}

/* The tag of a zero-data page: never 0, so that a lost tag is always seen. */
static uint64_t zero_page_tag(uint64_t granule_addr, uint64_t gen)
{
	return (mix(granule_addr / GRANULE) + gen) % 15 + 1;
}

static uint64_t expected_tag(uint64_t base, uint64_t g, uint64_t gen)
{
	return kind_of(base, g) == 1 ? zero_page_tag(g, gen) : pattern_tag(g, gen);
}

uint64_t pattern_word(uint64_t addr, uint64_t gen)
{
	return mix(addr ^ (gen * 0x9e3779b97f4a7c15ULL));
}

static uint64_t expected_word(uint64_t base, uint64_t addr, uint64_t gen)
{
	switch (kind_of(base, addr)) {
	case 1:
		return 0;
	case 2:
		return pattern_word(addr, 0);
	default:
		return pattern_word(addr, gen);
	}
}

/* Kind 2 pages get their data once per boot of the guest; a migrated guest keeps the flag (it is
 * in RAM), so the destination goes on retagging data it never wrote. */
static int tagonly_written;

void pattern_write(uint64_t base, uint64_t size, uint64_t gen)
{
	for (uint64_t page = base; page < base + size; page += PAGE) {
		switch (kind_of(base, page)) {
		case 0:
			for (uint64_t g = page; g < page + PAGE; g += GRANULE) {
				uint64_t p = tagged(g, pattern_tag(g, gen));
				mte_stg(p);
				((volatile uint64_t *)p)[0] = pattern_word(g, gen);
				((volatile uint64_t *)p)[1] = pattern_word(g + 8, gen);
			}
			break;
		case 1:
			for (uint64_t g = page; g < page + PAGE; g += 2 * GRANULE) {
				/* both granules of the pair take the first one's tag */
				mte_stz2g(tagged(g, zero_page_tag(g, gen)));
			}
			break;
		case 2:
			for (uint64_t g = page; g < page + PAGE; g += 2 * GRANULE) {
				uint64_t p = tagged(g, pattern_tag(g, gen));
				mte_st2g(p);
				if (!tagonly_written)
					for (unsigned w = 0; w < 4; w++)
						((volatile uint64_t *)p)[w] = pattern_word(g + 8 * w, 0);
			}
			break;
		default:
			for (uint64_t g = page; g < page + PAGE; g += GRANULE)
				mte_stgp(tagged(g, pattern_tag(g, gen)), pattern_word(g, gen),
					 pattern_word(g + 8, gen));
			break;
		}
	}
	tagonly_written = 1;
}

/* The tag a granule must have: pairs written with ST2G/STZ2G carry the even granule's tag. */
static uint64_t granule_tag(uint64_t base, uint64_t g, uint64_t gen)
{
	unsigned k = kind_of(base, g);
	if (k == 1 || k == 2)
		g &= ~(2 * GRANULE - 1);
	return expected_tag(base, g, gen);
}

static void mismatch(const char *what, uint64_t gen, uint64_t addr, uint64_t want, uint64_t got)
{
	report_str("mismatch pass ");
	report_dec(gen);
	report_str(" ");
	report_str(what);
	report_str(" at ");
	report_hex(addr);
	report_str(" expected ");
	report_hex(want);
	report_str(" found ");
	report_hex(got);
	report_line_end();
}

/* Sweep 1 over [lo, hi) of the window at base: every word through a pointer carrying the
 * expected tag. A granule whose tag was lost or is stale faults here (synchronous Tag Check
 * Fault, reported by exception.c). */
static int check_data(uint64_t base, uint64_t lo, uint64_t hi, uint64_t gen)
{
	for (uint64_t g = lo; g < hi; g += GRANULE) {
		volatile uint64_t *p = (volatile uint64_t *)tagged(g, granule_tag(base, g, gen));
		for (unsigned w = 0; w < 2; w++) {
			uint64_t want = expected_word(base, g + 8 * w, gen);
			uint64_t got = p[w];
			if (got != want) {
				mismatch("data", gen, g + 8 * w, want, got);
				return -1;
			}
		}
	}
	return 0;
}

/* Sweep 2 over [lo, hi): every granule's Allocation Tag read with LDG, including those whose
 * expected tag is 0 (a 0-tagged pointer matches a lost tag, so sweep 1 cannot tell). */
static int check_tags(uint64_t base, uint64_t lo, uint64_t hi, uint64_t gen)
{
	for (uint64_t g = lo; g < hi; g += GRANULE) {
		uint64_t want = granule_tag(base, g, gen);
		uint64_t got = mte_ldg(g);
		if (got != want) {
			mismatch("tag", gen, g, want, got);
			return -1;
		}
	}
	return 0;
}

int pattern_check_data(uint64_t base, uint64_t size, uint64_t gen)
{
	return check_data(base, base, base + size, gen);
}

int pattern_check_tags(uint64_t base, uint64_t size, uint64_t gen)
{
	return check_tags(base, base, base + size, gen);
}

/* Both sweeps page by page over [lo, hi) of the window at base: from the last page down (down),
 * else from the first page up. */
int pattern_check_range(uint64_t base, uint64_t lo, uint64_t hi, uint64_t gen, int down)
{
	for (uint64_t i = 0; i < (hi - lo) / PAGE; i++) {
		uint64_t page = down ? hi - (i + 1) * PAGE : lo + i * PAGE;
		if (check_data(base, page, page + PAGE, gen) < 0 ||
		    check_tags(base, page, page + PAGE, gen) < 0)
			return -1;
	}
	return 0;
}

/* Both sweeps page by page from the last page down: a migrated guest touches the end of the
 * window first, where a migration streaming pages upwards arrives last, so that it faults. */
int pattern_check_down(uint64_t base, uint64_t size, uint64_t gen)
{
	return pattern_check_range(base, base, base + size, gen, 1);
}
