#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# `tagmig demo --live --dirty-rate 0` is an idle guest: no guest writes, so one round sends
# every page once and converges (the test guest's writers read a rate of 0 as "no limit", and the
# demo once started them anyway: an "idle" guest dirtied as fast as it could). --max-downtime
# 2s: what is left after round 1 is the demo's device state, whose expected time is taken at
# round 1's bandwidth, and on a machine loaded by other work that round can run at 16 MB/s
# (2 MiB of state: 132 ms, over the default 50 ms, and no empty round measures anew).
#
# usage: demo-live-idle.sh TAGMIG PYTHON3|none      Exit 0 pass, 1 fail, 77 skip.
set -u
TAGMIG=$1
PYTHON3=$2
[ "$PYTHON3" != none ] || { echo "skip: no python3 to read the JSON"; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/tagmig-idle.XXXXXX")
trap 'rm -rf "$T"' EXIT
timeout 120 "$TAGMIG" demo --live --size 16M --dirty-rate 0 --max-downtime 2s --channels 2 --json \
	>"$T/out" 2>"$T/err"
rc=$?
[ "$rc" = 0 ] || { echo "FAIL: demo --live --dirty-rate 0 exited $rc: $(cat "$T/err")" >&2; exit 1; }
"$PYTHON3" - "$T/out" <<'PY' || exit 1
import json, sys
d = json.load(open(sys.argv[1]))
pages = 16 * 1024 * 1024 // 4096
problems = []
if d["dirty_rate"] != 0 or d["verified"] is not True or d["converged"] is not True:
    problems.append("not a verified, converged run at rate 0")
if d["guest_writes"] != 0:
    problems.append(f"an idle guest wrote {d['guest_writes']} pages")
if d["rounds"] != 1 or d["final_pages"] != 0:
    problems.append(f"{d['rounds']} rounds, {d['final_pages']} pages in the final one")
if d["pages_sent"] != pages:
    problems.append(f"{d['pages_sent']} pages sent, not each of the {pages} once")
if problems:
    print("FAIL: " + "; ".join(problems) + ": " + json.dumps(d)[:2000], file=sys.stderr)
    sys.exit(1)
print(f"ok: 1 round, {d['pages_sent']} pages, downtime {d['downtime_ms']} ms")
PY
