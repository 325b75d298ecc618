# Sourced by demo.sh and test.sh: make .venv if missing, (re)install when pyproject.toml changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.fightwatch-installed"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV" >&2
  python3 -m venv "$VENV"
fi
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  # pip's output (and its warnings about this machine's package locations) goes to a log, shown on failure.
  LOG="$VENV/install.log"
  echo "installing fightwatch into $VENV (torch 2.13.0 CPU build first, so nothing pulls a CUDA build; log: $LOG)" >&2
  if ! { "$VENV/bin/pip" install --disable-pip-version-check torch==2.13.0 \
         && "$VENV/bin/pip" install --disable-pip-version-check -e "$ROOT[dev]"; } >"$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    echo "install failed; the whole log: $LOG" >&2
    exit 1
  fi
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
