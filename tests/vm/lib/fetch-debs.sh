# shellcheck shell=bash disable=SC2154 # cache: set by the sourcing script
# Sourced after harness.sh by the scripts that unpack Debian packages without installing them
# (fetch-backports.sh, bench/fetch-guest.sh): one suite of the system's Debian release, the
# host's architecture, a private apt state under "$cache/apt" (harness.sh's apt_private). A
# failure ends the script through its skip, with the reason.
#   debs_standalone NAME         for a script of its own (not a TAP harness): skip and bail print
#                                "NAME: reason" on stderr and exit 1, note prints on stderr
#   debs_host                    sets hostarch (dpkg's) and codename (the system's release,
#                                bookworm if it names none)
#   debs_update SUITE WHAT       after debs_host: SUITE is "" (the release) or "-backports"; writes
#                                the state's only source, the system's mirror of the release
#                                (deb.debian.org if none) for $codename$SUITE, and updates it;
#                                WHAT names the packages in the note
#   debs_unpack DEST PACKAGE...  downloads PACKAGE... (name or name/suite) and unpacks them into
#                                DEST.tmp, then renames it DEST

debs_standalone() { # $1: the script's name in its messages
	debs_name=$1
	# shellcheck disable=SC2317 # called by the sourcing script and by the functions below
	skip() { echo "$debs_name: $*" >&2; exit 1; }
	# shellcheck disable=SC2317
	bail() { skip "$@"; }
	# shellcheck disable=SC2317
	note() { echo "$debs_name: $*" >&2; }
}

debs_host() {
	hostarch=$(dpkg --print-architecture 2>/dev/null) || skip "no dpkg to fetch packages with"
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
}

debs_update() { # $1: suite suffix, $2: what is fetched
	local main
	# shellcheck disable=SC2034 # read by apt_private
	apt_archs=$hostarch
	main=$(mirror_of "$codename")
	[ -n "$main" ] || main=http://deb.debian.org/debian
	mkdir -p "$cache/apt"
	echo "deb [arch=$hostarch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $main $codename$1 main" \
		>"$cache/apt/sources.list"
	note "fetching $2 from $main $codename$1 (private apt state, not installed)"
	apt_private apt-get update >"$cache/apt-update.log" 2>&1 ||
		skip "private apt-get update failed: $(tail -1 "$cache/apt-update.log")"
}

debs_unpack() { # $1: destination, then the packages
	local dest=$1 deb
	shift
	rm -rf "$cache/dl" "$dest.tmp"
	mkdir -p "$cache/dl"
	(cd "$cache/dl" && apt_private apt-get download "$@") >"$cache/download.log" 2>&1 ||
		skip "cannot download $*: $(tail -1 "$cache/download.log")"
	for deb in "$cache"/dl/*.deb; do
		dpkg-deb -x "$deb" "$dest.tmp" || skip "dpkg-deb -x $deb failed"
	done
	mv "$dest.tmp" "$dest"
	rm -rf "$cache/dl"
}
