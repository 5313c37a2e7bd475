#!/usr/bin/env bash
# Checks that each workspace member publishes to JSR: `deno publish --dry-run` in graph, ops, runtime, plans.
# --allow-slow-types: Effect's `Data.TaggedError(...)` base classes are "slow types" for JSR's fast check;
# JSR accepts such packages (no generated .d.ts for Node users). Prints one line per member; exits 1 if any fails.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$root/node_modules/.bin:$PATH" NO_COLOR=1
failed=0
for m in graph ops runtime plans; do
  if out=$(cd "$root/$m" && deno publish --dry-run --allow-dirty --allow-slow-types 2>&1); then
    echo "publish-check: @longctx/$m ok ($(printf '%s\n' "$out" | grep -c '^ *file://') files)"
  else
    echo "publish-check: @longctx/$m FAILED"
    printf '%s\n' "$out" | grep -v '^ *[0-9]*: <unknown>$' | tail -25 | sed 's/^/  /'
    failed=1
  fi
done
exit $failed
