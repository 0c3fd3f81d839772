/* SPDX-License-Identifier: MIT */
/*
 * Wire codec tests of protocol 2 (docs/wire-format.md, "Version 2"): version-aware frames, the v2
 * type table, HELLO with role and epoch, HELLO_ACK, END/END_ACK and ERROR in v2 frames; round
 * trips and every malformed input refused with its errno and the field named.
 */
#include <errno.h>
#include <string.h>

#include <glib.h>

#include "codec/codec.h"
#include "codec-test.h"
#include "tagmig/error.h"
#include "tagmig/session.h"

static void test_frame_v2_max_body(void)
{
	const uint8_t v2 = TM_WIRE_VERSION_2;

	/* Types 1..8 as protocol 1 except the bodies that grew. */
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_HELLO, 0), ==, 48 + 1024 * (24 + 255));
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_HELLO_ACK, 0), ==, 32);
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_SYNC, 0), ==, 8);
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_SYNC_ACK, 0), ==, 16);
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_END, 0), ==, 24);
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_END_ACK, 0), ==, 16);
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_ERROR, 0), ==, 8 + 1024);
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_DATA, 65536), ==, 16 + 8 * 16 + 65536 + 2048);
	/* The new types: STATE 40 + 255 + packet_size; DISCARD 8 + 8 x 512; URGENT 8 + 16 pages. */
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_STATE, 0), ==, 0);
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_STATE, 65536), ==, 40 + 255 + 65536);
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_DISCARD, 0), ==, 8 + 8 * 512);
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_RAM_END, 0), ==, 24);
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_PING, 0), ==, 8);
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_PONG, 0), ==, 8);
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_POSTCOPY, 0), ==, 8);
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_READY, 0), ==, 8);
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_PAGE_REQ, 0), ==, 24);
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_URGENT, 0), ==, 0);
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_URGENT, 65536), ==,
			 8 + 16 + 16 * (8 + 65536 + 2048));
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_REQ_END, 0), ==, 8);
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_RESUME, 0), ==, 8);
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_RESUME_ACK, 0), ==, 40);
	/* ZDATA: a DATA body and its 8-byte ZDATA header; nothing before the handshake */
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_ZDATA, 65536), ==,
			 8 + tm_frame_max_body(v2, TM_MSG_DATA, 65536));
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_ZDATA, 0), ==, 0);
	/* ZDELTA: a DELTA body and its 8-byte ZDELTA header; nothing before the handshake */
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_ZDELTA, 65536), ==,
			 8 + tm_frame_max_body(v2, TM_MSG_DELTA, 65536));
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_ZDELTA, 0), ==, 0);
	g_assert_cmpuint(tm_frame_max_body(v2, TM_MSG_LAST_V2 + 1, 65536), ==, 0);
	g_assert_cmpuint(tm_frame_max_body(v2, 0, 65536), ==, 0);
	/* Protocol 1 knows none of them; no other version exists. */
	for (uint8_t t = TM_MSG_STATE; t <= TM_MSG_LAST_V2; t++)
		g_assert_cmpuint(tm_frame_max_body(TM_WIRE_VERSION_1, t, 65536), ==, 0);
	g_assert_cmpuint(tm_frame_max_body(3, TM_MSG_SYNC, 0), ==, 0);
	g_assert_cmpuint(tm_frame_max_body(0, TM_MSG_SYNC, 0), ==, 0);

	g_assert_cmpstr(tm_msg_name(TM_MSG_STATE), ==, "STATE");
	g_assert_cmpstr(tm_msg_name(TM_MSG_PAGE_REQ), ==, "PAGE_REQ");
	g_assert_cmpstr(tm_msg_name(TM_MSG_REQ_END), ==, "REQ_END");
	g_assert_cmpstr(tm_msg_name(TM_MSG_RESUME_ACK), ==, "RESUME_ACK");
	g_assert_cmpstr(tm_msg_name(TM_MSG_ZDELTA), ==, "ZDELTA");
	g_assert_cmpstr(tm_msg_name(TM_MSG_LAST_V2 + 1), ==, "unknown");
}

