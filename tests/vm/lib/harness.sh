# Sourced by tests/vm/aarch64/harness.sh and tests/vm/ktls/harness.sh (the VM suites).
#   skip REASON / bail REASON    end the run as a TAP skip / a TAP failure; note TEXT: a TAP comment
# Debian packages are fetched through a
# private apt state under "$cache/apt" (the system's apt sources and state are not touched), with
# the same mirror and proxy settings as the system.
#   mirror_of SUITE              the system's mirror URI for SUITE (deb822 or one-line sources)
#   apt_private TOOL ARGS...     apt-get or apt-cache on the private state; the architectures
#                                are "$apt_archs" (first: the native one), e.g. "amd64 arm64"

skip() {
	echo "1..0 # SKIP $*"
	exit 0
}
bail() {
	echo "not ok 1 - harness: $*"
	echo "1..1"
	exit 1
}
note() { echo "# $*"; }

mirror_of() { # $1: suite
	{
		awk -v s="$1" 'BEGIN{RS=""} { u=""; ok=0;
			for (i = 1; i <= NF; i++) { if ($i == "URIs:") u = $(i+1);
				if ($i == "Suites:") for (j = i+1; j <= NF && $j !~ /:$/; j++) if ($j == s) ok=1 }
			if (ok && u != "") { print u; exit } }' /etc/apt/sources.list.d/*.sources 2>/dev/null
		awk -v s="$1" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i == s) { u=$(i-1); print u; exit } }' \
			/etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
	} | head -1
}

apt_private() { # $1: apt-get or apt-cache, then its arguments
	local a=$cache/apt tool=$1 arch archs=()
	shift
	for arch in $apt_archs; do
		archs+=(-o "APT::Architectures::=$arch")
	done
	mkdir -p "$a/lists/partial" "$a/cache/archives/partial" "$a/parts"
	"$tool" -q -o Dir::Etc::SourceList="$a/sources.list" -o Dir::Etc::SourceParts="$a/parts" \
		-o Dir::State::Lists="$a/lists" -o Dir::Cache="$a/cache" \
		-o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts="$a/parts" \
		-o Debug::NoLocking=1 -o APT::Sandbox::User=root -o Acquire::Languages=none \
		-o APT::Architecture="${apt_archs%% *}" "${archs[@]}" "$@"
}
