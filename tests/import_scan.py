"""The import statements of Python source files, parsed in a fresh interpreter.

Why a subprocess: CPython 3.11 keeps the AST constructor's recursion depth in interpreter-wide state
(python/cpython#106905), so an ``ast.parse`` in the pytest process while another thread builds an AST (a server
or executor thread an earlier test left winding down) can raise a spurious ``SystemError: AST constructor
recursion depth mismatch``. It failed CI once on ``training/guard/crossval.py``, a file that parses fine. A fresh
interpreter has no other thread, so the result depends on the files only.

``scan(paths)`` is the contract: for each path, its import statements in source order.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImportStmt:
    """One ``import a.b`` (``module`` None, ``names`` the modules) or ``from .m import x`` statement."""

    lineno: int
    level: int
    module: str | None
    names: tuple[str, ...]
    is_from: bool
    top_level: bool


def _statements(path: Path) -> list[dict]:
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            is_from = isinstance(node, ast.ImportFrom)
            out.append({"lineno": node.lineno, "level": node.level if is_from else 0,
                        "module": node.module if is_from else None,
                        "names": [alias.name for alias in node.names], "is_from": is_from,
                        "top_level": id(node) in top})
    return sorted(out, key=lambda s: s["lineno"])


def scan(paths: list[Path]) -> dict[Path, list[ImportStmt]]:
    """Every import statement of each file in ``paths``; a file that does not parse fails with its error."""
    proc = subprocess.run([sys.executable, __file__], input=json.dumps([str(p) for p in paths]),
                          capture_output=True, text=True, timeout=300)
    if proc.returncode:
        raise RuntimeError(f"import scan failed: {proc.stderr[-3000:]}")
    raw = json.loads(proc.stdout)
    return {Path(p): [ImportStmt(**{**s, "names": tuple(s["names"])}) for s in stmts] for p, stmts in raw.items()}


if __name__ == "__main__":
    print(json.dumps({p: _statements(Path(p)) for p in json.loads(sys.stdin.read())}))