static void test_frame_v2_round_trip(void)
{
	for (uint8_t type = TM_MSG_HELLO; type <= TM_MSG_LAST_V2; type++) {
		uint8_t buf[TM_FRAME_HDR_LEN];
		uint32_t max = tm_frame_max_body(TM_WIRE_VERSION_2, type, TM_PACKET_SIZE_DEFAULT);
		tm_frame f;
		GError *err = NULL;

		g_assert_cmpuint(max, >, 0);
		tm_frame_encode_v(buf, TM_WIRE_VERSION_2, type, max, 0xdeadbeef);
		g_assert_cmpuint(buf[4], ==, 2);
		/* As a protocol 2 session and as a handshake serving both. */
		for (uint8_t want = 0; want <= 2; want += 2) {
			memset(&f, 0, sizeof(f));
			check_ok(tm_frame_decode(buf, sizeof(buf), want, TM_PACKET_SIZE_DEFAULT, &f,
						 &err),
				 &err);
			g_assert_cmpuint(f.version, ==, 2);
			g_assert_cmpuint(f.type, ==, type);
			g_assert_cmpuint(f.body_len, ==, max);
			g_assert_cmpuint(f.seq, ==, 0xdeadbeef);
		}
		tm_frame_encode_v(buf, TM_WIRE_VERSION_2, type, max + 1, 0);
		check_err(tm_frame_decode(buf, sizeof(buf), 2, TM_PACKET_SIZE_DEFAULT, &f, &err), &err,
			  EMSGSIZE, "body_len");
	}
	/* A protocol 1 frame at a handshake serving both keeps its version. */
	uint8_t buf[TM_FRAME_HDR_LEN];
	tm_frame f;
	GError *err = NULL;
	tm_frame_encode(buf, TM_MSG_HELLO, 48 + 25, 0);
	check_ok(tm_frame_decode(buf, sizeof(buf), 0, 0, &f, &err), &err);
	g_assert_cmpuint(f.version, ==, 1);
	g_assert_cmpuint(f.type, ==, TM_MSG_HELLO);
}

static void test_frame_v2_malformed(void)
{
	uint8_t v1[TM_FRAME_HDR_LEN], v2[TM_FRAME_HDR_LEN], buf[TM_FRAME_HDR_LEN];
	tm_frame f = { .type = 99, .body_len = 77, .seq = 55 };
	GError *err = NULL;

	tm_frame_encode(v1, TM_MSG_SYNC, 8, 3);
	tm_frame_encode_v(v2, TM_WIRE_VERSION_2, TM_MSG_SYNC, 8, 3);

	/* Another supported version after the handshake: out of sequence. */
	check_err(tm_frame_decode(v1, sizeof(v1), 2, 0, &f, &err), &err, EPROTO,
		  "frame header: protocol 1 frame in a protocol 2 session");
	/* A protocol 1 peer hears the words of tagmig 0.1 (a protocol 2 sender looks for them). */
	check_err(tm_frame_decode(v2, sizeof(v2), 1, 0, &f, &err), &err, EPROTONOSUPPORT,
		  "frame header: unsupported protocol version 2 (supported: 1)");
	/* Outside 1..2: not supported, whatever the caller speaks. */
	for (unsigned v = 0; v < 256; v++) {
		if (v == 1 || v == 2)
			continue;
		memcpy(buf, v2, sizeof(buf));
		buf[4] = (uint8_t)v;
		check_err(tm_frame_decode(buf, sizeof(buf), 0, 0, &f, &err), &err, EPROTONOSUPPORT,
			  "(supported: 1..2)");
		check_err(tm_frame_decode(buf, sizeof(buf), 2, 0, &f, &err), &err, EPROTONOSUPPORT,
			  "unsupported protocol version");
	}
	/* The type table is the frame's version's. */
	static const uint8_t v1_unknown[] = { 9, 12, 18, 19 };
	for (unsigned i = 0; i < G_N_ELEMENTS(v1_unknown); i++) {
		memcpy(buf, v1, sizeof(buf));
		buf[5] = v1_unknown[i];
		check_err(tm_frame_decode(buf, sizeof(buf), 0, 65536, &f, &err), &err, EBADMSG,
			  "unknown message type");
	}
	memcpy(buf, v1, sizeof(buf));
	buf[5] = TM_MSG_PING;
	check_err(tm_frame_decode(buf, sizeof(buf), 0, 65536, &f, &err), &err, EBADMSG,
		  "unknown message type 12 in protocol 1");
	static const uint8_t v2_unknown[] = { 0, TM_MSG_LAST_V2 + 1, 0x80, 0xff };
	for (unsigned i = 0; i < G_N_ELEMENTS(v2_unknown); i++) {
		memcpy(buf, v2, sizeof(buf));
		buf[5] = v2_unknown[i];
		check_err(tm_frame_decode(buf, sizeof(buf), 2, 65536, &f, &err), &err, EBADMSG,
			  "in protocol 2");
	}
	for (unsigned i = 6; i < 8; i++) {
		memcpy(buf, v2, sizeof(buf));
		buf[i] = 0x80;
		check_err(tm_frame_decode(buf, sizeof(buf), 2, 0, &f, &err), &err, EBADMSG,
			  "reserved field is");
	}
	/* Guest-data bodies before the handshake. */
	static const uint8_t data_types[] = { TM_MSG_DATA, TM_MSG_STATE, TM_MSG_URGENT,
						TM_MSG_DELTA, TM_MSG_DELTA_NACK };
	for (unsigned i = 0; i < G_N_ELEMENTS(data_types); i++) {
		tm_frame_encode_v(buf, TM_WIRE_VERSION_2, data_types[i], 0, 1);
		g_autofree char *want = g_strdup_printf("%s before the handshake",
							tm_msg_name(data_types[i]));
		check_err(tm_frame_decode(buf, sizeof(buf), 0, 0, &f, &err), &err, EPROTO, want);
	}
	/* A grown body: a protocol 1 END_ACK may not carry the protocol 2 body. */
	tm_frame_encode(buf, TM_MSG_END_ACK, 16, 0);
	check_err(tm_frame_decode(buf, sizeof(buf), 0, 0, &f, &err), &err, EMSGSIZE,
		  "(END_ACK): body_len 16 over the maximum 8");
	for (size_t len = 0; len < TM_FRAME_HDR_LEN; len++)
		check_err(tm_frame_decode(v2, len, 2, 0, &f, &err), &err, EBADMSG, "truncated");
	g_assert_cmpuint(f.type, ==, 99);
	g_assert_cmpuint(f.body_len, ==, 77);
	g_assert_cmpuint(f.seq, ==, 55);
}

