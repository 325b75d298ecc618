#!/usr/bin/env bash
# The full fault loops of issue 17, one after another (CI runs their small versions in tests/), then their
# headlines: kills survived / tried, files fuzzed / crashes / hangs, stall detection, full-disk cases.
# Needs root (tmpfs mounts, mosquitto). About 15-20 minutes on 2 cores. Extra arguments go to none of them:
# run a script alone for its options (--help).
source "$(dirname "$0")/../venv.sh"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out="$(mktemp -d)"
for run in "kill_loop.py --kills 20" "kill_loop.py --kills 20 --ranks 2" "fuzz_videos.py --files 10000 --out $out/fuzz" \
           "streams.py" "full_disk.py"; do
  echo "== scripts/faults/$run" >&2
  # shellcheck disable=SC2086  # the script and its arguments are words
  python scripts/faults/$run | tee "$out/log" >&2
  echo "$run: $(tail -n 1 "$out/log")" >> "$out/headlines"
done
echo
cat "$out/headlines"
