/* SPDX-License-Identifier: MIT */
/*
 * Wire codec tests, the frame and the messages that are fields in a frame: round trips, the
 * largest body, control messages and ERROR, and every class of malformed input rejected with
 * its errno and a message naming the field (docs/wire-format.md). Protocol 1; protocol 2 in
 * test-codec-v2.c (shared helpers: codec-test.h).
 */
#include <errno.h>
#include <string.h>

#include <glib.h>

#include "codec/codec.h"
#include "codec-test.h"
#include "tagmig/error.h"
#include "tagmig/session.h"

/* ---- frame ---- */

static void test_frame_max_body(void)
{
	g_assert_cmpuint(tm_frame_max_body(TM_WIRE_VERSION_1, TM_MSG_HELLO, 0), ==, 48 + 1024 * (24 + 255));
	g_assert_cmpuint(tm_frame_max_body(TM_WIRE_VERSION_1, TM_MSG_HELLO_ACK, 0), ==, 8);
	g_assert_cmpuint(tm_frame_max_body(TM_WIRE_VERSION_1, TM_MSG_SYNC, 0), ==, 8);
	g_assert_cmpuint(tm_frame_max_body(TM_WIRE_VERSION_1, TM_MSG_SYNC_ACK, 0), ==, 16);
	g_assert_cmpuint(tm_frame_max_body(TM_WIRE_VERSION_1, TM_MSG_END, 0), ==, 16);
	g_assert_cmpuint(tm_frame_max_body(TM_WIRE_VERSION_1, TM_MSG_END_ACK, 0), ==, 8);
	g_assert_cmpuint(tm_frame_max_body(TM_WIRE_VERSION_1, TM_MSG_ERROR, 0), ==, 8 + 1024);
	g_assert_cmpuint(tm_frame_max_body(TM_WIRE_VERSION_1, TM_MSG_DATA, 0), ==, 0);
	g_assert_cmpuint(tm_frame_max_body(TM_WIRE_VERSION_1, TM_MSG_DATA, 65536), ==, 16 + 8 * 16 + 65536 + 2048);
	g_assert_cmpuint(tm_frame_max_body(TM_WIRE_VERSION_1, TM_MSG_DATA, TM_PACKET_SIZE_MAX), ==,
			 16 + 8 * 4096 + TM_PACKET_SIZE_MAX + TM_PACKET_SIZE_MAX / 32);
	g_assert_cmpuint(tm_frame_max_body(TM_WIRE_VERSION_1, 0, 65536), ==, 0);
	g_assert_cmpuint(tm_frame_max_body(TM_WIRE_VERSION_1, 9, 65536), ==, 0);

	g_assert_cmpstr(tm_msg_name(TM_MSG_DATA), ==, "DATA");
	g_assert_cmpstr(tm_msg_name(TM_MSG_ERROR), ==, "ERROR");
	g_assert_cmpstr(tm_msg_name(0), ==, "unknown");
	g_assert_cmpstr(tm_msg_name(200), ==, "unknown");
}

static void test_frame_round_trip(void)
{
	for (uint8_t type = TM_MSG_HELLO; type <= TM_MSG_ERROR; type++) {
		uint8_t buf[TM_FRAME_HDR_LEN];
		uint32_t max = tm_frame_max_body(TM_WIRE_VERSION_1, type, TM_PACKET_SIZE_DEFAULT);
		tm_frame f;
		GError *err = NULL;

		tm_frame_encode(buf, type, max, 0xdeadbeef);
		g_assert_cmpmem(buf, 4, "TMIG", 4);
		g_assert_cmpuint(buf[4], ==, 1);
		check_ok(tm_frame_decode(buf, sizeof(buf), TM_WIRE_VERSION_1, TM_PACKET_SIZE_DEFAULT, &f, &err), &err);
		g_assert_cmpuint(f.type, ==, type);
		g_assert_cmpuint(f.body_len, ==, max);
		g_assert_cmpuint(f.seq, ==, 0xdeadbeef);

		/* One byte over the type's maximum. */
		tm_frame_encode(buf, type, max + 1, 0);
		check_err(tm_frame_decode(buf, sizeof(buf), TM_WIRE_VERSION_1, TM_PACKET_SIZE_DEFAULT, &f, &err), &err,
			  EMSGSIZE, "body_len");
	}
}