static void make_hello_v2(tm_hello *h, uint8_t role)
{
	GError *err = NULL;

	make_hello(h);
	h->version = TM_WIRE_VERSION_2;
	h->features |= TM_FEATURE_POSTCOPY;
	h->role = role;
	if (role != TM_ROLE_DATA)
		h->channel_id = 0;
	check_ok(tm_hello_check(h, &err), &err);
}

static void test_hello_v2_round_trip(void)
{
	GError *err = NULL;
	tm_hello data;

	make_hello_v2(&data, TM_ROLE_DATA);
	for (uint8_t role = 0; role < TM_ROLE_COUNT; role++) {
		tm_hello h, d;
		size_t len;

		make_hello_v2(&h, role);
		g_autofree uint8_t *buf = encode_hello(&h, &len);
		g_assert_cmpuint(buf[28], ==, role);
		g_assert_cmpuint(tm_get32(buf + 44), ==, 0);
		check_ok(tm_hello_decode(buf, len, TM_WIRE_VERSION_2, &d, &err), &err);
		assert_hello_equal(&h, &d);
		g_assert_cmpuint(d.version, ==, 2);
		g_assert_cmpuint(d.role, ==, role);
		g_assert_cmpuint(d.epoch, ==, 0);
		/* Connections of every role belong to the same session. */
		check_ok(tm_hello_same_session(&data, &d, &err), &err);
		tm_hello_clear(&d);

		/* Protocol 1 reads the role byte as reserved. */
		if (role != TM_ROLE_DATA)
			check_err(tm_hello_decode(buf, len, TM_WIRE_VERSION_1, &d, &err), &err,
				  EBADMSG, "reserved field at offset 28");
		tm_hello_clear(&h);
	}

	/* Protocol 1 and 2 HELLOs of otherwise one session are not the same session. */
	tm_hello old;
	make_hello(&old);
	data.features = old.features;
	check_err(tm_hello_same_session(&old, &data, &err), &err, EPROTO,
		  "protocol version differs between channels: 1 vs 2");
	/* A zeroed version is protocol 1 (every protocol 1 caller). */
	old.version = 1;
	tm_hello old0;
	make_hello(&old0);
	check_ok(tm_hello_same_session(&old, &old0, &err), &err);
	tm_hello_clear(&old0);
	tm_hello_clear(&old);
	tm_hello_clear(&data);
}

