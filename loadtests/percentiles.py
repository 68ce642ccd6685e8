"""Exact percentiles of measured response times, shared by the locustfile and ``loadtests/compare.py``.

Locust's own percentiles come from a histogram that rounds each time to 2 significant digits (10 ms steps
above 100 ms, 100 ms steps above 1 s): too coarse to see a guard's few milliseconds in front of a 1-s
engine. This module imports nothing but the standard library, so the locustfile (which Locust imports with
this folder on ``sys.path``) and compare.py (which must not import locust: it monkey-patches the process
with gevent) can both use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(times: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``times``, in their unit, rounded to 3 decimals;
    None when there are none. Nearest rank: the smallest time with at least ``q`` of them at or below it."""
    if not times:
        return None
    if not 0.0 < q <= 1.0:
        raise ValueError(f"q must be in (0, 1], got {q}")
    ordered = sorted(times)
    rank = max(1, math.ceil(round(q * len(ordered), 9)))
    return round(float(ordered[rank - 1]), 3)
