"""Where a guarded request's time goes: ``spaguard serve --engine fake`` under py-spy, driven by Locust.

    .venv/bin/pip install --no-deps py-spy==0.4.3     # the dev extra pins it
    .venv/bin/python loadtests/profile_guard.py --out runs/profile/guard --users 1,8 --seconds 20

One guarded server (scripted instant engine, ``--guard-threads 2``; extra ``--serve-arg``s pass through)
runs under ``py-spy record --threads`` (collapsed stacks, 250 Hz); closed-loop Locust users of benign chat
(``loadtests/locustfile.py --mix benign``) run for ``--seconds`` per step. Writes under ``--out``:
``stacks.txt`` (py-spy's raw collapsed stacks, start-up included), ``metrics.txt`` (the server's
``/metrics`` at the end: ``guard_request_duration_seconds{stage=queue|inference|total}`` split a check's
time into queue wait and model call), ``u<N>.json`` (Locust summaries) and ``profile.md``: samples per
thread, and the children of the subtrees that matter (``subtree``): the batch thread's ``score``, the
featurizer, the event loop's busy time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

from service.launch import free_port, offline_env, wait_ready

ROOT = Path(__file__).resolve().parents[1]
CHUNKS = ["The", " sea", " is", " calm", " and", " the", " sand", " is", " warm", "."]
SUBTREES = (("_BackendBase.score", "guard-batch"), ("Featurizer.__call__", "guard-batch"),
            ("BaseEventLoop._run_once", "MainThread"), ("ServingChat._create", "MainThread"))


def parse_stacks(lines: list[str]) -> list[tuple[str, list[str], int]]:
    """py-spy ``--format raw`` lines -> (thread, frames root first, samples); line numbers dropped."""
    out = []
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [re.sub(r":\d+\)", ")", f) for f in stack.split(";")]
        out.append((re.sub(r"\s*\(\d+\)|0x[0-9a-f]+", "", frames[0]).strip(), frames[1:], int(count)))
    return out


def subtree(stacks: list[tuple[str, list[str], int]], root: str, thread: str = "") -> tuple[int, Counter[str]]:
    """(samples under the first frame starting with ``root``, samples per direct child; ``<self>`` = in it)."""
    children: Counter[str] = Counter()
    for name, frames, n in stacks:
        if thread not in name:
            continue
        at = next((i for i, f in enumerate(frames) if f.startswith(root)), None)
        if at is not None:
            children[frames[at + 1] if at + 1 < len(frames) else "<self>"] += n
    return sum(children.values()), children


def report(stacks: list[tuple[str, list[str], int]], rate_hz: int) -> str:
    """``profile.md``: samples per thread, then each of ``SUBTREES`` with its top children."""
    threads: Counter[str] = Counter()
    for name, _, n in stacks:
        threads[name] += n
    total = sum(threads.values()) or 1
    lines = ["| thread | samples | share |", "|---|---|---|"]
    lines += [f"| {t} | {n} | {100 * n / total:.1f} % |" for t, n in threads.most_common(8)]
    for root, thread in SUBTREES:
        n_root, children = subtree(stacks, root, thread)
        lines += ["", f"**{root}** ({thread}): {n_root} samples = {n_root / rate_hz:.1f} s", ""]
        lines += [f"- {100 * n / max(n_root, 1):.1f} % {child}" for child, n in children.most_common(8)]
    return "\n".join(lines) + "\n"


def _locust(base: str, users: int, seconds: int, summary: Path) -> dict[str, object]:
    cmd = [str(Path(sys.executable).with_name("locust")), "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless",
           "--only-summary", "-H", base, "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--stop-timeout", "10",
           "--mix", "benign", "--wait-ms", "0", "--expect-guard", "on", "--max-tokens", "16", "--p95-ms", "1e9",
           "--max-429-rate", "1", "--summary-json", str(summary)]
    subprocess.run(cmd, capture_output=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=seconds + 120)
    return json.loads(summary.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--users", default="1,8", help="comma-separated Locust user counts, one step each")
    p.add_argument("--seconds", type=int, default=20, help="seconds per step")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--serve-arg", action="append", default=[], help="extra `spaguard serve` argument (repeat)")
    args = p.parse_args(argv)
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.is_file():
        raise SystemExit(f"{spy} not found: .venv/bin/pip install --no-deps py-spy==0.4.3")
    args.out.mkdir(parents=True, exist_ok=True)
    script = args.out / "engine.json"
    script.write_text(json.dumps({"model_name": "scripted", "chunk_delay_s": 0.0, "default": {"chunks": CHUNKS}}))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [str(spy), "record", "-r", str(args.rate), "--format", "raw", "-o", str(args.out / "stacks.txt"), "--threads",
           "--nonblocking", "--", str(Path(sys.executable).with_name("spaguard")), "serve", "--host", "127.0.0.1",
           "--port", str(port), "--engine", "fake", "--model", str(script), "--guard-threads", "2",
           "--log-level", "warning", *args.serve_arg]
    with (args.out / "server.log").open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=offline_env())
        try:
            wait_ready(base + "/health", proc, timeout_s=300)
            for users in (int(u) for u in args.users.split(",")):
                summary = _locust(base, users, args.seconds, args.out / f"u{users}.json")
                print(users, "users:", {k: summary.get(k) for k in ("rps", "p50_ms", "p95_ms", "requests", "errors_5xx")},
                      "load", os.getloadavg(), flush=True)
            (args.out / "metrics.txt").write_text(urllib.request.urlopen(base + "/metrics", timeout=10).read().decode())
        finally:
            # The server is py-spy's child: stop it, and py-spy writes its file and exits.
            for child in subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True,
                                        text=True).stdout.split():
                os.kill(int(child), signal.SIGINT)
            proc.wait(120)
    text = report(parse_stacks((args.out / "stacks.txt").read_text().splitlines()), args.rate)
    (args.out / "profile.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
