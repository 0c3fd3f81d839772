#!/bin/sh
# Creates TLS credentials for tagmig in the QEMU/libvirt layout (docs/tls.md):
#   scripts/make-tls-creds.sh DIR [HOSTNAME]
# DIR/ca-cert.pem, ca-key.pem          a new CA (keep ca-key.pem away from the hosts)
# DIR/server-cert.pem, server-key.pem  the receiver's, for HOSTNAME (default localhost)
# DIR/client-cert.pem, client-key.pem  the sender's
# ECDSA P-256 keys, certificates valid for $TAGMIG_TLS_DAYS days (default 365). Needs the openssl
# command (Debian package openssl). Refuses to overwrite existing files.
set -eu
dir=${1:?usage: make-tls-creds.sh DIR [HOSTNAME]}
host=${2:-localhost}
days=${TAGMIG_TLS_DAYS:-365}

for f in ca-cert ca-key server-cert server-key client-cert client-key; do
	if [ -e "$dir/$f.pem" ]; then
		echo "make-tls-creds: $dir/$f.pem exists; not overwriting" >&2
		exit 1
	fi
done
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The name the sender checks (--tls-hostname): an IP address goes in an IP subjectAltName.
case $host in
*:* | *[!0-9.]*) san="DNS:$host" ;;
*) san="IP:$host" ;;
esac
case $host in *:*) san="IP:$host" ;; esac
[ "$host" = localhost ] && san="$san,IP:127.0.0.1,IP:::1"

key() { (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"); }
serial() { echo "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"; }

cat >"$tmp/ca.ext" <<EXT
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EXT
cat >"$tmp/server.ext" <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EXT
cat >"$tmp/client.ext" <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EXT

key "$dir/ca-key.pem"
openssl req -new -key "$dir/ca-key.pem" -subj "/CN=tagmig CA" -out "$tmp/ca.csr"
openssl x509 -req -in "$tmp/ca.csr" -signkey "$dir/ca-key.pem" -days "$days" \
	-set_serial "$(serial)" -extfile "$tmp/ca.ext" -out "$dir/ca-cert.pem" 2>/dev/null

issue() { # issue NAME CN
	key "$dir/$1-key.pem"
	openssl req -new -key "$dir/$1-key.pem" -subj "/CN=$2" -out "$tmp/$1.csr"
	openssl x509 -req -in "$tmp/$1.csr" -CA "$dir/ca-cert.pem" -CAkey "$dir/ca-key.pem" \
		-days "$days" -set_serial "$(serial)" -extfile "$tmp/$1.ext" \
		-out "$dir/$1-cert.pem" 2>/dev/null
	openssl verify -CAfile "$dir/ca-cert.pem" -purpose "ssl$1" "$dir/$1-cert.pem" >/dev/null
}
issue server "$host"
issue client "tagmig sender"
chmod 644 "$dir/ca-cert.pem" "$dir/server-cert.pem" "$dir/client-cert.pem"
echo "make-tls-creds: $dir: CA, server certificate for $san, client certificate ($days days)"
