"""``loadtests/compare.py``'s arithmetic: merging rounds, the saturation crossing, the report table.
Its Locust runs against real servers: tests/integration/test_loadtest_outcomes.py."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.tiny import REPO_ROOT

# ``python loadtests/compare.py`` runs with its folder on sys.path, where it finds percentiles.py.
sys.path.insert(0, str(REPO_ROOT / "loadtests"))
_spec = importlib.util.spec_from_file_location("loadtests_compare", REPO_ROOT / "loadtests" / "compare.py")
compare = importlib.util.module_from_spec(_spec)
sys.modules["loadtests_compare"] = compare
_spec.loader.exec_module(compare)


def _r(requests: int, rps: float, p50: float, p95: float = 0.0, errors: int = 0,
       times: list[float] | None = None, ttft: list[float] | None = None) -> dict:
    return {"requests": requests, "rps": rps, "p50_ms": p50, "p95_ms": p95, "p99_ms": p95, "ttft_p50_ms": None,
            "errors_5xx": errors, "http_times_ms": times if times is not None else [p50] * requests,
            "ttft_times_ms": ttft or []}


def test_merge_pools_the_rounds_times_and_takes_rps_over_their_time() -> None:
    merged = compare.merge([_r(100, 10.0, 20.0, errors=1), _r(300, 30.0, 40.0, errors=2)])
    assert merged["requests"] == 400 and merged["errors_5xx"] == 3
    assert merged["p50_ms"] == 40.0  # 300 of the 400 pooled times are 40 ms
    assert merged["rps"] == pytest.approx(20.0)  # 400 requests over 10 s + 10 s
    assert merged["ttft_p50_ms"] is None


def test_merge_percentiles_are_exact_not_locusts_rounded_ones() -> None:
    # Locust's histogram would report all of these as 1000 or 1100 ms; the guard's 4 ms must stay visible.
    on = compare.merge([_r(4, 4.0, 0, times=[1004.2, 1004.9, 1005.1, 1180.0], ttft=[110.5, 112.0])])
    off = compare.merge([_r(4, 4.0, 0, times=[1000.3, 1000.8, 1001.0, 1150.0])])
    assert (on["p50_ms"], off["p50_ms"]) == (1004.9, 1000.8)
    assert on["p95_ms"] == 1180.0 and on["ttft_p50_ms"] == 110.5
    assert compare._diff(on, off, "p50_ms") == pytest.approx(4.1)


def test_percentile_is_nearest_rank() -> None:
    from percentiles import percentile

    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0 and percentile([1.0, 2.0, 3.0, 4.0], 0.51) == 3.0
    assert percentile(list(range(1, 101)), 0.95) == 95 and percentile(list(range(1, 101)), 1.0) == 100
    with pytest.raises(ValueError):
        percentile([1.0], 0.0)


def _step(users: int, rps: float, added_p95: float) -> dict:
    return {"users": users, "rps": rps, "added_p95_ms": added_p95}


def test_saturation_interpolates_to_the_crossing() -> None:
    steps = [_step(1, 50, 20), _step(2, 100, 60), _step(4, 150, 140)]
    rps, crossed = compare.saturation(steps, 100.0)
    assert crossed and rps == pytest.approx(125.0)  # halfway from 60 to 140 ms -> halfway 100 -> 150 rps


def test_saturation_not_reached_and_crossed_at_once() -> None:
    assert compare.saturation([_step(1, 50, 20), _step(2, 90, 40)], 100.0) == (90, False)
    assert compare.saturation([_step(1, 50, 120)], 100.0) == (None, True)


def test_table_lists_every_r_key() -> None:
    side = {k: 1.0 for k in compare.R_KEYS}
    result = {"guard_on": side, "guard_off": side, "light_added_p50_ms": 3.0, "saturation_rps": 42.0,
              "saturation_reached": True, "saturation_steps": [{"users": 1, "rps": 1, "off_rps": 2,
                                                                "added_p50_ms": 0, "added_p95_ms": 0}],
              "config": {"saturation_p95_ms": 100.0}}
    text = compare.table(result)
    for key in compare.R_KEYS:
        assert f"| {key} |" in text
    assert "saturation: 42.0" in text
