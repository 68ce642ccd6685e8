"""pytest plugin: ``docs/reliability.md``, every hostile-input and fault case with its result.

A test states its case with a marker; the run records what happened and, given
``--reliability-doc PATH`` (``make test`` and ``make test-slow`` pass it), rewrites the document::

    @pytest.mark.reliability("hostile input", "lone surrogate in a content string", "400, not a guard failure")
    def test_...

Parametrized tests get one row per parameter set (the id is appended to the case). The document
keeps its data as JSON in a trailing HTML comment, so runs of different suites (fast in
``make test``, slow in ``make test-slow``) each update their own rows and keep the others; a row
whose test no longer exists (not collected from its file, or its file or function gone) is
dropped. Nothing here changes a test's outcome.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest

_DATA = re.compile(r"<!-- reliability-data\n(.*?)\n-->", re.S)
_RESULTS = pytest.StashKey[dict[str, dict[str, Any]]]()
_COLLECTED = pytest.StashKey[set[str]]()  # every test id collected, deselected ones included
_ROOT = Path(__file__).resolve().parent.parent
_MARK_HELP = "reliability(area, case, expected): a row of docs/reliability.md (tests/reliability.py)"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--reliability-doc", default=None, metavar="PATH",
                     help="rewrite this markdown file with the reliability cases of this run")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARK_HELP)
    config.stash[_RESULTS] = {}
    config.stash[_COLLECTED] = set()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Before ``-m``/``-k`` deselect anything: a row whose test was not even collected from its
    file any more (a renamed parameter, a deleted test) is dropped from the document."""
    config.stash[_COLLECTED].update(item.nodeid for item in items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    mark = item.get_closest_marker("reliability")
    if mark is None:
        return report
    results = item.config.stash[_RESULTS]
    failed_before = results.get(item.nodeid, {}).get("result") == "fail"
    if report.when == "call" or report.failed or report.skipped:
        result = _result(report)
        if not (failed_before and result == "pass"):  # a failed setup stays failed
            area, case, expected = mark.args
            param = getattr(item, "callspec", None)
            results[item.nodeid] = {
                "area": area, "case": f"{case} [{param.id}]" if param else case,
                "expected": expected, "result": result,
                "seconds": round(getattr(report, "duration", 0.0), 2),
                "suite": "slow" if item.get_closest_marker("slow") else "fast",
            }
    return report


def _result(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return "expected failure" if report.skipped else "pass (xfail fixed)"
    if report.skipped:
        return "skipped"
    return "pass" if report.passed else "fail"


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--reliability-doc")
    results = session.config.stash.get(_RESULTS, {})
    if path is None or not results:
        return
    doc = Path(path)
    collected = session.config.stash[_COLLECTED]
    files = {nodeid.split("::")[0] for nodeid in collected}
    rows = {nodeid: row for nodeid, row in _previous_rows(doc).items()
            if nodeid in collected or nodeid.split("::")[0] not in files}
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for nodeid, row in results.items():
        rows[nodeid] = {**row, "ran": stamp}
    doc.write_text(render(rows, stamp))


def _previous_rows(doc: Path) -> dict[str, dict[str, Any]]:
    """Rows of earlier runs whose test still exists (its file and function are still there)."""
    if not doc.is_file():
        return {}
    match = _DATA.search(doc.read_text())
    if match is None:
        return {}
    try:
        rows = json.loads(match.group(1))
    except ValueError:
        return {}
    return {nodeid: row for nodeid, row in rows.items() if _still_exists(nodeid)}


def _still_exists(nodeid: str) -> bool:
    file, _, rest = nodeid.partition("::")
    source = _ROOT / file
    # The parameter id goes first: it may hold "::" itself (IPv6 forms such as "[::ffff:7f00:1]").
    name = rest.split("[", 1)[0].split("::")[-1]
    return source.is_file() and f"def {name}(" in source.read_text()


def render(rows: dict[str, dict[str, Any]], stamp: str) -> str:
    """The markdown document for ``rows`` (nodeid → row), data comment included."""
    counts: dict[str, int] = {}
    for row in rows.values():
        counts[row["result"]] = counts.get(row["result"], 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    lines = [
        "# Reliability: hostile inputs, faults, fuzzing and soak",
        "",
        "Every case the hardening tests check (issue 11), what the server must do, and what it did",
        "in the latest run that included the case. **Generated** by `tests/reliability.py` from the",
        "test run: `make test` refreshes the fast cases, `make test-slow` the slow ones (soak, long",
        "fuzzing); do not edit by hand. A case's test is named in its row.",
        "",
        f"Last written {stamp}: {len(rows)} cases ({summary}).",
    ]
    areas: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for nodeid, row in sorted(rows.items(), key=lambda kv: (kv[1]["area"], kv[0])):
        areas.setdefault(row["area"], []).append((nodeid, row))
    for area, members in areas.items():
        lines += ["", f"## {area}", "", "| case | must be | result | suite, run | test |",
                  "|---|---|---|---|---|"]
        for nodeid, row in members:
            test = nodeid.split("::", 1)[-1]
            cells = [row["case"], row["expected"], f"**{row['result']}**",
                     f"{row['suite']}, {row['ran']}", f"`{nodeid.split('::')[0]}::{test}`"]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    data = json.dumps(rows, indent=1, sort_keys=True)
    return "\n".join(lines) + f"\n\n<!-- reliability-data\n{data}\n-->\n"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
