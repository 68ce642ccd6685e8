"""ONNX export of the guard classifier (encoder + heads), int8 quantization, and the export cache.

    spaguard export-onnx --model models/default --out guard.onnx [--int8] [--check]

Contract
--------
* The graph's inputs and outputs are ``models.onnx_graph``'s (the tensors ``Featurizer.input_names``
  lists -> ``prompt`` (B,), ``response`` (B,) and ``nodes`` (B, K) logits), with dynamic batch and
  sequence axes. Tokenization and OCR stay outside the graph (``models.featurize.Featurizer``). LoRA
  adapters are merged into the encoder before export.
* ``export_best`` (used by the cache and the CLI) writes ORT's fused graph for BERT-family text
  encoders (``models.onnx_fusion``, parity-checked) and the plain torch.export graph otherwise.
* The ONNX file carries the artifact's card, its cache key and the graph kind in ``metadata_props``
  (``spaguard.card``, ``spaguard.key``, ``spaguard.graph``), so a stale or foreign file is detected.
* ``ensure_onnx(artifact, int8)`` exports on first use into ``models.cache.cache_root()/onnx/<key>/``
  (``$SPAGUARD_CACHE``, default ``~/.cache/spaguard``) where ``key`` hashes the artifact's files: the ONNX file
  (~90 MB for MiniLM) is too large for git. Concurrent exporters are serialized by a file lock and
  the file appears atomically.
* int8: ORT dynamic quantization (per-channel int8 weights of the encoder's MatMuls and fused
  Attention projections, activations quantized at run time; the heads stay fp32).
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import hashlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from models.artifact import read_card, resolve_artifact
from models.cache import cache_root
from models.classifier import GuardClassifier
from models.contract import GuardInput
from models.onnx_fusion import export_fused
from models.onnx_graph import OUTPUT_NAMES, ExportWrapper, parity, read_metadata, set_metadata

EXPORT_VERSION = 3  # 3: fused graphs for BERT-family encoders (models.onnx_fusion)
OPSET = 18


def export_onnx(model: Any, out_path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Export a ``GuardClassifier`` (fp32) to a single ONNX file at ``out_path``."""
    model = _merged_copy(model).eval()
    names = model.featurizer.input_names
    # Example batch: 2 items, one with a response, so no axis is specialized to 1.
    example = model.featurize([GuardInput("an example prompt to export"), GuardInput("hi", response="a reply")])
    if "pixel_values" in names:
        size = _image_size(model)
        example["pixel_values"] = torch.zeros(2, 2, 3, size, size)  # (B, N, C, H, W)
        example["image_mask"] = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    batch, seq, n_img = (torch.export.Dim(n, min=1, max=m) for n, m in (("batch", 4096), ("seq", 4096), ("n_img", 64)))
    dims = {"pixel_values": {0: batch, 1: n_img}, "image_mask": {0: batch, 1: n_img}}
    shapes = tuple(dims.get(n, {0: batch, 1: seq}) for n in names)  # one entry per positional tensor
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # NOTE: torch 2.13's exporter trips its own LeafSpec FutureWarning inside copyreg;
        # it is internal to torch.export and harmless here (pytest turns FutureWarning into errors).
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
        program = torch.onnx.export(
            ExportWrapper(model, names).eval(), tuple(example[n] for n in names), input_names=names,
            output_names=list(OUTPUT_NAMES), dynamic_shapes=(shapes,), dynamo=True, opset_version=OPSET,
            verbose=False,
        )
    program.save(str(out), external_data=False)
    if metadata:
        set_metadata(out, metadata)
    return out


