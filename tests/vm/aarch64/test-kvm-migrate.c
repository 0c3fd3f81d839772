/* SPDX-License-Identifier: MIT */
/*
 * A whole migration between two KVM VMs with MTE inside the emulated machine: the source VM's
 * memory gets data and non-uniform tags (through KVM), tagmig sends it over 127.0.0.1 on four
 * channels with the kvm-mte store reading tags through KVM, the destination receives into a VM
 * whose memory holds stale data and tags, setting tags through its own kvm-mte store. Two rounds,
 * then data and tags read back through KVM must be identical, zero-data pages with tags included.
 * Then a hostile sender aims a DATA packet past the end of a block, at a memslot that is not in
 * the layout: refused (-ERANGE) before any tag reaches KVM.
 */
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "codec/codec.h"
#include "kvm-test.h"
#include "tagmig/tagmig.h"

#define MiB (1ull << 20)
#define NBLK 2
#define CHANNELS 4

static const struct {
	const char *name;
	uint64_t len;
	uint32_t page_size;
	uint64_t ipa;
} spec[NBLK] = {
	{ "ram0", 8 * MiB, 4096, 0x40000000ull },
	{ "ram1", 2 * MiB, 65536, 0x80000000ull },
};
#define IPA_GUARD (0x40000000ull + 8 * MiB) /* right after ram0; in no layout */
#define GUARD_LEN (64 * 1024ull)

typedef struct vmside {
	int vm;
	uint8_t *ram[NBLK];
	tm_ram_layout *layout;
	tm_tag_store *store;
} vmside;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool side_init(vmside *s, int kvm, const char *what)
{
	g_autoptr(GError) err = NULL;
	const tm_tag_store_ops *ops = NULL;

	memset(s, 0, sizeof(*s));
	if ((s->vm = tk_vm_new_mte(kvm)) < 0)
		return false;
	tm_ram_layout_new(&s->layout);
	for (unsigned b = 0; b < NBLK; b++) {
		if (!(s->ram[b] = tk_ram_new(spec[b].len)))
			return false;
		int r = tk_memslot(s->vm, b, spec[b].ipa, spec[b].len, s->ram[b]);
		if (r < 0) {
			tk_fail("%s: memslot for %s: %s", what, spec[b].name, strerror(-r));
			return false;
		}
		tm_ram_layout_add_block(s->layout, spec[b].name, s->ram[b], spec[b].len,
					spec[b].page_size, spec[b].ipa, NULL);
	}
	tm_kvm_mte_config cfg = { .vm_fd = s->vm };
	if (tm_tag_store_lookup("kvm-mte", &ops, &err) < 0 ||
	    tm_tag_store_new(ops, s->layout, &cfg, &s->store, &err) < 0) {
		tk_fail("%s: kvm-mte store: %s", what, err->message);
		return false;
	}
	return true;
}

/* Writes page p of block b (data in RAM, tags into tags[]) in one of five shapes. */
static void shape_page(uint8_t *d, uint8_t *t, uint32_t ps, uint64_t seed, unsigned shape)
{
	size_t nt = ps / 16;
	switch (shape % 5) {
	case 0: /* data and non-uniform tags */
		for (size_t i = 0; i < ps; i += 8) {
			uint64_t v = tk_rand();
			memcpy(d + i, &v, 8);
		}
		tk_tags_fill(t, nt, seed, 0);
		break;
	case 1: /* zero data, zero tags */
		memset(d, 0, ps);
		memset(t, 0, nt);
		break;
	case 2: /* zero data that carries non-uniform tags */
		memset(d, 0, ps);
		tk_tags_fill(t, nt, seed + 7, 0);
		break;
	case 3: /* data, one tag for every granule */
		memset(d, (int)(seed & 0x7f) | 1, ps);
		memset(t, (int)(seed % 15) + 1, nt);
		break;
	default: /* data, zero tags */
		memset(d, 0x5a, ps);
		d[ps - 1] = (uint8_t)seed;
		memset(t, 0, nt);
		break;
	}
}

typedef struct recv_ctx {
	vmside *dst;
	int listen_fd;
	tm_receiver *r;
	GError *error;
	int ret;
} recv_ctx;

static gpointer receiver_thread(gpointer data)
{
	recv_ctx *c = data;
	tm_receiver_config cfg = { .timeout_ms = 60000 };

	c->ret = tm_receiver_new(&cfg, &c->r, &c->error);
	if (c->ret >= 0)
		c->ret = tm_receiver_accept(c->r, c->listen_fd, &c->error);
	if (c->ret >= 0)
		c->ret = tm_receiver_start(c->r, c->dst->layout, c->dst->store, &c->error);
	if (c->ret >= 0)
		c->ret = tm_receiver_wait(c->r, &c->error);
	return NULL;
}