static const hello_mutation hello_v2_mutations[] = {
	{ 28, 1, 3, EBADMSG, "HELLO: role 3 invalid" },
	{ 28, 1, 0xff, EBADMSG, "role 255" },
	{ 29, 1, 1, EBADMSG, "reserved bytes at offset 29 are 0x000001" },
	{ 31, 1, 0x80, EBADMSG, "reserved bytes at offset 29 are 0x800000" },
	{ 44, 4, 1, EPROTO, "epoch 1 without the RESUME feature" },
	{ 44, 4, 0x80000000u, EPROTO, "without the RESUME feature" },
	{ 20, 4, 0x87, 0, "" }, /* an offer this build does not know: declined (below) */
	{ 20, 4, 0x23, 0, "" }, /* LINK_CHECK, without RESUME too */
	{ 20, 4, 0x7, 0, "" },  /* RESUME, epoch 0: a session's first connection */
	{ 20, 4, 0x17, 0, "" }, /* ... and CONN_LOST */
	{ 20, 4, 0x15, 0, "" }, /* CONN_LOST without POSTCOPY: data channels */
	{ 20, 4, 0x13, EBADMSG, "features 0x00000013 offer CONN_LOST without RESUME" },
	{ 20, 4, 0x80000003u, 0, "" },
	{ 16, 2, 4, ERANGE, "channel_id 4 out of range" },
	{ 20, 4, 0x3, 0, "" },  /* POSTCOPY is a protocol 2 feature */
	{ 20, 4, 0x0, 0, "" },  /* without tags */
	{ 28, 1, 1, EBADMSG, "HELLO: channel_id 2 on the control connection, must be 0" },
	{ 28, 1, 2, EBADMSG, "channel_id 2 on the urgent connection" },
};

static void test_hello_v2_malformed(void)
{
	tm_hello h, d;
	size_t len;
	GError *err = NULL;

	make_hello_v2(&h, TM_ROLE_DATA); /* channel_id 2 */
	g_autofree uint8_t *good = encode_hello(&h, &len);
	g_autofree uint8_t *buf = g_malloc(len);

	for (unsigned i = 0; i < G_N_ELEMENTS(hello_v2_mutations); i++) {
		const hello_mutation *m = &hello_v2_mutations[i];

		memcpy(buf, good, len);
		put_le(buf + m->off, m->width, m->value);
		memset(&d, 0x5a, sizeof(d));
		int r = tm_hello_decode(buf, len, TM_WIRE_VERSION_2, &d, &err);
		g_test_message("v2 mutation %u: %s", i, m->substr);
		if (m->errnum == 0) {
			check_ok(r, &err);
			tm_hello_clear(&d);
			continue;
		}
		check_err(r, &err, m->errnum, m->substr);
		g_assert_cmpuint(d.block_count, ==, 0x5a5a5a5a);
	}

	/* Offers this build does not know are declined: gone from the decoded features (a newer
	 * sender's, which it uses only once HELLO_ACK accepts them). */
	memcpy(buf, good, len);
	put_le(buf + 20, 4, 0xc0000083u);
	check_ok(tm_hello_decode(buf, len, TM_WIRE_VERSION_2, &d, &err), &err);
	g_assert_cmphex(d.features, ==, TM_FEATURE_TAGS_MTE4 | TM_FEATURE_POSTCOPY);
	tm_hello_clear(&d);

	/* Urgent without POSTCOPY; the control connection is fine without it. */
	tm_hello u;
	make_hello_v2(&u, TM_ROLE_URGENT);
	g_autofree uint8_t *ub = encode_hello(&u, &len);
	put_le(ub + 20, 4, TM_FEATURE_TAGS_MTE4);
	check_err(tm_hello_decode(ub, len, TM_WIRE_VERSION_2, &d, &err), &err, EPROTO,
		  "HELLO: urgent connection without the POSTCOPY feature");
	ub[28] = TM_ROLE_CONTROL;
	check_ok(tm_hello_decode(ub, len, TM_WIRE_VERSION_2, &d, &err), &err);
	tm_hello_clear(&d);

	/* Protocol 1: the POSTCOPY bit is reserved, and epoch is a reserved field. */
	memcpy(buf, good, len);
	check_err(tm_hello_decode(buf, len, TM_WIRE_VERSION_1, &d, &err), &err, EBADMSG,
		  "features 0x00000003 has reserved bits 0x00000002");
	put_le(buf + 20, 4, TM_FEATURE_TAGS_MTE4);
	put_le(buf + 44, 4, 1);
	check_err(tm_hello_decode(buf, len, TM_WIRE_VERSION_1, &d, &err), &err, EBADMSG,
		  "reserved field at offset 44");
	check_err(tm_hello_decode(buf, len, 3, &d, &err), &err, EINVAL, "protocol version 3");

	/* Sender side: what the decoder refuses cannot be announced either. */
	h.epoch = 7;
	check_err(tm_hello_check(&h, &err), &err, EPROTO, "epoch 7 without the RESUME feature");
	h.features |= TM_FEATURE_RESUME;
	check_ok(tm_hello_check(&h, &err), &err); /* a data channel's reconnect */
	h.role = TM_ROLE_CONTROL;
	h.channel_id = 0;
	check_err(tm_hello_check(&h, &err), &err, EOPNOTSUPP,
		  "epoch 7 on the control connection: only data channels");
	h.role = TM_ROLE_URGENT; /* postcopy's urgent connection resumes too */
	h.features |= TM_FEATURE_POSTCOPY;
	check_ok(tm_hello_check(&h, &err), &err);
	h.features &= ~TM_FEATURE_POSTCOPY;
	h.epoch = 0;
	h.role = 3;
	check_err(tm_hello_check(&h, &err), &err, EBADMSG, "role 3");
	h.version = 1;
	h.features = TM_FEATURE_TAGS_MTE4;
	h.role = 1;
	check_err(tm_hello_check(&h, &err), &err, EINVAL, "in protocol 1");
	h.version = 4;
	check_err(tm_hello_check(&h, &err), &err, EPROTONOSUPPORT, "protocol version 4");

	/* Every prefix is refused. */
	for (size_t n = 0; n < len; n++) {
		g_autofree uint8_t *prefix = g_memdup2(good, n);
		check_err(tm_hello_decode(prefix, n, TM_WIRE_VERSION_2, &d, &err), &err, EBADMSG,
			  "truncated");
	}
	tm_hello_clear(&u);
	tm_hello_clear(&h);
}

