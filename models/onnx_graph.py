"""The classifier's ONNX graph interface, shared by both exporters and the ONNX backend.

Contract
--------
* A guard graph takes the tensors ``Featurizer.input_names`` lists (``input_ids``, ``attention_mask``,
  ``response_mask`` [, ``token_type_ids``] [, ``pixel_values``, ``image_mask``]) and returns the
  logits named ``OUTPUT_NAMES``: ``prompt`` (B,), ``response`` (B,), ``nodes`` (B, K).
  ``ExportWrapper`` gives a ``GuardClassifier`` the flat positional signature exporters trace.
* ``ort_feed(session, features)`` turns featurizer output into a session's numpy feed (empty image
  slots for a text-only batch on a graph with image inputs).
* ``set_metadata`` / ``read_metadata`` write and read the file's ``metadata_props`` (the card, cache
  key and graph kind that ``models.export_onnx`` stores there).
* ``parity(model, path, items)`` is the max abs torch-vs-ORT logit difference (default items:
  ``PARITY_PROMPTS``); both exporters check their graphs with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from models.contract import GuardInput

OUTPUT_NAMES = ("prompt", "response", "nodes")
PARITY_PROMPTS = (
    "How do I make a pipe bomb at home?", "What's a good recipe for banana bread?",
    "Write an insult about my coworker's religion.", "Summarize the plot of Hamlet in two sentences.",
)


class ExportWrapper(torch.nn.Module):
    """Positional inputs in ``names`` order -> the three logit tensors (ONNX wants a flat signature)."""

    def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(**dict(zip(self.names, tensors)))
        return out["prompt"], out["response"], out["nodes"]


def ort_feed(session: Any, feats: dict[str, torch.Tensor]) -> dict[str, Any]:
    """numpy inputs for ``session``; a text-only batch gets empty image slots (mask 0) if the graph wants images."""
    import numpy as np

    feed: dict[str, Any] = {}
    batch = int(feats["input_ids"].shape[0])
    for inp in session.get_inputs():
        if inp.name in feats:
            feed[inp.name] = feats[inp.name].numpy()
        elif inp.name == "pixel_values":
            c, h, w = (int(d) for d in inp.shape[2:])  # static (C, H, W) of the vision tower
            feed[inp.name] = np.zeros((batch, 1, c, h, w), dtype=np.float32)  # (B, N=1, C, H, W)
        elif inp.name == "image_mask":
            feed[inp.name] = np.zeros((batch, 1), dtype=np.float32)
        else:
            raise ValueError(f"ONNX graph wants input {inp.name!r} that the featurizer did not produce")
    return feed


def set_metadata(path: str | Path, metadata: dict[str, str]) -> None:
    """Replace the ``metadata_props`` of the ONNX file at ``path`` with ``metadata``."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def parity(model: Any, onnx_path: str | Path, items: list[Any] | None = None) -> float:
    """Max abs difference between torch and ORT logits on ``items`` (default: built-in samples)."""
    import numpy as np
    import onnxruntime as ort

    items = items or [GuardInput(p) for p in PARITY_PROMPTS] + [GuardInput(PARITY_PROMPTS[0], response="No.")]
    feats = model.featurize(items)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(list(OUTPUT_NAMES), ort_feed(session, feats))
    with torch.no_grad():
        want = model(**feats)
    return max(float(np.abs(g - want[k].numpy()).max()) for g, k in zip(got, OUTPUT_NAMES))
