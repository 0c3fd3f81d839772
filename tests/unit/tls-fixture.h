/* SPDX-License-Identifier: MIT */
/*
 * What test-tls.c (handshakes, credentials, verification) and test-tls-records.c (the record
 * layer) share: the credential sets, made once per run with OpenSSL by common/testing/tls-creds.c
 * in a temporary directory; TLS contexts on them; loopback channel pairs over the inner backend of
 * the case at hand; both ends' handshakes, checked against what tests/vm/ktls expects of kernel
 * TLS; random data through a pair; a clean close; and the main loop that runs every case over
 * every inner backend as /tls/over-<backend>/<case>.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <glib.h>

#include "session/channel.h"
#include "transport/tls/tls.h"
#include "transport/transport.h"

G_BEGIN_DECLS

/* Every channel's I/O timeout. */
#define TIMEOUT_MS 10000u

/*
 * The temporary directory of this run, one credentials directory per set under it (made before
 * any case runs, removed after the last):
 *   good: CA A, server "localhost" (and 127.0.0.1, ::1, fe80::1), client. other: the same from
 *   CA B. evil: CA A, a server certificate for evil.example only, client.
 *   With a ca-crl.pem of CA A: crl-ok (revokes other certificates than the ones in the set),
 *   revoked-server, revoked-client (revokes that one), crl-expired (past its nextUpdate),
 *   revoked-ca (CA A revokes its own certificate), crl-other-ca (a CRL of CA B only), crl-bad
 *   (no CRL in the file).
 *   expired-server / expired-client: CA A with one expired certificate. foreign-client: trusts
 *   CA A but holds a client certificate of CA B. server-cert-as-client: a serverAuth certificate
 *   as the client's. no-client: only the CA and the server. mismatched-key: a server key that
 *   does not belong to its certificate.
 */
extern char *tmp_root;
/* The inner backend (byte mover below TLS) of the case being run, set by tls_tests_run. */
extern const tm_transport_ops *inner;

/* A context for role on the credentials set (a directory under tmp_root); host: the name to verify. */
tm_tls_ctx *ctx_new(tm_tls_role role, const char *set, const char *host);

/* A connected loopback TCP pair, or the test fails saying why. */
void loopback_pair(int *ret_client, int *ret_server);
/* Opens ch on fd with the inner backend; the channel owns fd. */
void chan_open(tm_chan *ch, int fd, unsigned id);
/* Two channels with the same id on the ends of a loopback pair: c the client's, s the server's. */
void chan_pair(tm_chan *c, tm_chan *s, unsigned id);

/* One side's handshake (tm_tls_wrap) in a thread; r and err say how it ended after side_join. */
typedef struct side {
	tm_tls_ctx *ctx;
	tm_chan *ch;
	int r;
	GError *err;
	GThread *thread;
} side;

void side_start(side *s, tm_tls_ctx *ctx, tm_chan *ch);
void side_join(side *s);

/*
 * Under tests/vm/ktls ($TAGMIG_EXPECT_KTLS): the kernel protects the sender's records wherever our
 * record layer does ("1"), or nowhere on a kernel that cannot take new keys ("norekey"). Unset:
 * no expectation.
 */
void check_ktls(tm_chan *c, tm_chan *s);
/* Handshakes on both ends of c/s (the server's in a thread); both must succeed; then check_ktls. */
void start_both(tm_tls_ctx *cctx, tm_chan *c, tm_tls_ctx *sctx, tm_chan *s);

/* Deterministic test data (splitmix64; one sequence per program run). */
uint64_t rnd(void);
void fill_random(uint8_t *p, size_t len);

/* A send of len bytes of buf on ch's handle, cut into random iovecs: send_fn is a thread body. */
typedef struct xfer {
	tm_chan *ch;
	uint8_t *buf;
	size_t len;
	int r;
} xfer;

gpointer send_fn(gpointer p);
/* Sends len random bytes c -> s (sender in a thread), receives them in other pieces, compares. */
void transfer(tm_chan *c, tm_chan *s, size_t len);
/* Clean close (tm_tls_shutdown) on both sides at once; both must succeed. */
void shutdown_both(tm_chan *c, tm_chan *s);

typedef struct tls_test {
	const char *path;
	void (*fn)(void);
} tls_test;

/*
 * main(): makes the credential sets, registers /tls/over-<backend>/<path> for every test and
 * every inner backend (a backend whose probe fails skips with its reason), runs them, removes
 * tmp_root. Returns g_test_run()'s result.
 */
int tls_tests_run(int *argc, char ***argv, const tls_test *tests, size_t n);

G_END_DECLS