static void test_hello_ack_v2(void)
{
	const tm_hello_ack good = {
		.features = TM_FEATURE_TAGS_MTE4 | TM_FEATURE_POSTCOPY,
		.max_outstanding = 256,
		.max_state_section = 1ull << 30,
		.max_state_total = 4ull << 30,
	};
	const uint32_t offered = TM_FEATURE_TAGS_MTE4 | TM_FEATURE_POSTCOPY;
	uint8_t buf[TM_FRAME_HDR_LEN + TM_HELLO_ACK2_LEN + 1];
	tm_hello_ack d;
	tm_frame f;
	GError *err = NULL;

	size_t n = tm_hello_ack_encode(buf, 5, &good);
	g_assert_cmpuint(n, ==, 16 + 32);
	check_ok(tm_frame_decode(buf, n, 2, 0, &f, &err), &err);
	g_assert_cmpuint(f.type, ==, TM_MSG_HELLO_ACK);
	g_assert_cmpuint(f.body_len, ==, 32);
	g_assert_cmpuint(f.seq, ==, 5);
	check_ok(tm_hello_ack_decode(buf + 16, 32, offered, &d, &err), &err);
	/* Field by field: the struct has padding after pc_decline. */
	g_assert_cmpuint(d.features, ==, good.features);
	g_assert_cmpuint(d.max_outstanding, ==, good.max_outstanding);
	g_assert_cmpuint(d.max_state_section, ==, good.max_state_section);
	g_assert_cmpuint(d.max_state_total, ==, good.max_state_total);
	g_assert_cmpuint(d.resume_token, ==, good.resume_token);
	g_assert_cmpuint(d.pc_decline, ==, good.pc_decline);
	/* Little-endian at the documented offsets. */
	g_assert_cmpuint(tm_get32(buf + 16), ==, 3);
	g_assert_cmpuint(tm_get32(buf + 20), ==, 256);
	g_assert_cmpuint(tm_get64(buf + 24), ==, 1ull << 30);
	g_assert_cmpuint(tm_get64(buf + 32), ==, 4ull << 30);
	/* A receiver that declines postcopy, and the limits' extremes. */
	tm_hello_ack no_pc = { TM_FEATURE_TAGS_MTE4, 0, 0, 0, 0, 0 };
	check_ok(tm_hello_ack_check(&no_pc, offered, &err), &err);
	tm_hello_ack ext = { TM_FEATURE_POSTCOPY, 512, 1ull << 40, 1ull << 42, 0, 0 };
	check_ok(tm_hello_ack_check(&ext, TM_FEATURE_POSTCOPY, &err), &err);

	static const struct {
		size_t off;
		unsigned width;
		uint64_t value;
		uint32_t offered;
		int errnum;
		const char *substr;
	} bad[] = {
		{ 0, 4, 0x87, 3, EBADMSG, "HELLO_ACK: features 0x00000087 has reserved bits 0x00000080" },
		{ 0, 4, 0x23, 3, EPROTO, "accept LINK_CHECK, which was not offered (offered 0x00000003)" },
		{ 0, 4, 0x13, 3, EPROTO, "accept CONN_LOST, which was not offered (offered 0x00000003)" },
		{ 0, 4, 0x13, 0x17, EBADMSG, "accept CONN_LOST without RESUME" },
		{ 0, 4, 0x7, 3, EPROTO, "accept RESUME, which was not offered (offered 0x00000003)" },
		{ 0, 4, 0x80000003u, 3, EBADMSG, "reserved bits 0x80000000" },
		{ 0, 4, 0x3, 1, EPROTO, "accept POSTCOPY, which was not offered (offered 0x00000001)" },
		{ 0, 4, 0x2, 3, EPROTO, "change TAGS_MTE4 (offered 0x00000003)" },
		{ 0, 4, 0x3, 2, EPROTO, "change TAGS_MTE4" },
		{ 4, 4, 0, 3, EBADMSG, "max_outstanding 0 invalid with POSTCOPY (1..512)" },
		{ 4, 4, 513, 3, EBADMSG, "max_outstanding 513" },
		{ 0, 4, 0x1, 3, EBADMSG, "max_outstanding 256 without POSTCOPY, must be 0" },
		{ 8, 8, (1ull << 40) + 1, 3, EBADMSG, "max_state_section 1099511627777 over the maximum" },
		{ 16, 8, (1ull << 30) - 1, 3, EBADMSG, "max_state_total 1073741823 invalid" },
		{ 16, 8, (1ull << 42) + 1, 3, EBADMSG, "max_state_total 4398046511105" },
		{ 24, 8, 1, 3, EBADMSG, "resume token set without RESUME" },
		{ 31, 1, 0x80, 3, EBADMSG, "resume token set without RESUME" },
	};
	for (unsigned i = 0; i < G_N_ELEMENTS(bad); i++) {
		uint8_t body[32];

		memcpy(body, buf + 16, 32);
		put_le(body + bad[i].off, bad[i].width, bad[i].value);
		memset(&d, 0x5a, sizeof(d));
		g_test_message("HELLO_ACK case %u: %s", i, bad[i].substr);
		check_err(tm_hello_ack_decode(body, 32, bad[i].offered, &d, &err), &err, bad[i].errnum,
			  bad[i].substr);
		g_assert_cmpuint(d.max_outstanding, ==, 0x5a5a5a5a);
	}
	for (size_t len = 0; len < 32; len++) {
		g_autofree uint8_t *p = g_memdup2(buf + 16, len);
		check_err(tm_hello_ack_decode(p, len, offered, &d, &err), &err, EBADMSG, "truncated");
	}
	buf[48] = 0;
	check_err(tm_hello_ack_decode(buf + 16, 33, offered, &d, &err), &err, EBADMSG,
		  "HELLO_ACK: body of 33 bytes, must be 32");
	/* Protocol 1's 8-byte HELLO_ACK is too short for protocol 2. */
	n = tm_ctrl_encode(buf, TM_MSG_HELLO_ACK, 0, 0, 0);
	check_err(tm_hello_ack_decode(buf + 16, n - 16, offered, &d, &err), &err, EBADMSG,
		  "body of 8 bytes, must be 32 (truncated)");
}

