/* SPDX-License-Identifier: MIT */
/*
 * The sending side of a session. The VMM's migration thread queues dirty pages; they are split by
 * chunk (docs/wire-format.md, striping) into per-channel work lists; one worker thread per channel
 * packs its pages and tags into DATA packets and sends them, so a page always rides one channel.
 * SYNC and END travel in the same work lists, behind the pages queued before them, which is what
 * makes tm_sender_sync() a barrier.
 */
#include <errno.h>
#include <stdarg.h>
#include <unistd.h>
#include <string.h>
#include <sys/socket.h>

#include "ram/ram-internal.h"
#include "session/resume.h"
#include "session/delta.h"
#include "session/resume-postcopy.h"
#include "session/session-internal.h"
#include "tagmig/error.h"
#include "tagstore/tagstore-internal.h"

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
static unsigned test_decided_delay_ms;

void tm_sender_test_decided_delay(unsigned ms)
{
	__atomic_store_n(&test_decided_delay_ms, ms, __ATOMIC_RELAXED);
}
#endif

void tm_sender_wake_all(tm_sender *s)
{
	/* Broadcast: a caller that claimed a channel (tm_send_direct_*) may wait on its wake in
	 * the rate limit's bucket, next to the channel's parked worker. */
	for (unsigned i = 0; i < s->nch; i++)
		g_cond_broadcast(&s->chans[i].wake);
	g_cond_broadcast(&s->cond);
	tm_control_wake(&s->control);
	tm_urgent_wake(s, false);
	tm_events_stop(&s->events);
	tm_resume_send_wake(s); /* a reconnect under way (resume.h) */
	tm_pcresume_urgent_wake(s); /* ... of the urgent connection (resume-postcopy.h) */
}

static void sender_fail(tm_sender *s, GError *err, bool from_peer, bool data)
{
	g_mutex_lock(&s->lock);
	if (s->control.committed && (data || s->control.resume)) {
		/* The end is decided, and the receiver told or about to be: what finish() reports
		 * must match it (control.h). With RESUME_CONTROL the receiver completes whatever
		 * follows; without it, the close that follows (which commits the receiver) may
		 * still fail, and that failure is the session's. */
		g_mutex_unlock(&s->lock);
		g_error_free(err);
		return;
	}
	bool was_quit = s->quit;
	tm_failure_record(&s->failure, err, from_peer); /* which one explains it: failure.c */
	s->quit = true;
	tm_sender_wake_all(s);
	bool paused = tm_sender_pc_paused_locked(s); /* after the switch: postcopy-send.c */
	g_mutex_unlock(&s->lock);
	if (paused)
		tm_sender_pc_pause(s);
	else
		tm_events_set_phase(&s->events, TM_PHASE_FAILED);
	if (!was_quit)
		for (unsigned i = 0; i < s->nch; i++)
			if (s->chans[i].ch.fd >= 0) {
				shutdown(s->chans[i].ch.fd, SHUT_RDWR);
				tm_io_cancel(s->chans[i].ch.io);
			}
	if (!was_quit)
		tm_urgent_wake(s, true);
}

void tm_sender_fail(tm_sender *s, GError *err, bool from_peer)
{
	sender_fail(s, err, from_peer, false);
}

void tm_sender_fail_data(tm_sender *s, GError *err, bool from_peer)
{
	sender_fail(s, err, from_peer, true);
}

static void control_fail(void *owner, GError *err, bool from_peer)
{
	tm_sender_fail(owner, err, from_peer);
}

/*
 * Every data channel a worker ends has ended, and with claimed, those finish's thread took
 * (c->direct) too while it awaits them. Finish's thread reads their END_ACKs before control's
 * when it reads control itself, and only it can read them, so waiting for one it gave up on
 * would only stall the close.
 */
static bool data_ended_locked(void *owner, bool claimed)
{
	tm_sender *s = owner;

	for (unsigned i = 0; i < s->nch; i++) {
		const send_chan *c = &s->chans[i];
		if (!c->ended && (!c->direct || (claimed && s->end_claims_open)))
			return false;
	}
	return true;
}

