# Sourced by demo.sh and test.sh: make .venv if missing, (re)install when pyproject.toml changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The Intel lane (test.sh --intel) sets these to its own venv on torch 2.8 with IPEX 2.8; the default is stock torch.
VENV="${FIGHTWATCH_VENV:-$ROOT/.venv}"
TORCH_PINS="${FIGHTWATCH_TORCH_PINS:-torch==2.13.0}"
# dev: what the tests use; openvino: the optional runtime, installed so the suite tests it (demo.sh shares the venv)
EXTRAS="${FIGHTWATCH_EXTRAS:-dev,openvino}"
STAMP="$VENV/.fightwatch-installed"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV" >&2
  python3 -m venv "$VENV"
fi
WANT="$({ cat "$ROOT/pyproject.toml"; echo "$TORCH_PINS $EXTRAS"; } | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  # pip's output (and its warnings about this machine's package locations) goes to a log, shown on failure.
  LOG="$VENV/install.log"
  echo "installing fightwatch into $VENV ($TORCH_PINS first, so nothing pulls another torch; log: $LOG)" >&2
  # shellcheck disable=SC2086  # the pins are words
  if ! { "$VENV/bin/pip" install --disable-pip-version-check $TORCH_PINS \
         && "$VENV/bin/pip" install --disable-pip-version-check -e "$ROOT[$EXTRAS]"; } >"$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    echo "install failed; the whole log: $LOG" >&2
    exit 1
  fi
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
