"""The package layout's rules, read from the source with ``ast``: the import graph of gpumlp/ has
no cycle; the backends never import the model, the training code, the CLI or the estimators; the
math never imports the training code or the CLI; the training code never imports the model
module; no module is over 400 lines.

Every import statement counts, at module level or inside a function, except those under
``if TYPE_CHECKING:`` (annotations only). Relative imports are resolved; ``from . import x``
is an import of the submodule x where there is one. Importing a submodule also runs its parent
package's ``__init__``; that implicit edge is not counted (it would make every package a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gpumlp"
MAX_LINES = 400

# Over the size limit but not split by the layout work (its branches touched only the import
# lines of gpumlp/sklearn.py): an expected failure of the size rule until it is split. Empty it then.
NOT_YET_SPLIT: set[str] = set()

BACKENDS = ("gpumlp.backends",)
MODEL_SIDE = ("gpumlp.network", "gpumlp.sklearn", "gpumlp.training", "gpumlp.cli")
MATH = ("gpumlp.network", "gpumlp.activations", "gpumlp.losses", "gpumlp.workspace", "gpumlp.trainable")
NOT_FROM_MATH = ("gpumlp.training", "gpumlp.cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement at or below ``node`` except in the body of ``if TYPE_CHECKING:``."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [node]
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        children: list[ast.AST] = list(node.orelse)
    else:
        children = list(ast.iter_child_nodes(node))
    return [found for child in children for found in _import_nodes(child)]


def _owner(name: str) -> str | None:
    """The gpumlp module that ``name`` (a module or a name inside one) refers to, or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> set[str]:
    """The gpumlp modules that ``module`` imports."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        targets |= {t for t in map(_owner, names) if t is not None and t != module}
    return targets


GRAPH = {module: _imports(module) for module in MODULES}


def _reachable(start: str) -> dict[str, list[str]]:
    """Every module ``start`` imports, directly or not, with one import chain to it."""
    chains = {start: [start]}
    todo = [start]
    while todo:
        here = todo.pop()
        for there in sorted(GRAPH[here]):
            if there not in chains:
                chains[there] = chains[here] + [there]
                todo.append(there)
    del chains[start]
    return chains


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _settle(violations: dict[str, str], allowed: set[str] | None = None) -> None:
    """Fail on violations by modules outside ``allowed``; xfail when only those remain."""
    allowed = allowed or set()
    mine = {m: why for m, why in violations.items() if m not in allowed}
    assert not mine, "\n".join(f"{m}: {why}" for m, why in sorted(mine.items()))
    if violations:
        pytest.xfail(reason="not yet split: " + "; ".join(f"{m}: {why}" for m, why in sorted(violations.items())))


def test_the_graph_sees_the_package_and_resolves_relative_imports():
    assert {"gpumlp", "gpumlp.network", "gpumlp.training", "gpumlp.training.step"} <= set(MODULES)
    assert "gpumlp.training.step" in GRAPH["gpumlp.training.fit"]
    assert "gpumlp.checkpoint" in GRAPH["gpumlp.training.state"]  # from ..checkpoint import ...
    assert "gpumlp.training.distributed" in GRAPH["gpumlp.distributed"]
    assert "gpumlp.distributed" in GRAPH["gpumlp"]  # from . import distributed: the submodule
    assert "gpumlp.network" not in GRAPH["gpumlp.gradcheck"]  # only under TYPE_CHECKING there


def test_no_import_cycle():
    cycles = {}
    for module in MODULES:
        chain = _reachable(module)
        back = [m for m in chain if module in GRAPH[m]]
        if back:
            cycles[module] = " -> ".join(chain[back[0]] + [module])
    _settle(cycles)


def test_backends_never_import_the_model_training_cli_or_estimators():
    violations = {}
    for module in (m for m in MODULES if _within(m, BACKENDS)):
        bad = {t: chain for t, chain in _reachable(module).items() if _within(t, MODEL_SIDE)}
        if bad:
            violations[module] = "; ".join(" -> ".join(chain) for chain in bad.values())
    _settle(violations)


def test_the_math_never_imports_training_or_the_cli():
    violations = {}
    for module in (m for m in MODULES if _within(m, MATH)):
        bad = {t: chain for t, chain in _reachable(module).items() if _within(t, NOT_FROM_MATH)}
        if bad:
            violations[module] = "; ".join(" -> ".join(chain) for chain in bad.values())
    _settle(violations)


def test_the_training_code_drives_models_without_importing_the_model_module():
    violations = {
        m: "imports gpumlp.network"
        for m in MODULES
        if _within(m, ("gpumlp.training",)) and "gpumlp.network" in GRAPH[m]
    }
    _settle(violations)


def test_no_module_over_400_lines():
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in MODULES.items()}
    _settle({m: f"{n} lines" for m, n in sizes.items() if n > MAX_LINES}, NOT_YET_SPLIT)
