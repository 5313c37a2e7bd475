#!/usr/bin/env bash
# The GPU suite, run on the H200 machine from the repo root:
#
#   LONGCTX_COMMIT=$(git rev-parse --short HEAD) bash .device/enter.sh bash benchmarks/device/suite.sh
#
# Runs every device benchmark that exists (copy bandwidth, matmul, SALE vs dense vs PyTorch SDPA, HiP, model),
# each guarded (a failure or timeout is logged, the others still run), TWICE (LONGCTX_BENCH_RUN=1 and 2, so
# RESULTS.md can report the spread between runs), within a total budget (SUITE_BUDGET_S, default 480 s = 8 min;
# each step also has its own cap). Rows go to benchmarks/results/<suite>.json through benchmarks/lib/results.ts;
# then RESULTS.md and charts/latency.svg are rendered.
#
# Written under $OUT (default /tmp/longctx-suite): logs/run<r>_<step>.log (raw stdout+stderr of each step),
#   logs/summary.tsv (run, step, exit code, seconds), logs/env.txt (GPU, driver, runtime versions),
#   new-rows/<suite>.json (only the rows this invocation measured), and benchmarks/{RESULTS.md,
#   charts/latency.svg, results/*.json} (the full files: copy them over the checkout's benchmarks/).
# Env: SUITE_BUDGET_S, SUITE_RUNS (default 2), SUITE_STEPS (space-separated step names to run; default all),
#   LONGCTX_COMMIT (the device checkout has no .git), DENO / PYTHON (binaries; default deno / python3).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
OUT=${OUT:-/tmp/longctx-suite}
mkdir -p "$OUT/logs" "$OUT/new-rows" "$OUT/benchmarks/results" "$OUT/benchmarks/charts"
DENO=${DENO:-deno}
PYTHON=${PYTHON:-python3}
budget=${SUITE_BUDGET_S:-480}
runs=${SUITE_RUNS:-2}
t0=$(date +%s)
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
# commit: LONGCTX_COMMIT, else benchmarks/lib/results.ts asks git (adding -dirty), else "unknown"
git rev-parse HEAD >/dev/null 2>&1 || export LONGCTX_COMMIT=${LONGCTX_COMMIT:-unknown}
export LONGCTX_RESULTS_MIRROR="$OUT/new-rows"

# JS dependencies: .device/go.sh's archive, when the tree came without node_modules.
if [ ! -d node_modules/effect ] && [ -f .device/nm.tar.xz ]; then tar -C "$root" -xJf .device/nm.tar.xz; fi

{
  echo "date: $(date -u +%FT%TZ)"; echo "commit: ${LONGCTX_COMMIT:-$(git rev-parse --short HEAD)}"; echo "budget_s: $budget runs: $runs"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1 || true
  "$DENO" --version 2>&1 | head -1 || true
  "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())' 2>&1 || true
} > "$OUT/logs/env.txt"
cat "$OUT/logs/env.txt"

# Steps: name | file that must exist | command | cap in seconds per run (caps are scaled to fit the budget).
# Each step gets LONGCTX_BENCH_BUDGET_S (its time limit minus a margin for start-up and writing) in its
# environment, and "@BUDGET@" in its command is replaced by that number; a step past its limit is killed, and a
# killed script writes only the rows it appended before, so scripts should watch the budget.
# "@ROWS@" in a command is replaced by a temporary file: a script that writes its rows there itself (a JSON
# array) has them appended afterwards to benchmarks/results/<step>.json through the shared writer, which fills
# the provenance fields it left out (driver, run, …) and keeps earlier runs' rows.
# The SDPA peer runs inside sale_bench.ts when that script drives it (it greps for "sdpa_peer"); otherwise it
# runs here on its own, its stdout (a JSON array of rows) piped through the shared writer.
steps=(
  "backend|benchmarks/device/backend_bench.ts|$DENO run -A benchmarks/device/backend_bench.ts|25"
  "matmul|benchmarks/device/matmul_bench.ts|$DENO run -A benchmarks/device/matmul_bench.ts --budget-s @BUDGET@|40"
  "sale|benchmarks/device/sale_bench.ts|$DENO run -A benchmarks/device/sale_bench.ts --budget-s=@BUDGET@ --out=@ROWS@|110"
  "hip|benchmarks/device/hip_bench.ts|$DENO run -A benchmarks/device/hip_bench.ts --no-peer --out=@ROWS@|60"
  "sdpa|benchmarks/device/sdpa_peer.py|$PYTHON benchmarks/device/sdpa_peer.py|35"
  "model|benchmarks/model_bench.ts|$DENO run -A benchmarks/model_bench.ts --context 2048 --decode 16|25"
)
render_reserve=25
per_run=$(( (budget - render_reserve) / runs ))
caps_total=0
for s in "${steps[@]}"; do
  IFS='|' read -r name file cmd cap <<< "$s"
  if [ -f "$file" ] && { [ -z "${SUITE_STEPS:-}" ] || [[ " $SUITE_STEPS " == *" $name "* ]]; }; then caps_total=$(( caps_total + cap )); fi
done
[ "$caps_total" -gt 0 ] || caps_total=1
printf 'run\tstep\trc\tseconds\n' > "$OUT/logs/summary.tsv"