static int config_error(GError **error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static int config_error(GError **error, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	g_autofree char *msg = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	g_set_error_literal(error, TM_ERROR, EINVAL, msg);
	return -EINVAL;
}

int tm_sender_new(const tm_ram_layout *layout, tm_tag_store *tags, const tm_sender_config *cfg,
		  tm_sender **ret, GError **error)
{
	tm_sender_config c = cfg ? *cfg : (tm_sender_config){ 0 };
	const tm_transport_ops *io;

	if (!layout || layout->blocks->len == 0)
		return config_error(error, "the RAM layout has no blocks");
	if (c.channels == 0)
		c.channels = 4;
	if (c.channels > TM_MAX_CHANNELS)
		return config_error(error, "%u channels requested; at most %u are supported",
				    c.channels, TM_MAX_CHANNELS);
	if (!c.packet_size)
		c.packet_size = TM_PACKET_SIZE_DEFAULT;
	if (!c.chunk_size)
		c.chunk_size = MAX(TM_CHUNK_SIZE_DEFAULT, c.packet_size);
	if (!c.timeout_ms)
		c.timeout_ms = 60000;
	if (!c.queue_depth)
		c.queue_depth = 4;
	if (c.queue_depth > 64)
		return config_error(error, "queue depth %u; at most 64 packets in flight per channel",
				    c.queue_depth);
	if (tags && tm_tag_store_layout(tags) != layout)
		return config_error(error, "the tag store was made for another RAM layout");
	g_autofree char *note = NULL;
	int r = tm_transport_lookup(c.io_backend, &io, &note, error);
	if (r < 0)
		return r;
	/* TLS asked of a build without it: refused here, before anything connects */
	if (c.tls_creds_dir && (r = tm_tls_available(error)) < 0)
		return r;

	tm_hello h = { 0 };
	for (int i = 0; i < 16; i++)
		h.session_id[i] = (uint8_t)g_random_int_range(0, 256);
	h.channel_count = (uint16_t)c.channels;
	h.features = tags && tm_tag_store_get_ops(tags)->has_tags ? TM_FEATURE_TAGS_MTE4 : 0;
	h.packet_size = c.packet_size;
	h.chunk_size = c.chunk_size;
	h.block_count = layout->blocks->len;
	h.blocks = g_new0(tm_wire_block, h.block_count);
	for (unsigned i = 0; i < h.block_count; i++) {
		const tm_ram_block *b = tm_ram_layout_get(layout, i);
		g_strlcpy(h.blocks[i].name, b->name, sizeof(h.blocks[i].name));
		h.blocks[i].length = b->length;
		h.blocks[i].guest_base = b->guest_base;
		h.blocks[i].page_size = b->page_size;
		if (!b->host) {
			tm_hello_clear(&h);
			return config_error(error, "RAM block '%s' has no host memory", b->name);
		}
	}
	/* What a receiver would refuse is refused here, with the same words. */
	g_autoptr(GError) why = NULL;
	if (tm_hello_check(&h, &why) < 0) {
		tm_hello_clear(&h);
		/* Report it as the caller's configuration, not as a message field. */
		const char *m = why->message;
		return config_error(error, "invalid configuration: %s",
				    g_str_has_prefix(m, "HELLO: ") ? m + 7 : m);
	}

	tm_sender *s = g_new0(tm_sender, 1);
	s->layout = layout;
	((tm_ram_layout *)layout)->frozen = true;
	s->tags = h.features ? tags : NULL;
	s->cfg = c;
	s->cfg.io_backend = NULL; /* not owned; io holds the choice */
	s->io = io;
	s->io_note = g_steal_pointer(&note);
	s->tls_creds_dir = g_strdup(c.tls_creds_dir);
	s->tls_hostname = g_strdup(c.tls_hostname);
	s->cfg.tls_creds_dir = s->cfg.tls_hostname = NULL; /* use the owned copies */
	s->hello = h;
	s->nch = c.channels;
	s->ctl.fd = -1;
	s->pc.urg.fd = -1;
	s->pc.wake_fd = -1;
	/* Protocol 2 with defaults unless tm_sender_set_live() says otherwise. */
	tm_live_config dflt = { .size = sizeof(dflt) };
	tm_live_config_load(&dflt, true, &s->live, NULL);
	s->wire = TM_WIRE_VERSION_2;
	s->st.sections = g_ptr_array_new();
	g_mutex_init(&s->lock);
	g_cond_init(&s->cond);
	s->events.fd = s->events.cancel_fd = -1;
	s->control = (tm_control){ .sender = true, .owner = s, .lock = &s->lock, .cond = &s->cond,
				   .quit = &s->quit, .failure = &s->failure, .fail = control_fail,
				   .ready = tm_sender_take_ready, .wake_fd = -1, .end_fd = -1,
				   .data_ended_locked = data_ended_locked,
				   .conn_lost_msg = tm_resume_conn_lost,
				   .link_dead = tm_resume_link_dead,
				   .link_closed = tm_resume_link_closed };
	s->chans = g_new0(send_chan, s->nch);
	s->staging = g_new0(GArray *, s->nch);
	for (unsigned i = 0; i < s->nch; i++) {
		send_chan *ch = &s->chans[i];
		ch->s = s;
		ch->ch.fd = -1;
		g_cond_init(&ch->wake);
		ch->pending = g_array_new(FALSE, FALSE, sizeof(work));
		ch->work = g_array_new(FALSE, FALSE, sizeof(work));
		s->staging[i] = g_array_new(FALSE, FALSE, sizeof(work));
	}
	if ((r = tm_events_init(&s->events, error)) < 0 ||
	    (r = tm_control_init(&s->control, error)) < 0) {
		tm_sender_free(s);
		return r;
	}
	*ret = s;
	return 0;
}

int tm_sender_set_live(tm_sender *s, const tm_live_config *cfg, GError **error)
{
	tm_live_config c;

	if (s->state != S_NEW) {
		g_set_error(error, TM_ERROR, EBUSY,
			    "tm_sender_set_live() after connect: the protocol is agreed already");
		return -EBUSY;
	}
	int r = tm_live_config_load(cfg, true, &c, error);
	if (r < 0)
		return r;
	if (c.postcopy && c.wire_version != TM_WIRE_VERSION_2) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "live config: postcopy needs protocol 2 (wire_version = 1 is set)");
		return -EINVAL;
	}
	g_mutex_lock(&s->lock); /* read by the any-thread getters (rounds.c) */
	s->live = c;
	tm_ratelimit_set(&s->rl, c.rate_limit);
	g_mutex_unlock(&s->lock);
	s->live_set = true;
	s->wire = (uint8_t)c.wire_version;
	/* Offered in every HELLO; the urgent connection joins the setup (design 2.2). */
	s->pc.offered = c.postcopy;
	s->hello.features = (s->hello.features & ~TM_FEATURE_POSTCOPY) |
			    (c.postcopy ? TM_FEATURE_POSTCOPY : 0);
	return 0;
}