static void test_frame_malformed(void)
{
	uint8_t good[TM_FRAME_HDR_LEN], buf[TM_FRAME_HDR_LEN];
	tm_frame f = { .type = 99, .body_len = 77, .seq = 55 };
	GError *err = NULL;

	tm_frame_encode(good, TM_MSG_SYNC, 8, 3);

	memcpy(buf, good, sizeof(buf));
	buf[3] = 'H';
	check_err(tm_frame_decode(buf, sizeof(buf), TM_WIRE_VERSION_1, 0, &f, &err), &err, EBADMSG, "magic");

	for (unsigned v = 0; v < 256; v++) {
		if (v == TM_WIRE_VERSION_1)
			continue;
		memcpy(buf, good, sizeof(buf));
		buf[4] = (uint8_t)v;
		check_err(tm_frame_decode(buf, sizeof(buf), TM_WIRE_VERSION_1, 0, &f, &err), &err, EPROTONOSUPPORT,
			  "version");
	}

	const uint8_t bad_types[] = { 0, 9, 10, 0x80, 0xff };
	for (unsigned i = 0; i < G_N_ELEMENTS(bad_types); i++) {
		memcpy(buf, good, sizeof(buf));
		buf[5] = bad_types[i];
		check_err(tm_frame_decode(buf, sizeof(buf), TM_WIRE_VERSION_1, 0, &f, &err), &err, EBADMSG,
			  "unknown message type");
	}

	for (unsigned i = 6; i < 8; i++) {
		memcpy(buf, good, sizeof(buf));
		buf[i] = 0x01;
		check_err(tm_frame_decode(buf, sizeof(buf), TM_WIRE_VERSION_1, 0, &f, &err), &err, EBADMSG, "reserved");
	}

	/* body_len: the largest value, and the HELLO limit + 1. */
	memcpy(buf, good, sizeof(buf));
	tm_put32(buf + 8, UINT32_MAX);
	check_err(tm_frame_decode(buf, sizeof(buf), TM_WIRE_VERSION_1, 0, &f, &err), &err, EMSGSIZE, "body_len 4294967295");
	tm_frame_encode(buf, TM_MSG_HELLO, tm_frame_max_body(TM_WIRE_VERSION_1, TM_MSG_HELLO, 0) + 1, 0);
	check_err(tm_frame_decode(buf, sizeof(buf), TM_WIRE_VERSION_1, 0, &f, &err), &err, EMSGSIZE, "HELLO");

	/* DATA before the handshake, even an empty one. */
	tm_frame_encode(buf, TM_MSG_DATA, 0, 1);
	check_err(tm_frame_decode(buf, sizeof(buf), TM_WIRE_VERSION_1, 0, &f, &err), &err, EPROTO, "handshake");

	for (size_t len = 0; len < TM_FRAME_HDR_LEN; len++)
		check_err(tm_frame_decode(good, len, TM_WIRE_VERSION_1, 0, &f, &err), &err, EBADMSG, "truncated");

	/* Nothing written on failure. */
	g_assert_cmpuint(f.type, ==, 99);
	g_assert_cmpuint(f.body_len, ==, 77);
	g_assert_cmpuint(f.seq, ==, 55);
}

/* ---- control messages and ERROR ---- */

