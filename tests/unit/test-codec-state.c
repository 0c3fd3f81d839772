/* SPDX-License-Identifier: MIT */
/*
 * The device-state codec (codec/state.c): names, STATE headers, the order of chunks, RAM_END and
 * READY. The fuzz-state seeds (tests/fuzz/corpus/state, written by gen-corpus) are replayed here
 * too, each held to the errno and words its mutation must produce.
 */
#include "codec-test.h"
#include "../fuzz/state-stream.h"

static void test_name(void)
{
	g_autoptr(GError) err = NULL;
	char long_name[TM_MAX_STATE_NAME + 2];

	check_ok(tm_state_name_check("cpu0", 4, &err), &err);
	check_ok(tm_state_name_check("gerät/ü", strlen("gerät/ü"), &err), &err);
	memset(long_name, 'n', sizeof(long_name));
	check_ok(tm_state_name_check(long_name, TM_MAX_STATE_NAME, &err), &err);
	check_err(tm_state_name_check(long_name, TM_MAX_STATE_NAME + 1, &err), &err, EBADMSG,
		  "256 bytes");
	check_err(tm_state_name_check("", 0, &err), &err, EBADMSG, "0 bytes");
	check_err(tm_state_name_check("a\x1b[2J", 5, &err), &err, EBADMSG,
		  "control character 0x1b at byte 1");
	check_err(tm_state_name_check("a\x7f", 2, &err), &err, EBADMSG, "0x7f");
	check_err(tm_state_name_check("a\n", 2, &err), &err, EBADMSG, "0x0a");
	check_err(tm_state_name_check("ab\xff", 3, &err), &err, EBADMSG, "invalid UTF-8 at byte 2");
	check_err(tm_state_name_check("a\0b", 3, &err), &err, EBADMSG, "0x00");
	/* what error messages quote must not drive a terminal: C1 CSI, bidi override */
	check_err(tm_state_name_check("ab\xc2\x9b" "2J", 6, &err), &err, EBADMSG,
		  "control character U+009B at byte 2");
	check_err(tm_state_name_check("x\xe2\x80\xae" "cba", 7, &err), &err, EBADMSG,
		  "control character U+202E at byte 1");
}

static const tm_state_limits lim2 = { .packet_size = 65536, .max_section = 1 << 20,
				      .channels = 2, .channel = 1, .expected = 3 };

/* Encodes h (and name) and decodes its header against lim. */
static int decode(const tm_state_hdr *h, const char *name, const tm_state_limits *lim,
		  tm_state_hdr *ret, GError **err)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_STATE_HDR_LEN + TM_MAX_STATE_NAME];
	size_t n = tm_state_encode(buf, 7, h, name);
	uint32_t body_len = tm_get32(buf + 8);

	g_assert_cmpuint(n, ==, TM_FRAME_HDR_LEN + TM_STATE_HDR_LEN + h->name_len);
	g_assert_cmpuint(body_len, ==, TM_STATE_HDR_LEN + h->name_len + h->data_len);
	return tm_state_hdr_decode(buf + TM_FRAME_HDR_LEN, n - TM_FRAME_HDR_LEN, body_len, lim, ret,
				   err);
}

