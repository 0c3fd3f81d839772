#!/usr/bin/env python3
"""Counts meson test results of the given build directories and prints the last line
"N passed, N failed" (skips are listed with their reason but counted in neither)."""
import json
import os
import sys

passed = failed = 0
skipped = []
for d in sys.argv[1:]:
    log = os.path.join(d, "meson-logs", "testlog.json")
    kind = os.path.basename(d)
    if not os.path.exists(log):
        print(f"{kind}: no test log (build failed?)")
        failed += 1
        continue
    with open(log) as f:
        for line in f:
            t = json.loads(line)
            res = t.get("result", "")
            if res in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif res == "SKIP":
                out = (t.get("stdout") or "").strip().splitlines()
                skipped.append(f"{kind}: {t['name']}: {out[-1] if out else 'skipped'}")
            else:
                failed += 1
                print(f"FAILED {kind}: {t['name']} ({res})")
for s in skipped:
    print(f"SKIPPED {s}")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
