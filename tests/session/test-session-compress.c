/* SPDX-License-Identifier: MIT */
/*
 * Compression on the wire (issue 15): every codec path of a real session round-trips RAM and tags
 * bit-exact (zero pages with tags, uniform and packed tags, stale destination pages), what is
 * agreed and counted is what the statistics say, protocol 1 never compresses; and a hand-made
 * protocol 2 sender's hostile ZDATA packets (corrupt frames, a decompression bomb, too little
 * output, lengths that lie, a codec not agreed, a bad tag in front of valid data) are refused
 * with the channel, block and offset named, nothing written outside the packet's pages and its
 * pages never marked present. Every test runs for each backend pair (session-fixture.c).
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "codec/codec.h"
#include "codec/compress.h"
#include "session-fixture.h"
#include "transport/transport.h"

static bool have(tm_zcodec c)
{
	return tm_zcodec_available() & (1u << c);
}

/* The sums of every channel's compression statistics of one side. */
static void sum_stats(tm_sender *s, tm_receiver *r, unsigned channels, tm_compress_stats *ret)
{
	memset(ret, 0, sizeof(*ret));
	for (unsigned i = 0; i < channels; i++) {
		tm_compress_stats c = { .size = sizeof(c) };
		g_assert_cmpint(s ? tm_sender_get_compress_stats(s, i, &c)
				  : tm_receiver_get_compress_stats(r, i, &c), ==, 0);
		g_assert_cmpuint(c.size, ==, sizeof(c));
		ret->mode = c.mode;
		ret->codecs |= c.codecs;
		for (unsigned k = 0; k < 3; k++)
			ret->packets_by_codec[k] += c.packets_by_codec[k];
		ret->data_bytes += c.data_bytes;
		ret->wire_data_bytes += c.wire_data_bytes;
	}
	tm_compress_stats c = { .size = sizeof(c) };
	g_assert_cmpint(s ? tm_sender_get_compress_stats(s, channels, &c)
			  : tm_receiver_get_compress_stats(r, channels, &c), ==, -ERANGE);
}

