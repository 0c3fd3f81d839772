/* SPDX-License-Identifier: MIT */
/*
 * Resume after the switch to postcopy (docs/wire-format.md, "Resume in postcopy"; docs/api.md,
 * "Resume"): a data channel or the urgent connection that breaks once the switch is committed
 * comes back as a data channel does in precopy (resume.h), instead of pausing the session. The
 * logic is in resume-postcopy.c; postcopy-send.c, urgent-send.c, urgent-recv.c and resume-*.c
 * call the hooks below. Only when resume is off, refused or past its deadline does the session
 * pause (TM_PHASE_POSTCOPY_PAUSED) as before. Not part of the API.
 */
#pragma once

#include "session/resume.h"

/* ---- sender, data channels ---- */
/*
 * Worker c at its switch, when it is committed (its stripes in unsent, before DISCARD and
 * RAM_END(POSTCOPY)): keeps what a reconnect may have to send again: the pages of its log since
 * the last acknowledged SYNC, the counts, and the DISCARD messages (a reference to msgs).
 */
void tm_pcresume_switch(send_chan *c, GPtrArray *msgs);
/* Worker c after its switch, before it sends w (a run of background pages, STATE, END). */
void tm_pcresume_log(send_chan *c, const work *w);
/*
 * Worker c after its switch, its connection failed with *error: reconnects (tm_resume_send)
 * and puts in front of q what the receiver lacks: precopy pages and the switch (WORK_SWITCH:
 * DISCARD and RAM_END(POSTCOPY)) if RAM_END(POSTCOPY) never arrived, STATE chunks and END; the
 * background pages it lacks are unsent again. Returns 0 (*error cleared), 1 (the receiver had
 * answered the channel's END: it has ended), or -errno with *error (unchanged when no resume
 * applies: not agreed, a failure that is no broken connection, the switch not committed).
 */
int tm_pcresume_send(send_chan *c, GArray *q, GError **error);
/* tm_resume_send(), reconnected: whether the replay is resume-postcopy.c's, and the replay
 * itself from the receiver's position (0 with *error cleared, or -EPROTO); unsent: pages of
 * the packet the kernel never took in full (tm_resume_unsent_pages()). */
bool tm_pcresume_owns(send_chan *c);
int tm_pcresume_replay(send_chan *c, const tm_resume_pos *pos, uint64_t unsent, GError **error);
/* Worker c: a replayed item: WORK_PAGES (precopy pages again), WORK_SWITCH. 0 or -errno. */
int tm_pcresume_send_item(send_chan *c, const work *w, GError **error);
/* postcopy-send.c: DISCARD msgs, then RAM_END(POSTCOPY) with the channel's counts. */
int tm_send_pc_announce(send_chan *c, GPtrArray *msgs, GError **error);
void tm_pcresume_send_free(tm_sender *s);
/* Control thread (tm_resume_conn_lost): the receiver's urgent connection of epoch broke.
 * If it is still ours, its socket is shut down: the return thread sees the break and
 * reconnects (after the switch at once, before it at the switch). Never blocks. */
void tm_pcresume_urgent_lost(tm_sender *s, uint32_t epoch);

/* ---- sender, the urgent connection ---- */
/*
 * Return thread, its connection failed with *error: before the switch it first waits (on
 * s->cond) for the switch to be committed, the session's quit or control's end. Then it
 * reconnects it (HELLO
 * role urgent with a new epoch, RESUME, RESUME_ACK), resets win (request ids start at 1 on each
 * connection) and forgets which pages were answered: the receiver asks again for what it
 * lacks, each page at most once per connection. 0 (*error cleared), 1 (*error cleared) when
 * the receiver's control END_ACK came meanwhile: its urgent connection ended (it sent REQ_END,
 * lost in the break), so this one ends too; or -errno with *error.
 */
int tm_pcresume_urgent_send(tm_sender *s, tm_req_window *win, GError **error);
/* s->lock held, the session quit or control ended: an urgent reconnect under way stops now. */
void tm_pcresume_urgent_wake(tm_sender *s);

/* ---- receiver ---- */
/* A reconnect's HELLO of role urgent may come (postcopy and resume agreed). */
bool tm_pcresume_recv_urgent_ok(tm_receiver *r);
/* What check_reconnect() returns for a proven urgent reconnect (above every channel id). */
#define TM_PCRESUME_URGENT_ID 0x10000
/* Accept thread: a proven urgent reconnect of epoch, for the urgent thread (takes ch): 0, or
 * -errno when refused (an old epoch, the session over; ch closed after an ERROR). */
int tm_pcresume_recv_take_urgent(tm_receiver *r, tm_chan *ch, uint32_t epoch);
/*
 * Urgent thread, its connection failed with *error: if resume was agreed and it broke, waits
 * (as long as the session lives) for the sender's reconnect, answers RESUME_ACK (zeros) and
 * makes it r->urg. 0 (*error cleared; the caller asks again for every outstanding page) or
 * -errno with *error.
 */
int tm_pcresume_recv_urgent(tm_receiver *r, GError **error);
/*
 * Urgent thread, its connection failed with *error after it sent REQ_END (nothing outstanding,
 * nothing more will be asked): whether that ends the connection as END_ACK would. The sender
 * either read REQ_END (then it answered and will not come back) or it reconnects, and
 * tm_pcresume_recv_urgent_late() hands that over (docs/wire-format.md, "Resume in postcopy").
 */
bool tm_pcresume_recv_urgent_ends(tm_receiver *r, const GError *error);
/*
 * Urgent thread, its connection already ended: a reconnect waiting (the sender did not see
 * REQ_END) becomes r->urg, answered RESUME_ACK; true when so (the caller sends REQ_END(0) on
 * it at once and takes END_ACK). Never blocks beyond one small send.
 */
bool tm_pcresume_recv_urgent_late(tm_receiver *r);
void tm_pcresume_recv_free(tm_receiver *r);
