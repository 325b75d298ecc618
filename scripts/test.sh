#!/usr/bin/env bash
# The whole test suite (what CI runs). Extra arguments go to pytest, e.g. bash scripts/test.sh -k config.
# --fast: only the tests not marked slow (those start processes, clusters, servers or the demo): the inner loop.
# --intel: the Intel lane: its own venv .venv-intel on torch 2.8 with Intel Extension for PyTorch 2.8 (both
#   discontinued after 2.8; a ~7 GB install from PyPI), running the precision/kernels, training (with and without
#   the trunk cache) and scoring tests with accel.kernels ipex. --install-only: make the venv, run nothing.
args=()
install_only=false
for arg in "$@"; do
  case "$arg" in
    --fast) args+=(-m "not slow") ;;
    --intel) export FIGHTWATCH_VENV="$(cd "$(dirname "$0")/.." && pwd)/.venv-intel" \
                    FIGHTWATCH_TORCH_PINS="torch==2.8.0 intel-extension-for-pytorch==2.8.0" FIGHTWATCH_EXTRAS="dev,intel"
             args+=(tests/test_accel.py tests/test_train_step.py tests/test_intel_lane.py) ;;
    --install-only) install_only=true ;;
    *) args+=("$arg") ;;
  esac
done
source "$(dirname "$0")/venv.sh"
if $install_only; then exit 0; fi
exec python -m pytest "${args[@]}"
