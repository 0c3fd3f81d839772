/* SPDX-License-Identifier: MIT */
/*
 * A VMM's view: only <tagmig/tagmig.h>, linked against the shared library (so only the symbols
 * the version script exports). Migrates a small tagged guest over loopback and checks it.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <tagmig/tagmig.h>

#define LEN (2u << 20)

static int listen_fd;
static tm_ram_layout *dst_layout;
static tm_tag_store *dst_tags;
static int recv_ret = -1;
static unsigned recv_wire;
static uint8_t recv_sid[16];

static gpointer receiver(gpointer data)
{
	g_autoptr(tm_receiver) r = NULL;
	g_autoptr(GError) err = NULL;

	recv_ret = tm_receiver_new(NULL, &r, &err);
	if (recv_ret >= 0) /* nothing to waive before a session is accepted */
		g_assert_cmpint(tm_receiver_waive_pages(r, 0, 0, 1, NULL), ==, -EBADFD);
	if (recv_ret >= 0)
		recv_ret = tm_receiver_accept(r, listen_fd, &err);
	if (recv_ret >= 0) { /* only pages of the announced layout (here: one block) */
		g_assert_cmpint(tm_receiver_waive_pages(r, 1, 0, 1, NULL), ==, -ERANGE);
		g_assert_cmpint(tm_receiver_waive_pages(r, 0, 1, LEN / 16384, NULL), ==, -ERANGE);
		g_assert_cmpint(tm_receiver_waive_pages(r, 0, 0, 0, NULL), ==, 0);
	}
	if (recv_ret >= 0)
		recv_ret = tm_receiver_start(r, dst_layout, dst_tags, &err);
	if (recv_ret >= 0)
		recv_ret = tm_receiver_wait(r, &err);
	recv_wire = tm_receiver_wire_version(r);
	g_assert_cmpint(tm_receiver_get_session_id(r, recv_sid), ==, 0);
	if (err)
		g_test_message("receiver: %s", err->message);
	return NULL;
}

