#!/usr/bin/env bash
# GPU check for a short lease on a machine without network: the most important facts first,
# each stage time-boxed, about 6 minutes at most. Installs nothing: the machine's python3 (with
# CuPy, NumPy, pytest; PyTorch optional) and this checkout on PYTHONPATH.
#   OUT=/some/dir scripts/gpu_check.sh     # everything goes under $OUT (default: a new temp dir)
# Stages: (0) is there a GPU (seconds; without one: exit 2 with a line saying so, also in
# $OUT/no_gpu.txt); (1) probe.json, <= 60 s: versions, device, NVRTC compile + load time,
# flush-to-zero, whether a step really is captured (graph nodes), CPU/GPU agreement in float32
# and float64, ms per step eager vs graph; (2) the gpu-marked tests, <= 150 s; (3) the GPU
# benchmark (quick), <= 120 s. A compact summary is printed last and written to summary.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0

echo "gpu_check: results in $OUT"
reason=$(timeout 30 "$PY" - 2>&1 <<'PYEOF'
import sys
try:
    import cupy
    n = cupy.cuda.runtime.getDeviceCount()
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}".splitlines()[0])
    sys.exit(1)
if n < 1:
    print("CuPy sees no CUDA device")
    sys.exit(1)
PYEOF
)
if [ $? -ne 0 ]; then
    line="gpu_check: no usable CUDA GPU on $(hostname): ${reason:-the probe timed out}; nothing was run"
    echo "$line" | tee "$OUT/no_gpu.txt" "$OUT/summary.md" >&2
    exit 2
fi

stage() {  # stage NAME SECONDS COMMAND...: run with a time box, output to $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name: exit $rc in $((SECONDS - t0)) s (limit $limit s)" | tee -a "$OUT/stages.txt"
    [ $rc -eq 0 ] || status=1
    return 0
}

stage probe 60 "$PY" scripts/gpu_probe.py "$OUT/probe.json"
stage gpu_tests 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider -rs tests --junitxml="$OUT/gpu_tests.xml"
stage bench 120 "$PY" benchmarks/bench_gpu.py --quick --json "$OUT/bench_gpu.json" --markdown "$OUT/bench_gpu.md"

"$PY" - "$OUT" <<'PYEOF' | tee "$OUT/summary.md"
import json, os, sys
out = sys.argv[1]
print("# gpu_check summary\n")
print(open(os.path.join(out, "stages.txt")).read())
try:
    p = json.load(open(os.path.join(out, "probe.json")))
except Exception as exc:
    p = {"error": f"no probe.json ({exc})"}
v = p.get("versions", {})
print(f"device: {v.get('device')} (cc {v.get('compute_capability')}), CUDA runtime {v.get('cuda_runtime')}, "
      f"CuPy {v.get('cupy')}, NumPy {v.get('numpy')}")
for key in ("compile", "capture", "agreement", "step_times", "error"):
    if key in p:
        value = {k: w for k, w in p[key].items() if k != "traceback"} if isinstance(p[key], dict) else p[key]
        print(f"{key}: {json.dumps(value, default=str)}")
log = os.path.join(out, "gpu_tests.log")
if os.path.exists(log):
    lines = [l for l in open(log).read().splitlines() if l.strip()]
    print("gpu tests: " + (lines[-1] if lines else "no output"))
try:
    rows = json.load(open(os.path.join(out, "bench_gpu.json")))["rows"]
    for r in rows:
        sps = r.get("samples_per_s")
        print(f"bench {r['config']:<6} {r['impl']:<13} " + (f"{sps:>12,.0f} samples/s" if sps else "skipped")
              + (f"  captured={r['captured']}" if "captured" in r else ""))
except Exception as exc:
    print(f"bench: no results ({exc})")
PYEOF
exit $status
