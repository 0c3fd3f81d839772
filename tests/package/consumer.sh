# Sourced by the package tests (package-test.sh, minimal-build.sh), which define ok and no (TAP).
# check_consumer SRC WORK WHAT FLAGS...: builds SRC/examples/precopy.c with FLAGS (pkg-config's
# words for the installed tagmig) into WORK and runs it; WHAT names the installation in the results
# ("packaged", "installed"). LD_LIBRARY_PATH must already point at the installed library.
check_consumer() {
	local src=$1 work=$2 what=$3 out
	shift 3
	if cc -std=c11 -Wall -Werror -o "$work/precopy" "$src/examples/precopy.c" "$@" 2>"$work/cc.log"; then
		ok "examples/precopy.c builds against the $what headers and library"
		if out=$("$work/precopy" 16 2>&1) && grep -q 'identical (data and tags)' <<<"$out"; then
			ok "the example migrates with the $what library: $(tail -1 <<<"$out")"
		else
			no "the example failed with the $what library:"
			tail -5 <<<"$out" | sed 's/^/# /'
		fi
	else
		no "examples/precopy.c does not build against the $what files:"
		head -10 "$work/cc.log" | sed 's/^/# /'
	fi
}
