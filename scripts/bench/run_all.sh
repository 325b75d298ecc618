#!/usr/bin/env bash
# Every benchmark in one run, the machine's lscpu beside the figures:
#   bash scripts/bench/run_all.sh [OUT_DIR]          (default runs/bench; PYTHON=... to use another interpreter)
# Each benchmark's stdout goes to OUT_DIR/<name>.txt (its stderr's end is shown when it fails); BENCH_TIMEOUT caps
# each (seconds).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-runs/bench}
py=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
lscpu | tee "$out/lscpu.txt" | grep -E "^(Model name|CPU\(s\)|Thread|Core|Socket|NUMA node|Flags)" | cut -c1-200
"$py" -c "import torch; print('torch', torch.__version__, 'threads', torch.get_num_threads())"
bench() {
  local name=$1 limit=$2
  shift 2
  echo "== $name: $py $*"
  local err status
  err=$(mktemp)
  timeout "${BENCH_TIMEOUT:-$limit}" "$py" "$@" 2>"$err" | tee "$out/$name.txt"
  status=${PIPESTATUS[0]}
  [ "$status" = 0 ] || tail -n 15 "$err"
  rm -f "$err"
  echo "== $name: exit $status"
}
bench trunk_cache 220 scripts/bench/bench_trunk_cache.py
bench ddp 110 scripts/bench/bench_ddp.py --ranks 2
bench infer 110 scripts/bench/bench_infer.py
bench train 100 scripts/bench/bench_train.py
