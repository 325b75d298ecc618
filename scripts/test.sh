#!/usr/bin/env bash
# The whole test suite (what CI runs). Extra arguments go to pytest, e.g. bash scripts/test.sh -k config.
# --fast: only the tests not marked slow (those start processes, clusters, servers or the demo): the inner loop.
source "$(dirname "$0")/venv.sh"
args=()
for arg in "$@"; do
  if [ "$arg" = "--fast" ]; then args+=(-m "not slow"); else args+=("$arg"); fi
done
exec python -m pytest "${args[@]}"
