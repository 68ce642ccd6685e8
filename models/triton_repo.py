"""A Triton Inference Server model repository for the classifier's exported ONNX graph.

    spaguard triton-repo --out DIR [--model ARTIFACT] [--backend onnxruntime|python] [--kind cpu|gpu]
                         [--instances N] [--max-batch-size 64] [--max-queue-delay-us 2000] [--threads N]
    make triton-serve TRITON_GRPC_PORT=8001 TRITON_HTTP_PORT=8000     # hosts it on this machine

Contract
--------
* ``write_repo(out, artifact)`` writes ``out/<MODEL_NAME>/config.pbtxt`` and ``out/<MODEL_NAME>/1/model.onnx``
  (the graph ``models.export_onnx.ensure_onnx`` caches: the same file the in-process ONNX backend runs).
  The config names the graph's own inputs and outputs (``models.onnx_graph``: ``input_ids``,
  ``attention_mask``, ``response_mask`` [, ``token_type_ids``] -> ``prompt``, ``response``, ``nodes``), with
  their ONNX dtypes, a variable token axis, dynamic batching (``preferred_batch_size``,
  ``max_queue_delay_microseconds``) and one instance group (``KIND_CPU`` or ``KIND_GPU``, ``--instances``).
  ``prompt``/``response`` are (B,) in the graph: ``dims: [1]`` with ``reshape { shape: [] }``.
* The config carries ``spaguard.key`` (``models.export_onnx.artifact_key``) in its ``parameters``; the
  gateway's ``models.triton_backend.TritonBackend`` refuses a served model whose key differs from its own
  artifact's (a repository written from another classifier).
* ``--backend onnxruntime`` (default) is for a stock Triton (``nvcr.io/nvidia/tritonserver``), which ships
  the onnxruntime backend. ``--backend python`` writes ``1/model.py`` (``models/triton_python_model.py``), the
  same graph run by ONNX Runtime inside Triton's Python backend, for Triton builds that ship only that
  backend: PyTriton's bundled ``tritonserver`` here (``make triton-serve``). Both go through Triton's dynamic
  batcher, so both report batches in Triton's own metrics.

Where OCR runs: in the gateway. ``TritonBackend`` keeps the ``Featurizer`` (OCR of images, then the
tokenizer) in the guard process and sends Triton only token tensors. Why: the Triton model stays a pure
tensor graph any stock onnxruntime backend (CPU or GPU) serves; images never cross the network a second
time (they arrived at the gateway); and the OCR result cache (sha256 -> text) sits where requests repeat.
The cost is that OCR (most of an image's ~85 ms) scales with gateway replicas, not with Triton instances.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import onnx

from models.artifact import read_artifact, resolve_artifact
from models.export_onnx import artifact_key, ensure_onnx

MODEL_NAME = "spaguard_guard"
BACKENDS = ("onnxruntime", "python")
KINDS = ("cpu", "gpu")
PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")
# ONNX TensorProto element types -> Triton data types (the graph uses int64 ids and float32 masks/logits).
_TRITON_DTYPES = {1: "TYPE_FP32", 6: "TYPE_INT32", 7: "TYPE_INT64", 10: "TYPE_FP16", 9: "TYPE_BOOL"}


def graph_io(onnx_path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs) of an ONNX file: name, Triton dtype and dims without the batch axis (-1 = variable)."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph

    def describe(values: Any) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim][1:]  # drop (B,)
            if t.elem_type not in _TRITON_DTYPES:
                raise ValueError(f"{onnx_path}: tensor {v.name!r} has ONNX type {t.elem_type}, no Triton mapping here")
            out.append({"name": v.name, "data_type": _TRITON_DTYPES[t.elem_type], "dims": dims})
        return out

    return describe(graph.input), describe(graph.output)


def config_pbtxt(inputs: list[dict[str, Any]], outputs: list[dict[str, Any]], *, key: str,
                 backend: str = "onnxruntime", kind: str = "cpu", instances: int = 1, max_batch_size: int = 64,
                 preferred: tuple[int, ...] = (8, 16, 32), max_queue_delay_us: int = 2000,
                 threads: int | None = None, model_name: str = MODEL_NAME) -> str:
    """The ``config.pbtxt`` text (protobuf text format of Triton's ``ModelConfig``)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if instances < 1 or max_batch_size < 1:
        raise ValueError("instances and max_batch_size must be ≥ 1")
    preferred = tuple(p for p in preferred if p <= max_batch_size)

    def tensor(t: dict[str, Any]) -> str:
        dims = t["dims"]
        extra = ""
        if not dims:  # a (B,) tensor: Triton wants at least one dim past the batch axis
            dims, extra = [1], " reshape: { shape: [ ] }"
        return (f'  {{ name: "{t["name"]}" data_type: {t["data_type"]} '
                f'dims: [ {", ".join(str(d) for d in dims)} ]{extra} }}')

    params = {"spaguard.key": key}
    if threads is not None:
        params["intra_op_thread_count"] = str(int(threads))  # the onnxruntime backend's (and model.py's) knob
    lines = [
        f'name: "{model_name}"',
        f'backend: "{backend}"',
        f"max_batch_size: {max_batch_size}",
        "input [",
        ",\n".join(tensor(t) for t in inputs),
        "]",
        "output [",
        ",\n".join(tensor(t) for t in outputs),
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {', '.join(str(p) for p in preferred)} ]" if preferred else "",
        f"  max_queue_delay_microseconds: {max_queue_delay_us}",
        "}",
        f"instance_group [ {{ kind: KIND_{kind.upper()} count: {instances} }} ]",
    ]
    lines += [f'parameters {{ key: "{k}" value: {{ string_value: {json.dumps(v)} }} }}' for k, v in params.items()]
    return "\n".join(line for line in lines if line) + "\n"