def export_best(model: Any, out_path: str | Path, metadata: dict[str, str] | None = None, fuse: bool = True) -> str:
    """Export ``model`` to ``out_path``, fused where it can be (``models.onnx_fusion``), else plain.

    Returns the graph kind written, ``"fused"`` or ``"plain"``; it is also stored in the file's
    metadata as ``spaguard.graph``. ``fuse=False`` always writes the plain graph.
    """
    merged = _merged_copy(model).eval()
    if fuse:
        try:
            if export_fused(merged, out_path, {**(metadata or {}), "spaguard.graph": "fused"}):
                return "fused"
        except Exception:  # noqa: BLE001 - exporter/optimizer failures of an unusual model: the plain graph still works
            logging.getLogger(__name__).warning("fused ONNX export failed; writing the plain graph", exc_info=True)
    export_onnx(merged, out_path, {**(metadata or {}), "spaguard.graph": "plain"})
    return "plain"


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    """Dynamic int8 quantization of ``src``'s encoder MatMul weights, written to ``dst``; keeps metadata."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Encoder MatMuls (and fused Attention projections) only, per output channel: the heads (exported as
    # Gemm) are tiny and stay fp32, and per-channel scales follow the weights' per-row ranges (less error
    # than one scale per tensor). ORT's contrib ops have no ONNX shape inference, hence the default type.
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Attention"],
                     per_channel=True, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    set_metadata(dst, read_metadata(src))
    return Path(dst)


def _merged_copy(model: Any) -> Any:
    """A copy with LoRA adapters merged into the encoder (plain modules export cleanly)."""
    if model.config.encoder_trainable != "lora" or not hasattr(model.encoder, "merge_and_unload"):
        return model  # nothing to merge, or already merged
    merged = copy.deepcopy(model, memo={id(model.featurizer): model.featurizer})  # share the (lock-holding) featurizer
    merged.encoder = merged.encoder.merge_and_unload()
    return merged


def _image_size(model: Any) -> int:
    return int(model.image_encoder.config.image_size)


def artifact_key(artifact: str | Path, int8: bool = False, fuse: bool = True) -> str:
    """Hash of everything the exported graph depends on (artifact files, encoder hashes, export code)."""
    folder = Path(artifact)
    digest = hashlib.sha256(f"export-v{EXPORT_VERSION}:opset{OPSET}:int8={int8}:fuse={fuse}".encode())
    # The card names the encoder weights (sha256) and is embedded in the file, so it is part of the key.
    for name in ("config.json", "head.safetensors", "card.json"):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()[:24]


def ensure_onnx(artifact: str | Path, int8: bool = False, cache_dir: str | Path | None = None,
                fuse: bool = True) -> Path:
    """The cached ONNX file for ``artifact`` (exported, and quantized for ``int8``, on first use).

    ``fuse=False`` asks for the plain graph even where a fused one can be built (``export_best``).
    """
    key = artifact_key(artifact, int8, fuse)
    folder = Path(cache_dir or cache_root()) / "onnx" / key
    target = folder / ("model.int8.onnx" if int8 else "model.onnx")
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be exporting the same key
        if not target.is_file():
            tmp = folder / f".{target.name}.{os.getpid()}.tmp"
            _build(Path(artifact), key, tmp, int8, cache_dir, fuse)
            os.replace(tmp, target)  # atomic: readers never see a half-written file
    return target


def _build(artifact: Path, key: str, tmp: Path, int8: bool, cache_dir: str | Path | None, fuse: bool) -> None:
    if int8:
        quantize_int8(ensure_onnx(artifact, int8=False, cache_dir=cache_dir, fuse=fuse), tmp)
        set_metadata(tmp, {**read_metadata(tmp), "spaguard.key": key})
        return
    model = GuardClassifier.load(artifact)
    card = read_card(artifact)
    export_best(model, tmp, {"spaguard.card": json.dumps(card, sort_keys=True), "spaguard.key": key}, fuse=fuse)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spaguard export-onnx", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="classifier artifact folder (default: models/default)")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--int8", action="store_true", help="also quantize (dynamic int8); writes the int8 file to --out")
    p.add_argument("--check", action="store_true", help="compare torch and ORT logits on sample inputs")
    p.add_argument("--no-fuse", action="store_true",
                   help="write the plain torch.export graph even where ORT's fused graph can be built")
    return p


def main(argv: list[str] | None = None) -> int:
    """Export ``--model`` to ``--out``; with ``--check``, print the torch/ORT max abs logit difference."""
    args = make_parser().parse_args(argv)
    folder = resolve_artifact(args.model)
    model = GuardClassifier.load(folder)
    card = read_card(folder)
    meta = {"spaguard.card": json.dumps(card, sort_keys=True), "spaguard.key": artifact_key(folder, args.int8, not args.no_fuse)}
    out = Path(args.out)
    if args.int8:
        fp32 = out.with_suffix(".fp32.onnx")
        kind = export_best(model, fp32, meta, fuse=not args.no_fuse)
        quantize_int8(fp32, out)
        fp32.unlink()
    else:
        kind = export_best(model, out, meta, fuse=not args.no_fuse)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {kind} graph)")
    if args.check:
        diff = parity(model, out)
        print(f"max |torch - ort| logit difference: {diff:.3g}")
        if not args.int8 and diff > 1e-4:
            print("export-onnx: parity check FAILED (> 1e-4)", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
