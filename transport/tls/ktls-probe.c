/* SPDX-License-Identifier: MIT */
/*
 * Whether this host can hand TLS records to the kernel (kernel TLS): the tls TCP ULP, and a kernel
 * that takes new keys on a kernel TLS socket (TLS 1.3 key updates). Asked once per TLS context
 * (tls.c); the answer becomes tm_tls_ctx_ktls_reason().
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/tls.h>

#include "tagmig/error.h"
#include "transport/tls/tls-internal.h"

#define ULP_SYSCTL "/proc/sys/net/ipv4/tcp_available_ulp"

int tm_tls_ktls_probe(GError **error)
{
	g_autofree char *ulp = NULL;
	g_autoptr(GError) local = NULL;

	if (!g_file_get_contents(ULP_SYSCTL, &ulp, NULL, &local)) {
		g_set_error(error, TM_ERROR, EOPNOTSUPP,
			    "kernel TLS offload unavailable: cannot read %s: %s", ULP_SYSCTL,
			    local->message);
		return -EOPNOTSUPP;
	}
	g_strstrip(ulp);
	g_auto(GStrv) names = g_strsplit_set(ulp, " \t\n", -1);
	for (char **n = names; *n; n++) {
		if (strcmp(*n, "tls") == 0)
			return 0;
	}
	g_set_error(error, TM_ERROR, EOPNOTSUPP,
		    "kernel TLS offload unavailable (tcp_available_ulp: '%s', no 'tls'; "
		    "modprobe tls adds it)", ulp);
	return -EOPNOTSUPP;
}

int tm_ktls_probe(char **ret_reason)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), c = -1, s = -1, r;
	const char *step = "socket";

	if (l < 0)
		goto fail;
	step = "listen on the loopback";
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &alen) < 0)
		goto fail;
	step = "connect on the loopback";
	c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) < 0)
		goto fail;
	s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	if (s < 0)
		goto fail;
	step = "setsockopt(TCP_ULP, \"tls\")";
	if (setsockopt(c, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) < 0)
		goto fail;
	struct tls12_crypto_info_aes_gcm_128 ci = { .info = { TLS_1_3_VERSION,
							      TLS_CIPHER_AES_GCM_128 } };
	step = "setsockopt(TLS_TX)";
	if (setsockopt(c, SOL_TLS, TLS_TX, &ci, sizeof(ci)) < 0)
		goto fail;
	ci.key[0] = 1;
	if (setsockopt(c, SOL_TLS, TLS_TX, &ci, sizeof(ci)) < 0) {
		r = -errno;
		*ret_reason = g_strdup_printf("this kernel cannot change kernel TLS keys (%s; TLS 1.3 "
					      "key updates need Linux 6.14 or later)",
					      g_strerror(-r));
		goto out;
	}
	r = 0;
	goto out;
fail:
	r = -errno;
	*ret_reason = g_strdup_printf("kernel TLS probe: %s: %s", step, g_strerror(errno));
out:
	if (s >= 0)
		close(s);
	if (c >= 0)
		close(c);
	if (l >= 0)
		close(l);
	return r < 0 ? r : 0;
}
