"""scripts/ensure_installed.sh: reinstall exactly when gpumlp is missing, comes from another
checkout, or a needed module is missing; never when this checkout is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _installs(tmp_path: Path, checkout: Path, gpumlp_from: Path, modules: str, py: str | None = None) -> bool:
    """Run ensure_installed in ``checkout`` with gpumlp importable from ``gpumlp_from``; True if it ran pip."""
    fake = tmp_path / "bin" / "python"  # pip is recorded, not run; anything else goes to this Python
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "PIP $*"; exit 0; fi\n'
        f'PYTHONPATH="{gpumlp_from}" exec "{sys.executable}" "$@"\n'
    )
    fake.chmod(0o755)
    script = f'source scripts/ensure_installed.sh && ensure_installed sklearn "{modules}"'
    env = {**os.environ, "PY": py or str(fake)}
    proc = subprocess.run(["bash", "-c", script], cwd=checkout, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return "PIP -m pip install" in proc.stdout


def test_ensure_installed_reinstalls_only_when_needed(tmp_path: Path) -> None:
    checkout, other = tmp_path / "checkout", tmp_path / "other"
    for root in (checkout, other):
        shutil.copytree(ROOT / "gpumlp", root / "gpumlp", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "scripts", checkout / "scripts")
    assert not _installs(tmp_path, checkout, checkout, "numpy")
    assert _installs(tmp_path, checkout, checkout, "numpy no_such_module_for_gpumlp")
    assert _installs(tmp_path, checkout, other, "numpy")  # gpumlp installed from another checkout
    # PYTHON=.venv/bin/python: a path relative to the checkout still finds this checkout's install.
    (checkout / ".venv").symlink_to(tmp_path / "bin")
    assert not _installs(tmp_path, checkout, checkout, "numpy", py=".venv/python")
