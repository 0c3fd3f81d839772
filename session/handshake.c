/* SPDX-License-Identifier: MIT */
/*
 * The session's opening exchange (docs/wire-format.md, "Handshake"), both sides: the sender sends
 * HELLO on every channel and collects the HELLO_ACKs; the receiver places each connection by the
 * channel id of its HELLO, checks that every HELLO belongs to one session, and compares the
 * announced layout with its own RAM before it acknowledges.
 */
#include <errno.h>
#include <string.h>

#include "common/escape.h"
#include "ram/ram-internal.h"
#include "session/resume.h"
#include "session/session-internal.h"
#include "tagmig/error.h"
#include "tagstore/tagstore-internal.h"

/* ---- sender ---- */

int tm_sender_send_hello(tm_sender *s, tm_chan *ch, tm_conn_role role, GError **error)
{
	size_t blen = tm_hello_body_len(&s->hello);
	g_autofree uint8_t *buf = g_malloc(TM_FRAME_HDR_LEN + blen);

	s->hello.role = (uint8_t)role;
	s->hello.channel_id = role == TM_ROLE_DATA ? (uint16_t)ch->id : 0;
	tm_frame_encode_v(buf, s->hello.version ? s->hello.version : TM_WIRE_VERSION_1,
			  TM_MSG_HELLO, (uint32_t)blen, ch->tx_seq++);
	tm_hello_encode(&s->hello, buf + TM_FRAME_HDR_LEN);
	struct iovec v = { .iov_base = buf, .iov_len = TM_FRAME_HDR_LEN + blen };
	return tm_chan_send(ch, &v, 1, v.iov_len, error);
}

int tm_sender_v1_refusal(const tm_chan *ch, const char *said, GError **error)
{
	/* "channel 0: receiver refused: <its words>": quote only its words */
	const char *words = strstr(said, "receiver refused: ");

	said = words ? words + strlen("receiver refused: ") : said;
	g_set_error(error, TM_ERROR, EPROTONOSUPPORT,
		    "%s: handshake: the receiver speaks tagmig protocol 1 only (it said: %s); live "
		    "features need protocol 2 on both sides; set wire_version = 1 in "
		    "tm_live_config to migrate RAM in protocol 1",
		    ch->label, said);
	return -EPROTONOSUPPORT;
}

/* One connection's answer to its HELLO. *first: the first protocol 2 HELLO_ACK, to compare. */
static int await_ack(tm_sender *s, tm_chan *ch, tm_hello_ack *first, bool *have_first,
		     bool *ret_v1, GError **error)
{
	tm_frame f;

	/*
	 * Either version is readable here: a protocol 1 receiver answers a protocol 2 HELLO with a
	 * protocol 1 ERROR, and that must become the clear refusal, not "protocol 1 frame".
	 */
	ch->version = 0;
	int r = tm_chan_recv_frame(ch, 0, &f, error);
	ch->version = s->wire;
	if (r < 0)
		return r;
	if (f.type == TM_MSG_ERROR) {
		g_autoptr(GError) said = NULL;
		r = tm_chan_recv_peer_error(ch, &f, "receiver refused", &said);
		if (r < 0 && f.version == TM_WIRE_VERSION_1 && s->wire == TM_WIRE_VERSION_2) {
			*ret_v1 = true;
			return tm_sender_v1_refusal(ch, said->message, error);
		}
		g_propagate_error(error, g_steal_pointer(&said));
		return r;
	}
	if (f.version != s->wire) {
		g_set_error(error, TM_ERROR, EPROTO, "%s: handshake: protocol %u %s, the session speaks %u",
			    ch->label, f.version, tm_msg_name(f.type), s->wire);
		return -EPROTO;
	}
	if (f.type != TM_MSG_HELLO_ACK) {
		g_set_error(error, TM_ERROR, EPROTO, "%s: expected HELLO_ACK, received %s", ch->label,
			    tm_msg_name(f.type));
		return -EPROTO;
	}
	uint8_t body[TM_HELLO_ACK2_LEN];
	if ((r = tm_chan_recv(ch, body, f.body_len, error)) < 0)
		return r;
	if (s->wire == TM_WIRE_VERSION_1) {
		uint64_t v[TM_CTRL_MAX_FIELDS];
		r = tm_ctrl_decode_v(TM_WIRE_VERSION_1, TM_MSG_HELLO_ACK, body, f.body_len, v, error);
		if (r < 0)
			tm_chan_prefix_error(ch, error);
		return r;
	}
	tm_hello_ack ack;
	r = tm_hello_ack_decode(body, f.body_len, s->hello.features, &ack, error);
	if (r < 0) {
		tm_chan_prefix_error(ch, error);
		return r;
	}
	if (!*have_first) {
		*first = ack;
		*have_first = true;
	} else if (memcmp(first, &ack, sizeof(ack)) != 0) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "%s: HELLO_ACK differs from channel 0's (features 0x%08x vs 0x%08x, "
			    "max_state_section %" G_GUINT64_FORMAT " vs %" G_GUINT64_FORMAT ")",
			    ch->label, ack.features, first->features,
			    (guint64)ack.max_state_section, (guint64)first->max_state_section);
		return -EPROTO;
	}
	return 0;
}

