"""The classifier graph as a Triton Python-backend model: ONNX Runtime inside Triton's Python stub.

Copied to ``<repo>/spaguard_guard/1/model.py`` by ``spaguard triton-repo --backend python``
(``models.triton_repo``), for Triton builds that ship only the Python backend (PyTriton's bundled
``tritonserver``). It is not imported by our packages: it runs in the Triton stub's interpreter, where
``triton_python_backend_utils`` exists, next to ``model.onnx`` in the same version folder.

Contract: Triton's dynamic batcher hands ``execute`` several requests at once; their tensors are
concatenated along the batch axis (right-padding the token axis with zeros if their lengths differ:
padding carries attention_mask 0, so it changes no logit), run as one ORT call, and split back into
one response per request, in order. ``intra_op_thread_count`` (a config parameter) sets ORT's threads;
``KIND_GPU`` instances ask for ORT's CUDA provider. ``triton_python_backend_utils`` exists only inside the
stub, so it is imported in ``execute``: the module still imports anywhere (tests import every module).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if params.get("intra_op_thread_count"):
            opts.intra_op_num_threads = int(params["intra_op_thread_count"])
        providers = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU":
            providers.insert(0, "CUDAExecutionProvider")
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils  # the Triton stub's module (module docstring)

        feeds = [{n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs} for r in requests]
        sizes = [int(f[self.inputs[0]].shape[0]) for f in feeds]
        batch = {n: _concat([f[n] for f in feeds]) for n in self.inputs}
        outs = self.session.run(self.outputs, batch)  # prompt (B,), response (B,), nodes (B, K)
        responses, start = [], 0
        for size in sizes:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(out[start:start + size]))
                       for name, out in zip(self.outputs, outs)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    """Concatenate along the batch axis, right-padding axis 1 (tokens) with zeros to the longest."""
    if len(arrays) == 1:
        return arrays[0]
    width = max(a.shape[1] for a in arrays) if arrays[0].ndim > 1 else None
    if width is not None and any(a.shape[1] != width for a in arrays):
        arrays = [np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2)) for a in arrays]
    return np.concatenate(arrays, axis=0)
