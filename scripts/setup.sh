#!/bin/sh
# Installs what tagmig needs to build and test on Debian 12 (run as root), once.
set -eu
pkgs="build-essential meson ninja-build pkg-config libglib2.0-dev liburing-dev libssl-dev python3 iproute2"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "setup: installing$missing" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null || echo "setup: apt-get update failed; trying the install anyway" >&2
	apt-get install -y -qq $missing >/dev/null
fi
