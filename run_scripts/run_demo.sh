#!/usr/bin/env bash
# Train PRR on the embedded synthetic dermoscopy federation and print per-client results.
# Extra arguments go to `fedml-prr run` (e.g. --set comm_round=20, --algorithm FedAvg, --resume).
# The demo replaces its own earlier results unless you pass --resume.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/run_scripts/setup_env.sh" >/dev/null
cd "$ROOT"
MODE="--overwrite"
for arg in "$@"; do [ "$arg" = "--resume" ] && MODE=""; done
exec "$ROOT/.venv/bin/fedml-prr" run --cf configs/prr_derm_synthetic.yaml $MODE "$@"
