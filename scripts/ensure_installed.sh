# Sourced by the scripts in this folder: ensure_installed EXTRAS "MODULE ..." installs this checkout
# with pip (editable, with EXTRAS) unless every MODULE imports and gpumlp is this checkout's.
ensure_installed() {
    local extras="$1" modules="$2" here py="$PY"
    here="$(pwd)/gpumlp"
    # A relative interpreter path (PYTHON=.venv/bin/python) must still work from /.
    if [[ "$py" == */* ]]; then py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")"; fi
    # Check from / so that the installed gpumlp is seen, not this folder's.
    if ! (cd / && "$py" - "$here" "$modules") <<'PYEOF' 2>/dev/null
import importlib, os, sys
for name in ["gpumlp"] + sys.argv[2].split():
    importlib.import_module(name)
import gpumlp
sys.exit(0 if os.path.realpath(os.path.dirname(gpumlp.__file__)) == os.path.realpath(sys.argv[1]) else 1)
PYEOF
    then
        echo "$(basename "$0"): installing gpumlp[$extras] from $(pwd)" >&2
        "$PY" -m pip install -q -e ".[$extras]"
    fi
}
