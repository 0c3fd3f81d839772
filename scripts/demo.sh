#!/bin/sh
# The main job: install, build, and run `tagmig demo` (arguments are passed on to it).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/setup.sh" demo
"$top/scripts/build.sh" "$top/build" plain
exec "$top/build/tools/tagmig" demo "$@"