/* One migration of two rounds (the second re-sends a third of the pages) with compress mode. */
static void migrate_mode(uint32_t mode, int32_t level, uint32_t wire, uint32_t page_size)
{
	const block_spec spec[] = { { "pc.ram", 4 << 20, page_size }, { "vram", 1 << 20, 4096 } };
	const unsigned channels = 3;
	guest src, dst;
	peer p;
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;

	guest_init(&src, spec, 2, true);
	guest_init(&dst, spec, 2, true);
	guest_fill(&src);
	guest_fill(&dst); /* stale: zero pages and zero tags must overwrite it */
	g_autofree char *port = peer_start_ex(&p, &dst, false, 0);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir,
				 .channels = channels, .packet_size = 256 << 10,
				 .timeout_ms = 20000 };
	tm_live_config live = { .size = sizeof(live), .wire_version = wire, .compress = mode,
				.compress_level = level };
	g_assert_cmpint(tm_sender_new(src.layout, src.tags, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_set_live(s, &live, &err), ==, 0);
	tm_compress_stats early = { .size = sizeof(early) };
	g_assert_cmpint(tm_sender_get_compress_stats(s, 0, &early), ==, -EBADFD);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", port, &err), ==, 0);
	for (int round = 0; round < 2; round++) {
		for (unsigned b = 0; b < 2; b++) {
			uint64_t np = spec[b].len / spec[b].page_size;
			g_autoptr(GArray) pages = g_array_new(FALSE, FALSE, sizeof(uint64_t));
			for (uint64_t i = 0; i < np; i++) {
				if (round == 1 && i % 3)
					continue;
				if (round == 1)
					fill_page(&src, b, i, (unsigned)(i / 3));
				g_array_append_val(pages, i);
			}
			g_assert_cmpint(tm_sender_queue_pages(s, b, (uint64_t *)pages->data,
							      pages->len, &err), ==, 0);
		}
		if (round == 0)
			g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
	}
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	peer_join(&p);
	g_assert_no_error(p.error);
	assert_same(&src, &dst);

	tm_compress_stats ss, rs;
	sum_stats(s, NULL, channels, &ss);
	sum_stats(NULL, p.r, channels, &rs);
	g_test_message("mode %u level %d protocol %u: packets raw %" G_GUINT64_FORMAT
		       ", lz4 %" G_GUINT64_FORMAT ", zstd %" G_GUINT64_FORMAT ", ratio %.3f",
		       mode, level, wire ? wire : 2, ss.packets_by_codec[0], ss.packets_by_codec[1],
		       ss.packets_by_codec[2],
		       ss.data_bytes ? (double)ss.wire_data_bytes / (double)ss.data_bytes : 0);
	/* Both sides count the same packets and bytes. */
	for (unsigned k = 0; k < 3; k++)
		g_assert_cmpuint(ss.packets_by_codec[k], ==, rs.packets_by_codec[k]);
	g_assert_cmpuint(ss.data_bytes, ==, rs.data_bytes);
	g_assert_cmpuint(ss.wire_data_bytes, ==, rs.wire_data_bytes);
	g_assert_cmpuint(ss.codecs, ==, rs.codecs);
	/* tm_stats.data_bytes is the page data as it went on the wire. */
	tm_stats st;
	tm_sender_get_stats(s, &st);
	g_assert_cmpuint(st.data_bytes, ==, ss.wire_data_bytes);
	bool v1 = wire == TM_WIRE_VERSION_1;
	switch (mode) {
	case TM_COMPRESS_NONE:
		g_assert_cmpuint(ss.codecs, ==, 0);
		g_assert_cmpuint(ss.packets_by_codec[1] + ss.packets_by_codec[2], ==, 0);
		break;
	case TM_COMPRESS_LZ4:
		g_assert_cmpuint(ss.codecs, ==, v1 ? 0 : TM_FEATURE_LZ4);
		g_assert_true(v1 ? ss.packets_by_codec[1] == 0 : ss.packets_by_codec[1] > 0);
		g_assert_cmpuint(ss.packets_by_codec[2], ==, 0);
		break;
	case TM_COMPRESS_ZSTD:
		g_assert_cmpuint(ss.codecs, ==, v1 ? 0 : TM_FEATURE_ZSTD);
		g_assert_true(v1 ? ss.packets_by_codec[2] == 0 : ss.packets_by_codec[2] > 0);
		g_assert_cmpuint(ss.packets_by_codec[1], ==, 0);
		break;
	default:
		break;
	}
	if (!v1 && (mode == TM_COMPRESS_LZ4 || mode == TM_COMPRESS_ZSTD))
		g_assert_cmpuint(ss.wire_data_bytes, <, ss.data_bytes);
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

static void test_roundtrip_lz4(void)
{
	if (!have(TM_ZCODEC_LZ4)) {
		g_test_skip("lz4 is not built into this tagmig");
		return;
	}
	migrate_mode(TM_COMPRESS_LZ4, 0, 0, 4096);
	migrate_mode(TM_COMPRESS_LZ4, 0, 0, 65536);
}

static void test_roundtrip_zstd(void)
{
	if (!have(TM_ZCODEC_ZSTD)) {
		g_test_skip("zstd is not built into this tagmig");
		return;
	}
	migrate_mode(TM_COMPRESS_ZSTD, 0, 0, 4096);
	migrate_mode(TM_COMPRESS_ZSTD, -7, 0, 16384);
	migrate_mode(TM_COMPRESS_ZSTD, 19, 0, 65536);
}

static void test_roundtrip_none_auto(void)
{
	migrate_mode(TM_COMPRESS_NONE, 0, 0, 4096);
	migrate_mode(TM_COMPRESS_AUTO, 0, 0, 4096);
	migrate_mode(TM_COMPRESS_DEFAULT, 0, 0, 16384);
}

/*
 * A rate limit (QEMU's max-bandwidth) makes the link slow whatever loopback could do: auto
 * compresses then, and the migration takes less than its raw bytes at the limit would.
 * random_head: that many random pages at the start of every packet (64 pages of 4 KiB), the
 * rest compressible, so that a codec judged by a packet's first pages only would look useless.
 */
static void auto_rate_limited(uint64_t len, unsigned random_head)
{
	const block_spec spec[] = { { "pc.ram", len, 4096 } };
	const uint64_t rate = 4 << 20;
	guest src, dst;
	peer p;
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;

	if (!have(TM_ZCODEC_LZ4) && !have(TM_ZCODEC_ZSTD)) {
		g_test_skip("no codec is built into this tagmig");
		return;
	}
	guest_init(&src, spec, 1, true);
	guest_init(&dst, spec, 1, true);
	/* Compressible pages (patterns, uniform tags; no zero page) behind the random head. */
	for (uint64_t i = 0; i < spec[0].len / 4096; i++)
		fill_page(&src, 0, i, i % 64 < random_head ? 0 : i % 2 ? 3 : 4);
	g_autofree char *port = peer_start_ex(&p, &dst, true, 0);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 2,
				 .packet_size = 256 << 10, .timeout_ms = 20000 };
	tm_live_config live = { .size = sizeof(live), .rate_limit = rate,
				.compress = TM_COMPRESS_AUTO };
	g_assert_cmpint(tm_sender_new(src.layout, src.tags, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_set_live(s, &live, &err), ==, 0);
	int64_t t0 = g_get_monotonic_time();
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", port, &err), ==, 0);
	uint64_t np = spec[0].len / 4096;
	g_autofree uint64_t *pages = g_new(uint64_t, np);
	for (uint64_t i = 0; i < np; i++)
		pages[i] = i;
	g_assert_cmpint(tm_sender_queue_pages(s, 0, pages, np, &err), ==, 0);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	peer_join(&p);
	g_assert_no_error(p.error);
	assert_same(&src, &dst);
	tm_compress_stats ss;
	sum_stats(s, NULL, 2, &ss);
	g_test_message("%" G_GUINT64_FORMAT " MiB (%u random pages in 64) at 4 MiB/s with auto: "
		       "%.2f s, packets raw %" G_GUINT64_FORMAT ", lz4 %" G_GUINT64_FORMAT
		       ", zstd %" G_GUINT64_FORMAT ", ratio %.3f", len >> 20, random_head, secs,
		       ss.packets_by_codec[0], ss.packets_by_codec[1], ss.packets_by_codec[2],
		       (double)ss.wire_data_bytes / (double)ss.data_bytes);
	g_assert_cmpuint(ss.packets_by_codec[1] + ss.packets_by_codec[2], >, ss.packets_by_codec[0]);
	/* All compressible: under half; a random quarter: under three quarters (raw: 1). */
	g_assert_cmpfloat((double)ss.wire_data_bytes, <,
			  (random_head ? 0.75 : 0.5) * (double)ss.data_bytes);
	/* Raw, len at 4 MiB/s takes len / rate seconds (less the bucket's burst). */
	g_assert_cmpfloat(secs, <, 0.75 * (double)len / (double)rate);
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

static void test_auto_under_rate_limit(void)
{
	auto_rate_limited(4 << 20, 0);
}

/* Random pages at the start of every packet: auto's samples must see the rest of it too. */
static void test_auto_samples_whole_packet(void)
{
	auto_rate_limited(8 << 20, 16);
}

/* Protocol 1 has no ZDATA: a sender configured for lz4 sends everything raw, and it works. */
static void test_protocol1_never(void)
{
	if (!have(TM_ZCODEC_LZ4)) {
		g_test_skip("lz4 is not built into this tagmig");
		return;
	}
	migrate_mode(TM_COMPRESS_LZ4, 0, TM_WIRE_VERSION_1, 4096);
}

static void test_config_refused(void)
{
	guest src;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };
	g_autoptr(tm_sender) s = NULL;
	g_autoptr(GError) err = NULL;
	uint32_t mode = 0;
	int32_t level = 0;

	guest_init(&src, a, 1, false);
	g_assert_cmpint(tm_sender_new(src.layout, NULL, NULL, &s, &err), ==, 0);
	tm_live_config bad = { .size = sizeof(bad), .compress = 9 };
	g_assert_cmpint(tm_sender_set_live(s, &bad, &err), ==, -EINVAL);
	g_assert_nonnull(strstr(err->message, "compress 9"));
	g_clear_error(&err);
	tm_live_config lvl = { .size = sizeof(lvl), .compress = TM_COMPRESS_ZSTD,
			       .compress_level = 20 };
	g_assert_cmpint(tm_sender_set_live(s, &lvl, &err), ==, -EINVAL);
	g_clear_error(&err);
	tm_live_config lz_lvl = { .size = sizeof(lz_lvl), .compress = TM_COMPRESS_LZ4,
				  .compress_level = 3 };
	g_assert_cmpint(tm_sender_set_live(s, &lz_lvl, &err), ==, -EINVAL);
	g_assert_nonnull(strstr(err->message, "zstd only"));
	g_clear_error(&err);

	g_assert_cmpint(tm_compress_parse("zstd:7", &mode, &level, &err), ==,
			have(TM_ZCODEC_ZSTD) ? 0 : -EOPNOTSUPP);
	if (have(TM_ZCODEC_ZSTD)) {
		g_assert_cmpuint(mode, ==, TM_COMPRESS_ZSTD);
		g_assert_cmpint(level, ==, 7);
	}
	g_clear_error(&err);
	g_assert_cmpint(tm_compress_parse("auto", &mode, &level, &err), ==, 0);
	g_assert_cmpuint(mode, ==, TM_COMPRESS_AUTO);
	g_assert_cmpint(level, ==, 0);
	static const char *const wrong[] = { "zstd:", "zstd:20", "zstd:x", "gzip", "", "lz4:1" };
	for (unsigned i = 0; i < G_N_ELEMENTS(wrong); i++) {
		g_assert_cmpint(tm_compress_parse(wrong[i], &mode, &level, &err), ==, -EINVAL);
		g_clear_error(&err);
	}
	g_assert_cmpstr(tm_compress_mode_name(TM_COMPRESS_DEFAULT), ==, "auto");
	g_assert_null(tm_compress_mode_name(5));
	guest_fini(&src);
}

/* ---- a hand-made protocol 2 sender: HELLO with the features it wants, then one ZDATA ---- */

#define NPAGES 4u
#define FIRST_PAGE 8u

typedef struct zcase {
	const char *what;
	uint32_t features; /* offered in HELLO */
	int errnum;
	const char *substr;
	bool decoded;      /* the failure is the decoder's: block and offset are named */
} zcase;

/* The compressed section and ZDATA header fields a case sends. */
static size_t make_payload(const zcase *zc, tm_zctx *z, uint8_t *const *pages, uint8_t *out,
			   size_t cap, uint8_t *ret_codec, uint32_t *ret_zlen)
{
	const char *w = zc->what;
	uint8_t codec = g_str_has_prefix(w, "lz4") ? TM_ZCODEC_LZ4 : TM_ZCODEC_ZSTD;
	unsigned n = NPAGES;
	g_autofree uint8_t *more = NULL;
	g_autofree uint8_t **mp = NULL;

	if (strcmp(w, "zstd-bomb") == 0) {
		/* A frame of 64 pages (stated in its header) for a packet of 4. */
		n = 64;
		more = g_malloc0((size_t)n * 4096);
		mp = g_new(uint8_t *, n);
		for (unsigned i = 0; i < n; i++)
			mp[i] = more + (size_t)i * 4096;
		pages = mp;
	} else if (strcmp(w, "zstd-short") == 0) {
		n = NPAGES - 1;
	}
	ssize_t len = tm_zcompress(z, codec, 1, pages, n, 4096, out, cap, NULL);
	g_assert_cmpint(len, >, 0);
	if (strcmp(w, "zstd-corrupt") == 0)
		out[len / 2] ^= 0xff, out[len / 2 + 1] ^= 0x55, out[0] ^= 0x01; /* magic too */
	if (strcmp(w, "zstd-truncated") == 0)
		len -= 10; /* the frame's end cut off: it decodes to less than the pages */
	if (strcmp(w, "lz4-past-input") == 0)
		tm_put32(out, 0x7fffffff);
	if (strcmp(w, "lz4-trailing") == 0)
		out[len++] = 0;
	*ret_codec = codec;
	*ret_zlen = (uint32_t)len;
	if (strcmp(w, "zlen-too-big") == 0) {
		/* The pages as they are, called compressed: zlen == data_len. */
		for (unsigned i = 0; i < NPAGES; i++)
			memcpy(out + (size_t)i * 4096, pages[i], 4096);
		*ret_zlen = NPAGES * 4096;
		return NPAGES * 4096;
	}
	if (strcmp(w, "unknown-codec") == 0)
		*ret_codec = 3;
	return (size_t)len;
}

static void run_zcase(const zcase *zc)
{
	bool tags = strcmp(zc->what, "zstd-bad-tag") == 0;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };
	guest dst;
	peer p;
	g_autoptr(tm_zctx) z = NULL;
	uint8_t pagebuf[NPAGES][4096];
	uint8_t *pages[NPAGES];

	guest_init(&dst, a, 1, tags);
	g_autofree char *port = peer_start(&p, &dst);
	uint32_t features = zc->features | (tags ? TM_FEATURE_TAGS_MTE4 : 0);
	int fd0 = raw_hello2(port, TM_ROLE_DATA, features, 5);
	int fdc = raw_hello2(port, TM_ROLE_CONTROL, features, 5);
	uint8_t ack[TM_FRAME_HDR_LEN + TM_HELLO_ACK2_LEN];
	for (int k = 0; k < 2; k++) {
		g_assert_cmpint(recv(k ? fdc : fd0, ack, sizeof(ack), MSG_WAITALL), ==, sizeof(ack));
		g_assert_cmpuint(ack[5], ==, TM_MSG_HELLO_ACK);
		/* The receiver accepts exactly the codecs offered that it has. */
		uint32_t want = zc->features & TM_FEATURES_COMPRESS &
				((have(TM_ZCODEC_LZ4) ? TM_FEATURE_LZ4 : 0) |
				 (have(TM_ZCODEC_ZSTD) ? TM_FEATURE_ZSTD : 0));
		g_assert_cmpuint(tm_get32(ack + TM_FRAME_HDR_LEN) & TM_FEATURES_COMPRESS, ==, want);
	}

	/* Four compressible pages 8..11 (a pattern per page), compressed as the case says. */
	for (unsigned i = 0; i < NPAGES; i++) {
		for (unsigned j = 0; j < 4096; j++)
			pagebuf[i][j] = (uint8_t)((j / 64) * (i + 3));
		pages[i] = pagebuf[i];
	}
	g_assert_cmpint(tm_zctx_new(512 * 1024, &z, NULL), ==, 0);
	size_t cap = tm_zctx_bound(z) + 16;
	g_autofree uint8_t *zbuf = g_malloc(cap);
	uint8_t codec;
	uint32_t zlen;
	size_t plen = make_payload(zc, z, pages, zbuf, cap, &codec, &zlen);

	uint32_t tag_len = tags ? NPAGES : 0;
	size_t body = TM_ZDATA_HDR_LEN + TM_DATA_HDR_LEN + 8 * NPAGES + plen + tag_len;
	g_autofree uint8_t *msg = g_malloc0(TM_FRAME_HDR_LEN + body);
	tm_frame_encode_v(msg, 2, TM_MSG_ZDATA, (uint32_t)body, 1);
	uint8_t *q = msg + TM_FRAME_HDR_LEN;
	q[0] = codec;
	q[3] = strcmp(zc->what, "reserved") == 0 ? 1 : 0;
	tm_put32(q + 4, zlen);
	q += TM_ZDATA_HDR_LEN;
	tm_put32(q, 0);
	tm_put32(q + 4, NPAGES);
	tm_put32(q + 8, NPAGES * 4096);
	tm_put32(q + 12, tag_len);
	for (unsigned i = 0; i < NPAGES; i++) {
		tm_put32(q + 16 + 8 * i, FIRST_PAGE + i);
		q[20 + 8 * i] = TM_PAGE_NORMAL;
		q[21 + 8 * i] = tags ? TM_TAGS_UNIFORM : TM_TAGS_ZERO;
	}
	q += TM_DATA_HDR_LEN + 8 * NPAGES;
	memcpy(q, zbuf, plen);
	for (unsigned i = 0; i < tag_len; i++)
		q[plen + i] = i == NPAGES - 1 ? 0x35 : 0x05; /* the last: high nibble set */
	/* The receiver may stop reading at its first objection: send what it takes. */
	(void)!send(fd0, msg, TM_FRAME_HDR_LEN + body, MSG_NOSIGNAL);
	peer_join(&p);
	g_test_message("%s: receiver: %s", zc->what, p.error ? p.error->message : "(none)");
	g_assert_cmpint(p.ret, ==, -zc->errnum);
	g_assert_nonnull(strstr(p.error->message, "channel 0"));
	g_assert_nonnull(strstr(p.error->message, zc->substr));
	if (zc->decoded) {
		g_assert_nonnull(strstr(p.error->message, "block 'pc.ram', offset 0x8000"));
		g_assert_nonnull(strstr(p.error->message, "not applied"));
	}
	/* Nothing outside the packet's pages was written; with the bad tag, nothing at all. */
	uint8_t *ram = dst.ram[0];
	g_assert_true(tm_buffer_is_zero(ram, FIRST_PAGE * 4096));
	g_assert_true(tm_buffer_is_zero(ram + (FIRST_PAGE + NPAGES) * 4096,
					(1 << 20) - (FIRST_PAGE + NPAGES) * 4096));
	if (!zc->decoded)
		g_assert_true(tm_buffer_is_zero(ram, 1 << 20));
	for (unsigned i = 0; i < NPAGES; i++)
		g_assert_false(tm_receiver_page_present(p.r, 0, FIRST_PAGE + i));
	close(fd0);
	close(fdc);
	peer_free(&p);
	guest_fini(&dst);
}

