/* SPDX-License-Identifier: MIT */
/* Shared between tls.c (context, credentials, verification, errors) and tls-chan.c (I/O). */
#pragma once

#include <openssl/ssl.h>

#include "transport/tls/tls.h"

struct tm_tls_ctx {
	/* read-only after setup */
	gatomicrefcount ref;
	tm_tls_role role;
	SSL_CTX *ssl_ctx;
	char *hostname; /* client: the name the server's certificate must carry */
	char *ktls_reason;
	/* protected by ->lock */
	GMutex lock;
	SSL_SESSION *session; /* client: the newest resumable session (ticket) */
	/* relaxed atomics */
	uint64_t full, resumed, handshake_us;
};

/* The priv of a TLS channel. */
/*
 * Outgoing records are collected up to this many bytes and handed to the inner send together:
 * one send per 8 records instead of one per record, for one more copy of the ciphertext.
 * Measured with bench/tls-layer (4 channels, both backends): sending each record straight from
 * OpenSSL's buffer (no copy) costs about 15% more CPU per GiB and a third of the throughput;
 * 16 or 32 records per send are no better than 8.
 */
#define TM_TLS_OUT (8u * (TM_TLS_RECORD + 22u))

/*
 * Incoming ciphertext is read ahead into a buffer of this size: OpenSSL (without read-ahead)
 * asks for a record header, then for exactly its body, and one inner recv for each would be one
 * kernel round trip per 16 KiB. The BIO reads what OpenSSL asks for plus whatever the socket
 * already holds (FIONREAD), so it never waits for bytes the peer has not sent.
 */
#define TM_TLS_IN (16u * (TM_TLS_RECORD + 22u))

typedef struct tls_chan {
	/* read-only after start */
	tm_tls_ctx *ctx; /* a reference */
	tm_chan inner;   /* shadow channel: ch's fd, id, timeout; the inner backend's ops and priv */
	SSL *ssl;
	/* worker-local */
	uint8_t *stage;     /* TM_TLS_RECORD bytes: gathers iovec pieces shorter than a record */
	uint8_t *out;       /* TM_TLS_OUT bytes: records waiting to go to the inner send */
	size_t nout;
	size_t want;        /* plaintext bytes the current recv call still needs */
	uint8_t *in;        /* TM_TLS_IN bytes: ciphertext received ahead of OpenSSL's reads */
	size_t in_off;      /* the unread ciphertext is in[in_off, in_off + in_len) */
	size_t in_len;
	int io_err;         /* -errno of the inner backend's last failure, seen by the BIO */
	bool handshaking;
	bool broken;        /* a fatal error: no close_notify at close */
	uint8_t first[5];   /* the first bytes received, to recognise a plaintext peer */
	unsigned nfirst;
	/* set by the verify callback when the peer's certificate fails */
	int verify_err;
	int verify_depth;
	char *verify_subject;
	char *verify_when; /* notBefore or notAfter of the failing certificate, for time errors */
	/* the last failure of send/recv (tm_tls_chan_last_error) */
	char *err_msg;
} tls_chan;

tm_tls_ctx *tm_tls_ctx_ref(tm_tls_ctx *ctx);

/*
 * Turns the failure of an SSL call (its return value ret) on t into -errno and a message
 * (g_free it) saying which check failed; what is "handshake", "send", "receive" or "shutdown".
 * Clears the thread's OpenSSL error queue.
 */
int tm_tls_explain(tls_chan *t, int ret, const char *what, char **ret_msg);

/* The verify callback of both roles: records why the peer's chain failed. */
int tm_tls_verify_cb(int ok, X509_STORE_CTX *store);
