#!/usr/bin/env bash
# GPU check: CuPy present (installs gpumlp[cuda13] only when it is missing), backend_info,
# the GPU tests (pytest -m gpu), then the GPU benchmark. Works offline when CuPy is already
# installed: gpumlp is used from this checkout, nothing else is installed. About 5 minutes.
#   scripts/gpu_check.sh                 # tests + full benchmark, results into BENCHMARKS.md
#   QUICK=1 scripts/gpu_check.sh         # tests + a quick benchmark (not written to BENCHMARKS.md)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0

if ! "$PY" -c "import cupy" 2>/dev/null; then
    echo "gpu_check: CuPy is missing; installing gpumlp[cuda13] (needs the network)" >&2
    if ! "$PY" -m pip install -q -e ".[cuda13]"; then
        echo "gpu_check: could not install CuPy: install cupy-cuda13x (or cupy-cuda12x) yourself" >&2
        exit 1
    fi
fi
if ! "$PY" -c "import pytest" 2>/dev/null; then
    "$PY" -m pip install -q pytest || echo "gpu_check: pytest unavailable; the GPU tests cannot run" >&2
fi

echo "== backend_info"
"$PY" - <<'PYEOF'
import json
import gpumlp
print(json.dumps(gpumlp.backend_info(), indent=2, default=str))
PYEOF
if ! "$PY" -c "import gpumlp, sys; sys.exit(0 if gpumlp.has_gpu() else 1)"; then
    echo "gpu_check: no usable CUDA GPU (see 'gpu' above)" >&2
    exit 1
fi

echo "== GPU tests: pytest -m gpu"
timeout 300 "$PY" -m pytest -m gpu -q -p no:cacheprovider -rs || status=1

echo "== GPU benchmark"
if [ -n "${QUICK:-}" ]; then
    timeout 180 "$PY" benchmarks/bench_gpu.py --quick || status=1
else
    timeout 240 "$PY" benchmarks/bench_gpu.py --markdown BENCHMARKS.md --json "${TMPDIR:-/tmp}/bench_gpu.json" || status=1
fi
exit $status
