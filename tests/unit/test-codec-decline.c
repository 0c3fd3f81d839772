/* SPDX-License-Identifier: MIT */
/*
 * A receiver's reason for declining postcopy in HELLO_ACK (docs/wire-format.md, "HELLO_ACK,
 * version 2"): byte 6, after max_outstanding (a u16 at 4), byte 7 reserved. Round trips of every
 * reason, a reason unknown to this sender taken as it is, and a reason where nothing was
 * declined refused.
 */
#include <errno.h>
#include <string.h>

#include <glib.h>

#include "codec/codec.h"
#include "codec-test.h"
#include "tagmig/error.h"

#define OFFER (TM_FEATURE_TAGS_MTE4 | TM_FEATURE_POSTCOPY)

static size_t encode_declined(uint8_t *buf, uint8_t reason)
{
	const tm_hello_ack ack = { .features = TM_FEATURE_TAGS_MTE4, .max_state_section = 1 << 20,
				   .max_state_total = 1 << 20, .pc_decline = reason };
	GError *err = NULL;

	check_ok(tm_hello_ack_check(&ack, OFFER, &err), &err);
	return tm_hello_ack_encode(buf, 0, &ack);
}

static void test_round_trip(void)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_HELLO_ACK2_LEN];
	GError *err = NULL;

	for (unsigned reason = 0; reason <= 255; reason++) {
		size_t n = encode_declined(buf, (uint8_t)reason);
		g_assert_cmpuint(n, ==, TM_FRAME_HDR_LEN + 32);
		const uint8_t *b = buf + TM_FRAME_HDR_LEN;
		/* max_outstanding 0 (u16), the reason at byte 6, byte 7 zero. */
		g_assert_cmpuint(tm_get16(b + 4), ==, 0);
		g_assert_cmpuint(b[6], ==, reason);
		g_assert_cmpuint(b[7], ==, 0);
		tm_hello_ack d;
		check_ok(tm_hello_ack_decode(b, 32, OFFER, &d, &err), &err);
		g_assert_cmpuint(d.pc_decline, ==, reason);
		g_assert_cmpuint(d.features & TM_FEATURE_POSTCOPY, ==, 0);
	}
	/* Accepted: max_outstanding as a u16 at 4, bytes 6 and 7 zero. */
	const tm_hello_ack ok = { .features = OFFER, .max_outstanding = 512,
				  .max_state_section = 1 << 20, .max_state_total = 1 << 20 };
	tm_hello_ack_encode(buf, 0, &ok);
	g_assert_cmpuint(tm_get32(buf + TM_FRAME_HDR_LEN + 4), ==, 512);
	tm_hello_ack d;
	check_ok(tm_hello_ack_decode(buf + TM_FRAME_HDR_LEN, 32, OFFER, &d, &err), &err);
	g_assert_cmpuint(d.max_outstanding, ==, 512);
	g_assert_cmpuint(d.pc_decline, ==, 0);
}

static void test_refused(void)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_HELLO_ACK2_LEN];
	uint8_t *b = buf + TM_FRAME_HDR_LEN;
	GError *err = NULL;
	tm_hello_ack d;

	/* A reason with POSTCOPY accepted. */
	const tm_hello_ack ok = { .features = OFFER, .max_outstanding = 16,
				  .max_state_section = 1 << 20, .max_state_total = 1 << 20 };
	tm_hello_ack_encode(buf, 0, &ok);
	b[6] = TM_PC_DECLINE_NOT_CONFIGURED;
	check_err(tm_hello_ack_decode(b, 32, OFFER, &d, &err), &err, EBADMSG,
		  "postcopy decline reason 1, but POSTCOPY is accepted");
	/* A reason where POSTCOPY was never offered. */
	encode_declined(buf, TM_PC_DECLINE_UFFD_DENIED);
	check_err(tm_hello_ack_decode(b, 32, TM_FEATURE_TAGS_MTE4, &d, &err), &err, EBADMSG,
		  "postcopy decline reason 2, but POSTCOPY was not offered");
	/* The reserved byte 7. */
	encode_declined(buf, TM_PC_DECLINE_NOT_CONFIGURED);
	b[7] = 0x80;
	check_err(tm_hello_ack_decode(b, 32, OFFER, &d, &err), &err, EBADMSG,
		  "reserved byte at offset 7 is 0x80");
	/* max_outstanding past its u16: byte 6 is no part of it any more, so 0x10000 reads as
	 * max_outstanding 0 with a reason, which the accepted POSTCOPY refuses. */
	tm_hello_ack_encode(buf, 0, &ok);
	tm_put32(b + 4, 0x10000);
	check_err(tm_hello_ack_decode(b, 32, OFFER, &d, &err), &err, EBADMSG,
		  "max_outstanding 0 invalid with POSTCOPY");
}

static void test_text(void)
{
	/* Every known reason has its own words; an unknown one is said to be unknown. */
	const char *seen[5];
	for (unsigned i = 0; i < 5; i++) {
		seen[i] = tm_pc_decline_text((uint8_t)i);
		g_assert_nonnull(seen[i]);
		for (unsigned k = 0; k < i; k++)
			g_assert_cmpstr(seen[k], !=, seen[i]);
	}
	g_assert_nonnull(strstr(tm_pc_decline_text(TM_PC_DECLINE_NOT_CONFIGURED),
				"tm_live_config.postcopy"));
	g_assert_nonnull(strstr(tm_pc_decline_text(TM_PC_DECLINE_UFFD_DENIED), "not permitted"));
	g_assert_nonnull(strstr(tm_pc_decline_text(200), "does not know"));
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/codec/hello-ack/decline-round-trip", test_round_trip);
	g_test_add_func("/codec/hello-ack/decline-refused", test_refused);
	g_test_add_func("/codec/hello-ack/decline-text", test_text);
	return g_test_run();
}