/* After a HELLO_ACK agreed `features`: whether connection i may be left broken for now. */
static bool may_lose(const tm_sender *s, unsigned i, uint32_t features)
{
	if (i == s->nch) /* control: only with RESUME_CONTROL */
		return (features & TM_FEATURE_RESUME) && (features & TM_FEATURE_RESUME_CONTROL);
	if (i == s->nch + 1) /* urgent: declined, it closes anyway; accepted, its return thread
			      * reconnects it at the switch */
		return !(features & TM_FEATURE_POSTCOPY) || (features & TM_FEATURE_RESUME);
	return features & TM_FEATURE_RESUME; /* data: its worker's first I/O resumes it */
}

int tm_sender_await_acks(tm_sender *s, GError **error)
{
	tm_hello_ack first = { 0 };
	bool have_first = false;
	unsigned n = s->nch + (s->wire == TM_WIRE_VERSION_2 ? 1 + (s->pc.offered ? 1 : 0) : 0);

	g_autoptr(GError) lost = NULL; /* a connection that broke before its HELLO_ACK */
	bool gone[TM_MAX_CHANNELS + TM_V2_EXTRA_CONNECTIONS + 1] = { false };
	bool redialled[TM_MAX_CHANNELS + TM_V2_EXTRA_CONNECTIONS + 1] = { false };

	/* Data 0 first: a protocol 1 receiver refuses there and gives up the rest. */
	for (unsigned i = 0; i < n; i++) {
		tm_chan *ch = i == s->nch + 1 ? &s->pc.urg : i == s->nch ? &s->ctl : &s->chans[i].ch;
		bool v1 = false;
		int r = 0;
		/* Before any HELLO_ACK: a later connection may break meanwhile (resume-setup.c). */
		if (!have_first && s->wire == TM_WIRE_VERSION_2)
			r = tm_setup_watch(s, i, n, redialled, error);
		if (r < 0)
			return r;
		r = await_ack(s, ch, &first, &have_first, &v1, error);
		if (r < 0 && v1)
			return r; /* a complete explanation already */
		/* Cut before any HELLO_ACK came: its HELLO may never have arrived, and the receiver
		 * may wait for it; dialled again (resume-setup.c, docs/wire-format.md "Setup"). */
		/* Not a refusal, whatever its code (a receiver whose accept timed out says
		 * ETIMEDOUT): that one gave up the session, and says which connection it lacked. */
		if (r < 0 && !have_first && !ch->peer_error && tm_setup_redial_wanted(s, -r)) {
			r = tm_setup_redial(s, i, error);
			if (r < 0)
				return r;
			redialled[i] = true;
			i--; /* its HELLO_ACK, again */
			continue;
		}
		/* Left closed by a redial that stopped for channel 0's answer (resume-setup.c), and
		 * that answer was a HELLO_ACK: dialled again, as a closed connection has no first
		 * I/O to fail and resume it (the receiver refuses the redial, and then it is). */
		if (r < 0 && !ch->io && have_first && s->resume) {
			g_clear_error(error);
			if (i == s->nch + 1 && !(first.features & TM_FEATURE_POSTCOPY))
				continue; /* declined: it closes anyway */
			bool ok = may_lose(s, i, first.features);
			g_set_error(error, TM_ERROR, ECONNRESET,
				    "%s%s: broke before its HELLO_ACK, and nothing listened when it "
				    "was dialled again%s",
				    ok ? "" : "handshake: ", ch->label,
				    ok ? "" : "; the HELLO_ACK agreed no resume of it");
			if (!ok)
				return -ECONNRESET;
			r = tm_setup_redial(s, i, error);
			if (r < 0)
				return r;
			redialled[i] = true;
			i--; /* its answer */
			continue;
		}
		/* Resume may cover it, if another connection's HELLO_ACK agrees it (below); a
		 * redial the receiver refused came after it had placed the first connection. */
		if (r < 0 && s->resume && ((!ch->peer_error && tm_resume_broken(-r)) || redialled[i])) {
			if (!lost)
				lost = g_steal_pointer(error);
			g_clear_error(error);
			gone[i] = true;
			continue;
		}
		if (r < 0) {
			g_prefix_error(error, "handshake: ");
			if (r == -ECONNRESET && !s->tls && !have_first)
				/* What a TLS receiver does with a plaintext HELLO. */
				g_prefix_error(error, "the receiver closed the connection at once (does "
						      "it expect TLS? then give both sides TLS "
						      "credentials): ");
			else if (tm_resume_broken(-r) && !s->resume && s->wire == TM_WIRE_VERSION_2) {
				/* Another connection's HELLO_ACK came: this one broke on the way. */
				g_autofree char *m = (*error)->message;
				(*error)->message = g_strdup_printf(
					"%s (before its HELLO_ACK; not dialled again: %s)", m,
					s->live.no_resume ? "resume is off (no_resume)"
							  : "resume is not offered");
			}
			return r;
		}
	}
	for (unsigned i = 0; i < n && lost; i++) {
		if (!gone[i])
			continue;
		if (!have_first || !may_lose(s, i, first.features)) {
			int code = lost->code;
			g_propagate_error(error, g_steal_pointer(&lost));
			g_prefix_error(error, "handshake: ");
			return -code;
		}
		tm_setup_lost(tm_setup_chan(s, i));
	}
	/* A data channel that broke after the receiver agreed the session: its worker's first
	 * I/O fails and resumes it like any broken channel (docs/wire-format.md, "Setup"). */
	tm_resume_send_agreed(s, &first); /* its secret, for reconnects */
	s->control.link_check = (first.features & TM_FEATURE_LINK_CHECK) != 0;
	/* The receiver's device-state limits: put_state refuses what it would. */
	s->st.max_section = first.max_state_section;
	s->st.max_total = first.max_state_total;
	if (s->wire == TM_WIRE_VERSION_2)
		tm_sender_pc_agree(s, &first); /* postcopy accepted or declined */
	s->zagreed = first.features & TM_FEATURES_COMPRESS;
	s->dagreed = first.features & TM_FEATURE_DELTA;
	return 0;
}