def write_repo(out: str | Path, artifact: str | Path | None = None, *, backend: str = "onnxruntime",
               kind: str = "cpu", instances: int = 1, max_batch_size: int = 64, preferred: tuple[int, ...] = (8, 16, 32),
               max_queue_delay_us: int = 2000, threads: int | None = None, int8: bool = False,
               model_name: str = MODEL_NAME) -> Path:
    """Write the repository (see module docstring); returns the model's folder ``out/<model_name>``."""
    folder = resolve_artifact(artifact)
    read_artifact(folder)  # refuse a broken artifact before the (slow) export
    onnx_path = ensure_onnx(folder, int8=int8)
    inputs, outputs = graph_io(onnx_path)
    model_dir = Path(out) / model_name
    version = model_dir / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, version / "model.onnx")
    if backend == "python":
        shutil.copyfile(PYTHON_MODEL, version / "model.py")
    elif (version / "model.py").exists():
        (version / "model.py").unlink()  # an onnxruntime repo written over a python one
    text = config_pbtxt(inputs, outputs, key=artifact_key(folder, int8), backend=backend, kind=kind,
                        instances=instances, max_batch_size=max_batch_size, preferred=preferred,
                        max_queue_delay_us=max_queue_delay_us, threads=threads, model_name=model_name)
    (model_dir / "config.pbtxt").write_text(text)
    return model_dir


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spaguard triton-repo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="model repository folder (created)")
    p.add_argument("--model", default=None, help="classifier artifact folder (default: models/default)")
    p.add_argument("--backend", choices=BACKENDS, default="onnxruntime",
                   help="Triton backend: onnxruntime (stock Triton) or python (ORT inside Triton's Python backend)")
    p.add_argument("--kind", choices=KINDS, default="cpu", help="instance group kind (KIND_CPU / KIND_GPU)")
    p.add_argument("--instances", type=int, default=1, help="model instances in the group")
    p.add_argument("--max-batch-size", type=int, default=64, help="Triton's max_batch_size")
    p.add_argument("--preferred", type=int, nargs="*", default=[8, 16, 32], help="preferred_batch_size values")
    p.add_argument("--max-queue-delay-us", type=int, default=2000, help="dynamic batcher's max_queue_delay_microseconds")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads per instance (default: the runtime's)")
    p.add_argument("--int8", action="store_true", help="serve the int8 graph (models.export_onnx.quantize_int8)")
    p.add_argument("--model-name", default=MODEL_NAME, help="the model's name in the repository")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    model_dir = write_repo(args.out, args.model, backend=args.backend, kind=args.kind, instances=args.instances,
                           max_batch_size=args.max_batch_size, preferred=tuple(args.preferred),
                           max_queue_delay_us=args.max_queue_delay_us, threads=args.threads, int8=args.int8,
                           model_name=args.model_name)
    print(f"wrote {model_dir} ({args.backend} backend, KIND_{args.kind.upper()} x{args.instances})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
