#!/usr/bin/env bash
# The whole test suite. Extra arguments go to pytest, e.g. bash scripts/test.sh -k config
source "$(dirname "$0")/venv.sh"
exec python -m pytest "$@"
