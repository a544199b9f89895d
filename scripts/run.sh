#!/usr/bin/env bash
# Quick start: install gpumlp (with scikit-learn for the digits data) if missing, then train on digits.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
source scripts/ensure_installed.sh
ensure_installed "sklearn" "sklearn tqdm"
exec "$PY" examples/quickstart.py "$@"
