"""The guard classifier's compute ceiling on this CPU: FLOPs per batch, and the machine's GEMM peaks.

``guard_bench.py``'s "limit" column is built from these two pieces, so that it is an upper bound on what
each backend can reach (measured items/s above it means the ceiling is wrong, and the benchmark says so).

Contract
--------
* ``count_flops(model, features) -> FlopCount``: FLOPs of one forward of ``model`` (a ``GuardClassifier``)
  on exactly ``features`` (the featurizer's output, padded as every backend feeds it), counted by torch's
  ``FlopCounterMode`` and split by the arithmetic that runs them in the int8 graph: ``gemm`` = weight
  matmuls (``aten.addmm``/``aten.mm``: every ``nn.Linear``, LoRA adapters, heads; also any other counted op,
  e.g. a vision tower's convolution) and ``attention`` = activation-by-activation matmuls (``aten.bmm``:
  QK^T and AV). Attention is counted with the encoder switched to eager attention for the count, because
  FlopCounterMode does not count CPU SDPA (torch 2.13: ``_scaled_dot_product_flash_attention_for_cpu``
  has no formula, so it used to be silently left out).
* ``merged_for_onnx(model)``: the model the ONNX graphs run (LoRA adapters merged on export, so no adapter
  matmuls); the torch backend runs the unmerged one. Counting the unmerged model for ORT over-counted
  FLOPs by ~6 % on the shipped LoRA default and so under-stated ORT's limit.
* ``GemmProbe(threads, hidden, intermediate).measure(budget_s) -> GemmPeak``: the best FLOP/s seen, over
  torch's ``mm``, ORT's fp32 ``MatMul`` and ORT's ``MatMulInteger`` (uint8 x int8, what the dynamically
  quantized graph runs), with ORT spinning on and off, on the encoder's own GEMM shapes at 1024 token rows
  plus a 512 cube, best of repeated calls for ``budget_s`` each. ``GemmProbe.best`` is the running maximum
  over every ``measure`` call: ``guard_bench`` probes before each point, interleaved with the backends, so
  a quiet moment anywhere in the run raises the ceiling of every row.
* ``min_seconds(flops, peak, int8)``: the least time the batch's matmuls can take: all at the fp32 peak,
  or (int8) ``gemm`` at the int8 peak plus ``attention`` at the fp32 peak. Counting the small fp32 parts of
  the int8 graph (heads, the pooled projections) at the int8 peak only loosens the bound.

Why the old limit read 150-265 % (measured 2026-12-02, ``docs/benchmarks.md``): its peak was one library's
(torch) 1024-cube ``mm``, best of 8, measured once at start-up. On this box under load that gives 33-65
GFLOP/s while ORT's MLAS runs the model's own 768x384x1536 GEMM at 316-369 GFLOP/s in the same minute, and
the int8 backend's MatMulInteger reaches ~1.4 TOP/s (4x fp32, AVX-512 VNNI), which no fp32 peak bounds.

Run ``python benchmarks/gemm_ceiling.py --threads 2`` to print the peaks alone.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

_ATTENTION_OPS = ("aten.bmm", "aten.baddbmm")  # activation x activation: fp32 in every backend


@dataclass(frozen=True)
class FlopCount:
    """Forward FLOPs of one batch, split by the arithmetic that runs them (see the module docstring)."""

    gemm: float  # weight matmuls: int8 GEMMs in the onnx-int8 graph
    attention: float  # QK^T and AV: fp32 in every backend
    tokens: int  # the padded token axis T the backends run

    @property
    def total(self) -> float:
        return self.gemm + self.attention


@dataclass(frozen=True)
class GemmPeak:
    """Best observed FLOP/s (fp32) and OP/s (int8 MatMulInteger), and which probe gave each."""

    fp32: float
    int8: float
    fp32_source: str
    int8_source: str


@contextmanager
def _eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """Run ``model``'s transformers sub-models with eager attention inside the block (restored after)."""
    saved = []
    for module in model.modules():
        config = getattr(module, "config", None)
        if hasattr(module, "set_attn_implementation") and getattr(config, "_attn_implementation", None) not in (None, "eager"):
            saved.append((module, config._attn_implementation))
    try:
        for module, _ in saved:
            module.set_attn_implementation("eager")
        yield
    finally:
        for module, impl in saved:
            module.set_attn_implementation(impl)