/* ---- receiver ---- */

unsigned tm_receiver_connections(const tm_receiver *r)
{
	if (r->wire != TM_WIRE_VERSION_2)
		return r->nch;
	/* A postcopy offer comes with the urgent connection, accepted or not (2.2). */
	return r->nch + TM_V2_EXTRA_CONNECTIONS + !!(r->hello.features & TM_FEATURE_POSTCOPY);
}

/* Checks a decoded HELLO against the session so far; the words name the connection. */
static int check_placement(tm_receiver *r, const tm_frame *f, const tm_hello *h, GError **error)
{
	bool first = !r->chans;
	g_autofree char *what = h->role == TM_ROLE_CONTROL  ? g_strdup("the control connection")
				: h->role == TM_ROLE_URGENT ? g_strdup("the urgent connection")
							    : g_strdup_printf("channel %u", h->channel_id);

	/* The first HELLO chose the protocol for every connection of the session. */
	if (!first && f->version != r->wire) {
		g_set_error(error, TM_ERROR, EPROTO, "%s speaks protocol %u, the session speaks %u",
			    what, f->version, r->wire);
		return -EPROTO;
	}
	if (!first) {
		int ret = tm_hello_same_session(&r->hello, h, error);
		if (ret < 0)
			return ret;
	}
	if (h->role == TM_ROLE_URGENT && r->urg_used) {
		g_set_error(error, TM_ERROR, EPROTO, "urgent connection connected twice");
		return -EPROTO;
	}
	if (h->role == TM_ROLE_CONTROL && r->ctl_used) {
		g_set_error(error, TM_ERROR, EPROTO, "control connection connected twice");
		return -EPROTO;
	}
	if (h->role == TM_ROLE_DATA && !first && r->chans[h->channel_id].used) {
		g_set_error(error, TM_ERROR, EPROTO, "channel id %u connected twice", h->channel_id);
		return -EPROTO;
	}
	return 0;
}

