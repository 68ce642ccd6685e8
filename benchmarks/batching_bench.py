"""Cross-request dynamic batching vs one-at-a-time scoring, measured side by side.

``C`` concurrent callers each submit prompts to the service's own ``DynamicBatcher`` in front of a
real scoring backend. The baseline is the same batcher with ``max_batch_size=1`` (what a guard
without cross-request batching does: one classifier call per request). Runs alternate
baseline/batched ``--rounds`` times in one process with pinned threads; the result is the ratio
of throughputs plus latency percentiles, printed as one table and written as JSON.

A third arm, ``fixed_wait``, is the batcher as it was before its adaptive wait (issue 15): every batch
waits ``max_wait_s`` after it is collected, even for a lone item at an idle model (``FixedWaitBatcher``,
the old ``_collect``); ``dynamic`` vs ``fixed_wait`` is the adaptive wait's effect, side by side.

    .venv/bin/python benchmarks/batching_bench.py --concurrency 32 --items 512 \
        --backend onnx --threads 2 --out runs/bench/batching.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

from models.backends import GuardInput, ScoringBackend, load_backend
from service.batching import DynamicBatcher

_WORDS = (
    "please explain how weather forecasts work and what a cold front is",
    "write a short poem about a lighthouse keeper and his cat",
    "what are good stretches after a long run in cold weather",
    "how do I make my sourdough starter more active in winter",
    "summarise the causes of the french revolution in three points",
)


class FixedWaitBatcher(DynamicBatcher):  # type: ignore[type-arg]
    """The service's batcher with its pre-adaptive ``_collect`` (the baseline arm; see the module docstring)."""

    async def _collect(self):  # type: ignore[no-untyped-def]
        first = await self._next_live(None)
        batch, cost = [first], first.cost
        deadline = time.perf_counter() + self.max_wait_s  # always waits, counted from collection
        while len(batch) < self.max_batch_size:
            entry = await self._next_live(deadline - time.perf_counter())
            if entry is None:
                break
            if self._max_cost is not None and cost + entry.cost > self._max_cost:
                self._carry = entry
                break
            batch.append(entry)
            cost += entry.cost
        return batch


def make_prompts(n: int, seed: int) -> list[GuardInput]:
    rng = random.Random(seed)
    return [GuardInput(text=f"{rng.choice(_WORDS)} ({i})") for i in range(n)]


async def _drive(backend: ScoringBackend, items: list[GuardInput], concurrency: int,
                 max_batch_size: int, max_wait_s: float, fixed_wait: bool = False) -> dict[str, float]:
    batcher: DynamicBatcher[GuardInput, object] = (FixedWaitBatcher if fixed_wait else DynamicBatcher)(
        backend.score, max_batch_size=max_batch_size, max_wait_s=max_wait_s,
        max_queue=max(concurrency, max_batch_size) * 2, queue_timeout_s=600.0,
    )
    batcher.start()
    latencies: list[float] = []
    sizes: list[int] = []
    queue = list(items)

    async def caller() -> None:
        while queue:
            item = queue.pop()
            t0 = time.perf_counter()
            _, timing = await batcher.submit(item)
            latencies.append(time.perf_counter() - t0)
            sizes.append(timing.batch_size)

    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    await batcher.stop()
    lat = sorted(latencies)
    return {
        "items_per_s": len(items) / wall,
        "p50_ms": 1e3 * statistics.median(lat),
        "p95_ms": 1e3 * lat[int(0.95 * (len(lat) - 1))],
        "mean_batch": statistics.fmean(sizes),
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    backend = load_backend(args.backend, args.artifact, threads=args.threads,
                           max_batch_size=args.max_batch_size)
    items = make_prompts(args.items, args.seed)
    backend.score(items[:8])  # warm-up: first-call allocations and (ONNX) session set-up
    rows: dict[str, list[dict[str, float]]] = {"serial_b1": [], "dynamic": [], "fixed_wait": []}
    for _ in range(args.rounds):  # interleaved, so drift hits both arms alike
        rows["serial_b1"].append(asyncio.run(_drive(backend, items, args.concurrency, 1, 0.0)))
        rows["dynamic"].append(asyncio.run(_drive(
            backend, items, args.concurrency, args.max_batch_size, args.max_wait_ms / 1e3)))
        rows["fixed_wait"].append(asyncio.run(_drive(
            backend, items, args.concurrency, args.max_batch_size, args.max_wait_ms / 1e3, fixed_wait=True)))
    summary = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in rows.items()}
    ratio = summary["dynamic"]["items_per_s"] / summary["serial_b1"]["items_per_s"]
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads",
        "backend": args.backend, "concurrency": args.concurrency, "items": args.items,
        "max_batch_size": args.max_batch_size, "max_wait_ms": args.max_wait_ms,
        "rounds": args.rounds, "summary": summary, "throughput_ratio": ratio,
        "adaptive_vs_fixed_wait": summary["dynamic"]["items_per_s"] / summary["fixed_wait"]["items_per_s"],
    }


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backend", default="onnx", choices=["onnx", "onnx-int8", "torch"])
    p.add_argument("--artifact", default=None, help="classifier artifact (default: shipped)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--items", type=int, default=512)
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/bench/batching.json"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    result = run(args)
    print(f"{'arm':<10} {'items/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'mean batch':>10}")
    for arm, m in result["summary"].items():  # type: ignore[union-attr]
        print(f"{arm:<10} {m['items_per_s']:>9.1f} {m['p50_ms']:>8.1f} {m['p95_ms']:>8.1f} "
              f"{m['mean_batch']:>10.1f}")
    print(f"throughput ratio dynamic / serial_b1 = {result['throughput_ratio']:.2f}x, "
          f"dynamic (adaptive wait) / fixed_wait = {result['adaptive_vs_fixed_wait']:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
