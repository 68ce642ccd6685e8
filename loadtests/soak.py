"""Soak test: Locust against a SPA-Guard server for N minutes while its process is watched.

    .venv/bin/python loadtests/soak.py --minutes 30 --users 16          # by hand: long
    .venv/bin/python loadtests/soak.py --seconds 40 --users 6           # CI (tests/integration/test_soak.py)
    .venv/bin/python loadtests/soak.py --host http://127.0.0.1:8000 --pid 1234 --minutes 10

Without ``--host`` it starts ``spaguard serve`` itself on a free loopback port (the scripted
engine ``--engine fake`` and the shipped classifier, or ``--serve-args ...`` of your own) and
stops it at the end. The traffic is ``loadtests/locustfile.py`` run through ``loadtests/run.sh``
(benign and harmful text, images, streams, moderations); Locust's own SLO line is reported, not
judged here. Every ``--sample-s`` seconds the server process is sampled: RSS, open file
descriptors, and the event loop's task count (``/health``'s ``tasks``).

The run passes (exit 0) when, all at once:
* the server answered no 5xx at all (its own ``guard_http_requests_total``);
* RSS grew by at most ``--max-rss-slope-mb-min`` MB per minute (least-squares slope over the
  samples after the first third of the run, when caches and allocator pools have filled);
* after the load stops and ``--settle-s`` passes, open descriptors are back within ``--fd-slack``
  of the idle baseline and tasks within ``--task-slack``: nothing leaked per request.

It writes ``OUT/soak.json`` (figures, samples, verdict) and prints one ``SOAK {...}`` line.
Only loopback targets are allowed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import psutil

from service import launch

ROOT = Path(__file__).resolve().parent.parent
RUN_SH = ROOT / "loadtests" / "run.sh"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SCRIPT = {"model_name": "soak-vlm", "chunk_delay_s": 0.01,
          "default": {"chunks": ["A ", "calm ", "and ", "harmless ", "answer."]}}


@dataclass(frozen=True)
class Sample:
    t_s: float  # seconds since the load started
    rss_mb: float
    fds: int
    tasks: int


@dataclass(frozen=True)
class Limits:
    max_rss_slope_mb_min: float
    fd_slack: int
    task_slack: int


def rss_slope_mb_min(samples: list[Sample]) -> float:
    """Least-squares RSS slope (MB/min) over the samples after the first third of the run."""
    if not samples:
        return 0.0
    end = samples[-1].t_s
    tail = [s for s in samples if s.t_s >= end / 3] or samples
    if len(tail) < 2:
        return 0.0
    n = len(tail)
    mean_t = sum(s.t_s for s in tail) / n
    mean_r = sum(s.rss_mb for s in tail) / n
    var = sum((s.t_s - mean_t) ** 2 for s in tail)
    if var == 0:
        return 0.0
    cov = sum((s.t_s - mean_t) * (s.rss_mb - mean_r) for s in tail)
    return cov / var * 60.0


def judge(baseline: Sample, samples: list[Sample], after: Sample, five_xx: int, requests: int,
          limits: Limits) -> dict[str, Any]:
    """The verdict of one soak run (pure: the figures in, the checks out)."""
    slope = rss_slope_mb_min(samples)
    checks = {
        "served_requests": requests > 0,
        "zero_5xx": five_xx == 0,
        "rss_slope": slope <= limits.max_rss_slope_mb_min,
        "no_fd_leak": after.fds <= baseline.fds + limits.fd_slack,
        "no_task_leak": after.tasks <= baseline.tasks + limits.task_slack,
    }
    return {"pass": all(checks.values()), "checks": checks, "requests": requests, "five_xx": five_xx,
            "rss_slope_mb_min": round(slope, 2), "rss_start_mb": round(baseline.rss_mb, 1),
            "rss_end_mb": round(after.rss_mb, 1), "fds": [baseline.fds, after.fds],
            "tasks": [baseline.tasks, after.tasks]}


def sample(proc: psutil.Process, base: str, t_s: float) -> Sample:
    tasks = int(httpx.get(f"{base}/health", timeout=30).json().get("tasks", -1))
    return Sample(t_s, proc.memory_info().rss / 2**20, proc.num_fds(), tasks)


def http_counts(base: str) -> tuple[int, int]:
    """(requests, 5xx answers) from the server's own ``guard_http_requests_total``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = five_xx = 0
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics", timeout=30).text):
        for s in family.samples:
            if s.name == "guard_http_requests_total":
                total += int(s.value)
                five_xx += int(s.value) if s.labels["status"].startswith("5") else 0
    return total, five_xx