def count_flops(model: torch.nn.Module, features: dict[str, torch.Tensor]) -> FlopCount:
    """FLOPs of ``model(**features)`` (one batch), split into ``gemm`` and ``attention``."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), _eager_attention(model), FlopCounterMode(display=False) as counter:
        model(**features)
    by_op = {str(op): float(n) for op, n in counter.get_flop_counts()["Global"].items()}
    attention = sum(n for op, n in by_op.items() if op in _ATTENTION_OPS)
    return FlopCount(gemm=sum(by_op.values()) - attention, attention=attention,
                     tokens=int(features["input_ids"].shape[1]))


def merged_for_onnx(model: Any) -> Any:
    """A copy of ``model`` with LoRA adapters merged, as ``models.export_onnx`` exports it (else ``model``)."""
    if getattr(model.config, "encoder_trainable", None) != "lora" or not hasattr(model.encoder, "merge_and_unload"):
        return model
    merged = copy.deepcopy(model, memo={id(model.featurizer): model.featurizer})  # the featurizer holds a lock
    merged.encoder = merged.encoder.merge_and_unload()
    return merged.eval()


def min_seconds(flops: FlopCount, peak: GemmPeak, int8: bool) -> float:
    """The least time one batch's matmuls can take at ``peak`` (see the module docstring)."""
    if int8:
        return flops.gemm / peak.int8 + flops.attention / peak.fp32
    return flops.total / peak.fp32


def _best_seconds(fn: Callable[[], object], budget_s: float, min_calls: int = 3) -> float:
    """Fastest of repeated ``fn()`` calls for ``budget_s`` (after one warm-up call)."""
    fn()
    best, start, calls = float("inf"), time.perf_counter(), 0
    while calls < min_calls or time.perf_counter() - start < budget_s:
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        calls += 1
    return best


def _ort_matmul(m: int, k: int, n: int, int8: bool, threads: int, spin: bool, seed: int) -> Callable[[], object]:
    """A one-node ORT session (``MatMul`` fp32 or ``MatMulInteger`` uint8 x int8, weight as an initializer)."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    if int8:
        x = rng.integers(0, 255, (m, k), dtype=np.uint8)
        w = rng.integers(-127, 127, (k, n), dtype=np.int8)
        types, op = (TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32), "MatMulInteger"
    else:
        x = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((k, n), dtype=np.float32)
        types, op = (TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT), "MatMul"
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "w"], ["y"])], "gemm_probe",
        [helper.make_tensor_value_info("x", types[0], [m, k])], [helper.make_tensor_value_info("y", types[2], [m, n])],
        initializer=[helper.make_tensor("w", types[1], [k, n], w.tobytes(), raw=True)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"x": x})


class GemmProbe:
    """The machine's fp32 and int8 GEMM peaks on the encoder's shapes; ``best`` is the running maximum."""

    def __init__(self, threads: int, hidden: int, intermediate: int, rows: int = 1024, seed: int = 0) -> None:
        self.threads = threads
        shapes = [(rows, hidden, intermediate), (rows, intermediate, hidden), (rows, hidden, hidden), (512, 512, 512)]
        self._probes: list[tuple[str, bool, float, Callable[[], object]]] = []  # (name, int8, flops, call)
        gen = torch.Generator().manual_seed(seed)
        for m, k, n in shapes:
            a, b = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
            self._probes.append((f"torch mm {m}x{k}x{n}", False, 2.0 * m * k * n, lambda a=a, b=b: torch.mm(a, b)))
            for int8 in (False, True):
                for spin in (False, True):
                    name = f"ort {'MatMulInteger' if int8 else 'MatMul'}{' spin' if spin else ''} {m}x{k}x{n}"
                    self._probes.append((name, int8, 2.0 * m * k * n, _ort_matmul(m, k, n, int8, threads, spin, seed)))
        self.best: GemmPeak | None = None

    def measure(self, budget_s: float = 0.1) -> GemmPeak:
        """Probe every GEMM for ``budget_s`` each; returns (and folds into ``best``) this round's peaks."""
        torch.set_num_threads(self.threads)
        rates = {name: (int8, flops / _best_seconds(call, budget_s)) for name, int8, flops, call in self._probes}
        fp32 = max(((r, n) for n, (i8, r) in rates.items() if not i8))
        int8 = max(((r, n) for n, (i8, r) in rates.items() if i8))
        # An int8 GEMM is never slower than the fp32 one it replaces in the bound (int8 >= fp32).
        now = GemmPeak(fp32[0], max(int8[0], fp32[0]), fp32[1], int8[1])
        best = self.best or now
        self.best = GemmPeak(max(best.fp32, now.fp32), max(best.int8, now.int8),
                             best.fp32_source if best.fp32 >= now.fp32 else now.fp32_source,
                             best.int8_source if best.int8 >= now.int8 else now.int8_source)
        return now


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="print this machine's fp32 and int8 GEMM peaks (MiniLM shapes)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=0.2)
    args = p.parse_args(argv)
    probe = GemmProbe(args.threads, hidden=384, intermediate=1536)
    for _ in range(args.rounds):
        now = probe.measure(args.budget_s)
        print(f"fp32 {now.fp32 / 1e9:7.1f} GFLOP/s ({now.fp32_source})   int8 {now.int8 / 1e9:7.1f} GOP/s ({now.int8_source})")
    assert probe.best is not None
    print(f"best: fp32 {probe.best.fp32 / 1e9:.1f} GFLOP/s, int8 {probe.best.int8 / 1e9:.1f} GOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
