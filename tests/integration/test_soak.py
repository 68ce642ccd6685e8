"""``loadtests/soak.py`` (build item 5): its verdict logic on made-up samples (fast), and a short real
soak, Locust against a ``spaguard serve`` it starts on loopback (slow: about a minute and a half).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.tiny import REPO_ROOT


def _soak() -> ModuleType:
    if "soak" in sys.modules:
        return sys.modules["soak"]
    spec = importlib.util.spec_from_file_location("soak", REPO_ROOT / "loadtests" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module
    spec.loader.exec_module(module)
    return module


def _samples(rss: list[float], fds: int = 10, tasks: int = 4) -> list:
    Sample = _soak().Sample
    return [Sample(t_s=10.0 * i, rss_mb=r, fds=fds, tasks=tasks) for i, r in enumerate(rss)]


LIMITS = dict(max_rss_slope_mb_min=30.0, fd_slack=8, task_slack=4)


def test_slope_ignores_warm_up_and_measures_growth() -> None:
    soak = _soak()
    flat_after_warmup = _samples([100, 400, 500, 500, 501, 500, 500, 501, 500])
    assert abs(soak.rss_slope_mb_min(flat_after_warmup)) < 5
    leaking = _samples([500 + 20 * i for i in range(9)])  # 20 MB per 10 s = 120 MB/min
    assert soak.rss_slope_mb_min(leaking) == pytest.approx(120.0)


@pytest.mark.parametrize(("change", "failed"), [
    ({}, None), ({"five_xx": 1}, "zero_5xx"), ({"rss": [500 + 20 * i for i in range(9)]}, "rss_slope"),
    ({"fds_after": 40}, "no_fd_leak"), ({"tasks_after": 30}, "no_task_leak"), ({"requests": 0}, "served_requests"),
])
def test_judge_fails_each_check_on_its_own(change: dict, failed: str | None) -> None:
    soak = _soak()
    samples = _samples(change.get("rss", [500.0] * 9))
    baseline = soak.Sample(0.0, 480.0, 10, 4)
    after = soak.Sample(100.0, samples[-1].rss_mb, change.get("fds_after", 12), change.get("tasks_after", 5))
    verdict = soak.judge(baseline, samples, after, change.get("five_xx", 0), change.get("requests", 100),
                         soak.Limits(**LIMITS))
    assert verdict["pass"] is (failed is None)
    assert [k for k, ok in verdict["checks"].items() if not ok] == ([failed] if failed else [])


def test_soak_refuses_non_loopback_targets() -> None:
    rc = _soak().main(["--host", "http://10.0.0.1:8000", "--pid", "1", "--seconds", "1"])
    assert rc == 2


@pytest.mark.slow
@pytest.mark.reliability("soak", "Locust for 30 s (short CI soak; --minutes N by hand)", "zero 5xx, bounded RSS slope, no fd or task leak")
def test_short_soak_passes(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "loadtests" / "soak.py"), "--seconds", "30",
                           "--users", "6", "--out", str(tmp_path)], capture_output=True, text=True, timeout=400)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("SOAK ")]
    assert lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    verdict = json.loads(lines[-1][5:])
    assert proc.returncode == 0 and verdict["pass"], verdict
    assert verdict["requests"] > 50 and verdict["five_xx"] == 0
    assert json.loads((tmp_path / "soak.json").read_text())["samples"]
