/* SPDX-License-Identifier: MIT */
/*
 * Whether a peer's first bytes are TLS: built with and without TLS, so that a plaintext receiver
 * can say "the sender speaks TLS" instead of "bad magic" either way. No OpenSSL here.
 */
#include "transport/tls/tls.h"

bool tm_tls_looks_like_tls(const uint8_t *buf, size_t len)
{
	/* A handshake record (22) with a 3.x legacy version: how every ClientHello starts. */
	return len >= 3 && buf[0] == 22 && buf[1] == 3 && buf[2] <= 4;
}
