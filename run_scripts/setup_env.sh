#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install fedml_prr with its
# pinned dependencies (constraints.txt).  Idempotent: a second run only checks a stamp.
# Usage: source run_scripts/setup_env.sh   (or bash it; it prints the python path)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FEDML_PRR_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV" >&2
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.fedml_prr-install-stamp"
WANT="$(cat "$ROOT/constraints.txt" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[setup] installing fedml_prr and pinned dependencies (first time: a few minutes)" >&2
  "$VENV/bin/python" -m pip install -q --upgrade "pip<27" >&2
  "$VENV/bin/python" -m pip install -q -c "$ROOT/constraints.txt" -e "$ROOT[mpi,grpc,test]" >&2
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
echo "$VENV/bin/python"
