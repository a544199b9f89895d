#!/usr/bin/env bash
# CPU training benchmark: GEMM floor, gpumlp (plain, numba kernels, compiled epoch), JAX, PyTorch eager, scikit-learn; prints the table
# (BENCHMARKS.md holds a full run). Arguments go to benchmarks/bench_train.py, e.g.
#   scripts/bench.sh --quick            a smoke run of a few seconds
#   scripts/bench.sh --json out.json    also write every measurement as JSON
# Installs the `bench` extra (torch CPU, jax, numba, scikit-learn, threadpoolctl) when it is missing; a torch
# wheel pip can find locally (PIP_FIND_LINKS, e.g. a CPU-only build) is preferred to the
# CUDA-bundling default one. Rows whose library is still missing say so instead of failing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

missing="$("$PY" -c 'import importlib.util as u; print(" ".join(m for m in ("torch", "sklearn", "threadpoolctl", "numba", "jax") if u.find_spec(m) is None))')"
if [ -n "$missing" ]; then
    echo "scripts/bench.sh: installing the bench extra (missing: $missing)" >&2
    if [[ " $missing " == *" torch "* ]]; then
        "$PY" -m pip install -q --no-index torch 2>/dev/null || true  # a local (CPU) wheel, if any
    fi
    "$PY" -m pip install -q -e ".[bench]" \
        || echo "scripts/bench.sh: could not install the bench extra; its rows will say what is missing" >&2
fi

# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE pin an old OpenBLAS kernel on some machines and slow a
# current numpy; the benchmark runs without them (this process only; tests never touch them).
unset_list=""
for var in OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; do
    if [ -n "${!var+x}" ]; then
        echo "scripts/bench.sh: unset $var=${!var} for the benchmark process only" >&2
        unset_list="${unset_list}${var}=${!var};"
    fi
done
exec env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE GPUMLP_BENCH_UNSET="$unset_list" \
    "$PY" benchmarks/bench_train.py "$@"