/* Data compared through the host mappings, tags through KVM on both VMs. */
static bool same_memory(vmside *a, vmside *b, const char *when)
{
	bool ok = true;
	for (unsigned i = 0; i < NBLK; i++) {
		size_t nt = spec[i].len / 16;
		g_autofree uint8_t *ta = g_malloc(nt), *tb = g_malloc(nt);
		long ra = tk_copy_tags(a->vm, spec[i].ipa, spec[i].len, ta, true);
		long rb = tk_copy_tags(b->vm, spec[i].ipa, spec[i].len, tb, true);
		long dd = memcmp(a->ram[i], b->ram[i], spec[i].len) ? 1 : -1;
		long td = tk_first_diff(ta, tb, nt);
		if (ra != (long)spec[i].len || rb != (long)spec[i].len || dd != -1 || td != -1) {
			tk_fail("%s: block %s differs (tag reads %ld/%ld, data %s, first tag diff at "
				"granule %ld)",
				when, spec[i].name, ra, rb, dd == -1 ? "same" : "differs", td);
			ok = false;
		}
	}
	return ok;
}

static int hostile_connect(unsigned port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		return -1;
	return fd;
}

/* A sender that announces the destination's own layout, then aims one page past ram0's end. */
static void test_hostile(int kvm, vmside *src, vmside *dst)
{
	uint8_t guard_tags[GUARD_LEN / 16];
	uint8_t *guard = tk_ram_new(GUARD_LEN);
	tk_tags_fill(guard_tags, sizeof(guard_tags), 77, 0);
	if (tk_memslot(dst->vm, NBLK, IPA_GUARD, GUARD_LEN, guard) < 0 ||
	    tk_copy_tags(dst->vm, IPA_GUARD, GUARD_LEN, guard_tags, false) != (long)GUARD_LEN) {
		tk_fail("hostile: guard memslot after ram0");
		return;
	}

	recv_ctx rc = { .dst = dst };
	unsigned port = 0;
	rc.listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	GThread *th = g_thread_new("receiver", receiver_thread, &rc);
	int fd = hostile_connect(port);
	if (fd < 0) {
		tk_fail("hostile: connect: %s", strerror(errno));
		return;
	}

	tm_wire_block wb[NBLK];
	memset(wb, 0, sizeof(wb));
	for (unsigned b = 0; b < NBLK; b++) {
		g_strlcpy(wb[b].name, spec[b].name, sizeof(wb[b].name));
		wb[b].length = spec[b].len;
		wb[b].guest_base = spec[b].ipa;
		wb[b].page_size = spec[b].page_size;
	}
	tm_hello h = { .channel_id = 0, .channel_count = 1, .features = TM_FEATURE_TAGS_MTE4,
		       .packet_size = 512 * 1024, .chunk_size = 2 * MiB, .block_count = NBLK,
		       .blocks = wb };
	memset(h.session_id, 0x42, sizeof(h.session_id));
	g_autoptr(GError) err = NULL;
	if (tm_hello_check(&h, &err) < 0) {
		tk_fail("hostile: HELLO: %s", err->message);
		return;
	}
	size_t bl = tm_hello_body_len(&h);
	g_autofree uint8_t *hb = g_malloc(TM_FRAME_HDR_LEN + bl);
	tm_frame_encode(hb, TM_MSG_HELLO, (uint32_t)bl, 0);
	tm_hello_encode(&h, hb + TM_FRAME_HDR_LEN);
	(void)!write(fd, hb, TM_FRAME_HDR_LEN + bl);

	/* DATA: block 0, one NORMAL page at index npages (= the guard slot), uniform tag 0xf. */
	const uint32_t npages = (uint32_t)(spec[0].len / 4096);
	static uint8_t msg[TM_FRAME_HDR_LEN + TM_DATA_HDR_LEN + TM_PAGE_ENTRY_LEN + 4096 + 1];
	memset(msg, 0xee, sizeof(msg));
	tm_frame_encode(msg, TM_MSG_DATA, sizeof(msg) - TM_FRAME_HDR_LEN, 1);
	uint8_t *d = msg + TM_FRAME_HDR_LEN;
	tm_put32(d, 0);       /* block */
	tm_put32(d + 4, 1);   /* page count */
	tm_put32(d + 8, 4096); /* data length */
	tm_put32(d + 12, 1);  /* tag length */
	tm_put32(d + 16, npages);
	d[20] = TM_PAGE_NORMAL;
	d[21] = TM_TAGS_UNIFORM;
	tm_put16(d + 22, 0);
	msg[sizeof(msg) - 1] = 0x0f;
	/* Wait for the acknowledgement, so the packet meets a started receiver. */
	uint8_t ack[TM_FRAME_HDR_LEN + 8];
	ssize_t n = recv(fd, ack, sizeof(ack), MSG_WAITALL);
	(void)!write(fd, msg, sizeof(msg));
	g_thread_join(th);
	close(fd);
	close(rc.listen_fd);

	TK_CHECK(n == (ssize_t)sizeof(ack) && ack[5] == TM_MSG_HELLO_ACK,
		 "hostile sender with the destination's own layout is accepted");
	TK_CHECK(rc.ret == -ERANGE && rc.error && strstr(rc.error->message, "2048"),
		 "DATA page 2048 of the 2048-page block ram0 refused with -ERANGE: %s",
		 rc.error ? rc.error->message : "(no error)");
	g_autofree uint8_t *back = g_malloc(GUARD_LEN / 16);
	long gr = tk_copy_tags(dst->vm, IPA_GUARD, GUARD_LEN, back, true);
	TK_CHECK(gr == (long)GUARD_LEN && tk_first_diff(guard_tags, back, GUARD_LEN / 16) == -1,
		 "the memslot past ram0 kept its tags (the refusal came before any ioctl)");
	bool g0 = true;
	for (size_t i = 0; i < GUARD_LEN; i++)
		g0 &= guard[i] == 0;
	TK_CHECK(g0, "the memslot past ram0 kept its data");
	TK_CHECK(same_memory(src, dst, "after the hostile packet"),
		 "destination RAM and tags unchanged by the hostile packet");
	tm_receiver_free(rc.r);
	g_clear_error(&rc.error);
	(void)kvm;
}

