/* SPDX-License-Identifier: MIT */
/*
 * Shared by fuzz-tls-records.c and its seed generator gen-tls-records.c: the input layout and
 * the fixed traffic secrets. An input is
 *   byte 0  bits 0-6: cipher suite, 0 TLS_AES_128_GCM_SHA256, 1 TLS_AES_256_GCM_SHA384,
 *           2 TLS_CHACHA20_POLY1305_SHA256 (modulo 3); bit 7: the traffic secret follows the
 *           prefix (as long as the suite's hash: records OpenSSL sealed after a real handshake),
 *           else the fixed one of fuzz_tls_dir
 *   byte 1  bit 0: the direction, 0 client-to-server (we are the server: the sender's records),
 *           1 server-to-client (we are the client); bits 1-7: how the receiver reads (sizes
 *           of its recv calls, 0: those of the seeds' sessions, and where each call's buffer is
 *           cut in two iovecs)
 *   rest    the ciphertext stream: TLS 1.3 records as they come off the wire
 */
#pragma once

#include <stdint.h>
#include <string.h>

#include "transport/tls/tls-internal.h"

#define FUZZ_TLS_PREFIX 2u

static const uint16_t fuzz_tls_suites[3] = { 0x1301, 0x1302, 0x1303 };

#define FUZZ_TLS_OWN_SECRET 0x80u

/* The length of the suite's traffic secrets (its hash). */
static inline size_t fuzz_tls_secret_len(unsigned suite)
{
	return fuzz_tls_suites[suite % 3] == 0x1302 ? 48 : 32;
}

/*
 * Keys d for the suite with the traffic secret given (fuzz_tls_secret_len bytes) or, NULL, the
 * direction's fixed one; 0 or -errno.
 */
static inline int fuzz_tls_dir(tm_tls_dir *d, unsigned suite, unsigned dir, const uint8_t *given,
			       bool encrypt)
{
	uint8_t secret[48];

	for (size_t i = 0; i < sizeof(secret); i++)
		secret[i] = given ? given[i % fuzz_tls_secret_len(suite)]
				  : (uint8_t)((dir & 1 ? 0xa0 : 0x50) + i * 3);
	return tm_tls_dir_init_suite(d, fuzz_tls_suites[suite % 3], secret,
				     fuzz_tls_secret_len(suite), encrypt);
}
