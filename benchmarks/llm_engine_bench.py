"""The embedded default LLM (SmolLM2-135M-Instruct, in-process transformers engine): start-up time and tokens/s.

    .venv/bin/python benchmarks/llm_engine_bench.py --threads 1,2 --concurrency 1,4,8 --max-tokens 96 \
        --rounds 2 --out runs/bench/llm_engine.json

Three measurements, printed as one table each and written together as JSON:

* ``engine start``: a fresh interpreter imports the engine and opens it (``async with TransformersEngine``),
  cold (an empty ``$SPAGUARD_CACHE``: the GGUF is dequantized and exported first, ``models.llm``) and warm
  (the export is cached, as on every start after the first). Cold and warm alternate ``--rounds`` times.
* ``server start``: ``spaguard serve`` with its defaults (SmolLM2 + the shipped guard on ONNX Runtime, warm
  caches) until ``GET /health`` answers 200, ``--rounds`` times.
* ``decode``: ``C`` concurrent greedy requests (distinct story prompts that run to ``--max-tokens``) through
  one open engine, per torch thread count; arms interleave across rounds. tokens/s = completion tokens of all
  requests / wall time; TTFT = time to a request's first text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from service.launch import stop, wait_ready

REPO = Path(__file__).resolve().parents[1]
TOPICS = ("dragon who learns to bake bread", "lighthouse keeper and his cat", "robot who plants a garden",
          "girl who maps the stars", "fox who opens a bookshop", "sailor lost in a fog", "old clock that stops",
          "boy who talks to rivers")  # fmt: skip
_START = r"""
import asyncio, json, sys, time
t0 = time.perf_counter()
from service.engines.base import EngineConfig
from service.engines.hf import TransformersEngine
t1 = time.perf_counter()
async def main():
    async with TransformersEngine(EngineConfig()) as engine:
        t2 = time.perf_counter()
        print(json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "total_s": t2 - t0}))
asyncio.run(main())
"""


def _env(threads: int, cache: str | None = None) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS=str(threads),
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO))
    if cache is not None:
        env["SPAGUARD_CACHE"] = cache
    return env


def _open_engine(threads: int, cache: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", _START], env=_env(threads, str(cache)), capture_output=True,
                          text=True, timeout=900)
    if proc.returncode:
        raise RuntimeError(f"opening the engine failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def engine_start(rounds: int, threads: int) -> list[dict]:
    """Cold (empty cache) and warm (cached export) engine opens, alternating, each in a fresh interpreter."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="llm-bench-") as scratch:
        warm_cache = Path(scratch) / "warm"
        _open_engine(threads, warm_cache)  # builds the warm arm's export
        for r in range(rounds):
            for arm in ("cold", "warm"):
                cache = warm_cache if arm == "warm" else Path(scratch) / f"cold{r}"
                rows.append({"arm": arm, "round": r, **_open_engine(threads, cache)})
                if arm == "cold":
                    shutil.rmtree(cache, ignore_errors=True)
    return rows


def server_start(rounds: int, threads: int, port: int = 8931) -> list[dict]:
    """``spaguard serve`` (all defaults, warm caches) until /health is 200."""
    spaguard = Path(sys.executable).with_name("spaguard")
    rows = []
    for r in range(rounds):
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(spaguard), "serve", "--port", str(port), "--guard-threads", str(threads)],
                                env=_env(threads), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(f"http://127.0.0.1:{port}/health", proc, timeout_s=600, interval_s=0.2)
            rows.append({"round": r, "healthy_s": time.perf_counter() - t0})
        finally:
            stop(proc, grace_s=30, sig=signal.SIGTERM)
    return rows


