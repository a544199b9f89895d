"""The shell sessions of README.md and docs/cli.md run, and print what the documents say they print.

scripts/docs_sessions.py runs each ```console block's commands in a fresh folder and compares the
output (text exactly, numbers within 5% + 0.02, times not at all); `--update` regenerates them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("docs_sessions", ROOT / "scripts" / "docs_sessions.py")
docs_sessions = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs_sessions)

pytest.importorskip("sklearn")  # the sessions write scikit-learn's wine data
pytest.importorskip("matplotlib")

BLOCKS = [
    pytest.param(name, i, steps, id=f"{name}-{i}")
    for name in docs_sessions.FILES
    for i, (_, _, steps) in enumerate(docs_sessions.sessions((ROOT / name).read_text(encoding="utf-8")))
    if any(docs_sessions.runnable(command) for command, _ in steps)  # not the blocks of placeholders only
]


@pytest.mark.parametrize(("name", "index", "steps"), BLOCKS)
def test_documented_session_runs_as_documented(name, index, steps):
    results = docs_sessions.run_session(steps)
    problems = docs_sessions.differences(results)
    assert not problems, "\n".join(problems) + "\n(python scripts/docs_sessions.py --update rewrites the output)"


def test_the_comparison_ignores_times_but_not_numbers():
    same = docs_sessions._same_line
    assert same("trained: 215 epochs in 0.14 s, 113 samples", "trained: 215 epochs in 9.99 s, 113 samples")
    assert not same("accuracy  0.8947", "accuracy  0.5000")
    assert not same("task: classification", "task: regression")