static void test_hdr(void)
{
	g_autoptr(GError) err = NULL;
	tm_state_hdr h = { .section = 1, .flags = TM_STATE_FIRST, .name_len = 3, .chunk = 3,
			   .section_len = 100000, .offset = 0, .data_len = 65536 };
	tm_state_hdr out, t;

	check_ok(decode(&h, "dev", &lim2, &out, &err), &err);
	g_assert_true(out.section == h.section && out.flags == h.flags &&
		      out.name_len == h.name_len && out.chunk == h.chunk &&
		      out.section_len == h.section_len && out.offset == h.offset &&
		      out.data_len == h.data_len);

	/* each rule: one refusal */
	t = h, t.chunk = 4;
	check_err(decode(&t, "dev", &lim2, &out, &err), &err, EPROTO, "belongs on channel 0");
	t = h, t.chunk = 5;
	check_err(decode(&t, "dev", &lim2, &out, &err), &err, EPROTO, "next chunk is 3");
	t = h, t.flags |= 0x8;
	check_err(decode(&t, "dev", &lim2, &out, &err), &err, EBADMSG, "unknown flags");
	t = h, t.name_len = 0;
	check_err(decode(&t, "dev", &lim2, &out, &err), &err, EBADMSG, "name_len 0");
	t = h, t.flags = 0, t.offset = 65536, t.data_len = 100;
	check_err(decode(&t, "dev", &lim2, &out, &err), &err, EBADMSG, "not FIRST");
	t = h, t.offset = 5;
	check_err(decode(&t, "dev", &lim2, &out, &err), &err, EPROTO, "first chunk at offset 5");
	t = h, t.section = TM_MAX_STATE_SECTIONS;
	check_err(decode(&t, "dev", &lim2, &out, &err), &err, EMSGSIZE, "section number");
	t = h, t.section_len = (1 << 20) + 1;
	check_err(decode(&t, "dev", &lim2, &out, &err), &err, EMSGSIZE, "max_state_section");
	t = h, t.data_len = 65537;
	check_err(decode(&t, "dev", &lim2, &out, &err), &err, EMSGSIZE, "packet size");
	t = h, t.flags = 0, t.name_len = 0, t.offset = 99999, t.data_len = 2;
	check_err(decode(&t, NULL, &lim2, &out, &err), &err, ERANGE, "outside the section");
	t = h, t.flags = 0, t.name_len = 0, t.offset = UINT64_MAX - 1, t.data_len = 4;
	check_err(decode(&t, NULL, &lim2, &out, &err), &err, ERANGE, "outside the section");
	t = h, t.data_len = 0;
	check_err(decode(&t, "dev", &lim2, &out, &err), &err, EBADMSG, "no data");
	t = h, t.flags |= TM_STATE_LAST;
	check_err(decode(&t, "dev", &lim2, &out, &err), &err, EPROTO, "LAST is set");
	t = h, t.data_len = 100000;
	check_err(decode(&t, "dev", &lim2, &out, &err), &err, EMSGSIZE, "packet size");
	t = h, t.section_len = 65536;
	check_err(decode(&t, "dev", &lim2, &out, &err), &err, EPROTO, "LAST is clear");
	/* an empty section: one chunk, FIRST | LAST, no data */
	t = h, t.flags = TM_STATE_FIRST | TM_STATE_LAST, t.section_len = 0, t.data_len = 0;
	check_ok(decode(&t, "dev", &lim2, &out, &err), &err);
	/* END_OF_STATE */
	tm_state_hdr e = { .section = 2, .flags = TM_STATE_END, .chunk = 3 };
	check_ok(decode(&e, NULL, &lim2, &out, &err), &err);
	t = e, t.flags |= TM_STATE_LAST;
	check_err(decode(&t, NULL, &lim2, &out, &err), &err, EPROTO, "END_OF_STATE with flags");
	t = e, t.section_len = 1;
	check_err(decode(&t, NULL, &lim2, &out, &err), &err, EPROTO, "all but END must be 0");

	/* reserved, body length, truncation: straight on the bytes */
	uint8_t buf[TM_FRAME_HDR_LEN + TM_STATE_HDR_LEN + 3];
	tm_state_encode(buf, 0, &h, "dev");
	uint8_t *b = buf + TM_FRAME_HDR_LEN;
	check_ok(tm_state_hdr_decode(b, 43, 43 + 65536, &lim2, &out, &err), &err);
	check_err(tm_state_hdr_decode(b, 43, 43 + 65535, &lim2, &out, &err), &err, EBADMSG,
		  "body of 65578 bytes");
	check_err(tm_state_hdr_decode(b, 39, 43 + 65536, &lim2, &out, &err), &err, EBADMSG,
		  "truncated");
	b[37] = 1;
	check_err(tm_state_hdr_decode(b, 43, 43 + 65536, &lim2, &out, &err), &err, EBADMSG,
		  "reserved");
}