def start_server(serve_args: list[str], log: Path, timeout_s: float = 300.0) -> tuple[subprocess.Popen, str]:
    """``spaguard serve`` on a free loopback port; returns (process, base URL) once healthy.

    The soak samples the server's own process (RSS, fds, tasks), so it keeps the ``Popen`` rather than
    using ``service.launch.spaguard_server``'s context manager.
    """
    port = launch.free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen([str(launch.SPAGUARD), "serve", "--host", "127.0.0.1", "--port", str(port),
                                 *serve_args], stdout=out, stderr=subprocess.STDOUT, env=launch.offline_env())
    base = f"http://127.0.0.1:{port}"
    try:
        launch.wait_ready(f"{base}/health", proc, timeout_s=timeout_s, log=log, interval_s=0.5)
    except BaseException:
        launch.stop(proc, grace_s=0, sig=signal.SIGKILL)
        raise
    return proc, base


def run_locust(base: str, out: Path, seconds: int, users: int) -> subprocess.Popen:
    env = dict(os.environ, HOST=base, LOCUST_OUT_DIR=str(out), PYTHONPATH=str(ROOT))
    args = ["bash", str(RUN_SH), "--name", "soak", "-u", str(users), "-r", str(users), "-t", f"{seconds}s",
            "--p95-ms", "600000", "--max-429-rate", "1"]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def soak(base: str, pid: int, out: Path, seconds: int, users: int, sample_s: float, settle_s: float,
         limits: Limits) -> dict[str, Any]:
    proc = psutil.Process(pid)
    baseline = sample(proc, base, 0.0)
    requests_before, _ = http_counts(base)
    locust = run_locust(base, out, seconds, users)
    started, samples = time.monotonic(), []
    hard_stop = started + seconds + 120  # Locust stops itself at -t; this bounds a stuck run
    while locust.poll() is None and time.monotonic() < hard_stop:
        time.sleep(sample_s)
        samples.append(sample(proc, base, time.monotonic() - started))
    if locust.poll() is None:
        locust.kill()
    locust_out = locust.communicate()[0] or ""
    time.sleep(settle_s)
    after = sample(proc, base, time.monotonic() - started)
    requests_after, five_xx = http_counts(base)
    verdict = judge(baseline, samples, after, five_xx, requests_after - requests_before, limits)
    slo = [ln[4:] for ln in locust_out.splitlines() if ln.startswith("SLO ")]
    verdict |= {"seconds": seconds, "users": users, "locust_rc": locust.returncode,
                "locust_slo": json.loads(slo[-1]) if slo else None,
                "samples": [asdict(s) for s in samples]}
    return verdict


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    length = p.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="length of the load (default 1)")
    length.add_argument("--seconds", type=int, help="length of the load, in seconds")
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--host", help="a running server (loopback only); default: start one")
    p.add_argument("--pid", type=int, help="its process id (required with --host)")
    p.add_argument("--serve-args", nargs=argparse.REMAINDER, default=None,
                   help="arguments for the spaguard serve this script starts (default: fake engine)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "soak")
    p.add_argument("--sample-s", type=float, default=2.0)
    p.add_argument("--settle-s", type=float, default=5.0)
    p.add_argument("--max-rss-slope-mb-min", type=float, default=30.0)
    p.add_argument("--fd-slack", type=int, default=8)
    p.add_argument("--task-slack", type=int, default=4)
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    seconds = args.seconds if args.seconds is not None else int((args.minutes or 1.0) * 60)
    if seconds < 1 or args.users < 1:
        print("soak: --seconds/--minutes and --users must be positive", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    limits = Limits(args.max_rss_slope_mb_min, args.fd_slack, args.task_slack)
    server = None
    if args.host:
        if urlparse(args.host).hostname not in LOOPBACK or args.pid is None:
            print("soak: --host must be a loopback URL and needs --pid", file=sys.stderr)
            return 2
        base, pid = args.host.rstrip("/"), args.pid
    else:
        script = Path(tempfile.mkdtemp(prefix="soak-")) / "script.json"
        script.write_text(json.dumps(SCRIPT))
        serve_args = args.serve_args or ["--engine", "fake", "--model", str(script), "--guard-threads", "1"]
        server, base = start_server(serve_args, args.out / "serve.log")
        pid = server.pid
    try:
        verdict = soak(base, pid, args.out, seconds, args.users, args.sample_s, args.settle_s, limits)
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
    (args.out / "soak.json").write_text(json.dumps(verdict, indent=1))
    print("SOAK " + json.dumps({k: v for k, v in verdict.items() if k != "samples"}))
    return 0 if verdict["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