static void test_ctrl_round_trip(void)
{
	static const uint8_t types[] = { TM_MSG_HELLO_ACK, TM_MSG_SYNC, TM_MSG_SYNC_ACK, TM_MSG_END,
					 TM_MSG_END_ACK };
	GError *err = NULL;

	for (unsigned i = 0; i < G_N_ELEMENTS(types); i++) {
		uint8_t buf[64];
		tm_frame f;
		uint64_t a = 1, b = 1;
		size_t n = tm_ctrl_encode(buf, types[i], 41 + i, 0x0102030405060708ull,
					  0x1112131415161718ull);

		g_assert_cmpuint(n, ==, TM_FRAME_HDR_LEN + tm_frame_max_body(TM_WIRE_VERSION_1, types[i], 0));
		check_ok(tm_frame_decode(buf, n, TM_WIRE_VERSION_1, 0, &f, &err), &err);
		g_assert_cmpuint(f.type, ==, types[i]);
		g_assert_cmpuint(f.seq, ==, 41 + i);
		g_assert_cmpuint(f.body_len, ==, n - TM_FRAME_HDR_LEN);
		check_ok(tm_ctrl_decode(f.type, buf + 16, f.body_len, &a, &b, &err), &err);
		g_assert_cmpuint(a, ==, types[i] == TM_MSG_HELLO_ACK ? 0 : 0x0102030405060708ull);
		g_assert_cmpuint(b, ==, f.body_len == 16 ? 0x1112131415161718ull : 0);
		check_ok(tm_ctrl_decode(f.type, buf + 16, f.body_len, NULL, NULL, &err), &err);

		/* Exact lengths only: every shorter and one longer body. */
		for (size_t len = 0; len < f.body_len; len++)
			check_err(tm_ctrl_decode(f.type, buf + 16, len, &a, &b, &err), &err, EBADMSG,
				  "truncated");
		check_err(tm_ctrl_decode(f.type, buf + 16, f.body_len + 1, &a, &b, &err), &err,
			  EBADMSG, tm_msg_name(types[i]));
	}

	uint8_t buf[32];
	size_t n = tm_ctrl_encode(buf, TM_MSG_HELLO_ACK, 0, 0, 0);
	buf[16 + 7] = 0x40;
	check_err(tm_ctrl_decode(TM_MSG_HELLO_ACK, buf + 16, n - 16, NULL, NULL, &err), &err,
		  EBADMSG, "HELLO_ACK: reserved field is 0x4000000000000000");
	check_err(tm_ctrl_decode(TM_MSG_DATA, buf + 16, 8, NULL, NULL, &err), &err, EINVAL,
		  "DATA (type 3) is not a control message");
}

static void test_error_round_trip(void)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_ERROR_FIXED_LEN + TM_MAX_ERROR_MESSAGE];
	const char *msg = "RAM block 1 'pc.ram': sender length 1073741824, receiver length 536870912";
	tm_frame f;
	int code;
	GError *err = NULL;

	size_t n = tm_error_encode(buf, 9, EINVAL, msg);
	g_assert_cmpuint(n, ==, 16 + 8 + strlen(msg));
	check_ok(tm_frame_decode(buf, n, TM_WIRE_VERSION_1, 0, &f, &err), &err);
	g_assert_cmpuint(f.type, ==, TM_MSG_ERROR);
	g_assert_cmpuint(f.seq, ==, 9);
	g_autofree char *out = NULL;
	check_ok(tm_error_decode(buf + 16, f.body_len, &code, &out, &err), &err);
	g_assert_cmpint(code, ==, EINVAL);
	g_assert_cmpstr(out, ==, msg);
	g_clear_pointer(&out, g_free);

	/* Negative errnos are sent positive; no code at all becomes EIO; NULL is an empty text. */
	n = tm_error_encode(buf, 0, -ERANGE, NULL);
	g_assert_cmpuint(n, ==, 24);
	check_ok(tm_error_decode(buf + 16, 8, &code, &out, &err), &err);
	g_assert_cmpint(code, ==, ERANGE);
	g_assert_cmpstr(out, ==, "");
	g_clear_pointer(&out, g_free);
	n = tm_error_encode(buf, 0, 0, "x");
	check_ok(tm_error_decode(buf + 16, n - 16, &code, &out, &err), &err);
	g_assert_cmpint(code, ==, EIO);
	g_clear_pointer(&out, g_free);

	/* Too long: cut at 1024 bytes, and never inside a UTF-8 sequence. */
	g_autofree char *longmsg = g_strnfill(2000, 'y');
	n = tm_error_encode(buf, 0, EBADMSG, longmsg);
	g_assert_cmpuint(n, ==, sizeof(buf));
	check_ok(tm_error_decode(buf + 16, n - 16, &code, &out, &err), &err);
	g_assert_cmpuint(strlen(out), ==, TM_MAX_ERROR_MESSAGE);
	g_clear_pointer(&out, g_free);
	g_autofree char *a1023 = g_strnfill(1023, 'a');
	g_autofree char *utf = g_strconcat(a1023, "\xc3\xa9", NULL);
	n = tm_error_encode(buf, 0, EBADMSG, utf);
	g_assert_cmpuint(n, ==, 16 + 8 + 1023);
	check_ok(tm_error_decode(buf + 16, n - 16, &code, &out, &err), &err);
	g_assert_true(g_utf8_validate(out, -1, NULL));
	g_clear_pointer(&out, g_free);

	/* Invalid UTF-8 from the peer is replaced. */
	n = tm_error_encode(buf, 0, EPROTO, "bad \xff byte");
	check_ok(tm_error_decode(buf + 16, n - 16, &code, &out, &err), &err);
	g_assert_true(g_utf8_validate(out, -1, NULL));
	g_assert_cmpstr(out, ==, "bad \xef\xbf\xbd byte");
	g_clear_pointer(&out, g_free);
}

