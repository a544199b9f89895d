"""Run the shell sessions of README.md and docs/cli.md, and check (or rewrite) their printed output.

Progress lines (``train: epoch k/N ...``, printed on stderr when it is not a terminal) are left out.

Every ```console block is a session: lines starting with ``$ `` are commands, the lines below one
are what it printed. ``python scripts/docs_sessions.py`` runs each block's commands in order in a
fresh temporary folder (with ``examples/`` and ``scripts/`` linked in, and ``gpumlp`` running
this checkout) and reports every difference; ``--update`` writes the real output into the files
instead, so every number in the sessions comes from this command. tests/test_docs_sessions.py
runs the check.

Compared: the text exactly, numbers within 5% + 0.02 (BLAS libraries round differently), wall
times and rates not at all. Not run: commands with placeholders (``DATA``, ``[flags]``), ``pip``
and ``gpumlp bench``; commands marked ``# takes minutes`` only with ``--all``; ``mpiexec`` only where
it is installed. ``gpumlp info`` runs but its
machine-specific output is not compared.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ("README.md", "docs/cli.md")
BLOCK = re.compile(r"```console\n(.*?)```", re.S)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:e[+-]?\d+)?")
TIMING = re.compile(r"\d+(?:\.\d+)? s\b|[\d,]+(?:\.\d+)? ?samples/s|\d+\.\d+epoch/s|\[\d\d:\d\d[^\]]*\]")
PROGRESS = re.compile(r"^train: epoch \d+/\d+ ")  # progress lines on stderr (no terminal): not part of the record
WILD = ("gpumlp: interrupted", "resumed after epoch")  # where the Ctrl-C lands varies run to run


def sessions(text: str) -> list[tuple[int, int, list[tuple[str, list[str]]]]]:
    """(start, end, [(command, expected lines), ...]) of every console block in ``text``."""
    found = []
    for m in BLOCK.finditer(text):
        steps: list[tuple[str, list[str]]] = []
        for line in m.group(1).splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
        found.append((m.start(1), m.end(1), steps))
    return found


def runnable(command: str, slow: bool = False) -> bool:
    """Whether the check runs ``command``: no placeholders, installs, benchmarks, or slow ones unless ``slow``."""
    if "# takes minutes" in command and not slow:
        return False
    if re.search(r"\bDATA\b|\[(same )?flags\]", command) or command.startswith(("pip ", "gpumlp bench")):
        return False
    return not command.startswith("mpiexec") or shutil.which("mpiexec") is not None


def _environment(bin_dir: Path) -> dict[str, str]:
    (bin_dir / "gpumlp").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m gpumlp "$@"\n')
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for name in ("gpumlp", "python"):
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env.pop("GPUMLP_BACKEND", None)
    return env


def run_session(
    steps: list[tuple[str, list[str]]], timeout: float = 600, slow: bool = False
) -> list[tuple[str, list[str], list[str] | None]]:
    """Run the commands of one block in a fresh folder: (command, expected lines, actual lines or None)."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work, bin_dir = Path(tmp) / "work", Path(tmp) / "bin"
        work.mkdir()
        bin_dir.mkdir()
        for name in ("examples", "scripts"):
            (work / name).symlink_to(ROOT / name)
        env = _environment(bin_dir)
        status = 0
        for command, expected in steps:
            if not runnable(command, slow):
                results.append((command, expected, None))
                continue
            script = f"(exit {status}); {command}"  # so `echo $?` sees the previous command's status
            proc = subprocess.run(
                ["bash", "-c", script],
                cwd=work,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
            )
            status = proc.returncode
            out = [line for line in proc.stdout.splitlines() if not PROGRESS.match(line)]
            results.append((command, expected, out))
    return results


def _same_line(doc: str, real: str) -> bool:
    doc, real = TIMING.sub("T", doc), TIMING.sub("T", real)
    if NUMBER.sub("#", doc) != NUMBER.sub("#", real):
        return False
    if any(w in doc for w in WILD):
        return True
    for a, b in zip(NUMBER.findall(doc), NUMBER.findall(real)):
        x, y = float(a.replace(",", "")), float(b.replace(",", ""))
        if abs(x - y) > 0.05 * max(abs(x), abs(y)) + 0.02:
            return False
    return True


def differences(results: list[tuple[str, list[str], list[str] | None]]) -> list[str]:
    """Every line where the documented output differs from the real one."""
    problems = []
    for command, expected, actual in results:
        if actual is None or command.startswith("gpumlp info"):
            continue
        if len(expected) != len(actual):
            problems.append(
                f"$ {command}\n  documented {len(expected)} lines, got {len(actual)}:\n  " + "\n  ".join(actual)
            )
            continue
        for doc, real in zip(expected, actual):
            if not _same_line(doc, real):
                problems.append(f"$ {command}\n  documented: {doc}\n  got:        {real}")
    return problems


def main(argv: list[str]) -> int:
    """Check the sessions (exit 1 on a difference), or rewrite their output with ``--update``."""
    update = "--update" in argv
    names = [a for a in argv if not a.startswith("--")] or list(FILES)
    failed = 0
    for name in names:
        path = ROOT / name
        text = path.read_text(encoding="utf-8")
        pieces, last = [], 0
        for start, end, steps in sessions(text):
            results = run_session(steps, slow="--all" in argv)
            for problem in differences(results):
                failed += 1
                print(f"{name}: {problem}")
            body = "".join(
                f"$ {cmd}\n" + "".join(f"{line}\n" for line in (exp if act is None else act))
                for cmd, exp, act in results
            )
            pieces += [text[last:start], body]
            last = end
        if update:
            path.write_text("".join(pieces) + text[last:], encoding="utf-8")
    if update:
        print("rewrote the session output in " + ", ".join(names))
        return 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