/* RESUME, RESUME_ACK and the HELLO_ACK's resume token (docs/wire-format.md, "Resume"). */
static void test_resume_v2(void)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_RESUME_ACK_LEN];
	GError *err = NULL;
	tm_frame f;
	uint64_t token = 0;

	size_t n = tm_resume_encode(buf, 1, 0x1122334455667788ull);
	g_assert_cmpuint(n, ==, 16 + 8);
	check_ok(tm_frame_decode(buf, n, 2, 0, &f, &err), &err);
	g_assert_cmpuint(f.type, ==, TM_MSG_RESUME);
	check_ok(tm_resume_decode(buf + 16, 8, &token, &err), &err);
	g_assert_cmpuint(token, ==, 0x1122334455667788ull);
	g_assert_true(tm_resume_token_equal(token, 0x1122334455667788ull));
	g_assert_false(tm_resume_token_equal(token, 0x1122334455667789ull));
	g_assert_false(tm_resume_token_equal(token, 0x9122334455667788ull));
	check_err(tm_resume_decode(buf + 16, 7, &token, &err), &err, EBADMSG, "body of 7 bytes");
	memset(buf + 16, 0, 8);
	check_err(tm_resume_decode(buf + 16, 8, &token, &err), &err, EBADMSG, "RESUME: token 0");

	tm_resume_pos pos = { 300, 7, 2, 5, TM_RESUME_RAM_ENDED }, d = { 0 };
	n = tm_resume_ack_encode(buf, 0, &pos);
	g_assert_cmpuint(n, ==, 16 + 40);
	check_ok(tm_frame_decode(buf, n, 2, 0, &f, &err), &err);
	g_assert_cmpuint(f.type, ==, TM_MSG_RESUME_ACK);
	check_ok(tm_resume_ack_decode(buf + 16, 40, &d, &err), &err);
	g_assert_true(d.pages_applied == 300 && d.packets_applied == 7 && d.state_chunks == 2 &&
		      d.syncs == 5 && d.flags == TM_RESUME_RAM_ENDED);
	g_assert_cmpuint(tm_get64(buf + 16), ==, 300);
	g_assert_cmpuint(tm_get64(buf + 40), ==, 5);
	g_assert_cmpuint(tm_get32(buf + 48), ==, 1);
	static const struct {
		size_t off;
		unsigned width;
		uint64_t value;
		const char *substr;
	} bad[] = {
		{ 32, 4, 4, "flags 0x00000004" },
		{ 36, 4, 1, "reserved 0x00000001" },
		{ 32, 4, 2, "channel ended without RAM_END" },
		{ 8, 8, 301, "301 packets applied with 300 pages" },
	};
	for (unsigned i = 0; i < G_N_ELEMENTS(bad); i++) {
		uint8_t body[40];
		memcpy(body, buf + 16, 40);
		put_le(body + bad[i].off, bad[i].width, bad[i].value);
		check_err(tm_resume_ack_decode(body, 40, &d, &err), &err, EBADMSG, bad[i].substr);
	}
	check_err(tm_resume_ack_decode(buf + 16, 39, &d, &err), &err, EBADMSG, "body of 39 bytes");

	/* HELLO_ACK: the token is there exactly with RESUME, which only an offer allows. */
	tm_hello_ack ack = { TM_FEATURE_RESUME, 0, 1 << 20, 1 << 20, 42, 0 };
	uint8_t hb[TM_FRAME_HDR_LEN + TM_HELLO_ACK2_LEN];
	tm_hello_ack da;
	n = tm_hello_ack_encode(hb, 0, &ack);
	check_ok(tm_hello_ack_decode(hb + 16, 32, TM_FEATURE_RESUME, &da, &err), &err);
	g_assert_cmpuint(da.resume_token, ==, 42);
	g_assert_cmpuint(tm_get64(hb + 16 + 24), ==, 42);
	check_err(tm_hello_ack_decode(hb + 16, 32, 0, &da, &err), &err, EPROTO,
		  "accept RESUME, which was not offered");
	ack.resume_token = 0;
	n = tm_hello_ack_encode(hb, 0, &ack);
	check_err(tm_hello_ack_decode(hb + 16, 32, TM_FEATURE_RESUME, &da, &err), &err, EBADMSG,
		  "resume token 0 with RESUME");
}