static void test_error_malformed(void)
{
	uint8_t good[64], buf[TM_FRAME_HDR_LEN + TM_ERROR_FIXED_LEN + TM_MAX_ERROR_MESSAGE + 8];
	int code = -1;
	char *out = NULL;
	GError *err = NULL;
	tm_frame f;

	size_t n = tm_error_encode(good, 0, EPROTO, "no such block");
	uint8_t *body = buf + 16;
	size_t blen = n - 16;

	memcpy(buf, good, n);
	put_le(body + 6, 2, 1);
	check_err(tm_error_decode(body, blen, &code, &out, &err), &err, EBADMSG,
		  "ERROR: reserved field is 0x0001");
	memcpy(buf, good, n);
	put_le(body, 4, 0);
	check_err(tm_error_decode(body, blen, &code, &out, &err), &err, EBADMSG, "code 0");
	put_le(body, 4, 0x80000000u);
	check_err(tm_error_decode(body, blen, &code, &out, &err), &err, EBADMSG, "code 2147483648");
	memcpy(buf, good, n);
	put_le(body + 4, 2, 1025);
	check_err(tm_error_decode(body, blen, &code, &out, &err), &err, EMSGSIZE,
		  "ERROR: message_len 1025 over the maximum 1024");
	put_le(body + 4, 2, 0xffff);
	check_err(tm_error_decode(body, blen, &code, &out, &err), &err, EMSGSIZE, "message_len 65535");
	memcpy(buf, good, n);
	put_le(body + 4, 2, 12);
	check_err(tm_error_decode(body, blen, &code, &out, &err), &err, EBADMSG,
		  "body of 21 bytes, message_len 12 needs 20");
	memcpy(buf, good, n);
	body[8 + 2] = 0;
	check_err(tm_error_decode(body, blen, &code, &out, &err), &err, EBADMSG,
		  "NUL byte at offset 2");
	for (size_t len = 0; len < blen; len++) {
		g_autofree uint8_t *prefix = g_memdup2(good + 16, len);
		check_err(tm_error_decode(prefix, len, &code, &out, &err), &err, EBADMSG, "truncated");
	}
	g_assert_cmpint(code, ==, -1);
	g_assert_null(out);

	/* A frame announcing a longer ERROR body than allowed. */
	tm_frame_encode(buf, TM_MSG_ERROR, 8 + 1025, 0);
	check_err(tm_frame_decode(buf, 16, TM_WIRE_VERSION_1, 0, &f, &err), &err, EMSGSIZE, "(ERROR): body_len 1033");
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);

	g_test_add_func("/codec/frame/max-body", test_frame_max_body);
	g_test_add_func("/codec/frame/round-trip", test_frame_round_trip);
	g_test_add_func("/codec/frame/malformed", test_frame_malformed);
	g_test_add_func("/codec/ctrl/round-trip", test_ctrl_round_trip);
	g_test_add_func("/codec/error/round-trip", test_error_round_trip);
	g_test_add_func("/codec/error/malformed", test_error_malformed);

	return g_test_run();
}