unsigned tm_sender_wire_version(tm_sender *s)
{
	return __atomic_load_n(&s->wire_done, __ATOMIC_ACQUIRE);
}

int tm_sender_get_session_id(tm_sender *s, uint8_t ret[16])
{
	/* Written once in tm_sender_new(), read-only after. */
	memcpy(ret, s->hello.session_id, sizeof(s->hello.session_id));
	return 0;
}

/* The session's failure as the caller's error, once every worker has stopped. */
static int report_failure(tm_sender *s, GError **error)
{
	/* Wait for all workers so the most telling explanation (the peer's own words) wins. */
	while (true) {
		bool all = true;
		for (unsigned i = 0; i < s->nch; i++)
			all = all && (!s->chans[i].thread || s->chans[i].exited);
		if (all)
			break;
		g_cond_wait(&s->cond, &s->lock);
	}
	/* The control thread may still hear the peer's reason (at most a second). */
	tm_control_await_exit_locked(&s->control);
	tm_urgent_await_exit_locked(s); /* its failure, phase included, is complete */
	int code = s->failure.error ? s->failure.error->code : EIO;
	if (tm_sender_pc_paused_locked(s))
		return tm_sender_pc_paused_error(s, error); /* -ENOTCONN with the cause */
	if (error)
		*error = s->failure.error ? g_error_copy(s->failure.error)
					  : g_error_new(TM_ERROR, EIO, "migration aborted");
	return -code;
}

static int check_open(tm_sender *s, GError **error)
{
	if (s->state == S_OPEN) {
		g_mutex_lock(&s->lock);
		int r = s->quit ? report_failure(s, error) : 0;
		g_mutex_unlock(&s->lock);
		return r;
	}
	g_set_error(error, TM_ERROR, EBADFD, "the session is %s",
		    s->state == S_NEW ? "not open" : "finished or failed");
	return -EBADFD;
}

