#!/usr/bin/env bash
# Quick start: install gpumlp (with scikit-learn for the digits data) if missing, then train on digits.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
here="$(pwd)/gpumlp"
# Run the check from / so that it sees the installed gpumlp, not this folder's.
if ! (cd / && "$PY" - "$here") <<'PYEOF' 2>/dev/null
import os, sys
import gpumlp, sklearn, tqdm
sys.exit(0 if os.path.realpath(os.path.dirname(gpumlp.__file__)) == os.path.realpath(sys.argv[1]) else 1)
PYEOF
then
    echo "scripts/run.sh: installing gpumlp[sklearn] from $(pwd)" >&2
    "$PY" -m pip install -q -e ".[sklearn]"
fi
exec "$PY" examples/quickstart.py "$@"
