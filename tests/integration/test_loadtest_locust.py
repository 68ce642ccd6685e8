"""Real Locust, headless, against a real ``spaguard serve`` subprocess (loopback only).

1. The embedded tiny VLM behind a classifier (the shipped default when built, else a tiny
   artifact): ``loadtests/run.sh -u 8 -r 8 -t 15s`` with generous SLOs exits 0, prints the SLO JSON
   line and writes a stats CSV with requests for every task of the locustfile.
2. A server that sheds load (``--max-queue 1``; a moderation call queues two items at once, so
   the second is refused with 429) and ``--max-429-rate 0``: the SLO check fails, exit code 1.

Both start a server and run Locust (about 1 minute each on the 2-core box): ``slow``. The argument
checks of ``run.sh`` are fast.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.serve_process import SHIPPED_ARTIFACT, spaguard_server, tiny_guard_artifact
from tests.tiny import REPO_ROOT

TTFT_TYPE = "TTFT"  # loadtests/locustfile.py's request type of the time-to-first-token entries


RUN_SH = REPO_ROOT / "loadtests" / "run.sh"


def _task_names() -> list[str]:
    """``TASK_WEIGHTS``'s keys, read without importing the locustfile (importing locust
    monkey-patches the process with gevent)."""
    tree = ast.parse((REPO_ROOT / "loadtests" / "locustfile.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "TASK_WEIGHTS":
            return list(ast.literal_eval(node.value))
    raise AssertionError("TASK_WEIGHTS not found in loadtests/locustfile.py")


def _guard_args(root: Path) -> list[str]:
    if (SHIPPED_ARTIFACT / "config.json").is_file():
        return ["--guard-threads", "1"]
    artifact = tiny_guard_artifact(root, prompt=False, response=False)
    return ["--guard-backend", "torch", "--guard-artifact", str(artifact), "--guard-threads", "1"]


def _locust(base: str, out: Path, name: str, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = dict(os.environ, HOST=base, LOCUST_OUT_DIR=str(out), PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(["bash", str(RUN_SH), "--name", name, *args], env=env,
                          capture_output=True, text=True, timeout=180)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("SLO ")]
    assert lines, f"no SLO line; rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc, json.loads(lines[-1][4:])


def _requests_by_name(stats_csv: Path) -> dict[str, int]:
    with stats_csv.open() as f:
        return {row["Name"]: int(row["Request Count"]) for row in csv.DictReader(f)}


@pytest.mark.slow
def test_locust_passes_generous_slos_and_covers_every_task(tmp_path: Path) -> None:
    args = ["--engine", "transformers", *_guard_args(tmp_path)]
    with spaguard_server(args, tmp_path / "serve.log") as base:
        proc, slo = _locust(base, tmp_path, "ok", "-u", "8", "-r", "8", "-t", "15s",
                            "--p95-ms", "120000", "--max-429-rate", "0.5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert slo["pass"] is True and slo["other_failures"] == 0 and slo["requests"] > 0
    counts = _requests_by_name(tmp_path / "ok_stats.csv")
    for task in _task_names():
        assert counts.get(task, 0) > 0, f"no {task} requests in {counts}"
    # The SLO line counts HTTP entries only (TTFT entries apart); the CSV's Aggregated row counts both, and
    # the two are snapshots taken at slightly different moments of the stop: requests in flight then (at most
    # one per user) may be in one and not the other.
    with (tmp_path / "ok_stats.csv").open() as f:
        http_csv = sum(int(r["Request Count"]) for r in csv.DictReader(f) if r["Name"] != "Aggregated"
                       and r["Type"] != TTFT_TYPE)
    assert 0 < http_csv and abs(http_csv - slo["requests"]) <= 8, (http_csv, slo["requests"])


@pytest.mark.slow
def test_locust_fails_when_the_server_sheds_load(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"model_name": "scripted", "default": {"chunks": ["Hi", " there."]}}))
    args = ["--engine", "fake", "--model", str(script), *_guard_args(tmp_path),
            "--max-batch-size", "1", "--max-queue", "1"]
    with spaguard_server(args, tmp_path / "serve.log") as base:
        proc, slo = _locust(base, tmp_path, "shed", "-u", "8", "-r", "8", "-t", "8s",
                            "--p95-ms", "120000", "--max-429-rate", "0")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert slo["pass"] is False and slo["rate_429"] > 0


@pytest.mark.parametrize(("host", "args", "message"), [
    ("http://10.1.2.3:8000", [], "refusing non-loopback"),
    ("http://example.com", [], "refusing non-loopback"),
    ("http://127.0.0.1:9", ["--bogus"], "unknown argument"),
    ("http://127.0.0.1:9", ["-u"], "needs a value"),
])
def test_run_sh_rejects_remote_hosts_and_bad_arguments(host: str, args: list[str], message: str) -> None:
    env = dict(os.environ, HOST=host)
    env.pop("ALLOW_REMOTE_HOST", None)
    proc = subprocess.run(["bash", str(RUN_SH), *args], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and message in proc.stderr