/* Appends pages [first, first + count) of block to the staging lists, split by chunk. */
static void stage_run(tm_sender *s, unsigned block, uint64_t first, uint64_t count)
{
	const tm_wire_block *b = &s->hello.blocks[block];
	uint64_t per_chunk = s->hello.chunk_size / b->page_size;

	while (count) {
		uint64_t chunk = first / per_chunk;
		uint64_t n = MIN(count, (chunk + 1) * per_chunk - first);
		GArray *a = s->staging[(b->chunk_base + chunk) % s->nch];
		work *last = a->len ? &g_array_index(a, work, a->len - 1) : NULL;
		if (last && last->kind == WORK_PAGES && last->block == block &&
		    last->first + last->count == first) {
			last->count += n;
		} else {
			work w = { .kind = WORK_PAGES, .block = block, .first = first, .count = n };
			g_array_append_val(a, w);
		}
		first += n;
		count -= n;
	}
}

/* A marker (SYNC, END) for every channel, staged. */
static void stage_marker(tm_sender *s, work w)
{
	for (unsigned i = 0; i < s->nch; i++)
		g_array_append_val(s->staging[i], w);
}

/* Hands the staged work to the workers: a pointer swap when a worker's list is empty. */
static void stage_commit(tm_sender *s)
{
	tm_rounds_committed(s);
	g_mutex_lock(&s->lock);
	for (unsigned i = 0; i < s->nch; i++) {
		send_chan *c = &s->chans[i];
		if (s->staging[i]->len == 0)
			continue;
		if (c->pending->len == 0) {
			GArray *t = c->pending;
			c->pending = s->staging[i];
			s->staging[i] = t;
		} else {
			g_array_append_vals(c->pending, s->staging[i]->data, s->staging[i]->len);
			g_array_set_size(s->staging[i], 0);
		}
		tm_rounds_chan_busy(s, c);
		if (!c->direct) /* finish sends it itself: its worker must not wake */
			g_cond_signal(&c->wake);
	}
	g_mutex_unlock(&s->lock);
}

static int check_block(tm_sender *s, unsigned block, GError **error)
{
	if (block < s->hello.block_count)
		return 0;
	g_set_error(error, TM_ERROR, ERANGE, "block index %u out of range (%u blocks)", block,
		    s->hello.block_count);
	return -ERANGE;
}

int tm_sender_queue_pages(tm_sender *s, unsigned block, const uint64_t *pages, size_t count,
			  GError **error)
{
	/* The caller's misuse first: the same answer whatever the peer did meanwhile. */
	int r = tm_sender_check_ram_open(s, error);
	if (r < 0 || (r = check_open(s, error)) < 0 || (r = check_block(s, block, error)) < 0)
		return r;
	const tm_wire_block *b = &s->hello.blocks[block];
	for (size_t i = 0; i < count; i++) {
		if (pages[i] >= b->npages) {
			for (unsigned k = 0; k < s->nch; k++)
				g_array_set_size(s->staging[k], 0);
			g_set_error(error, TM_ERROR, ERANGE,
				    "block '%s': page %" G_GUINT64_FORMAT " out of range (%" G_GUINT64_FORMAT
				    " pages)",
				    b->name, pages[i], b->npages);
			return -ERANGE;
		}
		stage_run(s, block, pages[i], 1);
	}
	stage_commit(s);
	return 0;
}

int tm_sender_queue_bitmap(tm_sender *s, unsigned block, const uint64_t *bitmap,
			   uint64_t first_page, uint64_t npages, GError **error)
{
	/* The caller's misuse first: the same answer whatever the peer did meanwhile. */
	int r = tm_sender_check_ram_open(s, error);
	if (r < 0 || (r = check_open(s, error)) < 0 || (r = check_block(s, block, error)) < 0)
		return r;
	const tm_wire_block *b = &s->hello.blocks[block];
	if (first_page > b->npages || npages > b->npages - first_page) {
		g_set_error(error, TM_ERROR, ERANGE,
			    "block '%s': pages %" G_GUINT64_FORMAT "+%" G_GUINT64_FORMAT
			    " out of range (%" G_GUINT64_FORMAT " pages)",
			    b->name, first_page, npages, b->npages);
		return -ERANGE;
	}
	uint64_t i = 0;
	while (i < npages) {
		uint64_t word = bitmap[i / 64] >> (i % 64);
		if (word == 0) {
			i = (i / 64 + 1) * 64;
			continue;
		}
		i += (uint64_t)__builtin_ctzll(word);
		if (i >= npages)
			break;
		uint64_t start = i;
		while (i < npages && (bitmap[i / 64] >> (i % 64)) & 1) {
			if (i % 64 == 0 && bitmap[i / 64] == UINT64_MAX && i + 64 <= npages)
				i += 64;
			else
				i++;
		}
		stage_run(s, block, first_page + start, i - start);
	}
	stage_commit(s);
	return 0;
}