/*
 * Before its HELLO a connection is no channel yet (its I/O handle says "channel 0"): its errors
 * name where it came from instead, for the operator and for the peer told why.
 */
static void name_newcomer(const char *peer, GError *error)
{
	static const char chan0[] = "channel 0: ";

	if (!error || !g_str_has_prefix(error->message, chan0))
		return;
	g_autofree char *msg = error->message;
	error->message = g_strdup_printf("connection from %s: %s", peer, msg + strlen(chan0));
}

int tm_receiver_read_hello(const tm_receiver *r, int fd, int64_t deadline_us, tm_hs_result *res,
			   GError **error)
{
	g_autofree char *peer = tm_net_peer_name(fd);
	tm_chan *tmp = &res->ch;
	tm_frame *f = &res->f;
	tm_io_config ioc = { .timeout_ms = r->cfg.timeout_ms, .depth = 1,
			     .zerocopy = r->cfg.tuning.zerocopy };
	memset(res, 0, sizeof(*res));
	int ret = tm_chan_open(tmp, fd, 0, r->io, &ioc, error);
	if (ret < 0)
		return ret;
	tmp->setup_deadline_us = deadline_us;
	tm_io_set_deadline(tmp->io, deadline_us);
	if (r->tls && (ret = tm_tls_wrap(r->tls, &tmp->io, error)) < 0) {
		/* The TLS layer told the peer already (an alert); nothing else can reach it. */
		name_newcomer(peer, *error);
		tm_chan_close(tmp);
		return ret;
	}
	/* Before its HELLO a connection may speak either protocol; the session's first decides. */
	tmp->version = 0;
	ret = tm_chan_recv_frame(tmp, 0, f, error);
	if (ret >= 0) {
		/* Refusals go back in the version the peer spoke. */
		tmp->version = f->version;
		if (f->type != TM_MSG_HELLO) {
			g_set_error(error, TM_ERROR, EPROTO, "expected HELLO, received %s",
				    tm_msg_name(f->type));
			ret = -EPROTO;
		}
	}
	g_autofree uint8_t *body = NULL;
	if (ret >= 0) {
		body = g_malloc(f->body_len ? f->body_len : 1);
		ret = tm_chan_recv(tmp, body, f->body_len, error);
	}
	if (ret >= 0)
		ret = tm_hello_decode(body, f->body_len, f->version, &res->h, error);
	if (ret < 0) {
		name_newcomer(peer, *error);
		g_prefix_error(error, "handshake: ");
		g_autofree char *msg = g_strdup((*error)->message);
		tm_chan_send_error(tmp, -ret, msg);
		tm_chan_close(tmp);
		tm_hello_clear(&res->h);
	}
	return ret;
}

int tm_receiver_place_hello(tm_receiver *r, tm_hs_result *res, bool *ret_stranger, GError **error)
{
	tm_chan tmp = res->ch;
	tm_frame f = res->f;
	tm_hello h = res->h;
	int replaced = 0; /* a setup redial took an earlier connection's place */
	int ret;

	memset(res, 0, sizeof(*res)); /* owned here now */
	/* A HELLO of another session is a stranger's too: it must not end this one, and it learns
	 * nothing of this session (its id would let it in). */
	*ret_stranger = r->chans && memcmp(r->hello.session_id, h.session_id,
					   sizeof(h.session_id)) != 0;
	if (!*ret_stranger)
		replaced = tm_setup_replace(r, &tmp, &f, &h); /* resume-setup.c */
	if (replaced < 0) {
		/* Superseded by the sender's redial, placed already: dropped as a stranger. */
		*ret_stranger = true;
		g_set_error(error, TM_ERROR, ECONNRESET,
			    "a connection broke during setup and was dialled again (the redial "
			    "was placed first)");
		ret = -ECONNRESET;
	} else {
		ret = check_placement(r, &f, &h, error);
		if (ret < 0 && *ret_stranger) {
			g_clear_error(error);
			g_set_error(error, TM_ERROR, EPROTO, "a HELLO of another session");
			ret = -EPROTO;
		}
	}
	if (ret < 0) {
		g_prefix_error(error, "handshake: ");
		g_autofree char *msg = g_strdup((*error)->message);
		tm_chan_send_error(&tmp, -ret, msg);
		tm_chan_close(&tmp);
		tm_hello_clear(&h);
		return ret;
	}
	/* The handshake is done: from here on only message bodies have deadlines. */
	tmp.setup_deadline_us = 0;
	tm_io_set_deadline(tmp.io, 0);
	/* Published under the lock: a cancel shuts the placed connections down (cancel.c). */
	recv_chan *chans = NULL;
	if (!r->chans) {
		chans = g_new0(recv_chan, h.channel_count);
		for (unsigned i = 0; i < h.channel_count; i++) {
			chans[i].ch.fd = -1;
			chans[i].r = r;
		}
	}
	unsigned id = h.channel_id;
	if (h.role == TM_ROLE_CONTROL) {
		/* Control messages are small: the sockets byte mover would do, but the
		 * connection is open already on the configured one; it is only read once. */
		tm_chan_set_control(&tmp, "control");
	} else if (h.role == TM_ROLE_URGENT) {
		/* Postcopy offered; whether it is accepted, HELLO_ACK says (start). */
		tm_chan_set_control(&tmp, "urgent");
	} else {
		tm_chan_set_id(&tmp, id);
	}
	g_mutex_lock(&r->lock);
	if (chans) {
		r->hello = h;
		h.blocks = NULL;
		r->wire = f.version;
		r->nch = r->hello.channel_count;
		r->chans = chans;
	}
	if (h.role == TM_ROLE_CONTROL) {
		r->ctl = tmp;
		r->ctl_used = true;
	} else if (h.role == TM_ROLE_URGENT) {
		r->urg = tmp;
		r->urg_used = true;
	} else {
		r->chans[id].ch = tmp;
		r->chans[id].used = true;
	}
	g_mutex_unlock(&r->lock);
	tm_hello_clear(&h);
	return replaced;
}

