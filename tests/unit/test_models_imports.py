"""``models/`` modules import each other at module level: no late import that hides a dependency (issue 9).

Cycles and the direction of imports are checked over all packages in ``test_import_graph.py``. The one
exception here is the service's door, ``models.backends``, whose runtimes import torch, numpy and onnxruntime
(and the modules built on them) when a backend is built, so that importing the door stays cheap.
"""

from __future__ import annotations

from pathlib import Path

from tests.import_scan import ImportStmt, scan

MODELS = Path(__file__).resolve().parents[2] / "models"
DOOR = "backends.py"


def _late_imports_of_ours(stmts: list[ImportStmt], name: str) -> list[str]:
    late = []
    for stmt in stmts:
        names = ([stmt.module or ""] if stmt.level == 0 else ["models"]) if stmt.is_from else list(stmt.names)
        if not stmt.top_level and any(n.split(".")[0] == "models" for n in names):
            late.append(f"{name}:{stmt.lineno}")
    return late


def test_models_import_each_other_at_module_level() -> None:
    found = scan([p for p in sorted(MODELS.glob("*.py")) if p.name != DOOR])
    late = [hit for path, stmts in found.items() for hit in _late_imports_of_ours(stmts, path.name)]
    assert not late


def test_the_door_keeps_its_late_imports_to_the_runtimes() -> None:
    # Each late import in backends.py names a module that needs torch/numpy/onnxruntime/transformers (encoders:
    # the tokenizer segmenter_for reads its vocabulary from), never a lighter one.
    heavy = {"classifier", "ocr", "export_onnx", "featurize", "onnx_graph", "triton_backend", "encoders"}
    (stmts,) = scan([MODELS / DOOR]).values()
    late = {stmt.module.split(".")[1] for stmt in stmts
            if stmt.is_from and not stmt.top_level and (stmt.module or "").startswith("models.")}
    assert late <= heavy, late - heavy