int main(void)
{
	g_autoptr(GError) err = NULL;
	int kvm = tk_open_kvm();
	vmside src, dst;
	if (kvm < 0 || !side_init(&src, kvm, "source") || !side_init(&dst, kvm, "destination"))
		return tk_finish();

	/* Source content, tags through KVM; stale content on the destination. */
	g_autofree uint8_t *tags[NBLK];
	uint64_t zero_tagged = 0;
	for (unsigned b = 0; b < NBLK; b++) {
		uint32_t ps = spec[b].page_size;
		size_t nt = spec[b].len / 16;
		tags[b] = g_malloc(nt);
		for (uint64_t p = 0; p < spec[b].len / ps; p++) {
			unsigned shape = (unsigned)(tk_rand() % 5);
			zero_tagged += shape == 2;
			shape_page(src.ram[b] + p * ps, tags[b] + p * ps / 16, ps, p * 31 + b, shape);
		}
		long r = tk_copy_tags(src.vm, spec[b].ipa, spec[b].len, tags[b], false);
		g_autofree uint8_t *stale = g_malloc(nt);
		tk_tags_fill(stale, nt, 1000 + b, 0);
		for (size_t i = 0; i < spec[b].len; i += 8) {
			uint64_t v = tk_rand();
			memcpy(dst.ram[b] + i, &v, 8);
		}
		long r2 = tk_copy_tags(dst.vm, spec[b].ipa, spec[b].len, stale, false);
		TK_CHECK(r == (long)spec[b].len && r2 == (long)spec[b].len,
			 "%s: source data and tags set through KVM, destination holds stale data and tags",
			 spec[b].name);
	}
	tk_info("%" G_GUINT64_FORMAT " zero-data pages with non-zero tags in the source", zero_tagged);

	recv_ctx rc = { .dst = &dst };
	unsigned port = 0;
	rc.listen_fd = tm_listen("127.0.0.1", "0", &port, &err);
	if (rc.listen_fd < 0) {
		tk_fail("tm_listen: %s", err->message);
		return tk_finish();
	}
	GThread *th = g_thread_new("receiver", receiver_thread, &rc);
	g_autofree char *ports = g_strdup_printf("%u", port);
	tm_sender_config cfg = { .channels = CHANNELS, .chunk_size = 512 * 1024,
				 .packet_size = 128 * 1024, .timeout_ms = 60000 };
	g_autoptr(tm_sender) s = NULL;
	double t0 = now();
	int r = tm_sender_new(src.layout, src.store, &cfg, &s, &err);
	if (r >= 0)
		r = tm_sender_connect(s, "127.0.0.1", ports, &err);
	TK_CHECK(r == 0, "sender with the kvm-mte store connected on %u channels: %s", CHANNELS,
		 err ? err->message : "ok");
	if (r < 0) {
		g_thread_join(th);
		return tk_finish();
	}

	/* Round 1: everything. */
	for (unsigned b = 0; b < NBLK && r >= 0; b++) {
		uint64_t np = spec[b].len / spec[b].page_size;
		g_autofree uint64_t *bm = g_new0(uint64_t, (np + 63) / 64);
		for (uint64_t i = 0; i < np; i++)
			bm[i / 64] |= 1ull << (i % 64);
		r = tm_sender_queue_bitmap(s, b, bm, 0, np, &err);
	}
	if (r >= 0)
		r = tm_sender_sync(s, &err);
	TK_CHECK(r == 0, "round 1 (every page) synced: %s", err ? err->message : "ok");
	if (r == 0)
		TK_CHECK(same_memory(&src, &dst, "after round 1"),
			 "after round 1 data and tags read back through KVM are identical");

	/* Round 2: the guest changed some pages; some data pages become zero pages with tags. */
	unsigned changed = 0;
	for (unsigned b = 0; b < NBLK && r >= 0; b++) {
		uint32_t ps = spec[b].page_size;
		g_autoptr(GArray) dirty = g_array_new(FALSE, FALSE, sizeof(uint64_t));
		for (uint64_t p = tk_rand() % 5; p < spec[b].len / ps; p += 1 + tk_rand() % 9) {
			unsigned shape = (p % 3 == 0) ? 2 : (unsigned)(tk_rand() % 5);
			shape_page(src.ram[b] + p * ps, tags[b] + p * ps / 16, ps, p * 57 + 3, shape);
			if (tk_copy_tags(src.vm, spec[b].ipa + p * ps, ps, tags[b] + p * ps / 16, false) !=
			    (long)ps)
				tk_fail("round 2: retagging %s page %" G_GUINT64_FORMAT, spec[b].name, p);
			g_array_append_val(dirty, p);
		}
		changed += dirty->len;
		r = tm_sender_queue_pages(s, b, (uint64_t *)(void *)dirty->data, dirty->len, &err);
	}
	if (r >= 0)
		r = tm_sender_finish(s, &err);
	double t1 = now();
	g_thread_join(th);
	close(rc.listen_fd);
	TK_CHECK(r == 0 && rc.ret == 0, "round 2 (%u changed pages) and finish: sender %s, receiver %s",
		 changed, err ? err->message : "ok", rc.error ? rc.error->message : "ok");

	tm_stats ss, rs;
	tm_sender_get_stats(s, &ss);
	if (rc.r)
		tm_receiver_get_stats(rc.r, &rs);
	else
		memset(&rs, 0, sizeof(rs));
	tk_info("sent %" G_GUINT64_FORMAT " pages (%" G_GUINT64_FORMAT " normal, %" G_GUINT64_FORMAT
		" zero, %" G_GUINT64_FORMAT " zero with tags), %" G_GUINT64_FORMAT
		" tag bytes, %u channels, %.2f s",
		ss.pages, ss.pages_by_kind[TM_PAGE_NORMAL], ss.pages_by_kind[TM_PAGE_ZERO],
		ss.pages_by_kind[TM_PAGE_ZERO_TAGGED], ss.tag_bytes, ss.channels, t1 - t0);
	TK_CHECK(ss.channels == CHANNELS && rs.pages == ss.pages &&
			 rs.pages_by_kind[TM_PAGE_ZERO_TAGGED] > 0 &&
			 rs.pages_by_tag_enc[TM_TAGS_PACKED] > 0,
		 "receiver applied every page sent, zero-data pages with tags and packed tags among them");
	TK_CHECK(same_memory(&src, &dst, "after finish"),
		 "after the migration data and tags read back through KVM are identical on both VMs");

	/* Zero-data pages that carry tags, checked one by one. */
	uint64_t zt = 0, zt_ok = 0;
	for (unsigned b = 0; b < NBLK; b++) {
		uint32_t ps = spec[b].page_size;
		g_autofree uint8_t *dt = g_malloc(ps / 16);
		static const uint8_t zero[65536];
		for (uint64_t p = 0; p < spec[b].len / ps; p++) {
			const uint8_t *st = tags[b] + p * ps / 16;
			if (memcmp(src.ram[b] + p * ps, zero, ps) != 0 || memcmp(st, zero, ps / 16) == 0)
				continue;
			zt++;
			long k = tk_copy_tags(dst.vm, spec[b].ipa + p * ps, ps, dt, true);
			zt_ok += k == (long)ps && memcmp(dt, st, ps / 16) == 0 &&
				 memcmp(dst.ram[b] + p * ps, zero, ps) == 0;
		}
	}
	TK_CHECK(zt > 0 && zt_ok == zt,
		 "%" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
		 " zero-data pages with tags arrived as zero pages with their tags", zt_ok, zt);
	tm_receiver_free(rc.r);
	g_clear_error(&rc.error);

	test_hostile(kvm, &src, &dst);
	return tk_finish();
}