static void test_hostile_zdata(void)
{
	const uint32_t both = TM_FEATURE_LZ4 | TM_FEATURE_ZSTD;
	const zcase cases[] = {
		{ "zstd-corrupt", both, EBADMSG, "zstd data", true },
		{ "zstd-bomb", both, EBADMSG, "the frame states another size", true },
		{ "zstd-short", both, EBADMSG, "the frame states another size", true },
		{ "zstd-truncated", both, EBADMSG, "zstd data", true },
		{ "lz4-past-input", both, EBADMSG, "lz4 data", true },
		{ "lz4-trailing", both, EBADMSG, "after the packet's 4 pages", true },
		{ "zlen-too-big", both, EBADMSG, "must be 1..data_len - 1", false },
		{ "zstd-not-agreed", TM_FEATURE_LZ4, EPROTO, "zstd was not agreed", false },
		{ "lz4-not-offered", 0, EPROTO, "lz4 was not agreed", false },
		{ "unknown-codec", both, EBADMSG, "unknown codec 3", false },
		{ "reserved", both, EBADMSG, "reserved bytes are 0x010000", false },
		{ "zstd-bad-tag", both, EBADMSG, "high nibble", false },
	};
	for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
		tm_zcodec c = g_str_has_prefix(cases[i].what, "lz4") ? TM_ZCODEC_LZ4 : TM_ZCODEC_ZSTD;
		if (!have(c)) {
			g_test_message("%s: skipped, %s is not built in", cases[i].what,
				       tm_zcodec_name(c));
			continue;
		}
		run_zcase(&cases[i]);
	}
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "compress/roundtrip-lz4", test_roundtrip_lz4, false },
		{ "compress/roundtrip-zstd", test_roundtrip_zstd, false },
		{ "compress/roundtrip-none-auto", test_roundtrip_none_auto, false },
		{ "compress/protocol1-never", test_protocol1_never, false },
		{ "compress/auto-rate-limit", test_auto_under_rate_limit, false },
		{ "compress/auto-samples-whole-packet", test_auto_samples_whole_packet, false },
		{ "compress/config-refused", test_config_refused, true },
		{ "compress/hostile-zdata", test_hostile_zdata, true },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