int tm_receiver_build_announced(tm_receiver *r, GError **error)
{
	tm_ram_layout_new(&r->announced);
	for (unsigned i = 0; i < r->hello.block_count; i++) {
		const tm_wire_block *b = &r->hello.blocks[i];
		int ret = tm_ram_layout_add_block(r->announced, b->name, NULL, b->length,
						  b->page_size, b->guest_base, error);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int tm_receiver_compare_layout(tm_receiver *r, const tm_ram_layout *layout, tm_tag_store *tags,
			       GError **error)
{
	unsigned n = layout->blocks->len;
	bool store_tags = tags && tm_tag_store_get_ops(tags)->has_tags;

	if (n != r->hello.block_count) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "RAM layout differs: sender has %u blocks, receiver has %u",
			    r->hello.block_count, n);
		return -EINVAL;
	}
	for (unsigned i = 0; i < n; i++) {
		const tm_wire_block *w = &r->hello.blocks[i];
		const tm_ram_block *b = tm_ram_layout_get(layout, i);
		g_autofree char *wname = tm_escape_untrusted(w->name);
		g_autofree char *bname = tm_escape_untrusted(b->name);
		if (strcmp(w->name, b->name) != 0) {
			g_set_error(error, TM_ERROR, EINVAL,
				    "RAM layout differs: block %u is '%s' on the sender, '%s' on the receiver",
				    i, wname, bname);
			return -EINVAL;
		}
		if (w->length != b->length || w->page_size != b->page_size) {
			g_set_error(error, TM_ERROR, EINVAL,
				    "RAM block %u '%s' differs: sender length %" G_GUINT64_FORMAT
				    " page size %u, receiver length %" G_GUINT64_FORMAT " page size %u",
				    i, bname, w->length, w->page_size, b->length, b->page_size);
			return -EINVAL;
		}
		if (!b->host) {
			g_set_error(error, TM_ERROR, EINVAL, "RAM block '%s' has no host memory",
				    bname);
			return -EINVAL;
		}
	}
	if (tags && tm_tag_store_layout(tags) != layout) {
		g_set_error(error, TM_ERROR, EINVAL, "the tag store was made for another RAM layout");
		return -EINVAL;
	}
	if (tm_receiver_peer_sends_tags(r) && !store_tags) {
		g_set_error(error, TM_ERROR, EOPNOTSUPP,
			    "the sender migrates memory tags but this receiver has no tag store");
		return -EOPNOTSUPP;
	}
	if (!tm_receiver_peer_sends_tags(r) && store_tags) {
		g_set_error(error, TM_ERROR, EOPNOTSUPP,
			    "this receiver has a tag store ('%s') but the sender migrates no tags",
			    tm_tag_store_get_ops(tags)->name);
		return -EOPNOTSUPP;
	}
	return 0;
}
