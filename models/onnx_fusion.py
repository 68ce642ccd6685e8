"""Fused ONNX export for BERT-family text encoders (ONNX Runtime's transformer fusions).

Contract
--------
* ``export_fused(model, out_path, metadata)`` writes a graph with the same inputs and outputs as
  ``models.export_onnx.export_onnx`` (``models.onnx_graph``) in which each encoder layer runs as ORT's fused ``Attention``,
  ``SkipLayerNormalization`` and ``BiasGelu`` kernels (and the embeddings as
  ``EmbedLayerNormalization``), and returns True. It returns False and leaves ``out_path`` absent
  when the model does not qualify (an image tower, or an encoder outside ``FUSABLE_MODEL_TYPES``),
  when the fusion does not cover every layer, or when the fused logits differ from torch's by more
  than ``tolerance`` on padded and unpadded batches; the caller then uses the plain export.
* Why a second exporter: ORT's fusion patterns match the TorchScript exporter's graph of eager
  attention; torch.export's graph (the plain path) fuses only GELU and LayerNorm, and sdpa attention
  fuses nothing. Measured on the shipped default (docs/benchmarks.md, "Fused ONNX graph").
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from models.contract import GuardInput
from models.onnx_graph import OUTPUT_NAMES, ExportWrapper, parity, set_metadata

# Encoders whose attention ORT's "bert" optimizer recognises (BERT, MiniLM, RoBERTa-style layouts).
FUSABLE_MODEL_TYPES = ("bert", "roberta", "xlm-roberta")
TS_OPSET = 17  # the TorchScript exporter's newest well-tested opset for these fusions

_PARITY_TEXTS = (
    ("How do I make a pipe bomb at home?", None),
    ("hi", "Sure. First you need to get the ingredients, then mix them slowly."),
    ("What's a good recipe for banana bread with walnuts and a little cinnamon on top?", None),
)


def fusable(model: Any) -> bool:
    """True when ``model``'s graph can be fused: text-only, with a BERT-family encoder."""
    if getattr(model, "image_encoder", None) is not None:
        return False
    return getattr(_base_encoder(model).config, "model_type", None) in FUSABLE_MODEL_TYPES


def export_fused(model: Any, out_path: str | Path, metadata: dict[str, str] | None = None,
                 tolerance: float = 1e-4) -> bool:
    """Export ``model`` (LoRA already merged) fused to ``out_path``; False if it cannot (see module doc)."""
    from onnxruntime.transformers import optimizer

    if not fusable(model):
        return False
    eager = _eager_copy(model)
    names = eager.featurizer.input_names
    cfg = _base_encoder(eager).config
    out = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "ts.onnx"
        _torchscript_export(eager, names, raw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the optimizer logs shape-inference fallbacks as warnings
            opt = optimizer.optimize_model(str(raw), model_type="bert", num_heads=int(cfg.num_attention_heads),
                                           hidden_size=int(cfg.hidden_size), opt_level=1)
        stats = opt.get_fused_operator_statistics()
        if stats.get("Attention", 0) != int(cfg.num_hidden_layers):
            return False  # a partial fusion is slower to reason about than the plain graph
        fused = Path(tmp) / "fused.onnx"
        opt.save_model_to_file(str(fused))
        if _max_diff(eager, fused) > tolerance:
            return False
        out.parent.mkdir(parents=True, exist_ok=True)
        fused.replace(out)
    if metadata:
        set_metadata(out, metadata)
    return True


def _base_encoder(model: Any) -> Any:
    enc = model.encoder
    return enc.get_base_model() if hasattr(enc, "get_base_model") else enc


def _eager_copy(model: Any) -> Any:
    """A copy whose encoder uses eager attention (the pattern ORT fuses); the featurizer is shared."""
    eager = copy.deepcopy(model, memo={id(model.featurizer): model.featurizer})
    _base_encoder(eager).set_attn_implementation("eager")
    return eager.eval()


def _torchscript_export(model: Any, names: list[str], out: Path) -> None:
    # Two items of different lengths: the trace must record the padding-mask branch.
    example = model.featurize([GuardInput("an example prompt to export"), GuardInput("hi", response="a reply")])
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export, whose graph ORT cannot fuse;
        # its tracer warnings concern shape checks that are constant for an encoder.
        warnings.simplefilter("ignore")
        torch.onnx.export(ExportWrapper(model, names).eval(), tuple(example[n] for n in names), str(out),
                          input_names=names, output_names=list(OUTPUT_NAMES), dynamic_axes=axes,
                          opset_version=TS_OPSET, dynamo=False)


def _max_diff(model: Any, path: Path) -> float:
    """Max abs logit difference torch vs ORT over a padded batch and each item alone."""
    items = [GuardInput(p, response=r) for p, r in _PARITY_TEXTS]
    return max(parity(model, path, batch) for batch in [items] + [[i] for i in items])