run_step() { # run name file command cap
  local run=$1 name=$2 file=$3 cmd=$4 cap=$5 log="$OUT/logs/run$1_$2.log"
  if [ -n "${SUITE_STEPS:-}" ] && [[ " $SUITE_STEPS " != *" $name "* ]]; then return; fi
  if [ ! -f "$file" ]; then
    echo "[suite] run $run: $name skipped ($file does not exist)"; printf '%s\t%s\tmissing\t0\n' "$run" "$name" >> "$OUT/logs/summary.tsv"; return
  fi
  if [ "$name" = sdpa ] && [ -f benchmarks/device/sale_bench.ts ] && grep -q sdpa_peer benchmarks/device/sale_bench.ts; then
    echo "[suite] run $run: sdpa runs inside sale_bench.ts"; return
  fi
  # when sale_bench.ts drives the SDPA peer itself, it gets the peer's cap as well
  if [ "$name" = sale ] && grep -q sdpa_peer "$file" && [ -f benchmarks/device/sdpa_peer.py ]; then cap=$(( cap + 35 )); fi
  local left=$(( budget - render_reserve - ($(date +%s) - t0) ))
  # each run gets an equal share of the budget; a step's cap is scaled down when the caps of the steps that
  # exist add up to more than that share, and never exceeds what is left
  local t=$(( cap * per_run / (caps_total > per_run ? caps_total : per_run) ))
  [ "$t" -gt "$left" ] && t=$left
  if [ "$t" -lt 10 ]; then
    echo "[suite] run $run: $name skipped (its share of the budget is ${t}s; ${left}s left in all)"; printf '%s\t%s\tbudget\t0\n' "$run" "$name" >> "$OUT/logs/summary.tsv"; return
  fi
  local inner=$(( t > 20 ? t - 8 : t * 2 / 3 ))
  cmd=${cmd//@BUDGET@/$inner}
  local rows_file="$OUT/logs/run${run}_${name}.rows.json"
  local shown=${cmd//@ROWS@/$rows_file}
  local wants_rows=0; [[ "$cmd" == *@ROWS@* ]] && wants_rows=1
  cmd=$shown
  export LONGCTX_BENCH_BUDGET_S=$inner
  echo "[suite] run $run: $name (limit ${t}s, script budget ${inner}s): $cmd"
  local s=$(date +%s) rc
  if [ "$name" = sdpa ]; then
    # If its stdout is a JSON array of rows, they go through the shared writer (filling provenance);
    # otherwise the script wrote its rows itself and stdout is part of the log.
    local js="$OUT/logs/run${run}_sdpa.stdout"
    LONGCTX_BENCH_RUN=$run LONGCTX_BENCH_COMMAND="$cmd" timeout --kill-after=5 "$t" bash -c "$cmd" 2> "$log" > "$js"; rc=$?
    if [ $rc -eq 0 ] && "$PYTHON" -c 'import json,sys; sys.exit(0 if isinstance(json.load(open(sys.argv[1])), list) else 1)' "$js" 2>/dev/null; then
      LONGCTX_BENCH_RUN=$run LONGCTX_BENCH_COMMAND="$cmd" "$DENO" run -A benchmarks/lib/results.ts sale < "$js" >> "$log" 2>&1; rc=$?
    else
      cat "$js" >> "$log"
    fi
  else
    LONGCTX_BENCH_RUN=$run LONGCTX_BENCH_COMMAND="$cmd" timeout --kill-after=5 "$t" bash -c "$cmd" > "$log" 2>&1; rc=$?
    if [ $wants_rows = 1 ] && [ -s "$rows_file" ]; then
      LONGCTX_BENCH_RUN=$run LONGCTX_BENCH_COMMAND="$cmd" "$DENO" run -A benchmarks/lib/results.ts "$name" < "$rows_file" >> "$log" 2>&1 \
        || { echo "[suite] run $run: $name: its rows did not pass the schema (see log)"; [ "$rc" = 0 ] && rc=98; }
    fi
  fi
  local d=$(( $(date +%s) - s ))
  printf '%s\t%s\t%s\t%s\n' "$run" "$name" "$rc" "$d" >> "$OUT/logs/summary.tsv"
  echo "[suite] run $run: $name exit $rc after ${d}s (log: logs/run${run}_${name}.log)"; tail -n 5 "$log" | sed 's/^/    /'
}

for run in $(seq 1 "$runs"); do
  for s in "${steps[@]}"; do
    IFS='|' read -r name file cmd cap <<< "$s"
    run_step "$run" "$name" "$file" "$cmd" "$cap"
  done
done

echo "[suite] rendering RESULTS.md and the chart"
"$DENO" run -A benchmarks/render.ts > "$OUT/logs/render.log" 2>&1 || { echo "[suite] render failed:"; cat "$OUT/logs/render.log"; }
cp "${LONGCTX_RESULTS_DIR:-benchmarks/results}"/*.json "$OUT/benchmarks/results/" 2>/dev/null || true
cp benchmarks/RESULTS.md "$OUT/benchmarks/" 2>/dev/null || true
cp benchmarks/charts/latency.svg "$OUT/benchmarks/charts/" 2>/dev/null || true
echo "[suite] done in $(( $(date +%s) - t0 ))s"; column -t "$OUT/logs/summary.tsv" 2>/dev/null || cat "$OUT/logs/summary.tsv"
