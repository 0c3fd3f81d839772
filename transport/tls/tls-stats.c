/* SPDX-License-Identifier: MIT */
/* The TLS part of a session's statistics: handshake counters of the context, one channel's cipher. */
#include <stdio.h>

#include "transport/tls/tls-internal.h"

void tm_tls_ctx_get_stats(const tm_tls_ctx *ctx, tm_tls_stats *ret)
{
	ret->full_handshakes = __atomic_load_n(&ctx->full, __ATOMIC_RELAXED);
	ret->resumed_handshakes = __atomic_load_n(&ctx->resumed, __ATOMIC_RELAXED);
	ret->handshake_us = __atomic_load_n(&ctx->handshake_us, __ATOMIC_RELAXED);
	ret->key_updates = __atomic_load_n(&ctx->key_updates, __ATOMIC_RELAXED);
	ret->ktls_channels = __atomic_load_n(&ctx->ktls_channels, __ATOMIC_RELAXED);
}

void tm_tls_fill_stats(const tm_tls_ctx *ctx, const tm_io *io, tm_stats *ret)
{
	tm_tls_stats st;

	if (!ctx)
		return;
	tm_tls_ctx_get_stats(ctx, &st);
	ret->tls_full_handshakes = st.full_handshakes;
	ret->tls_resumed_handshakes = st.resumed_handshakes;
	ret->tls_handshake_seconds = (double)st.handshake_us / 1e6;
	const char *cipher = tm_tls_cipher(io);
	g_strlcpy(ret->tls_cipher, cipher ? cipher : "", sizeof(ret->tls_cipher));
	/*
	 * Under kernel TLS the sender's records move by sendmsg/recvmsg on the socket (the TLS
	 * handle's path "ktls", its syscalls counted there), the rest by the byte mover below it.
	 */
	const char *mover = NULL;
	for (const tm_io *l = io; l; l = l->inner)
		mover = l->path ? l->path : mover;
	if (st.ktls_channels > 0)
		g_snprintf(ret->tls_note, sizeof(ret->tls_note), "kernel TLS offload: the kernel "
			   "protects the sender's records on %" G_GUINT64_FORMAT " channel(s), "
			   "moved by sendmsg/recvmsg (path ktls), the rest by %s",
			   st.ktls_channels, mover ? mover : "the I/O backend");
	else
		g_snprintf(ret->tls_note, sizeof(ret->tls_note), "%s by %s record layer",
			   tm_tls_ctx_ktls_reason(ctx),
			   ctx->own_records ? "tagmig's" : "OpenSSL's");
}
