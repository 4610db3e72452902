#!/usr/bin/env bash
# Run the test suite (fast default suite; pass -m slow or other pytest arguments to change it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/run_scripts/setup_env.sh" >/dev/null
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
