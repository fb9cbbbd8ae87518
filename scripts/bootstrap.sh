#!/usr/bin/env bash
# Create/refresh the project virtualenv (.venv) with `pip install -e '.[dev]'`.
# Idempotent: skips the install when pyproject.toml is unchanged since the last
# successful install (hash stamp in .venv/.bootstrap-stamp).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.bootstrap-stamp"

want="$(sha256sum pyproject.toml | cut -d' ' -f1)"

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "bootstrap: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] \
    && "$VENV/bin/python" -c 'import notes_pipeline' >/dev/null 2>&1; then
    echo "bootstrap: .venv up to date (pyproject.toml unchanged)"
    exit 0
fi

echo "bootstrap: installing -e '.[dev]' into $VENV"
rm -f "$STAMP"
"$VENV/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
"$VENV/bin/python" -m pip install --quiet -e '.[dev]'
echo "$want" >"$STAMP"
echo "bootstrap: done"