static tm_state_hdr chunk(uint32_t section, uint16_t flags, uint16_t name_len, uint64_t g,
			  uint64_t len, uint64_t off, uint32_t dl)
{
	return (tm_state_hdr){ section, flags, name_len, g, len, off, dl };
}

static void test_order(void)
{
	g_autoptr(GError) err = NULL;
	static const char *const names[] = { "cpu0", "dev", NULL };
	tm_state_order o, saved;

	memset(&saved, 0, sizeof(saved));

	tm_state_order_init(&o, 1000, names);
	g_assert_cmpuint(o.names_count, ==, 2);
	tm_state_hdr c0 = chunk(0, TM_STATE_FIRST, 4, 0, 300, 0, 200);
	tm_state_hdr c1 = chunk(0, TM_STATE_LAST, 0, 1, 300, 200, 100);
	tm_state_hdr c2 = chunk(1, TM_STATE_FIRST | TM_STATE_LAST, 3, 2, 700, 0, 700);
	tm_state_hdr c3 = chunk(2, TM_STATE_END, 0, 3, 0, 0, 0);

	check_err(tm_state_order_check(&o, &c1, "", &err), &err, EPROTO, "chunk 0 is next");
	check_err(tm_state_order_check(&o, &c0, "cpu1", &err), &err, EPROTO,
		  "state section 0 is 'cpu1', expected 'cpu0'");
	check_ok(tm_state_order_check(&o, &c0, "cpu0", &err), &err);
	saved = o;
	/* inside section 0: neither a new section nor the end, and its length and offset hold */
	tm_state_hdr t = chunk(1, TM_STATE_FIRST, 3, 1, 10, 0, 10);
	check_err(tm_state_order_check(&o, &t, "dev", &err), &err, EPROTO, "inside section 0 'cpu0'");
	t = chunk(3, TM_STATE_END, 0, 1, 0, 0, 0);
	check_err(tm_state_order_check(&o, &t, "", &err), &err, EPROTO, "END_OF_STATE inside");
	t = c1, t.section_len = 301;
	check_err(tm_state_order_check(&o, &t, "", &err), &err, EPROTO, "its first chunk said 300");
	t = c1, t.offset = 100;
	check_err(tm_state_order_check(&o, &t, "", &err), &err, EPROTO, "200 bytes of 'cpu0'");
	t = c1, t.section = 1;
	check_err(tm_state_order_check(&o, &t, "", &err), &err, EPROTO, "section 0 'cpu0' is in");
	g_assert_true(o.next_chunk == saved.next_chunk && o.sections == saved.sections &&
		      o.offset == saved.offset && o.total == saved.total && o.in_section);
	check_ok(tm_state_order_check(&o, &c1, "", &err), &err);
	/* between sections */
	t = chunk(1, 0, 0, 2, 700, 0, 700);
	t.flags = TM_STATE_LAST;
	check_err(tm_state_order_check(&o, &t, "", &err), &err, EPROTO, "FIRST missing");
	t = c2, t.section = 2;
	check_err(tm_state_order_check(&o, &t, "dev", &err), &err, EPROTO, "section 1 is next");
	t = c2, t.section_len = 701;
	check_err(tm_state_order_check(&o, &t, "dev", &err), &err, EMSGSIZE, "max_state_total 1000");
	t = c3, t.section = 1, t.chunk = 2;
	check_err(tm_state_order_check(&o, &t, "", &err), &err, EPROTO, "state_names expects 2");
	check_ok(tm_state_order_check(&o, &c2, "dev", &err), &err);
	g_assert_cmpuint(o.total, ==, 1000);
	t = chunk(2, TM_STATE_FIRST | TM_STATE_LAST, 1, 3, 0, 0, 0);
	check_err(tm_state_order_check(&o, &t, "x", &err), &err, EPROTO, "expects only 2 sections");
	t = c3, t.section = 3;
	check_err(tm_state_order_check(&o, &t, "", &err), &err, EPROTO, "counts 3 sections, 2");
	check_ok(tm_state_order_check(&o, &c3, "", &err), &err);
	g_assert_true(o.ended);
	t = chunk(2, TM_STATE_FIRST | TM_STATE_LAST, 1, 4, 0, 0, 0);
	check_err(tm_state_order_check(&o, &t, "x", &err), &err, EPROTO,
		  "after the end of device state");

	/* without names any name goes; no sections at all is a valid end */
	tm_state_order_init(&o, 10, NULL);
	t = chunk(0, TM_STATE_END, 0, 0, 0, 0, 0);
	check_ok(tm_state_order_check(&o, &t, "", &err), &err);
}