static void test_public_api(void)
{
	g_autoptr(tm_ram_layout) sl = NULL;
	g_autoptr(tm_tag_store) st = NULL;
	g_autoptr(tm_sender) s = NULL;
	g_autoptr(GError) err = NULL;
	uint8_t *src = g_aligned_alloc0(LEN, 1, 65536), *dst = g_aligned_alloc0(LEN, 1, 65536);
	unsigned port;

	for (unsigned i = 0; i < LEN; i++)
		src[i] = (uint8_t)(i * 131 + i / 4096);
	memset(src + 8192, 0, 4096); /* a zero page that carries tags */
	g_assert_cmpint(tm_ram_layout_new(&sl), ==, 0);
	g_assert_cmpint(tm_ram_layout_new(&dst_layout), ==, 0);
	g_assert_cmpint(tm_ram_layout_add_block(sl, "ram", src, LEN, 16384, 0, &err), ==, 0);
	g_assert_cmpint(tm_ram_layout_add_block(dst_layout, "ram", dst, LEN, 16384, 0, &err), ==, 0);
	g_assert_cmpint(tm_tag_store_new(&tm_tag_store_soft, sl, NULL, &st, &err), ==, 0);
	g_assert_cmpint(tm_tag_store_new(&tm_tag_store_soft, dst_layout, NULL, &dst_tags, &err), ==, 0);
	uint8_t *tags = tm_tag_store_soft_array(st, 0);
	for (unsigned i = 0; i < LEN / TM_TAG_GRANULE; i++)
		tags[i] = (uint8_t)((i ^ (i >> 3)) & 0xf);

	listen_fd = tm_listen("127.0.0.1", "0", &port, &err);
	g_assert_cmpint(listen_fd, >=, 0);
	GThread *t = g_thread_new("receiver", receiver, NULL);
	g_autofree char *ports = g_strdup_printf("%u", port);
	tm_sender_config cfg = { .channels = 2 };
	g_assert_cmpint(tm_sender_new(sl, st, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", ports, &err), ==, 0);
	uint64_t bitmap[(LEN / 16384 + 63) / 64];
	memset(bitmap, 0xff, sizeof(bitmap));
	g_assert_cmpint(tm_sender_queue_bitmap(s, 0, bitmap, 0, LEN / 16384, &err), ==, 0);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	g_thread_join(t);
	g_assert_cmpint(recv_ret, ==, 0);
	/* Protocol 2 by default; both sides name the same session. */
	uint8_t sid[16];
	g_assert_cmpuint(tm_sender_wire_version(s), ==, 2);
	g_assert_cmpuint(recv_wire, ==, 2);
	g_assert_cmpint(tm_sender_get_session_id(s, sid), ==, 0);
	g_assert_cmpmem(sid, 16, recv_sid, 16);
	g_assert_true(memcmp(src, dst, LEN) == 0);
	g_assert_true(memcmp(tags, tm_tag_store_soft_array(dst_tags, 0), LEN / 16) == 0);
	tm_stats stats;
	tm_sender_get_stats(s, &stats);
	g_assert_cmpuint(stats.pages, ==, LEN / 16384);
	/* finish is not a round; the session is over: nothing more to change. */
	tm_live_stats ls = { .size = sizeof(ls) };
	g_assert_cmpint(tm_sender_get_live_stats(s, &ls), ==, 0);
	g_assert_cmpuint(ls.phase, ==, TM_PHASE_COMPLETE);
	g_assert_cmpuint(ls.rounds, ==, 0);
	g_assert_cmpuint(ls.downtime_us, ==, 0); /* guest_stopped never called */
	g_assert_cmpint(tm_sender_set_rate_limit(s, 1), ==, -EBADFD);
	g_assert_cmpstr(TAGMIG_VERSION, !=, "");

	close(listen_fd);
	tm_tag_store_free(dst_tags);
	tm_ram_layout_free(dst_layout);
	g_aligned_free(src);
	g_aligned_free(dst);
}

/* tm_live_config: size-prefixed, every field checked and named; set calls before the session. */
static void expect_live(int r, GError **err, int errnum, const char *substr)
{
	g_assert_cmpint(r, ==, -errnum);
	g_assert_error(*err, TM_ERROR, errnum);
	if (!strstr((*err)->message, substr))
		g_error("\"%s\" does not mention \"%s\"", (*err)->message, substr);
	g_clear_error(err);
}

static int fake_pause(void *opaque)
{
	(void)opaque;
	return 0;
}

static void fake_resume(void *opaque)
{
	(void)opaque;
}

static void test_live_config(void)
{
	g_autoptr(tm_ram_layout) l = NULL;
	g_autoptr(tm_sender) s = NULL, s2 = NULL;
	g_autoptr(tm_receiver) r = NULL;
	g_autoptr(GError) err = NULL;
	uint8_t *ram = g_aligned_alloc0(1 << 20, 1, 65536);
	uint8_t id[16], id2[16];

	g_assert_cmpint(tm_ram_layout_new(&l), ==, 0);
	g_assert_cmpint(tm_ram_layout_add_block(l, "ram", ram, 1 << 20, 4096, 0, &err), ==, 0);
	g_assert_cmpint(tm_sender_new(l, NULL, NULL, &s, &err), ==, 0);
	g_assert_cmpint(tm_receiver_new(NULL, &r, &err), ==, 0);

	tm_live_config lc = { .size = 4 };
	expect_live(tm_sender_set_live(s, &lc, &err), &err, EINVAL, "size 4, at least 8");
	expect_live(tm_sender_set_live(s, NULL, &err), &err, EINVAL, "NULL");
	lc = (tm_live_config){ .size = sizeof(lc), .wire_version = 3 };
	expect_live(tm_sender_set_live(s, &lc, &err), &err, EINVAL, "wire_version 3");
	lc = (tm_live_config){ .size = sizeof(lc), .postcopy = true, .wire_version = 1 };
	expect_live(tm_sender_set_live(s, &lc, &err), &err, EINVAL, "postcopy needs protocol 2");
	lc = (tm_live_config){ .size = sizeof(lc), .postcopy = true };
	/* The receiver opens its userfaultfd in set_live: it works, or says why not. */
	lc.uffd_user_mode_only = true;
	int pr = tm_receiver_set_live(r, &lc, &err);
	if (pr < 0)
		expect_live(pr, &err, -pr, "userfaultfd");
	lc = (tm_live_config){ .size = sizeof(lc), .postcopy = true, .uffd_borrow = true,
			       .uffd = -1 };
	expect_live(tm_receiver_set_live(r, &lc, &err), &err, EBADF, "uffd_borrow with uffd -1");
	/* Before connect the session is not open, postcopy or not. */
	expect_live(tm_sender_start_postcopy(s, &err), &err, EBADFD, "not open");
	lc = (tm_live_config){ .size = sizeof(lc), .max_outstanding = 513 };
	expect_live(tm_receiver_set_live(r, &lc, &err), &err, EINVAL, "max_outstanding 513");
	lc = (tm_live_config){ .size = sizeof(lc), .max_state_section = (1ull << 40) + 1 };
	expect_live(tm_receiver_set_live(r, &lc, &err), &err, EINVAL, "max_state_section");
	lc = (tm_live_config){ .size = sizeof(lc), .max_state_total = (1ull << 42) + 1 };
	expect_live(tm_receiver_set_live(r, &lc, &err), &err, EINVAL, "max_state_total");
	lc = (tm_live_config){ .size = sizeof(lc), .max_state_section = 1 << 20,
			       .max_state_total = 1 << 19 };
	expect_live(tm_receiver_set_live(r, &lc, &err), &err, EINVAL,
		    "max_state_total 524288 below max_state_section 1048576");
	/* The vCPU pause hooks go in pairs: a pause nobody resumes would stop the guest for good. */
	lc = (tm_live_config){ .size = sizeof(lc), .vcpu_pause = fake_pause };
	expect_live(tm_receiver_set_live(r, &lc, &err), &err, EINVAL, "vcpu_pause and vcpu_resume");
	lc = (tm_live_config){ .size = sizeof(lc), .vcpu_resume = fake_resume };
	expect_live(tm_receiver_set_live(r, &lc, &err), &err, EINVAL, "vcpu_pause and vcpu_resume");
	lc = (tm_live_config){ .size = sizeof(lc), .vcpu_pause = fake_pause,
			       .vcpu_resume = fake_resume };
	g_assert_cmpint(tm_receiver_set_live(r, &lc, &err), ==, 0);

	/* A caller built against a shorter struct: only its bytes are read, the rest is zero
	 * (postcopy set beyond `size` does not count). */
	lc = (tm_live_config){ .size = 8, .wire_version = 1, .postcopy = true };
	g_assert_cmpint(tm_sender_set_live(s, &lc, &err), ==, 0);
	g_assert_cmpint(tm_receiver_set_live(r, &lc, &err), ==, 0);
	/* A newer, longer struct: the library reads what it knows. */
	struct {
		tm_live_config c;
		uint8_t future[64];
	} big = { .c = { .size = sizeof(big), .wire_version = 2 } };
	memset(big.future, 0xee, sizeof(big.future));
	g_assert_cmpint(tm_sender_set_live(s, &big.c, &err), ==, 0);
	g_assert_no_error(err);

	/* Before a handshake: no version; the sender has its id, the receiver none yet. */
	g_assert_cmpuint(tm_sender_wire_version(s), ==, 0);
	g_assert_cmpuint(tm_receiver_wire_version(r), ==, 0);
	g_assert_cmpint(tm_receiver_get_session_id(r, id), ==, -EBADFD);
	g_assert_cmpint(tm_sender_get_session_id(s, id), ==, 0);
	g_assert_cmpint(tm_sender_new(l, NULL, NULL, &s2, &err), ==, 0);
	g_assert_cmpint(tm_sender_get_session_id(s2, id2), ==, 0);
	g_assert_true(memcmp(id, id2, 16) != 0);
	g_aligned_free(ram);
}

/* Rounds, advice and limits of a sender that never connected. */
static void test_rounds_before_connect(void)
{
	g_autoptr(tm_ram_layout) l = NULL;
	g_autoptr(tm_sender) s = NULL;
	g_autoptr(GError) err = NULL;
	uint8_t *ram = g_aligned_alloc0(1 << 20, 1, 65536);
	uint64_t round = 99;
	tm_round_stats rs;
	tm_switch_advice adv;

	g_assert_cmpint(tm_ram_layout_new(&l), ==, 0);
	g_assert_cmpint(tm_ram_layout_add_block(l, "ram", ram, 1 << 20, 4096, 0, &err), ==, 0);
	g_assert_cmpint(tm_sender_new(l, NULL, NULL, &s, &err), ==, 0);
	expect_live(tm_sender_end_round(s, &round, &err), &err, EBADFD, "not open");
	g_assert_cmpuint(round, ==, 99);
	expect_live(tm_sender_round_done(s, 1, &err), &err, EINVAL, "round 1 was never ended");
	g_assert_cmpint(tm_sender_get_round(s, 1, &rs), ==, -ENOENT);
	g_assert_cmpint(tm_sender_advise(s, 0, 0, &adv), ==, -EBADFD);
	expect_live(tm_sender_guest_stopped(s, &err), &err, EBADFD, "not open");

	tm_live_stats ls = { .size = 4 };
	g_assert_cmpint(tm_sender_get_live_stats(s, &ls), ==, -EINVAL);
	ls = (tm_live_stats){ .size = sizeof(ls) };
	g_assert_cmpint(tm_sender_get_live_stats(s, &ls), ==, 0);
	g_assert_cmpuint(ls.phase, ==, TM_PHASE_SETUP);
	g_assert_cmpuint(ls.wire_version, ==, 0);
	g_assert_cmpuint(ls.max_downtime_us, ==, 300000);
	g_assert_cmpuint(ls.rate_limit, ==, 0);
	/* The setters work before the session too. */
	g_assert_cmpint(tm_sender_set_rate_limit(s, 5000000), ==, 0);
	g_assert_cmpint(tm_sender_set_max_downtime(s, 7000), ==, 0);
	g_assert_cmpint(tm_sender_get_live_stats(s, &ls), ==, 0);
	g_assert_cmpuint(ls.rate_limit, ==, 5000000);
	g_assert_cmpuint(ls.max_downtime_us, ==, 7000);
	g_assert_cmpint(tm_sender_set_max_downtime(s, 0), ==, 0); /* back to the default */
	g_assert_cmpint(tm_sender_get_live_stats(s, &ls), ==, 0);
	g_assert_cmpuint(ls.max_downtime_us, ==, 300000);
	g_aligned_free(ram);
}

/* Device state before any session: refused with words; bad state_names refused at set_live. */
static void test_state_before_connect(void)
{
	g_autoptr(tm_ram_layout) l = NULL;
	g_autoptr(tm_sender) s = NULL;
	g_autoptr(tm_receiver) r = NULL;
	g_autoptr(GError) err = NULL;
	uint8_t *ram = g_aligned_alloc0(1 << 20, 1, 65536);
	static const char *const bad[] = { "cpu0", "dev\t1", NULL };
	static const char *const good[] = { "cpu0", "dev", NULL };
	tm_state_info info;
	char buf[4];

	g_assert_cmpint(tm_ram_layout_new(&l), ==, 0);
	g_assert_cmpint(tm_ram_layout_add_block(l, "ram", ram, 1 << 20, 4096, 0, &err), ==, 0);
	g_assert_cmpint(tm_sender_new(l, NULL, NULL, &s, &err), ==, 0);
	expect_live(tm_sender_put_state(s, "cpu0", "x", 1, TM_STATE_COPY, &err), &err, EBADFD,
		    "not open");
	g_assert_cmpint(tm_receiver_new(NULL, &r, &err), ==, 0);
	expect_live(tm_receiver_next_state(r, &info, &err), &err, EBADFD, "not running");
	expect_live(tm_receiver_read_state(r, buf, 1, &err), &err, EBADFD, "not running");
	tm_live_config lc = { .size = sizeof(lc), .state_names = bad };
	expect_live(tm_receiver_set_live(r, &lc, &err), &err, EINVAL,
		    "state_names[1]: state section name: control character 0x09 at byte 3");
	lc.state_names = good;
	g_assert_cmpint(tm_receiver_set_live(r, &lc, &err), ==, 0);
	/* A caller built before state_names existed: the field is not read. */
	lc.state_names = bad;
	lc.size = offsetof(tm_live_config, state_names);
	g_assert_cmpint(tm_receiver_set_live(r, &lc, &err), ==, 0);
	g_aligned_free(ram);
}

/* tm_tag_buffer_check: the check `tagmig send` runs on a tag file before it connects. */
static void test_tag_buffer_check(void)
{
	uint8_t tags[8192];
	g_autoptr(GError) err = NULL;

	for (unsigned i = 0; i < sizeof(tags); i++)
		tags[i] = (uint8_t)(i & 0x0f);
	g_assert_cmpint(tm_tag_buffer_check(tags, sizeof(tags), &err), ==, 0);
	g_assert_no_error(err);
	g_assert_cmpint(tm_tag_buffer_check(NULL, 0, &err), ==, 0);
	g_assert_no_error(err);

	/* The first bad byte is named, wherever it sits in an 8-byte word; later ones are not. */
	tags[4097] = 0x35;
	tags[6000] = 0xf0;
	g_assert_cmpint(tm_tag_buffer_check(tags, sizeof(tags), &err), ==, -EINVAL);
	g_assert_error(err, TM_ERROR, EINVAL);
	g_assert_cmpstr(err->message, ==, "byte at offset 4097 has high nibble set (0x35)");
	g_clear_error(&err);
	/* Only len bytes are read: the bad bytes past it do not count. */
	g_assert_cmpint(tm_tag_buffer_check(tags, 4097, &err), ==, 0);
	g_assert_no_error(err);
	g_assert_cmpint(tm_tag_buffer_check(tags + 4098, sizeof(tags) - 4098, NULL), ==, -EINVAL);
	/* The last byte of a length that is not a multiple of 8 is checked too. */
	tags[4097] = 0x05;
	tags[6000] = 0x00;
	tags[8190] = 0x80;
	g_assert_cmpint(tm_tag_buffer_check(tags, 8190, &err), ==, 0);
	g_assert_cmpint(tm_tag_buffer_check(tags, 8191, &err), ==, -EINVAL);
	g_assert_cmpstr(err->message, ==, "byte at offset 8190 has high nibble set (0x80)");
}

/* The headers' version macros and the library's version at run time agree (same build). */
/* Phases, events and cancel through the exported symbols (TAGMIG_0.2), before any connection. */
static void test_cancel_events(void)
{
	g_autoptr(tm_sender) s = NULL;
	g_autoptr(tm_receiver) r = NULL;
	g_autoptr(tm_ram_layout) l = NULL;
	void *ram = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	g_assert_true(ram != MAP_FAILED);
	g_assert_cmpint(tm_ram_layout_new(&l), ==, 0);
	g_assert_cmpint(tm_ram_layout_add_block(l, "pc.ram", ram, LEN, 4096, 0, NULL), ==, 0);
	g_assert_cmpint(tm_sender_new(l, NULL, NULL, &s, NULL), ==, 0);
	g_assert_cmpint(tm_receiver_new(NULL, &r, NULL), ==, 0);
	g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_SETUP);
	g_assert_cmpint(tm_receiver_phase(r), ==, TM_PHASE_SETUP);
	g_assert_cmpint(tm_sender_event_fd(s), >=, 0);
	g_assert_cmpint(tm_receiver_event_fd(r), >=, 0);
	g_assert_cmpuint(tm_sender_take_events(s), ==, 0);
	g_assert_cmpint(tm_sender_cancel(s, "not today"), ==, 0);
	g_assert_cmpint(tm_sender_cancel(s, "twice"), ==, -EALREADY);
	g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_FAILED);
	g_assert_cmpuint(tm_sender_take_events(s), ==, TM_EVENT_FAILED);
	g_assert_cmpuint(tm_sender_take_events(s), ==, 0);
	g_autoptr(GError) err = NULL;
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", "1", &err), ==, -ECANCELED);
	g_assert_nonnull(strstr(err->message, "sender cancelled: not today"));
	g_assert_cmpint(tm_receiver_cancel(r, NULL), ==, 0);
	g_assert_cmpint(tm_receiver_phase(r), ==, TM_PHASE_FAILED);
	g_clear_error(&err);
	int lfd = tm_listen("127.0.0.1", "0", NULL, NULL);
	g_assert_cmpint(lfd, >=, 0);
	g_assert_cmpint(tm_receiver_accept(r, lfd, &err), ==, -ECANCELED);
	g_assert_nonnull(strstr(err->message, "receiver cancelled: cancelled"));
	close(lfd);
	g_clear_pointer(&s, tm_sender_free);
	g_clear_pointer(&l, tm_ram_layout_free);
	munmap(ram, LEN);
}

