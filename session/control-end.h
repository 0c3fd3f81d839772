/* SPDX-License-Identifier: MIT */
/*
 * Between the control thread's loop (control.c) and the end of the control connection
 * (control-end.c). Every function here is called with tm_control.io_lock held, by whichever
 * thread owns the connection at that moment. Not part of the API.
 */
#pragma once

#include "session/session-internal.h"

/* ---- control.c ---- */
/* Our PING; none may be out. 0 or -errno with *error. */
int tm_ctl_send_ping(tm_control *c, GError **error);
/* The body of the control message whose header f was read, decoded into v. 0 or -errno
 * (-EBADMSG: a body longer than any control message's). */
int tm_ctl_body(tm_chan *ch, const tm_frame *f, uint64_t v[TM_CTRL_MAX_FIELDS], GError **error);

/* ---- control-end.c ---- */
/* direct_read: written under io_lock, read there or atomically (tm_control_direct_fd). */
void tm_ctl_set_direct_read(tm_control *c, bool on);
/* Sender, after END_ACK: the end decided (the data channels' END_ACKs awaited, a failure
 * meanwhile sent as ERROR: -ECANCELED), then CTL_POS with RESUME_CONTROL, then the clean
 * close. thread: the control thread's, io_lock held (let go while the end is awaited); else
 * finish's thread's (tm_control_direct_read). 1 (ended) or -errno. */
int tm_ctl_sender_close(tm_control *c, bool thread, GError **error);
/* Sender, after END_ACK, never blocking: the end decided now (c->committed; with
 * RESUME_CONTROL ended too) if every data channel's END_ACK was checked and the session did
 * not fail; the close then does not wait (tm_ctl_sender_close). Whether it is decided; takes
 * *lock. */
bool tm_ctl_try_commit(tm_control *c);
/* Receiver, after END_ACK: the sender's CTL_POS with RESUME_CONTROL, then the clean close.
 * 1 (ended) or -errno. */
int tm_ctl_receiver_close(tm_control *c, GError **error);
/* The end is acknowledged: c->ended set, the connection's statistics fixed from now on (with
 * closing_bytes still to send), waiters woken (cond and end_fd). Takes *lock. */
void tm_ctl_set_ended(tm_control *c, bool exited, uint64_t closing_bytes);
/* END (receiver) or END_ACK (sender), body decoded into v: checked. The sender's close is the
 * caller's (tm_ctl_sender_close). 0 or -errno (-EPROTO: counts that are not the peer's). */
int tm_ctl_peer_end(tm_control *c, const uint64_t v[TM_CTRL_MAX_FIELDS], GError **error);
/* Receiver, after END: READY and END_ACK once every data channel ended and all is there, then
 * the close. 0 (not yet), 1 (ended) or -errno. */
int tm_ctl_answer_end(tm_control *c, GError **error);
/* Sender: the READY whose header f was read. 0 or -errno. */
int tm_ctl_take_ready(tm_control *c, const tm_frame *f, GError **error);
