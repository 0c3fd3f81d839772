#!/bin/bash
# TAP: the Debian packages build, are lintian-clean of errors, and work from their files alone.
#   package-test.sh SRCDIR WORKDIR
# 1. Copies the source tree (the files git knows, committed or not; no build directories) to
#    WORKDIR/pkg/tagmig-VERSION and runs `dpkg-buildpackage -us -uc -b` there (the package build
#    runs the unit suite itself, debian/rules).
# 2. lintian --fail-on error on the .changes.
# 3. Installs libtagmig0, libtagmig-dev and tagmig with dpkg into an empty root (its own
#    status database; nothing is installed on the host) and, from that root only: `tagmig --version` and a small demo run by
#    the packaged binary on the packaged library; examples/precopy.c compiled with the packaged
#    headers and pkg-config file, linked against the packaged library, and run; the packaged man
#    pages render without a warning; the packages' dependencies name each other.
# Skips (TAP SKIP) only when the packaging tools are missing (scripts/setup.sh installs them).
set -uo pipefail
# check_consumer
# shellcheck source=consumer.sh
. "$(dirname "$0")/consumer.sh"
src=$1
work=$2/pkg
n=0
fails=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
no() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $*"; }
finish() { echo "1..$n"; [ "$fails" = 0 ]; exit; }

for tool in dpkg-buildpackage dh lintian git cc pkg-config groff; do
	command -v "$tool" >/dev/null || { echo "1..0 # SKIP $tool is not installed (scripts/setup.sh test installs debhelper, lintian)"; exit 0; }
done
version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version) || { no "debian/changelog has no version"; finish; }
ma=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
rm -rf "$work"
tree=$work/tagmig-$version
mkdir -p "$tree"
(cd "$src" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$tree") ||
	{ no "copying the source tree failed"; finish; }

# 1. build
t0=$(date +%s)
if (cd "$tree" && dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1; then
	ok "dpkg-buildpackage -us -uc -b builds the packages ($(($(date +%s) - t0)) s)"
else
	no "dpkg-buildpackage failed; the end of its log:"
	tail -30 "$work/build.log" | sed 's/^/# /'
	finish
fi
for p in libtagmig0 libtagmig-dev tagmig; do
	deb=$work/${p}_${version}_$arch.deb
	if [ -f "$deb" ]; then ok "package $p built"; else no "package $p missing"; finish; fi
done

# 2. lintian
if lintian --fail-on error "$work/tagmig_${version}_$arch.changes" >"$work/lintian.log" 2>&1; then
	ok "lintian finds no error"
else
	no "lintian finds errors:"
	grep '^E:' "$work/lintian.log" | head -20 | sed 's/^/# /'
fi
grep -E '^(W|I):' "$work/lintian.log" | sed 's/^/# lintian: /'

# The symbols file dpkg-shlibdeps reads: every symbol of the ABI list, none missing.
syms=$(dpkg-deb -I "$work/libtagmig0_${version}_$arch.deb" symbols 2>/dev/null | grep -c '^ tm_')
want=$(grep -c '^tm_' "$src/abi/libtagmig.symbols")
if [ "$syms" = "$want" ]; then ok "libtagmig0 ships a symbols file with the $want symbols of abi/libtagmig.symbols"; else no "libtagmig0's symbols file has $syms symbols, abi/libtagmig.symbols $want"; fi

# 3. from an empty root only: dpkg installs the three packages into it (its own status database;
# the dependencies outside ours are the host's, which must have each of them)
root=$work/root
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status"
debs=()
for p in libtagmig0 libtagmig-dev tagmig; do
	debs+=("$work/${p}_${version}_$arch.deb")
done
if dpkg --root="$root" --force-depends --force-script-chrootless -i "${debs[@]}" >"$work/dpkg.log" 2>&1 &&
	[ "$(dpkg --root="$root" -l libtagmig0 libtagmig-dev tagmig 2>/dev/null | grep -c '^ii')" = 3 ]; then
	ok "dpkg -i installs libtagmig0, libtagmig-dev and tagmig into an empty root"
else
	no "dpkg -i into an empty root failed:"
	tail -10 "$work/dpkg.log" | sed 's/^/# /'
	finish
fi
missing=
for d in $(dpkg-deb -f "$work/tagmig_${version}_$arch.deb" Depends | tr ',' '\n' | awk '{ print $1 }') \
	$(dpkg-deb -f "$work/libtagmig0_${version}_$arch.deb" Depends | tr ',' '\n' | awk '{ print $1 }'); do
	case $d in libtagmig0) continue ;; esac
	dpkg-query -W -f='${db:Status-Abbrev}' "$d:$arch" 2>/dev/null | grep -q '^ii' || missing+=" $d"
done
if [ -z "$missing" ]; then ok "every other dependency is a Debian package the host has"; else no "dependencies not installed on the host:$missing"; fi
dep=$(dpkg-deb -f "$work/tagmig_${version}_$arch.deb" Depends)
if grep -qE "libtagmig0 \(>= [0-9.]+\)" <<<"$dep"; then ok "tagmig depends on libtagmig0 (the version its symbols need: $(grep -oE "libtagmig0 \([^)]*\)" <<<"$dep"))"; else no "tagmig's Depends lacks libtagmig0: $dep"; fi
dep=$(dpkg-deb -f "$work/libtagmig-dev_${version}_$arch.deb" Depends)
if grep -q "libtagmig0 (= $version)" <<<"$dep"; then ok "libtagmig-dev depends on libtagmig0 (= $version)"; else no "libtagmig-dev's Depends lacks libtagmig0: $dep"; fi