static void test_ram_end_ready(void)
{
	g_autoptr(GError) err = NULL;
	uint8_t buf[TM_FRAME_HDR_LEN + TM_RAM_END_LEN];
	uint32_t mode;
	uint64_t pages, packets, rmode;
	tm_frame f;

	size_t n = tm_ram_end_encode(buf, 9, TM_RAM_END_FINAL, 1234, 56);
	g_assert_cmpuint(n, ==, sizeof(buf));
	check_ok(tm_frame_decode(buf, n, TM_WIRE_VERSION_2, 65536, &f, &err), &err);
	g_assert_cmpuint(f.type, ==, TM_MSG_RAM_END);
	g_assert_cmpuint(f.body_len, ==, TM_RAM_END_LEN);
	uint8_t *b = buf + TM_FRAME_HDR_LEN;
	check_ok(tm_ram_end_decode(b, 24, false, &mode, &pages, &packets, &err), &err);
	g_assert_cmpuint(mode, ==, TM_RAM_END_FINAL);
	g_assert_cmpuint(pages, ==, 1234);
	g_assert_cmpuint(packets, ==, 56);
	check_err(tm_ram_end_decode(b, 23, false, &mode, &pages, &packets, &err), &err, EBADMSG,
		  "23 bytes");
	b[0] = 2;
	check_err(tm_ram_end_decode(b, 24, false, &mode, &pages, &packets, &err), &err, EPROTO,
		  "did not agree on postcopy");
	check_ok(tm_ram_end_decode(b, 24, true, &mode, &pages, &packets, &err), &err);
	b[0] = 3;
	check_err(tm_ram_end_decode(b, 24, true, &mode, &pages, &packets, &err), &err, EBADMSG,
		  "mode 3");
	b[0] = 1, b[5] = 1;
	check_err(tm_ram_end_decode(b, 24, true, &mode, &pages, &packets, &err), &err, EBADMSG,
		  "reserved");

	n = tm_ready_encode(buf, 0, 1);
	g_assert_cmpuint(n, ==, TM_FRAME_HDR_LEN + 8);
	check_ok(tm_frame_decode(buf, n, TM_WIRE_VERSION_2, 0, &f, &err), &err);
	g_assert_cmpuint(f.type, ==, TM_MSG_READY);
	check_ok(tm_ready_decode(buf + TM_FRAME_HDR_LEN, 8, &rmode, &err), &err);
	g_assert_cmpuint(rmode, ==, 1);
	check_err(tm_ready_decode(buf + TM_FRAME_HDR_LEN, 9, &rmode, &err), &err, EBADMSG, "9 bytes");
	buf[TM_FRAME_HDR_LEN] = 0;
	check_err(tm_ready_decode(buf + TM_FRAME_HDR_LEN, 8, &rmode, &err), &err, EBADMSG, "mode 0");
}

