#!/bin/bash
# TAP: the man pages tell the truth about the CLI and render cleanly.
#   man-check.sh SRCDIR TAGMIG
# - every long option of each `tagmig COMMAND --help` heads an item (.TP) of tagmig(1), and every
#   command is described under COMMANDS;
# - the version in each page's .TH line is the one `tagmig --version` prints;
# - groff renders every page without a warning (-ww), and so does mandoc -T lint where installed.
set -u
src=$1
tagmig=$2
man=$src/man
n=0
fails=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
no() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $*"; }

page=$man/tagmig.1
commands=$("$tagmig" --help | awk '/^Commands:/ { on = 1; next } on && NF == 0 { on = 0 } on { print $1 }')
[ -n "$commands" ] || no "tagmig --help lists no commands"
# the heads of the page's items (the line after each .TP): an option counts where it is described
items=$(awk 'tp { print; tp = 0 } /^\.TP/ { tp = 1 }' "$page")
for c in $commands; do
	if grep -q "^\.B $c\$" "$page"; then ok "tagmig(1) describes the command $c"; else no "tagmig(1) lacks the command $c"; fi
	for opt in $("$tagmig" "$c" --help | grep -oE -- '--[a-z][a-z0-9-]*' | sort -u); do
		# in roff '-' is '\-'; the option must stand whole (--tls is not --tls-creds)
		roff=$(sed 's/-/\\\\-/g' <<<"$opt")
		if grep -qP -- "$roff(?![a-z0-9]|\\\\-)" <<<"$items"; then
			ok "tagmig(1) has '$c $opt'"
		else
			no "tagmig(1) lacks '$c $opt' (it is in 'tagmig $c --help')"
		fi
	done
done
version=$("$tagmig" --version | awk '{ print $2; exit }')
for p in "$man"/*.[1-9]; do
	name=$(basename "$p")
	th=$(awk '/^\.TH/ { gsub(/"/, ""); print $6; exit }' "$p")
	if [ "$th" = "$version" ]; then ok "$name: .TH says version $version"; else no "$name: .TH says version '$th', tagmig --version says $version"; fi
	if command -v groff >/dev/null; then
		w=$(groff -ww -z -man "$p" 2>&1)
		if [ -z "$w" ]; then ok "$name renders with groff -ww, no warning"; else no "$name: groff -ww: $(head -3 <<<"$w" | tr '\n' ' ')"; fi
	fi
	if command -v mandoc >/dev/null; then
		w=$(mandoc -T lint -W warning "$p" 2>&1)
		if [ -z "$w" ]; then ok "$name passes mandoc -T lint"; else no "$name: mandoc: $(head -3 <<<"$w" | tr '\n' ' ')"; fi
	fi
done
echo "1..$n"
[ "$fails" = 0 ]
