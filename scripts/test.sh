#!/usr/bin/env bash
# Install gpumlp with its test extras if missing (or installed from another checkout), then run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
here="$(pwd)/gpumlp"
# Run the check from / so that it sees the installed gpumlp, not this folder's.
if ! (cd / && "$PY" - "$here") <<'PYEOF' 2>/dev/null
import os, sys
import gpumlp, pytest, hypothesis, array_api_strict, sklearn, matplotlib, tqdm, mpi4py
sys.exit(0 if os.path.realpath(os.path.dirname(gpumlp.__file__)) == os.path.realpath(sys.argv[1]) else 1)
PYEOF
then
    echo "scripts/test.sh: installing gpumlp[test,mpi] from $(pwd)" >&2
    "$PY" -m pip install -q -e ".[test,mpi]"
fi
exec "$PY" -m pytest "$@"
