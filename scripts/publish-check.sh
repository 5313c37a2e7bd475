#!/usr/bin/env bash
# Checks that each workspace member publishes to JSR: `deno publish --dry-run` in graph, ops, runtime, plans,
# with JSR's fast check (no slow types: every exported symbol has an explicit type, so JSR can generate .d.ts
# files for Node users) and `deno doc --lint` on the member's exports (every public symbol and member
# documented, no private type in a public signature). Prints one line per member; exits 1 if any fails.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$root/node_modules/.bin:$PATH" NO_COLOR=1
failed=0
for m in graph ops runtime plans; do
  if out=$(cd "$root/$m" && deno publish --dry-run --allow-dirty 2>&1) &&
    out=$out$'\n'$(cd "$root/$m" && deno doc --lint mod.ts 2>&1 >/dev/null); then
    echo "publish-check: @longctx/$m ok ($(printf '%s\n' "$out" | grep -c '^ *file://') files, doc lint clean)"
  else
    echo "publish-check: @longctx/$m FAILED"
    printf '%s\n' "$out" | grep -v '^ *[0-9]*: <unknown>$\|^Warning Failed resolving types\|^    at file:' | tail -25 | sed 's/^/  /'
    failed=1
  fi
done
exit $failed
