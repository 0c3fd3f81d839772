#!/bin/bash
# TAP: the smallest library a VMM may want builds, installs and serves a consumer.
#   minimal-build.sh SRCDIR WORKDIR
# Configures SRCDIR with -Dtests=false -Dbench=false -Dtls=disabled -Dio_uring=disabled -Dcompression=disabled, builds,
# installs into WORKDIR/root (meson install --destdir), then from the installed files only:
# the library needs neither OpenSSL nor liburing; examples/precopy.c builds with the installed
# pkg-config file and migrates with the installed library; the installed tagmig runs a demo and
# refuses --tls with the reason.
set -uo pipefail
# check_consumer
# shellcheck source=consumer.sh
. "$(dirname "$0")/consumer.sh"
src=$1
work=$2/minimal
n=0
fails=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
no() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $*"; }
finish() { echo "1..$n"; [ "$fails" = 0 ]; exit; }

rm -rf "$work"
mkdir -p "$work"
opts=(-Dtests=false -Dbench=false -Dtls=disabled -Dio_uring=disabled -Dcompression=disabled -Dwerror=true --prefix=/usr)
if meson setup "$work/build" "$src" "${opts[@]}" >"$work/setup.log" 2>&1; then
	ok "meson setup ${opts[*]}"
else
	no "meson setup ${opts[*]} failed:"
	tail -15 "$work/setup.log" | sed 's/^/# /'
	finish
fi
targets=$(meson introspect "$work/build" --targets | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')
note_targets="$targets targets"
if ninja -C "$work/build" >"$work/build.log" 2>&1 && meson install -C "$work/build" --destdir "$work/root" >"$work/install.log" 2>&1; then
	ok "builds ($note_targets) and installs"
else
	no "build or install failed:"
	tail -15 "$work/build.log" "$work/install.log" | sed 's/^/# /'
	finish
fi
root=$work/root
lib=$(find "$root" -name 'libtagmig.so.0' | head -1)
pc=$(find "$root" -name tagmig.pc | head -1)
[ -n "$lib" ] && [ -n "$pc" ] || { no "libtagmig.so.0 or tagmig.pc not installed"; finish; }
deps=$(ldd "$lib" | awk '{ print $1 }' | grep -E 'libssl|libcrypto|liburing' | tr '\n' ' ')
if [ -z "$deps" ]; then ok "the library links neither OpenSSL nor liburing"; else no "the library still links $deps"; fi
if grep -q '^Requires.private' "$pc"; then no "tagmig.pc names private requirements it does not have: $(grep '^Requires.private' "$pc")"; else ok "tagmig.pc has no Requires.private"; fi

# The consumer, from the installed files only (the .pc relocated to the root: prefix moved).
mkdir -p "$work/pc"
sed "s|^prefix=.*|prefix=$root/usr|" "$pc" >"$work/pc/tagmig.pc"
flags=$(PKG_CONFIG_PATH=$work/pc pkg-config --cflags --libs tagmig)
export LD_LIBRARY_PATH=$(dirname "$lib")
# shellcheck disable=SC2086 # pkg-config's words
check_consumer "$src" "$work" installed $flags

bin=$root/usr/bin/tagmig
if out=$("$bin" demo --size 32M --channels 2 2>&1) && grep -q 'verified: *yes' <<<"$out"; then
	ok "the installed tagmig demo verifies 32 MiB over sockets"
else
	no "the installed tagmig demo failed:"
	tail -5 <<<"$out" | sed 's/^/# /'
fi
out=$("$bin" demo --size 32M --tls 2>&1)
rc=$?
if [ $rc = 1 ] && grep -q 'built without TLS' <<<"$out"; then
	ok "tagmig demo --tls is refused with the reason (exit 1)"
else
	no "tagmig demo --tls: exit $rc: $out"
fi
printf 'not an image' >"$work/one.img"
truncate -s 1M "$work/one.img"
mkdir -p "$work/creds"
out=$("$bin" send --connect 127.0.0.1:9 --ram "$work/one.img" --tls-creds "$work/creds" 2>&1)
rc=$?
if [ $rc = 1 ] && grep -q 'built without TLS' <<<"$out"; then
	ok "tagmig send --tls-creds is refused by the library with the reason"
else
	no "tagmig send --tls-creds: exit $rc: $out"
fi
finish
