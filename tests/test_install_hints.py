"""Install hints name what the package index has (or the checkout's extra), never `pip install gpumlp[...]`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from gpumlp.install_hint import checkout_root, install_hint

ROOT = Path(__file__).resolve().parents[1]


def test_no_hint_asks_the_index_for_a_gpumlp_extra():
    """gpumlp is not on the package index: `pip install gpumlp[cuda13]` cannot work from there."""
    bad = []
    for path in sorted((ROOT / "gpumlp").rglob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"pip install '?\"?gpumlp\[", line):
                bad.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bad, "\n".join(bad)


def test_hint_names_the_package_and_in_a_checkout_its_editable_extra():
    hint = install_hint("cupy-cuda13x", "cuda13")
    assert hint.startswith("pip install cupy-cuda13x")
    assert checkout_root() == str(ROOT)  # the tests run from the checkout
    assert f'pip install -e "{ROOT}[cuda13]"' in hint


def test_import_gpumlp_sklearn_without_scikit_learn_says_how_to_install_it():
    code = "import sys; sys.modules['sklearn'] = None\nimport gpumlp.sklearn"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: gpumlp.sklearn needs scikit-learn, which is not installed: pip install "), last
    assert "ModuleNotFoundError" not in proc.stderr.splitlines()[-1]
