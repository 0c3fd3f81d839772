#!/bin/sh
# Configures and builds one build directory: scripts/build.sh DIR [plain|sanitize|fuzz]
# (fuzz: clang with libFuzzer, ASan and UBSan; only the fuzz targets, tests/fuzz/README.md)
set -eu
dir=$1
kind=${2:-plain}
top=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -f "$dir/build.ninja" ]; then
	case $kind in
	plain) meson setup "$dir" "$top" -Dwerror=true --buildtype=debugoptimized -Dtest_hooks=true \
		>"$dir.setup.log" 2>&1 ;;
	sanitize) meson setup "$dir" "$top" -Dwerror=true --buildtype=debug -Dtest_hooks=true \
		-Db_sanitize=address,undefined -Db_lundef=false \
		-Dc_args=-fno-sanitize-recover=all >"$dir.setup.log" 2>&1 ;;
	fuzz) CC=clang meson setup "$dir" "$top" -Dwerror=true --buildtype=debug -Dfuzzing=true \
		-Dbench=false -Db_sanitize=address,undefined -Db_lundef=false \
		-Dc_args=-fno-sanitize-recover=all >"$dir.setup.log" 2>&1 ;;
	*) echo "build.sh: kind is plain, sanitize or fuzz" >&2; exit 2 ;;
	esac || { cat "$dir.setup.log" >&2; exit 1; }
fi
ninja -C "$dir" >"$dir.build.log" 2>&1 || { cat "$dir.build.log" >&2; exit 1; }