static void test_version(void)
{
	g_autofree char *v = g_strdup_printf("%d.%d.%d", TAGMIG_VERSION_MAJOR, TAGMIG_VERSION_MINOR,
					     TAGMIG_VERSION_MICRO);
	g_assert_cmpstr(v, ==, TAGMIG_VERSION);
	g_assert_cmpstr(tm_version(), ==, TAGMIG_VERSION);
	g_assert_true(TAGMIG_CHECK_VERSION(TAGMIG_VERSION_MAJOR, TAGMIG_VERSION_MINOR,
					   TAGMIG_VERSION_MICRO));
	g_assert_true(TAGMIG_CHECK_VERSION(0, 0, 0));
	g_assert_false(TAGMIG_CHECK_VERSION(TAGMIG_VERSION_MAJOR, TAGMIG_VERSION_MINOR,
					    TAGMIG_VERSION_MICRO + 1));
	g_assert_false(TAGMIG_CHECK_VERSION(TAGMIG_VERSION_MAJOR, TAGMIG_VERSION_MINOR + 1, 0));
	g_assert_false(TAGMIG_CHECK_VERSION(TAGMIG_VERSION_MAJOR + 1, 0, 0));
	if (TAGMIG_VERSION_MINOR > 0)
		g_assert_true(TAGMIG_CHECK_VERSION(TAGMIG_VERSION_MAJOR, TAGMIG_VERSION_MINOR - 1, 99));
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/api/public-only", test_public_api);
	g_test_add_func("/api/tag-buffer-check", test_tag_buffer_check);
	g_test_add_func("/api/live-config", test_live_config);
	g_test_add_func("/api/rounds-before-connect", test_rounds_before_connect);
	g_test_add_func("/api/state-before-connect", test_state_before_connect);
	g_test_add_func("/api/version", test_version);
	g_test_add_func("/api/cancel-events", test_cancel_events);
	return g_test_run();
}
