"""Where the guard caches what it builds on a machine: ``$SPAGUARD_CACHE``, default ``~/.cache/spaguard``.

Layout below the root (each builder documents its own keys and failure modes):

* ``onnx/<key>/model.onnx`` and ``model.int8.onnx``: the classifier's exported graphs (``models.export_onnx``);
* ``ocr/{det,rec}-<key>.onnx`` and ``.json`` cards: int8 copies of the OCR models (``models.ocr_int8``).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$SPAGUARD_CACHE`` or ``~/.cache/spaguard`` (read on every call, so tests may set the variable)."""
    return Path(os.environ.get("SPAGUARD_CACHE") or Path.home() / ".cache" / "spaguard")
