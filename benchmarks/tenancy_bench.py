"""What tenancy costs a request: the same in-process app with and without ``--auth required --db sqlite``.

Both arms serve the scripted engine (``service.engines.fake``) and a constant classifier (defined here: the
real one's ~8 ms per check would hide a millisecond), so the difference is the tenancy path alone: key lookup,
policy selection, limits and the synchronous audit commit before the answer. The arms run interleaved,
``--rounds`` times, each ``--requests`` sequential chat requests after ``--warmup`` ones; the report gives each
round's median and p95 and the median ratio of the tenancy arm to the plain one.

    .venv/bin/python benchmarks/tenancy_bench.py --out runs/bench/tenancy.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from models.backends import GuardInput, Verdict
from service.app import build_app
from service.engines.fake import FakeEngineClient
from service.settings import ServeSettings
from service.tenancy.db import open_database
from service.tenancy.keys import KeyStore

SCRIPT = {"model_name": "fake-vlm", "default": {"chunks": ["Sure, ", "here ", "you ", "go."]}}
ASK = {"model": "fake-vlm", "messages": [{"role": "user", "content": "Tell me a joke."}], "max_tokens": 8}


class ConstantBackend:
    """Every item safe, at once: the benchmark measures the gateway, not the classifier."""

    name = "constant"
    max_batch_size = 64

    def health(self) -> bool:
        return True

    def score(self, batch: list[GuardInput]) -> list[Verdict]:
        return [Verdict(task=i.task, unsafe_prob=0.01, flagged=False, categories={}, scores={}) for i in batch]


async def _arm(settings: ServeSettings, headers: dict[str, str], n: int, warmup: int) -> list[float]:
    app = build_app(settings, engine=FakeEngineClient.from_script(SCRIPT), backend=ConstantBackend())
    async with LifespanManager(app) as manager:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://bench",
                                     headers=headers, timeout=60) as http:
            times = []
            for i in range(warmup + n):
                start = time.perf_counter()
                r = await http.post("/v1/chat/completions", json=ASK)
                took = time.perf_counter() - start
                if r.status_code != 200:  # a benchmark must not hide errors
                    raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
                if i >= warmup:
                    times.append(took * 1e3)
    return times


def _stats(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {"p50_ms": round(statistics.median(ordered), 3), "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 3)}


async def run(rounds: int, n: int, warmup: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="tenancy-bench-"))
    db_url = f"sqlite:///{folder / 'spaguard.db'}"
    db = open_database(db_url)
    try:
        _, key = KeyStore(db).create("bench", "default")
    finally:
        db.close()
    plain = ServeSettings(engine="fake", model="script.json")
    tenancy = ServeSettings(engine="fake", model="script.json", auth="required", db=db_url)
    rows = []
    for r in range(rounds):
        a = _stats(await _arm(plain, {}, n, warmup))
        b = _stats(await _arm(tenancy, {"authorization": f"Bearer {key}"}, n, warmup))
        rows.append({"round": r, "plain": a, "tenancy": b,
                     "added_p50_ms": round(b["p50_ms"] - a["p50_ms"], 3)})
        print(json.dumps(rows[-1]), flush=True)
    return {
        "rows": rows,
        "median_added_p50_ms": round(statistics.median(x["added_p50_ms"] for x in rows), 3),
        "median_ratio_p50": round(statistics.median(x["tenancy"]["p50_ms"] / x["plain"]["p50_ms"] for x in rows), 2),
        "requests_per_round": n, "warmup": warmup,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_average": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if min(args.rounds, args.requests) < 1 or args.warmup < 0:
        p.error("--rounds and --requests must be at least 1, --warmup at least 0")
    report = asyncio.run(run(args.rounds, args.requests, args.warmup))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("median_added_p50_ms", "median_ratio_p50", "load_average")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
