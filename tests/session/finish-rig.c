/* SPDX-License-Identifier: MIT */
/* The end tests' session and hooks (finish-rig.h). */
#include <string.h>

#include "finish-rig.h"
#include "session/session-internal.h"

/* Which thread ended what: test hooks of the library (-Dtest_hooks=true), else skipped. */
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
#define HOOKS 1
unsigned parked(tm_sender *s)
{
	return tm_sender_test_parked(s);
}

void sender_ends(tm_sender *s, unsigned *data, unsigned *control)
{
	tm_sender_test_direct_ends(s, data, control);
}

unsigned sender_read_end(tm_sender *s)
{
	return tm_sender_test_direct_read(s);
}

void ping_before_end(bool on)
{
	tm_control_test_ping_before_end(on);
}

unsigned reset_before_held(bool on)
{
	tm_control_test_reset_before_held(on);
	return tm_control_test_resets_before_held();
}

unsigned receiver_end(tm_receiver *r)
{
	return tm_receiver_test_direct_end(r);
}

uint64_t direct_syncs(tm_sender *s)
{
	return tm_sender_test_direct_syncs(s);
}

uint64_t early_end_acks(tm_sender *s)
{
	return tm_sender_test_early_end_acks(s);
}

void answer_delay(unsigned ms)
{
	tm_control_test_answer_delay(ms);
}

void end_ack_lie(int channel)
{
	tm_receiver_test_end_ack_lie(channel);
}

void end_ack_delay(unsigned ms)
{
	tm_send_test_end_ack_delay(ms);
}

void close_delay(unsigned ms)
{
	tm_control_test_close_delay(ms);
}

void decided_delay(unsigned ms)
{
	tm_sender_test_decided_delay(ms);
}
#else
#define HOOKS 0
unsigned parked(tm_sender *s)
{
	(void)s;
	return 0;
}

void sender_ends(tm_sender *s, unsigned *data, unsigned *control)
{
	(void)s;
	*data = *control = 0;
}

unsigned sender_read_end(tm_sender *s)
{
	(void)s;
	return 0;
}

void ping_before_end(bool on)
{
	(void)on;
}

unsigned reset_before_held(bool on)
{
	(void)on;
	return 0;
}

unsigned receiver_end(tm_receiver *r)
{
	(void)r;
	return 0;
}

uint64_t direct_syncs(tm_sender *s)
{
	(void)s;
	return 0;
}

uint64_t early_end_acks(tm_sender *s)
{
	(void)s;
	return 0;
}

void answer_delay(unsigned ms)
{
	(void)ms;
}

void end_ack_lie(int channel)
{
	(void)channel;
}

void end_ack_delay(unsigned ms)
{
	(void)ms;
}

void close_delay(unsigned ms)
{
	(void)ms;
}

void decided_delay(unsigned ms)
{
	(void)ms;
}
#endif

/* false (the test skipped) in a library built without its test hooks */
bool have_hooks(void)
{
	if (!HOOKS)
		g_test_skip("needs the library's test hooks (meson -Dtest_hooks=true)");
	return HOOKS;
}

static const block_spec spec[] = { { "pc.ram", GUEST, PAGE } };

tm_sender *source(guest *g, const char *port)
{
	g_autoptr(GError) err = NULL;
	tm_sender *s = NULL;
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir,
				 .channels = CHANNELS, .timeout_ms = 20000,
				 .packet_size = CHUNK, .chunk_size = CHUNK };

	g_assert_cmpint(tm_sender_new(g->layout, g->tags, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", port, &err), ==, 0);
	return s;
}

/* The source filled, the destination empty. */
void guests_init(guest *src, guest *dst)
{
	guest_init(src, spec, 1, true);
	guest_init(dst, spec, 1, true);
	guest_fill(src);
}

/* Every page, then a SYNC: each channel's worker parks once it has the SYNC_ACK. */
void full_round(tm_sender *s)
{
	g_autoptr(GError) err = NULL;
	const uint64_t np = GUEST / PAGE;
	g_autofree uint64_t *bm = g_new0(uint64_t, np / 64);

	memset(bm, 0xff, np / 64 * sizeof(uint64_t));
	g_assert_cmpint(tm_sender_queue_bitmap(s, 0, bm, 0, np, &err), ==, 0);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
}

/* The sync returns on the last SYNC_ACK, a moment before the workers park: wait for them. */
void await_parked(tm_sender *s, unsigned n)
{
	for (int i = 0; i < 20000 && parked(s) < n; i++)
		g_usleep(1000);
	g_assert_cmpuint(parked(s), ==, n);
}

/* Every page of the channels in busy[] dirtied and queued, nothing synced. */
uint64_t dirty_channels(guest *g, tm_sender *s, const bool busy[CHANNELS])
{
	g_autoptr(GError) err = NULL;
	g_autoptr(GArray) pages = g_array_new(FALSE, FALSE, sizeof(uint64_t));

	for (uint64_t p = 0; p < GUEST / PAGE; p++) {
		if (!busy[p * PAGE / CHUNK % CHANNELS])
			continue;
		fill_page(g, 0, p, (unsigned)rnd());
		g_array_append_val(pages, p);
	}
	g_assert_cmpint(tm_sender_queue_pages(s, 0, (uint64_t *)pages->data, pages->len, &err), ==,
			0);
	return pages->len;
}

/* How the session ended: data channels and the control END of the sender, and the receiver;
 * returns whether finish's thread read the control END_ACK itself. */
unsigned ends(tm_sender *s, peer *p, unsigned *data, unsigned *control, unsigned *answered)
{
	unsigned read = sender_read_end(s);

	sender_ends(s, data, control);
	*answered = receiver_end(p->r);
	g_test_message("ended by finish's thread: %u data channels, control END %u, its END_ACK "
		       "read %u; END_ACK by the receiver's last data worker: %u",
		       *data, *control, read, *answered);
	return read;
}

/* The pages both sides counted: sent, applied, and what the test queued. */
void assert_counts(tm_sender *s, peer *p, uint64_t queued)
{
	tm_stats a, b;

	tm_sender_get_stats(s, &a);
	tm_receiver_get_stats(p->r, &b);
	g_assert_cmpuint(a.pages, ==, queued);
	g_assert_cmpuint(b.pages, ==, queued);
	g_assert_cmpuint(a.syncs, >=, 1);
}

/* A session through its first full round, every worker parked. */
tm_sender *parked_after_round(guest *src, guest *dst, peer *p)
{
	guests_init(src, dst);
	g_autofree char *port = peer_start(p, dst);
	tm_sender *s = source(src, port);
	full_round(s);
	await_parked(s, CHANNELS);
	return s;
}

/* finish succeeds, the receiver completes, and the destination is the source bit for bit. */
void finish_checked(tm_sender *s, peer *p, guest *src, guest *dst, uint64_t pages)
{
	g_autoptr(GError) err = NULL;

	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	g_assert_no_error(err);
	peer_join(p);
	g_assert_no_error(p->error);
	g_assert_cmpint(p->ret, ==, 0);
	assert_same(src, dst);
	assert_counts(s, p, pages);
}

void teardown(tm_sender *s, peer *p, guest *src, guest *dst)
{
	tm_sender_free(s);
	peer_free(p);
	guest_fini(src);
	guest_fini(dst);
}

void finish_complete(tm_sender *s, peer *p, guest *src, guest *dst, uint64_t pages)
{
	finish_checked(s, p, src, dst, pages);
	teardown(s, p, src, dst);
}