int tm_sender_check_open(tm_sender *s, GError **error)
{
	return check_open(s, error);
}

void tm_sender_stage_sync(tm_sender *s, uint64_t round, uint64_t wire)
{
	stage_marker(s, (work){ .kind = WORK_SYNC, .first = round, .count = wire });
	stage_commit(s);
}

/* Protocol 2 before postcopy: claims every channel whose worker is parked (direct[i]) for
 * this thread (tm_send_direct_*); how many. */
static unsigned claim_parked(tm_sender *s, bool direct[TM_MAX_CHANNELS])
{
	bool v2 = s->wire == TM_WIRE_VERSION_2;
	unsigned n = 0;

	g_mutex_lock(&s->lock);
	for (unsigned i = 0; v2 && !s->pc.agreed && !s->quit && i < s->nch; i++)
		if ((direct[i] = tm_send_direct_claim_locked(&s->chans[i])))
			n++;
	g_mutex_unlock(&s->lock);
	return n;
}

int tm_sender_sync(tm_sender *s, GError **error)
{
	/*
	 * Protocol 2 before postcopy: the channels whose workers are parked (the round's pages all
	 * went, the usual case) get their SYNC from this thread, which reads the SYNC_ACKs too:
	 * the round ends after the network round trip, without a wake-up of each worker to send
	 * and of this thread by the worker that read the answer (on a busy host each is a
	 * scheduler's delay). A busy channel's worker syncs it behind its work, as before.
	 */
	bool direct[TM_MAX_CHANNELS] = { false };
	unsigned ndirect = claim_parked(s, direct);

	uint64_t id;
	int r = tm_sender_end_round(s, &id, error);
	if (r < 0) {
		tm_send_direct_release(s, direct);
		return r;
	}
	g_mutex_lock(&s->lock);
	bool complete = s->rounds.complete >= id; /* nothing to send: no SYNC went */
	g_mutex_unlock(&s->lock);
	if (complete) {
		tm_send_direct_release(s, direct);
		return 0;
	}
	__atomic_add_fetch(&s->direct_syncs, ndirect, __ATOMIC_RELAXED);
	for (unsigned i = 0; i < s->nch; i++)
		if (direct[i] && tm_send_direct_sync_post(&s->chans[i]) < 0)
			break;
	if (ndirect)
		tm_send_direct_sync_await(s, direct, id);

	g_mutex_lock(&s->lock);
	/* Rounds complete in order; one with nothing to send did in end_round. */
	while (!s->quit && s->rounds.complete < id)
		g_cond_wait(&s->cond, &s->lock);
	r = s->quit ? report_failure(s, error) : 0;
	g_mutex_unlock(&s->lock);
	return r;
}