/* ERROR is the same body in both protocols; only the frame's version differs. */
static void test_error_v2(void)
{
	uint8_t a[TM_FRAME_HDR_LEN + TM_ERROR_FIXED_LEN + 64], b[sizeof(a)];
	tm_frame f;
	int code = 0;
	g_autofree char *msg = NULL;
	GError *err = NULL;

	size_t na = tm_error_encode_v(a, TM_WIRE_VERSION_2, 4, EPROTO, "control: unexpected DATA");
	size_t nb = tm_error_encode(b, 4, EPROTO, "control: unexpected DATA");
	g_assert_cmpuint(na, ==, nb);
	g_assert_cmpuint(a[4], ==, 2);
	g_assert_cmpuint(b[4], ==, 1);
	g_assert_cmpmem(a + 5, na - 5, b + 5, nb - 5);
	check_ok(tm_frame_decode(a, na, 2, 0, &f, &err), &err);
	g_assert_cmpuint(f.type, ==, TM_MSG_ERROR);
	check_ok(tm_error_decode(a + 16, f.body_len, &code, &msg, &err), &err);
	g_assert_cmpint(code, ==, EPROTO);
	g_assert_cmpstr(msg, ==, "control: unexpected DATA");
	/* A protocol 1 ERROR inside a protocol 2 session is out of sequence. */
	check_err(tm_frame_decode(b, nb, 2, 0, &f, &err), &err, EPROTO, "protocol 1 frame");
}

