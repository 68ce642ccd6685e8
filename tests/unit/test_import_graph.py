"""The import graph of ``models/``, ``service/`` and ``training/`` has no cycle, and imports point down only.

Every ``import`` statement of our own packages counts, function-level ones included: a cycle held together by a
late import is still a cycle (README, "Layout"). The rules checked here:

* no cycle among our modules;
* ``models/contract.py`` imports nothing of ours (it is the ground floor);
* ``service/`` reaches the classifier only through ``models.backends``; its engines may also build a VLM
  with ``models.vlm`` or a text-only LLM with ``models.llm`` (the model they serve, not the classifier);
* ``models/`` imports neither ``service/`` nor ``training/``; ``training/`` never imports ``service/``;
* nothing imports ``benchmarks/`` or ``tests/`` (folders of scripts and tests, not installed packages).
"""

from __future__ import annotations

import functools
import importlib.util
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.import_scan import ImportStmt, scan

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("models", "service", "training")
FORBIDDEN_ROOTS = ("benchmarks", "tests")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


@functools.cache
def _statements() -> dict[Path, tuple[ImportStmt, ...]]:
    """Every import statement of our modules, read once per session (in a fresh interpreter: tests/import_scan.py)."""
    return {path: tuple(stmts) for path, stmts in scan(list(_modules().values())).items()}


def _imported_names(path: Path, module: str) -> set[str]:
    """Every absolute module name ``path`` imports (relative imports resolved against ``module``)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for stmt in _statements()[path]:
        if not stmt.is_from:
            out.update(stmt.names)
            continue
        if stmt.level:
            base = module.split(".")
            base = base if is_pkg else base[:-1]
            base = base[: len(base) - (stmt.level - 1)]
            prefix = ".".join(base + ([stmt.module] if stmt.module else []))
        else:
            prefix = stmt.module or ""
        out.add(prefix)
        # ``from pkg import sub`` may name a submodule rather than an attribute.
        out.update(f"{prefix}.{name}" for name in stmt.names)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = set()
        for imported in _imported_names(path, name):
            # Map ``a.b.c`` (maybe an attribute) to the longest module of ours it names.
            parts = imported.split(".")
            while parts and ".".join(parts) not in mods:
                parts.pop()
            if parts and ".".join(parts) != name:
                deps.add(".".join(parts))
        graph[name] = deps
    return graph


def _raw_imports() -> dict[str, set[str]]:
    return {name: _imported_names(path, name) for name, path in _modules().items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = GREY
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if colour.get(dep, BLACK) == GREY:
                return stack[stack.index(dep):] + [dep]
            if colour.get(dep) == WHITE and (found := visit(dep)):
                return found
        stack.pop()
        colour[node] = BLACK
        return None

    for node in sorted(graph):
        if colour[node] == WHITE and (found := visit(node)):
            return found
    return None


def test_find_cycle_sees_a_cycle_and_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_among_our_modules():
    cycle = find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_contract_is_the_ground_floor():
    deps = _graph()["models.contract"]
    assert not deps, f"models/contract.py must import nothing of ours, imports {sorted(deps)}"


def test_layers_point_down_only():
    graph = _graph()
    bad = []
    for mod, deps in graph.items():
        for dep in deps:
            top, dtop = mod.split(".")[0], dep.split(".")[0]
            if top == "service" and dtop == "models" and dep not in ("models", "models.backends") and not (
                    # engines build the model they serve: a VLM (models.vlm) or a text-only LLM (models.llm)
                    mod.startswith("service.engines.") and dep in ("models.vlm", "models.llm")):
                bad.append(f"{mod} -> {dep} (service reaches the classifier only through models.backends)")
            if top == "models" and dtop in ("service", "training"):
                bad.append(f"{mod} -> {dep} (models is below service and training)")
            if top == "training" and dtop == "service":
                bad.append(f"{mod} -> {dep} (training never imports service)")
    assert not bad, "\n".join(sorted(bad))


def test_nothing_imports_benchmarks_or_tests():
    bad = sorted(f"{mod} -> {name}" for mod, names in _raw_imports().items() for name in names
                 if name.split(".")[0] in FORBIDDEN_ROOTS)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("seed", [0, 1])
def test_every_module_imports_first_in_a_fresh_interpreter_in_any_order(seed):
    """Each module imported first, then the rest in a shuffled order: no order-dependent import."""
    names = sorted(_modules())
    random.Random(seed).shuffle(names)
    code = ("import importlib, sys\n"
            f"names = {names!r}\n"
            "for n in names:\n"
            "    importlib.import_module(n)\n")
    # One interpreter per run keeps this under a minute; the first module differs between seeds.
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_graph_covers_the_three_packages():
    graph = _graph()
    assert {"models.backends", "service.app", "training.guard.distill", "training.align.dpo"} <= set(graph)
    assert importlib.util.find_spec("models.contract") is not None


@pytest.mark.slow
def test_every_module_imports_alone():
    """``python -c "import X"`` for every module, each in a fresh interpreter."""
    failed = []
    for name in sorted(_modules()):
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        if proc.returncode:
            failed.append(f"{name}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else '?'}")
    assert not failed, "\n".join(failed)