int tm_sender_finish(tm_sender *s, GError **error)
{
	int r = check_open(s, error);
	if (r < 0)
		return r;
	/*
	 * Protocol 2 without postcopy: the channels whose workers are parked (nothing queued, the
	 * usual case after a last SYNC) are ended from this thread, and the control END too, so
	 * that every END is out before anything is awaited and no thread has to be woken for it:
	 * on a busy host each wake-up of another thread is a scheduler's delay inside the guest's
	 * downtime. A busy channel's worker ends it behind its work, as before.
	 */
	bool v2 = s->wire == TM_WIRE_VERSION_2;
	bool direct[TM_MAX_CHANNELS] = { false };
	unsigned ndirect = claim_parked(s, direct);
	__atomic_add_fetch(&s->direct_ends, ndirect, __ATOMIC_RELAXED);
	if (ndirect) {
		g_mutex_lock(&s->lock);
		s->end_claims_open = true; /* until tm_send_direct_await returns */
		g_mutex_unlock(&s->lock);
	}

	tm_sender_state_finish(s); /* protocol 2: RAM_END, END_OF_STATE */
	stage_marker(s, (work){ .kind = WORK_END });
	stage_commit(s);

	/*
	 * Protocol 2: END on control leaves now, with the data channels' ENDs, so that the end is
	 * one round trip: the receiver answers READY and END_ACK on control only after every data
	 * channel's END_ACK, and both sides keep their keepalives until then.
	 */
	if (v2 && !s->pc.agreed) {
		/* From this thread, which reads the answers too when it waits for the data
		 * channels' (direct); control's thread is woken only to poll without the socket. */
		tm_control_send_end(&s->control, ndirect > 0);
	} else if (v2) {
		g_mutex_lock(&s->lock);
		if (!s->quit)
			tm_control_request_end_locked(&s->control); /* after POSTCOPY: the thread's */
		g_mutex_unlock(&s->lock);
	}
	for (unsigned i = 0; i < s->nch; i++)
		if (direct[i] && tm_send_direct_post(&s->chans[i]) < 0)
			break;
	/*
	 * Control's END_ACK comes only after the receiver applied every data channel's END: a
	 * data channel's END_ACK still missing TM_URGENT_END_GRACE_MS after it (one lost where we
	 * cannot see it: a path that broke at the receiver's end after it answered) is not waited
	 * for any longer; free() stops that worker. Normally each arrives around control's. For
	 * the workers' channels that wait is control's, which decides the end (commit_end in
	 * control-end.c): the receiver is told what finish() returns.
	 */
	if (ndirect)
		tm_send_direct_await(s, direct);

	g_mutex_lock(&s->lock);
	for (unsigned i = 0; i < s->nch && !s->quit && !(v2 && s->control.committed); i++)
		/* The channels finish ended itself were awaited above. */
		while (!direct[i] && !s->quit && !s->chans[i].ended && !(v2 && s->control.committed))
			g_cond_wait(&s->cond, &s->lock);
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	unsigned delay_ms = __atomic_load_n(&test_decided_delay_ms, __ATOMIC_RELAXED);
	if (delay_ms && v2 && s->control.committed) {
		g_mutex_unlock(&s->lock);
		g_usleep(delay_ms * 1000ul);
		g_mutex_lock(&s->lock);
	}
#endif
	if (v2 && !s->quit)
		tm_control_await_end_locked(&s->control);
	if (v2 && !s->quit)
		tm_sender_pc_await_end_locked(s); /* postcopy: REQ_END / END_ACK on urgent */
	r = s->quit ? report_failure(s, error) : 0;
	s->t_end = tm_now_us();
	g_mutex_unlock(&s->lock);
	s->state = S_DONE;
	if (r == 0)
		tm_events_set_phase(&s->events, TM_PHASE_COMPLETE);
	return r;
}

void tm_sender_free(tm_sender *s)
{
	if (!s)
		return;
	g_mutex_lock(&s->lock);
	bool running = !s->quit;
	s->quit = true;
	tm_sender_wake_all(s);
	g_mutex_unlock(&s->lock);
	/* First: it reads the data channels' sockets (TCP_INFO) until it exits. */
	tm_control_stop(&s->control);
	tm_urgent_stop(s);
	for (unsigned i = 0; i < s->nch; i++) {
		send_chan *c = &s->chans[i];
		/* A migration abandoned midway: unblock workers stuck in send or receive. So is one
		 * still waiting for an END_ACK that control's END_ACK made needless (finish()). */
		g_mutex_lock(&s->lock);
		bool stuck = (running && s->state == S_OPEN) || (c->thread && !c->exited);
		if (stuck && c->ch.fd >= 0) {
			shutdown(c->ch.fd, SHUT_RDWR);
			tm_io_cancel(c->ch.io);
		}
		g_mutex_unlock(&s->lock);
		if (c->thread)
			g_thread_join(c->thread);
		tm_chan_close(&c->ch);
		for (unsigned k = 0; c->pkts && k < c->ch.depth; k++)
			tm_packet_fini(&c->pkts[k]);
		g_free(c->pkts);
		g_free(c->tagraw);
		tm_zsend_free(c->z);
		tm_dsend_free(c->ds);
		g_array_unref(c->pending);
		g_array_unref(c->work);
		g_array_unref(s->staging[i]);
		g_cond_clear(&c->wake);
	}
	tm_chan_close(&s->ctl);
	tm_resume_send_free(s);
	tm_sender_state_free(s);
	tm_sender_pc_free(s);
	tm_events_fini(&s->events);
	g_clear_error(&s->failure.error);
	tm_hello_clear(&s->hello);
	g_free(s->io_note);
	g_free(s->tls_creds_dir);
	g_free(s->tls_hostname);
	tm_tls_ctx_free(s->tls);
	g_free(s->chans);
	g_free(s->staging);
	tm_control_clear(&s->control);
	g_mutex_clear(&s->lock);
	g_cond_clear(&s->cond);
	g_free(s);
}
