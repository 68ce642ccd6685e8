"""Locust checks what the guard decided: real Locust (``loadtests/run.sh``) against real servers whose guard
is wrong on purpose, and ``loadtests/compare.py`` end to end on tiny durations.

1. A classifier that flags everything (``tiny_guard_artifact(prompt=True)``): every benign prompt is
   refused, so the run reports ``false_positive`` failures, no misses, and exits 1.
2. A server with ``--guard-mode off`` driven as if it were guarded (``--expect-guard on``): the harmful
   prompts are served, so the run reports ``miss`` failures and no false positives; with
   ``--expect-guard off`` the same server passes. Streams report ``stream_ttft`` as its own entry.
3. ``compare.py`` writes ``overhead.json`` with the shape issue 15 names.

``slow``: five server starts and short Locust runs (~3 min on the 2-core box).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.serve_process import SHIPPED_ARTIFACT, spaguard_server, tiny_guard_artifact
from tests.tiny import REPO_ROOT

pytestmark = pytest.mark.slow
RUN_SH = REPO_ROOT / "loadtests" / "run.sh"


def _script(tmp: Path) -> Path:
    path = tmp / "script.json"
    path.write_text(json.dumps({"model_name": "scripted", "default": {"chunks": ["Calm", " seas", " today", "."]}}))
    return path


def _run(base: str, out: Path, name: str, *args: str) -> tuple[int, dict, dict[str, dict]]:
    env = dict(os.environ, HOST=base, LOCUST_OUT_DIR=str(out), PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(["bash", str(RUN_SH), "--name", name, "-u", "4", "-r", "4", "-t", "8s",
                           "--p95-ms", "120000", "--max-429-rate", "0.5", *args],
                          env=env, capture_output=True, text=True, timeout=180)
    summary = json.loads((out / f"{name}.json").read_text())
    with (out / f"{name}_stats.csv").open() as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    return proc.returncode, summary, rows


def _failures(out: Path, name: str) -> dict[str, int]:
    with (out / f"{name}_failures.csv").open() as f:
        return {row["Error"]: int(row["Occurrences"]) for row in csv.DictReader(f)}


def test_a_guard_that_flags_everything_reports_false_positives(tmp_path: Path) -> None:
    artifact = tiny_guard_artifact(tmp_path, prompt=True, response=False)
    args = ["--engine", "fake", "--model", str(_script(tmp_path)), "--guard-backend", "torch",
            "--guard-artifact", str(artifact), "--guard-threads", "1"]
    with spaguard_server(args, tmp_path / "serve.log") as base:
        rc, summary, _ = _run(base, tmp_path, "fp")
    assert rc == 1 and summary["pass"] is False
    assert summary["false_positives"] > 0 and summary["misses"] == 0 and summary["errors_5xx"] == 0
    assert any("false_positive: benign prompt refused" in err for err in _failures(tmp_path, "fp"))


@pytest.mark.skipif(not (SHIPPED_ARTIFACT / "config.json").is_file(), reason="needs the shipped classifier")
def test_an_unguarded_server_reports_misses_and_streams_report_ttft(tmp_path: Path) -> None:
    args = ["--engine", "fake", "--model", str(_script(tmp_path)), "--guard-mode", "off", "--guard-threads", "1"]
    with spaguard_server(args, tmp_path / "serve.log") as base:
        rc, summary, rows = _run(base, tmp_path, "miss")
        rc_off, summary_off, _ = _run(base, tmp_path, "expect_off", "--expect-guard", "off")
    assert rc == 1 and summary["misses"] > 0 and summary["false_positives"] == 0
    assert any("miss: harmful prompt not refused" in err for err in _failures(tmp_path, "miss"))
    assert rc_off == 0 and summary_off["pass"] is True and summary_off["misses"] == 0
    assert rows["stream_ttft"]["Type"] == "TTFT" and int(rows["stream_ttft"]["Request Count"]) > 0
    assert summary["ttft_p50_ms"] is not None and summary["ttft_p50_ms"] <= summary["p99_ms"]


@pytest.mark.skipif(not (SHIPPED_ARTIFACT / "config.json").is_file(), reason="needs the shipped classifier")
def test_compare_writes_the_overhead_report(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "loadtests" / "compare.py"), "--users", "2",
                           "--duration", "4", "--rounds", "2", "--light-duration", "4", "--saturation-duration", "4",
                           "--saturation-max-users", "2", "--engine-latency-s", "0.2", "--guard-threads", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "overhead.json").read_text())
    keys = {"rps", "p50_ms", "p95_ms", "p99_ms", "ttft_p50_ms", "errors_5xx", "requests"}
    for side in ("guard_on", "guard_off"):
        assert set(report[side]) == keys and report[side]["requests"] > 0 and report[side]["errors_5xx"] == 0
    assert report["added_p50_ms"] == pytest.approx(report["guard_on"]["p50_ms"] - report["guard_off"]["p50_ms"], abs=0.01)
    # The guard scores every prompt and response: it cannot be free.
    assert report["added_p50_ms"] > 0 and report["light_added_p50_ms"] > 0
    assert [s["users"] for s in report["saturation_steps"]] == [1, 2]
    assert "saturation_rps" in report and report["outcomes"] == {"misses": 0, "false_positives": 0}
    assert "| p50_ms |" in (out / "overhead.md").read_text()
