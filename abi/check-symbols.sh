#!/bin/bash
# TAP: the shared library exports exactly the symbols of abi/libtagmig.symbols, each with its
# version node and kind (T function, D/B/R data), so an accidental export or a removal fails.
#   check-symbols.sh LIBRARY LIST
# To change the ABI on purpose: add the new symbols under a new version node in libtagmig.map,
# then regenerate the list (the command is in the list's first line) and say why in the commit.
set -u
lib=$1
list=$2
actual=$(nm -D --defined-only "$lib" | awk '$2 != "A" && $2 != "w" { print $3, $2 }' | sort)
expected=$(grep -v '^#' "$list" | sort)
n=0
fails=0
while read -r sym kind; do
	[ -n "$sym" ] || continue
	n=$((n + 1))
	got=$(awk -v s="$sym" '$1 == s { print $2 }' <<<"$actual")
	if [ -z "$got" ]; then
		fails=$((fails + 1))
		echo "not ok $n - $sym is no longer exported (an ABI break: the soname would have to change)"
	elif [ "$got" != "$kind" ]; then
		fails=$((fails + 1))
		echo "not ok $n - $sym changed kind from $kind to $got"
	else
		echo "ok $n - $sym ($kind)"
	fi
done <<<"$expected"
while read -r sym kind; do
	[ -n "$sym" ] || continue
	if ! grep -q "^$sym " <<<"$expected"; then
		n=$((n + 1))
		fails=$((fails + 1))
		echo "not ok $n - $sym ($kind) is exported but not in abi/libtagmig.symbols (an accidental export, or a new symbol to add on purpose)"
	fi
done <<<"$actual"
echo "1..$n"
[ "$fails" = 0 ]
