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
  echo "installing fightwatch into $VENV (torch 2.13.0 CPU build first, so nothing pulls a CUDA build)" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check torch==2.13.0
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -e "$ROOT[dev]"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
