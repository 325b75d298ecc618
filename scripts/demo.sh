#!/usr/bin/env bash
# The whole product end to end on generated videos. Extra arguments go to `fightwatch demo`,
# e.g. bash scripts/demo.sh --set train.epochs=4
source "$(dirname "$0")/venv.sh"
exec fightwatch demo "$@"