export LD_LIBRARY_PATH=$root/usr/lib/$ma
bin=$root/usr/bin/tagmig
lib=$(ldd "$bin" 2>/dev/null | awk '$1 ~ /^libtagmig\.so/ { print $3 }')
if [ "$lib" = "$root/usr/lib/$ma/libtagmig.so.0" ]; then
	ok "the packaged tagmig runs on the packaged libtagmig.so.0"
else
	no "the packaged tagmig does not load the packaged library (ldd: '${lib:-libtagmig not linked}')"
fi
v=$("$bin" --version 2>&1)
if grep -q "^tagmig ${version%%-*} " <<<"$v"; then ok "tagmig --version: $v"; else no "tagmig --version says '$v'"; fi
if out=$("$bin" demo --size 64M --channels 2 2>&1) && grep -qi 'verified' <<<"$out"; then
	ok "the packaged tagmig demo migrates and verifies 64 MiB"
else
	no "the packaged tagmig demo failed:"
	tail -5 <<<"$out" | sed 's/^/# /'
fi

# The consumer example, built from the packaged files only (never the source tree's headers).
# (the packaged tagmig.pc, relocated to the root: its prefix moved, nothing else changed; GLib's
# own .pc stays the host's)
mkdir -p "$work/pc"
sed "s|^prefix=.*|prefix=$root/usr|" "$root/usr/lib/$ma/pkgconfig/tagmig.pc" >"$work/pc/tagmig.pc"
export PKG_CONFIG_PATH=$work/pc
flags=$(pkg-config --cflags --libs tagmig 2>&1)
if grep -q -- "-I$root/usr/include" <<<"$flags"; then
	ok "pkg-config finds the packaged tagmig.pc ($flags)"
else
	no "pkg-config --cflags --libs tagmig: $flags"
fi
# shellcheck disable=SC2086 # pkg-config's words
check_consumer "$src" "$work" packaged $flags

# tagmig(1) sends readers to the wire format and TLS documents: they must be there.
for f in tagmig/wire-format.md.gz tagmig/tls.md.gz libtagmig-dev/api.md.gz; do
	if [ -f "$root/usr/share/doc/$f" ]; then ok "/usr/share/doc/$f is packaged"; else no "/usr/share/doc/$f is not packaged"; fi
done

for page in "$root/usr/share/man/man1/tagmig.1.gz" "$root/usr/share/man/man3/libtagmig.3.gz"; do
	name=$(basename "$page" .gz)
	if [ ! -f "$page" ]; then no "$name is not packaged"; continue; fi
	w=$(zcat "$page" | groff -ww -z -man 2>&1)
	if [ -z "$w" ]; then ok "packaged $name renders without a warning"; else no "packaged $name: $(head -2 <<<"$w" | tr '\n' ' ')"; fi
done
finish
