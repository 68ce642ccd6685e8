"""OpenVINO sessions for rapidocr's models: the OCR recogniser runs faster on OpenVINO's CPU plugin.

Contract
--------
* ``OpenVinoSession(model_path, threads)`` compiles an ONNX file for OpenVINO's CPU device at fp32
  (pinned: OpenVINO would otherwise pick bf16 on CPUs that have it, and change the text read) and
  offers the part of ``onnxruntime.InferenceSession`` that rapidocr 1.4.4 calls per image:
  ``run(output_names, feed)`` (a list of numpy arrays, in ``output_names`` order, or all outputs for
  None), ``get_inputs()`` and ``get_outputs()`` (objects with ``.name``).
* Calls are not thread-safe (one infer request); ``models.ocr.OcrReader`` serializes them.
* ``available()`` is False when the ``openvino`` package cannot be imported; the reader then keeps
  ONNX Runtime and logs why.

Why (``benchmarks/ocr_runtime_bench.py``, docs/benchmarks.md "OCR on OpenVINO"): on 2 cores a whole OCR
read took p50 0.65x ONNX Runtime's time on image sizes seen before and 0.77x on first sight (OpenVINO
compiles kernels per new input shape), with the same text on every page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class _Port:
    name: str


def available() -> bool:
    """True when OpenVINO's Python package imports."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


class OpenVinoSession:
    """An ONNX model compiled for OpenVINO's CPU plugin, called like an ORT session (see module doc)."""

    def __init__(self, model_path: str | Path, threads: int | None = None) -> None:
        import openvino as ov

        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads is not None and threads > 0:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.model_path = str(model_path)
        self._compiled = ov.Core().compile_model(self.model_path, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._inputs = [_Port(p.get_any_name()) for p in self._compiled.inputs]
        self._outputs = [_Port(p.get_any_name()) for p in self._compiled.outputs]

    def get_inputs(self) -> list[_Port]:
        """Input ports, in the model's order."""
        return list(self._inputs)

    def get_outputs(self) -> list[_Port]:
        """Output ports, in the model's order."""
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        """What runs the model (for logs; ORT sessions answer with their execution providers)."""
        return ["OpenVINO:CPU"]

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs named ``output_names`` (all if None) for ``feed`` (input name -> array)."""
        names = {p.name for p in self._inputs}
        unknown = set(feed) - names
        if unknown or len(feed) != len(names):
            raise ValueError(f"feed has inputs {sorted(feed)}, the model wants {sorted(names)}")
        result = self._request.infer({k: np.ascontiguousarray(v) for k, v in feed.items()})
        by_name = {port.get_any_name(): value for port, value in result.items()}
        wanted = output_names or [p.name for p in self._outputs]
        # Copies: the request reuses its output buffers on the next call.
        return [np.array(by_name[n], copy=True) for n in wanted]
