"""``models/`` modules import each other at module level: no late import that hides a dependency (issue 9).

Cycles and the direction of imports are checked over all packages in ``test_import_graph.py``. The one
exception here is the service's door, ``models.backends``, whose runtimes import torch, numpy and onnxruntime
(and the modules built on them) when a backend is built, so that importing the door stays cheap.
"""

from __future__ import annotations

import ast
from pathlib import Path

MODELS = Path(__file__).resolve().parents[2] / "models"
DOOR = "backends.py"


def _late_imports_of_ours(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(node) for node in tree.body}
    late = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else ["models"]
        else:
            continue
        if id(node) not in top and any(n.split(".")[0] == "models" for n in names):
            late.append(f"{path.name}:{node.lineno}")
    return late


def test_models_import_each_other_at_module_level() -> None:
    late = [hit for path in sorted(MODELS.glob("*.py")) if path.name != DOOR for hit in _late_imports_of_ours(path)]
    assert not late


def test_the_door_keeps_its_late_imports_to_the_runtimes() -> None:
    # Each late import in backends.py names a module that needs torch/numpy/onnxruntime/transformers (encoders:
    # the tokenizer segmenter_for reads its vocabulary from), never a lighter one.
    heavy = {"classifier", "ocr", "export_onnx", "featurize", "onnx_graph", "triton_backend", "encoders"}
    tree = ast.parse((MODELS / DOOR).read_text())
    top = {id(node) for node in tree.body}
    late = {node.module.split(".")[1] for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and id(node) not in top and (node.module or "").startswith("models.")}
    assert late <= heavy, late - heavy