/* The seeds of fuzz-state and what each must give, without names and with state_names. */
static const struct {
	const char *file;
	int err, err_named; /* positive errno, 0: accepted */
	const char *words;
} seeds[] = {
	{ "valid-3-sections", 0, 0, NULL },
	{ "wrong-channel", EPROTO, EPROTO, "belongs on channel 1" },
	{ "chunk-skipped", EPROTO, EPROTO, "this channel's next chunk is 2" },
	{ "section-out-of-order", EPROTO, EPROTO, "section 1 is next" },
	{ "section-huge", EMSGSIZE, EMSGSIZE, "section number" },
	{ "flags-unknown", EBADMSG, EBADMSG, "unknown flags" },
	{ "first-missing", EBADMSG, EBADMSG, "not FIRST" },
	{ "name-len-0", EBADMSG, EBADMSG, "name_len 0" },
	{ "name-esc", EBADMSG, EBADMSG, "control character 0x1b" },
	{ "name-del", EBADMSG, EBADMSG, "0x7f" },
	{ "name-bad-utf8", EBADMSG, EBADMSG, "invalid UTF-8" },
	{ "name-unexpected", 0, EPROTO, "is 'dex', expected 'dev'" },
	{ "section-len-over-limit", EMSGSIZE, EMSGSIZE, "max_state_section" },
	{ "section-len-changes", EPROTO, EPROTO, "LAST is set" },
	{ "offset-wrong", ERANGE, ERANGE, "outside the section" },
	{ "last-missing", EPROTO, EPROTO, "LAST is clear" },
	{ "data-len-past-section", ERANGE, ERANGE, "outside the section" },
	{ "reserved", EBADMSG, EBADMSG, "reserved" },
	{ "end-count", EPROTO, EPROTO, "counts 2 sections, 3 arrived" },
	{ "end-with-data", EPROTO, EPROTO, "all but END must be 0" },
	{ "body-len", EBADMSG, EBADMSG, "body of 46 bytes" },
	{ "truncated", ENODATA, ENODATA, NULL },
	{ "before-ram-end", EPROTO, EPROTO, "before RAM_END" },
	{ "ram-end-postcopy", EPROTO, EPROTO, "did not agree on postcopy" },
	{ "ram-end-reserved", EBADMSG, EBADMSG, "reserved" },
	{ "after-end", EPROTO, EPROTO, "after the end of device state" },
	{ "over-total", EMSGSIZE, EPROTO, NULL },
};

static void test_seeds(void)
{
	const char *dir = g_test_get_filename(G_TEST_DIST, "fuzz", "corpus", "state", NULL);
	unsigned files = 0;

	for (size_t i = 0; i < G_N_ELEMENTS(seeds); i++) {
		g_autofree char *path = g_build_filename(dir, seeds[i].file, NULL);
		g_autofree char *data = NULL;
		g_autoptr(GError) err = NULL;
		gsize len;

		if (!g_file_get_contents(path, &data, &len, &err))
			g_error("%s", err->message);
		for (int k = 0; k < 2; k++) {
			uint32_t sections = 0;
			bool ended = false;
			int want = k ? seeds[i].err_named : seeds[i].err;
			int r = fuzz_state_stream((const uint8_t *)data, len, k ? fuzz_state_names : NULL,
						  &sections, &ended, &err);
			g_test_message("%s%s: %d %s", seeds[i].file, k ? " (names)" : "", r,
				       err ? err->message : "");
			if (want == 0) {
				check_ok(r, &err);
				g_assert_cmpuint(sections, ==, 3);
				g_assert_true(ended);
			} else {
				check_err(r, &err, want, seeds[i].words);
			}
		}
		files++;
	}
	/* every seed gen-corpus writes is held to its outcome here */
	g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
	unsigned on_disk = 0;
	while (d && g_dir_read_name(d))
		on_disk++;
	g_assert_cmpuint(on_disk, ==, files);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/codec/state/name", test_name);
	g_test_add_func("/codec/state/header", test_hdr);
	g_test_add_func("/codec/state/order", test_order);
	g_test_add_func("/codec/state/ram-end-ready", test_ram_end_ready);
	g_test_add_func("/codec/state/seeds", test_seeds);
	return g_test_run();
}
