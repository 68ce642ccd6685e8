"""What the guard costs: the same engine served with the guard on and with ``--guard-mode off``, measured by
real Locust runs in one invocation, interleaved.

    .venv/bin/python loadtests/compare.py --users 32 --duration 60 --out runs/compare
    .venv/bin/python loadtests/compare.py --users 32 --duration 60 --out runs/compare \
        --engine transformers                # the real engine instead of the scripted one

Writes ``OUT/overhead.json``::

    {"guard_on": R, "guard_off": R, "added_p50_ms", "added_p95_ms",
     "light_added_p50_ms", "saturation_rps", "saturation_steps": [...], "config": {...}}

with R = ``{"rps", "p50_ms", "p95_ms", "p99_ms", "ttft_p50_ms", "errors_5xx", "requests"}``, and prints a
markdown table (also ``OUT/overhead.md``).

Three measurements, each guard-on vs guard-off, each run as alternating rounds so drift on a shared box
hits both sides alike:

1. users: ``--users`` closed-loop Locust users (no think time) of benign chat (``--mix benign``: 3
   non-streamed to 1 streamed; refused prompts would skip the engine and flatter the guard), against a
   scripted engine whose answer takes ``--engine-latency-s`` (default 1.0 s, realistic). ->
   ``guard_on``/``guard_off``, ``added_p50_ms``/``added_p95_ms`` (on minus off).
2. light: one user, an instant engine (latency 0): the guard's own cost per request. -> ``light_added_p50_ms``.
3. saturation: users doubled 1, 2, 4 ... ``--saturation-max-users`` on the instant engine; at each step the
   guarded server's rps and the added p95. ``saturation_rps`` is the guarded rps of the last step whose
   added p95 is ≤ ``--saturation-p95-ms`` (100), linearly interpolated to the crossing when a later step
   passes it (null when the first step already does; the largest step's rps, flagged
   ``saturation_reached: false``, when none does).

With ``--versus-arg`` (repeatable) the users measurement gets a third side, ``versus``: the guard on with
those extra serve arguments, e.g. the Triton backend (``make triton-serve`` first)::

    .venv/bin/python loadtests/compare.py --users 32 --duration 60 --out runs/compare-triton \
        --skip-light-and-saturation --versus-arg=--guard-backend=triton --versus-arg=--triton-url=127.0.0.1:8001

adding ``versus`` (R), ``versus_added_p50_ms``/``versus_added_p95_ms`` (against guard off) and
``versus_rps_ratio`` (versus rps / guard-on rps) to the report.

The servers are real ``spaguard serve`` subprocesses on 127.0.0.1 (scripted engine: ``--engine fake``),
started once per engine latency and kept up during their rounds; Locust runs headless as a subprocess
with ``loadtests/locustfile.py``. The client shares the machine's cores with the servers: on the 2-core
box it takes up to one of them, which is part of what is measured (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from percentiles import percentile  # loadtests/percentiles.py: a script's folder is on sys.path

from service.launch import spaguard_server

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
R_KEYS = ("rps", "p50_ms", "p95_ms", "p99_ms", "ttft_p50_ms", "errors_5xx", "requests")
CHUNKS = ["The", " sea", " is", " calm", " and", " the", " sand", " is", " warm", "."]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=32, help="Locust users of the users measurement")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per side of the users measurement")
    p.add_argument("--out", type=Path, required=True, help="output folder (overhead.json, overhead.md, logs)")
    p.add_argument("--engine-latency-s", type=float, default=1.0,
                   help="scripted engine: seconds per answer in the users measurement (spread over its chunks)")
    p.add_argument("--engine", default="fake", help="engine of both servers (fake: the scripted one)")
    p.add_argument("--serve-arg", action="append", default=[],
                   help="extra `spaguard serve` argument for both servers (repeat; e.g. --serve-arg=--model=X)")
    p.add_argument("--rounds", type=int, default=2, help="alternating on/off rounds per measurement")
    p.add_argument("--light-duration", type=float, default=20.0, help="seconds per side of the one-user run")
    p.add_argument("--saturation-duration", type=float, default=12.0, help="seconds per side of each step")
    p.add_argument("--saturation-max-users", type=int, default=32, help="largest saturation step")
    p.add_argument("--saturation-p95-ms", type=float, default=100.0, help="added p95 that defines saturation")
    p.add_argument("--guard-threads", type=int, default=2, help="--guard-threads of the servers")
    p.add_argument("--max-tokens", type=int, default=16, help="max_tokens per request")
    p.add_argument("--versus-arg", action="append", default=[],
                   help="a third server in the users measurement: guard on with these extra `spaguard serve` "
                        "arguments (repeat), e.g. --versus-arg=--guard-backend=triton --versus-arg=--triton-url=H:P")
    p.add_argument("--skip-light-and-saturation", action="store_true",
                   help="only the users measurement (e.g. a --versus run)")
    return p


def _script(path: Path, latency_s: float) -> Path:
    path.write_text(json.dumps({"model_name": "scripted", "chunk_delay_s": latency_s / len(CHUNKS),
                                "default": {"chunks": CHUNKS}}))
    return path


@contextmanager
def server(args: list[str], log: Path) -> Iterator[str]:
    """``spaguard serve ARGS`` on 127.0.0.1:<free port> until /health answers 200; yields its base URL."""
    with spaguard_server(["--log-level", "warning", *args], log, timeout_s=300) as base:
        yield base


def locust(base: str, users: int, seconds: float, out: Path, name: str, *, expect_guard: str,
           max_tokens: int) -> dict[str, Any]:
    """One headless Locust run (closed loop, benign mix); returns the locustfile's summary."""
    summary = out / f"{name}.json"
    exe = Path(sys.executable).with_name("locust")
    cmd = [str(exe), "-f", str(LOCUSTFILE), "--headless", "--only-summary", "-H", base, "-u", str(users),
           "-r", str(users), "-t", f"{max(1, round(seconds))}s", "--stop-timeout", "10", "--mix", "benign",
           "--wait-ms", "0", "--expect-guard", expect_guard, "--max-tokens", str(max_tokens),
           "--p95-ms", "1e9", "--max-429-rate", "1", "--summary-json", str(summary), "--csv", str(out / name)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 120)
    if not summary.is_file():
        raise RuntimeError(f"locust wrote no summary (rc {proc.returncode}): {proc.stderr[-3000:]}")
    result = json.loads(summary.read_text())
    result["exit_code"] = proc.returncode
    return result


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one side -> R: percentiles over the rounds' pooled response times (exact, from the
    locustfile's ``*_times_ms``), summed counts, rps over the rounds' time."""
    total = sum(r["requests"] for r in runs)
    http = [t for r in runs for t in r.get("http_times_ms", ())]
    ttft = [t for r in runs for t in r.get("ttft_times_ms", ())]
    seconds = sum(r["requests"] / r["rps"] for r in runs if r["rps"])
    return {"rps": round(total / seconds, 2) if seconds else 0.0, "p50_ms": percentile(http, 0.50),
            "p95_ms": percentile(http, 0.95), "p99_ms": percentile(http, 0.99),
            "ttft_p50_ms": percentile(ttft, 0.50),
            "errors_5xx": sum(r["errors_5xx"] for r in runs), "requests": total,
            "misses": sum(r.get("misses", 0) for r in runs),
            "false_positives": sum(r.get("false_positives", 0) for r in runs)}


def _diff(on: dict[str, Any], off: dict[str, Any], key: str) -> float | None:
    return None if on[key] is None or off[key] is None else round(on[key] - off[key], 2)


def side_by_side(urls: dict[str, str], users: int, seconds: float, rounds: int, out: Path, tag: str,
                 max_tokens: int) -> dict[str, dict[str, Any]]:
    """``rounds`` runs per side, the sides' order rotated each round; side -> merged R.

    A side named ``off`` is driven with ``--expect-guard off`` (no outcome checks), the others with ``on``.
    """
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in urls}
    names = list(urls)
    for i in range(rounds):
        for side in names[i % len(names):] + names[:i % len(names)]:
            runs[side].append(locust(urls[side], users, seconds / rounds, out, f"{tag}_{side}_{i}",
                                     expect_guard="off" if side == "off" else "on", max_tokens=max_tokens))
    return {side: merge(r) for side, r in runs.items()}


def saturation(steps: list[dict[str, Any]], limit_ms: float) -> tuple[float | None, bool]:
    """(guarded rps where added p95 crosses ``limit_ms``, whether it was crossed); see module docstring."""
    prev = None
    for step in steps:
        added = step["added_p95_ms"]
        if added is not None and added > limit_ms:
            if prev is None:
                return None, True
            frac = (limit_ms - prev["added_p95_ms"]) / (added - prev["added_p95_ms"])
            return round(prev["rps"] + frac * (step["rps"] - prev["rps"]), 1), True
        prev = step
    return (steps[-1]["rps"] if steps else None), False


def table(result: dict[str, Any]) -> str:
    on, off, vs = result["guard_on"], result["guard_off"], result.get("versus")
    head = "| | guard on | guard off | added |" + (" versus | versus added |" if vs else "")
    rows = [head, "|---|---|---|---|" + ("---|---|" if vs else "")]
    for key in R_KEYS:
        added = _diff(on, off, key) if key.endswith("_ms") else None
        row = f"| {key} | {on[key]} | {off[key]} | {'' if added is None else added} |"
        if vs:
            vs_added = _diff(vs, off, key) if key.endswith("_ms") else None
            row += f" {vs[key]} | {'' if vs_added is None else vs_added} |"
        rows.append(row)
    if vs:
        rows += ["", f"versus ({' '.join(result['versus_args'])}): rps {result['versus_rps_ratio']}x guard on's"]
    if result["light_added_p50_ms"] is not None:
        rows += ["", f"light (1 user, instant engine): added p50 {result['light_added_p50_ms']} ms"]
    if result["saturation_steps"]:
        rows += ["", "| users | guarded rps | unguarded rps | added p50 ms | added p95 ms |", "|---|---|---|---|---|"]
        rows += [f"| {s['users']} | {s['rps']} | {s['off_rps']} | {s['added_p50_ms']} | {s['added_p95_ms']} |"
                 for s in result["saturation_steps"]]
        sat = result["saturation_rps"]
        rows += ["", f"saturation: {sat} guarded requests/s at added p95 {result['config']['saturation_p95_ms']} ms"
                 + ("" if result["saturation_reached"] else " (not reached: the largest step's rps)")]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    common = ["--guard-threads", str(args.guard_threads), "--max-queue", "1024", *args.serve_arg]
    started = datetime.now(timezone.utc)

    def servers(stack: ExitStack, latency: float, tag: str, versus: list[str]) -> dict[str, str]:
        engine = ["--engine", args.engine]
        if args.engine == "fake":
            engine += ["--model", str(_script(Path(stack.enter_context(tempfile.TemporaryDirectory())) / "s.json", latency))]
        urls = {"on": stack.enter_context(server([*engine, *common, "--guard-mode", "block"], out / f"server_{tag}_on.log")),
                "off": stack.enter_context(server([*engine, *common, "--guard-mode", "off"], out / f"server_{tag}_off.log"))}
        if versus:
            urls["versus"] = stack.enter_context(server([*engine, *common, "--guard-mode", "block", *versus],
                                                        out / f"server_{tag}_versus.log"))
        return urls

    with ExitStack() as stack:
        urls = servers(stack, args.engine_latency_s, "users", args.versus_arg)
        users_run = side_by_side(urls, args.users, args.duration, args.rounds, out, "users", args.max_tokens)
    guard_on, guard_off = users_run["on"], users_run["off"]
    light_on = light_off = None
    steps: list[dict[str, Any]] = []
    if not args.skip_light_and_saturation:
        with ExitStack() as stack:
            urls = servers(stack, 0.0, "instant", [])
            light = side_by_side(urls, 1, args.light_duration, args.rounds, out, "light", args.max_tokens)
            light_on, light_off = light["on"], light["off"]
            users = 1
            while users <= args.saturation_max_users:
                step = side_by_side(urls, users, args.saturation_duration, args.rounds, out, f"sat{users}",
                                    args.max_tokens)
                s_on, s_off = step["on"], step["off"]
                steps.append({"users": users, "rps": s_on["rps"], "off_rps": s_off["rps"],
                              "added_p50_ms": _diff(s_on, s_off, "p50_ms"), "added_p95_ms": _diff(s_on, s_off, "p95_ms"),
                              "errors_5xx": s_on["errors_5xx"] + s_off["errors_5xx"]})
                users *= 2
    sat_rps, reached = saturation(steps, args.saturation_p95_ms)
    result = {
        "guard_on": {k: guard_on[k] for k in R_KEYS}, "guard_off": {k: guard_off[k] for k in R_KEYS},
        "added_p50_ms": _diff(guard_on, guard_off, "p50_ms"), "added_p95_ms": _diff(guard_on, guard_off, "p95_ms"),
        "light_added_p50_ms": _diff(light_on, light_off, "p50_ms") if light_on else None,
        "saturation_rps": sat_rps, "saturation_reached": reached, "saturation_steps": steps,
        "outcomes": {"misses": guard_on["misses"], "false_positives": guard_on["false_positives"]},
        **({"versus": {k: users_run["versus"][k] for k in R_KEYS}, "versus_args": args.versus_arg,
            "versus_added_p50_ms": _diff(users_run["versus"], guard_off, "p50_ms"),
            "versus_added_p95_ms": _diff(users_run["versus"], guard_off, "p95_ms"),
            "versus_rps_ratio": round(users_run["versus"]["rps"] / guard_on["rps"], 3) if guard_on["rps"] else None}
           if "versus" in users_run else {}),
        "config": {"users": args.users, "duration_s": args.duration, "engine": args.engine,
                   "engine_latency_s": args.engine_latency_s if args.engine == "fake" else None,
                   "rounds": args.rounds, "guard_threads": args.guard_threads, "serve_args": args.serve_arg,
                   "saturation_p95_ms": args.saturation_p95_ms, "started": started.isoformat(timespec="seconds"),
                   "machine": f"{platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}"},
    }
    (out / "overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    text = table(result)
    (out / "overhead.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
