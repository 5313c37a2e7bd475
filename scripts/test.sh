#!/usr/bin/env bash
# The whole test suite (`deno task test`, `npm test`, `.ci/run`). Steps, in order:
#   1. deno check .         type check of the whole workspace            counts as 1 test
#   2. deno lint            lint                                         counts as 1 test
#   3. deno fmt --check     formatting                                   counts as 1 test
#   4. deno test            every *_test.ts (Deno, --unstable-webgpu,    counts from Deno's summary line
#                           --no-check: step 1 already type-checks them, and one type error must not hide
#                           every other test's result)
#   5. bun test             every *_smoke_test.ts again under Bun        counts from Bun's summary lines
#   6. publish-check        `deno publish --dry-run` of the 4 members    counts as 1 test
# Every step runs even when an earlier one failed. A step that ends abnormally (non-zero exit without a
# failed test, no summary, or a time-out) counts as one failed test. The last line printed is exactly
# `N passed, M failed`; the exit status is 1 when M > 0.
#
# Environment: LONGCTX_* default as in runtime/src/paths.ts and are exported for the tests;
# LONGCTX_TEST_TIMEOUT (seconds per step, default 2400); extra arguments are passed to `deno test`.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
export PATH="$root/node_modules/.bin:$PATH"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
export NO_COLOR=1
export LONGCTX_CACHE=${LONGCTX_CACHE:-$root/.cache}
export LONGCTX_WGPU_LIB=${LONGCTX_WGPU_LIB:-$LONGCTX_CACHE/wgpu/libwgpu_native.so}
export LONGCTX_MODEL=${LONGCTX_MODEL:-$LONGCTX_CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf}
export LONGCTX_DOCS=${LONGCTX_DOCS:-$LONGCTX_CACHE/docs}
limit=${LONGCTX_TEST_TIMEOUT:-2400}

for tool in deno bun; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "$tool not found: run 'npm run setup' first"
    echo "0 passed, 1 failed"
    exit 1
  }
done

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
passed=0
failed=0
report=()

# run NAME CMD...: runs CMD under the time limit, output to the terminal and to $logs/NAME.log; sets rc.
run() {
  local name=$1
  shift
  printf '\n=== %s: %s\n' "$name" "$*"
  local t0=$SECONDS
  timeout --kill-after=30 "$limit" "$@" 2>&1 | tee "$logs/$name.log"
  rc=${PIPESTATUS[0]}
  secs=$((SECONDS - t0))
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then echo "=== $name: timed out after ${limit} s"; fi
}

# one NAME CMD...: a step that counts as one test.
one() {
  local name=$1
  run "$@"
  if [ "$rc" = 0 ]; then
    passed=$((passed + 1))
    report+=("$(printf '%-14s ok      (%ss)' "$name" "$secs")")
  else
    failed=$((failed + 1))
    report+=("$(printf '%-14s FAILED  (exit %s, %ss)' "$name" "$rc" "$secs")")
  fi
}

one check deno check .
one lint deno lint
one fmt deno fmt --check

# deno test: "ok | 12 passed (3 steps) | 0 failed | 1 ignored (5s)" or "FAILED | 11 passed | 1 failed (5s)".
run deno-test deno test -A --unstable-webgpu --no-check --v8-flags=--expose-gc "$@"
summary=$(sed 's/\x1b\[[0-9;]*m//g' "$logs/deno-test.log" | grep -E '^(ok|FAILED) \| [0-9]+ passed' | tail -1)
if [ -n "$summary" ]; then
  p=$(printf '%s' "$summary" | sed -E 's/^[A-Z a-z]+\| ([0-9]+) passed.*/\1/')
  f=$(printf '%s' "$summary" | sed -E 's/.*\| ([0-9]+) failed.*/\1/')
  i=$(printf '%s' "$summary" | grep -oE '[0-9]+ ignored' | cut -d' ' -f1)
  passed=$((passed + p))
  failed=$((failed + f))
  note="$p passed, $f failed, ${i:-0} ignored"
  if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
    failed=$((failed + 1))
    note="$note; exited $rc without a failed test: counted as 1 failure"
  fi
  report+=("$(printf '%-14s %-7s (%s; %ss)' deno-test "$([ "$rc" = 0 ] && echo ok || echo FAILED)" "$note" "$secs")")
elif [ "$rc" = 0 ] || grep -q 'No test modules found' "$logs/deno-test.log"; then
  report+=("$(printf '%-14s ok      (no test modules; %ss)' deno-test "$secs")")
else
  failed=$((failed + 1))
  report+=("$(printf '%-14s FAILED  (exit %s before a summary line: counted as 1 failure; %ss)' deno-test "$rc" "$secs")")
fi

# bun test on the smoke tests: Bun prints " 5 pass", " 0 fail", " 1 skip" lines, then "Ran N tests across ...".
mapfile -t smoke < <(find . \( -path ./node_modules -o -path ./.cache -o -path ./.git -o -path ./.device \) -prune -o \
  -name '*_smoke_test.ts' -print | sort)
if [ ${#smoke[@]} -eq 0 ]; then
  report+=("$(printf '%-14s ok      (no *_smoke_test.ts files)' bun-test)")
else
  run bun-test bun test --timeout 120000 "${smoke[@]}"
  clean=$(sed 's/\x1b\[[0-9;]*m//g' "$logs/bun-test.log")
  p=$(printf '%s\n' "$clean" | grep -E '^ *[0-9]+ pass$' | tail -1 | tr -dc '0-9')
  f=$(printf '%s\n' "$clean" | grep -E '^ *[0-9]+ fail$' | tail -1 | tr -dc '0-9')
  s=$(printf '%s\n' "$clean" | grep -E '^ *[0-9]+ skip$' | tail -1 | tr -dc '0-9')
  if [ -n "$p" ] && [ -n "$f" ]; then
    passed=$((passed + p))
    failed=$((failed + f))
    note="$p passed, $f failed, ${s:-0} skipped, ${#smoke[@]} files"
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
      failed=$((failed + 1))
      note="$note; exited $rc without a failed test: counted as 1 failure"
    fi
    report+=("$(printf '%-14s %-7s (%s; %ss)' bun-test "$([ "$rc" = 0 ] && echo ok || echo FAILED)" "$note" "$secs")")
  else
    failed=$((failed + 1))
    report+=("$(printf '%-14s FAILED  (exit %s before a summary: counted as 1 failure; %ss)' bun-test "$rc" "$secs")")
  fi
fi

one publish-check bash scripts/publish-check.sh

printf '\n=== summary\n'
printf '%s\n' "${report[@]}"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
