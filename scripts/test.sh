#!/usr/bin/env bash
# Install gpumlp with its test, MPI and fast (numba) extras if missing (or installed from another checkout), check the code
# with ruff (lint + format, pinned in the test extra), then run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
source scripts/ensure_installed.sh
ensure_installed "test,mpi,fast" "pytest hypothesis array_api_strict sklearn matplotlib tqdm mpi4py ruff numba"
"$PY" -m ruff check --quiet gpumlp tests benchmarks scripts examples
"$PY" -m ruff format --check --quiet gpumlp tests benchmarks scripts examples
exec "$PY" -m pytest "$@"