async def _decode_arm(engine, concurrency: int, max_tokens: int, tag: str) -> dict:
    from service.engines.base import ChatMessage, EngineRequest, SamplingParams

    ttft: list[float] = []
    tokens: list[int] = []

    async def one(i: int) -> None:
        text = f"Write a long story about a {TOPICS[i % len(TOPICS)]}."
        request = EngineRequest(f"{tag}-{i}", (ChatMessage("user", (text,)),),
                                SamplingParams(max_tokens=max_tokens, temperature=0.0))
        t0, first, last = time.perf_counter(), None, None
        async for out in engine.generate(request):
            if first is None and out.text:
                first = time.perf_counter() - t0
            last = out
        ttft.append(first or 0.0)
        tokens.append(last.completion_tokens)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(concurrency)))
    wall = time.perf_counter() - t0
    return {"tokens": sum(tokens), "wall_s": wall, "tok_per_s": sum(tokens) / wall,
            "ttft_p50_s": statistics.median(ttft), "ttft_max_s": max(ttft)}


async def decode(threads: list[int], concurrency: list[int], max_tokens: int, rounds: int) -> list[dict]:
    import torch

    from service.engines.base import EngineConfig
    from service.engines.hf import TransformersEngine

    rows = []
    async with TransformersEngine(EngineConfig(max_batch_size=max(concurrency)), max_wait_s=0.05) as engine:
        torch.set_num_threads(max(threads))
        await _decode_arm(engine, 1, 8, "warmup")
        for r in range(rounds):
            for t in threads if r % 2 == 0 else threads[::-1]:
                torch.set_num_threads(t)  # process-wide: the engine's worker thread uses it
                for c in concurrency:
                    rows.append({"threads": t, "concurrency": c, "round": r,
                                 **await _decode_arm(engine, c, max_tokens, f"r{r}t{t}c{c}")})
    return rows


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=_ints, default=[1, 2], help="torch thread counts of the decode arms")
    p.add_argument("--concurrency", type=_ints, default=[1, 4, 8], help="concurrent requests per decode arm")
    p.add_argument("--max-tokens", type=int, default=96, help="tokens per request")
    p.add_argument("--rounds", type=int, default=2, help="repetitions (arms interleave across rounds)")
    p.add_argument("--start-threads", type=int, default=2, help="threads of the start-up measurements")
    p.add_argument("--skip", default="", help="comma list of parts to skip: engine_start,server_start,decode")
    p.add_argument("--out", type=Path, default=Path("runs/bench/llm_engine.json"))
    args = p.parse_args(argv)
    skip = set(args.skip.split(",")) - {""}
    result: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.processor() or
        platform.machine(), "cpus": os.cpu_count(), "load_avg_start": os.getloadavg(), "argv": sys.argv[1:],
    }  # fmt: skip
    if "engine_start" not in skip:
        result["engine_start"] = engine_start(args.rounds, args.start_threads)
    if "server_start" not in skip:
        result["server_start"] = server_start(args.rounds, args.start_threads)
    if "decode" not in skip:
        result["decode"] = asyncio.run(decode(args.threads, args.concurrency, args.max_tokens, args.rounds))
    result["load_avg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for arm in ("cold", "warm"):
        rows = [r for r in result.get("engine_start", []) if r["arm"] == arm]
        if rows:
            print(f"engine start {arm}: total median {statistics.median(r['total_s'] for r in rows):.1f} s "
                  f"(import {statistics.median(r['import_s'] for r in rows):.1f} s, "
                  f"open {statistics.median(r['open_s'] for r in rows):.1f} s; n={len(rows)})")
    if result.get("server_start"):
        print(f"server start to /health: median {statistics.median(r['healthy_s'] for r in result['server_start']):.1f} s")
    if result.get("decode"):
        print("| threads | concurrency | tokens/s (median) | TTFT p50 s | tokens per arm |")
        print("|---|---|---|---|---|")
        for t in args.threads:
            for c in args.concurrency:
                rows = [r for r in result["decode"] if r["threads"] == t and r["concurrency"] == c]
                print(f"| {t} | {c} | {statistics.median(r['tok_per_s'] for r in rows):.1f} | "
                      f"{statistics.median(r['ttft_p50_s'] for r in rows):.2f} | "
                      f"{statistics.median(r['tokens'] for r in rows):.0f} |")
    print(f"load average: {result['load_avg_start']} -> {result['load_avg_end']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