static void test_ctrl_v2(void)
{
	static const struct {
		uint8_t type;
		unsigned fields;
	} v2[] = {
		{ TM_MSG_SYNC, 1 },
		{ TM_MSG_SYNC_ACK, 2 },
		{ TM_MSG_END, 3 },     /* pages_sent, packets_sent, state_chunks */
		{ TM_MSG_END_ACK, 2 }, /* pages_applied, state_chunks */
	};
	const uint64_t vals[3] = { 0x0102030405060708ull, 0x1112131415161718ull,
				   0x2122232425262728ull };
	GError *err = NULL;

	for (unsigned i = 0; i < G_N_ELEMENTS(v2); i++) {
		uint8_t buf[64];
		uint64_t got[TM_CTRL_MAX_FIELDS];
		tm_frame f;
		size_t n = tm_ctrl_encode_v(buf, TM_WIRE_VERSION_2, v2[i].type, 7, vals);

		g_assert_cmpuint(n, ==, 16 + 8 * v2[i].fields);
		check_ok(tm_frame_decode(buf, n, 2, 0, &f, &err), &err);
		g_assert_cmpuint(f.type, ==, v2[i].type);
		g_assert_cmpuint(f.body_len, ==, 8 * v2[i].fields);
		check_ok(tm_ctrl_decode_v(2, f.type, buf + 16, f.body_len, got, &err), &err);
		for (unsigned k = 0; k < TM_CTRL_MAX_FIELDS; k++)
			g_assert_cmpuint(got[k], ==, k < v2[i].fields ? vals[k] : 0);
		for (size_t len = 0; len < f.body_len; len++)
			check_err(tm_ctrl_decode_v(2, f.type, buf + 16, len, got, &err), &err,
				  EBADMSG, "truncated");
		g_autofree char *want = g_strdup_printf("%s: body of %u bytes, must be %u",
							tm_msg_name(f.type), f.body_len + 1,
							f.body_len);
		check_err(tm_ctrl_decode_v(2, f.type, buf + 16, f.body_len + 1, got, &err), &err,
			  EBADMSG, want);
		/* A protocol 1 END/END_ACK body is refused by protocol 2 and the other way round. */
		if (v2[i].type == TM_MSG_END || v2[i].type == TM_MSG_END_ACK)
			check_err(tm_ctrl_decode_v(1, f.type, buf + 16, f.body_len, got, &err), &err,
				  EBADMSG, "must be");
	}
	/* Protocol 1 through the versioned calls: the same bytes as tm_ctrl_encode. */
	uint8_t a[64], b[64];
	uint64_t got[TM_CTRL_MAX_FIELDS];
	size_t na = tm_ctrl_encode_v(a, 1, TM_MSG_END, 3, vals);
	size_t nb = tm_ctrl_encode(b, TM_MSG_END, 3, vals[0], vals[1]);
	g_assert_cmpmem(a, na, b, nb);
	na = tm_ctrl_encode_v(a, 1, TM_MSG_HELLO_ACK, 0, vals);
	g_assert_cmpuint(tm_get64(a + 16), ==, 0);
	check_ok(tm_ctrl_decode_v(1, TM_MSG_HELLO_ACK, a + 16, 8, got, &err), &err);
	a[16] = 1;
	check_err(tm_ctrl_decode_v(1, TM_MSG_HELLO_ACK, a + 16, 8, got, &err), &err, EBADMSG,
		  "HELLO_ACK: reserved field");
	/* Not control messages here: protocol 2 HELLO_ACK (tm_hello_ack_*), the later messages. */
	check_err(tm_ctrl_decode_v(2, TM_MSG_HELLO_ACK, a + 16, 32, got, &err), &err, EINVAL,
		  "HELLO_ACK (type 2) is not a control message of protocol 2");
	check_err(tm_ctrl_decode_v(2, TM_MSG_READY, a + 16, 8, got, &err), &err, EINVAL, "READY");
	check_err(tm_ctrl_decode_v(1, TM_MSG_PING, a + 16, 8, got, &err), &err, EINVAL,
		  "protocol 1");
	/* PING and PONG (the control connection's keepalive): one u64 nonce, exactly 8 bytes. */
	const uint64_t nonce[TM_CTRL_MAX_FIELDS] = { 0x1234 };
	for (uint8_t t = TM_MSG_PING; t <= TM_MSG_PONG; t++) {
		na = tm_ctrl_encode_v(a, 2, t, 9, nonce);
		g_assert_cmpuint(na, ==, 16 + 8);
		check_ok(tm_ctrl_decode_v(2, t, a + 16, 8, got, &err), &err);
		g_assert_cmpuint(got[0], ==, 0x1234);
		check_err(tm_ctrl_decode_v(2, t, a + 16, 7, got, &err), &err, EBADMSG, "truncated");
		check_err(tm_ctrl_decode_v(2, t, a + 16, 9, got, &err), &err, EBADMSG, "must be 8");
	}
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/codec/v2/frame/max-body", test_frame_v2_max_body);
	g_test_add_func("/codec/v2/frame/round-trip", test_frame_v2_round_trip);
	g_test_add_func("/codec/v2/frame/malformed", test_frame_v2_malformed);
	g_test_add_func("/codec/v2/hello/round-trip", test_hello_v2_round_trip);
	g_test_add_func("/codec/v2/hello/malformed", test_hello_v2_malformed);
	g_test_add_func("/codec/v2/hello-ack", test_hello_ack_v2);
	g_test_add_func("/codec/v2/ctrl", test_ctrl_v2);
	g_test_add_func("/codec/v2/error", test_error_v2);
	g_test_add_func("/codec/v2/resume", test_resume_v2);
	return g_test_run();
}
