"""The README's "One-minute tour", run as written against ``make serve``'s configuration.

Every fenced ``bash`` block of the tour runs in the repository root, with the tour's ``localhost:8000`` pointed at
a ``spaguard serve`` started by the test (no options, as ``make serve`` starts it: SmolLM2 + the shipped guard in
block mode) and ``.venv/bin/python`` as this interpreter. A ``text`` block after a command is its printed output:
it must match exactly, except that JSON lines are compared as JSON without ``created`` (a timestamp). A step whose
prose says to start the server again with ``make serve ARGS="..."`` runs, with every later step, on a server
started with those arguments.

Run ``python -m tests.e2e.test_e2e_tour`` to print what each step prints now (to update the README after a
deliberate change of model, guard or tour).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.serve_process import SHIPPED_ARTIFACT, spaguard_server
from tests.tiny import REPO_ROOT

README = REPO_ROOT / "README.md"
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```\n", re.M | re.S)
_RESTART = re.compile(r'start it again with `make serve ARGS="([^"]*)"`')
_VOLATILE = {"created"}


@dataclass(frozen=True)
class Step:
    """One command of the tour, what it must print (None: anything, exit 0), and the server it talks to."""

    index: int
    command: str
    expected: str | None
    server_args: tuple[str, ...]


def tour_section(text: str) -> str:
    start = text.index("## One-minute tour")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def tour_steps(text: str | None = None) -> list[Step]:
    """The tour's commands in order, each paired with the ``text`` block that follows it, if any."""
    section = tour_section(README.read_text() if text is None else text)
    steps: list[Step] = []
    args: tuple[str, ...] = ()
    pos = 0
    for match in _BLOCK.finditer(section):
        for restart in _RESTART.finditer(section, pos, match.start()):
            args = tuple(shlex.split(restart.group(1)))
        lang, body = match.groups()
        if lang == "bash":
            steps.append(Step(len(steps) + 1, body, None, args))
        elif lang == "text" and steps and steps[-1].expected is None:
            steps[-1] = Step(steps[-1].index, steps[-1].command, body, steps[-1].server_args)
        pos = match.end()
    return steps


def run_step(step: Step, base: str) -> subprocess.CompletedProcess:
    port = base.rsplit(":", 1)[1]
    command = (step.command.replace("localhost:8000", f"127.0.0.1:{port}")
               .replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace(".venv/bin/python", sys.executable))
    return subprocess.run(["bash", "-c", command], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


def _json_or_text(line: str) -> Any:
    try:
        return _drop_volatile(json.loads(line))
    except json.JSONDecodeError:
        return line.rstrip()


def _drop_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_volatile(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_drop_volatile(v) for v in value]
    return value


def printed(output: str) -> list[Any]:
    """What a step printed, line by line, JSON lines parsed (timestamps dropped)."""
    return [_json_or_text(line) for line in output.rstrip("\n").split("\n")]


STEPS = tour_steps()


def test_the_tour_has_the_steps_the_issue_asks_for() -> None:
    """Parsing guard: the tour still shows (and checks) the model card, a benign answer, a refused prompt, a
    stream cut by the response guard, the image requests and the annotate verdicts."""
    checked = [s for s in STEPS if s.expected]
    expected = "\n".join(s.expected for s in checked)
    assert len(checked) >= 6 and '"random_weights":false' in checked[0].expected
    assert expected.count("content_filter") >= 3 and "prompt: flagged=False" in expected
    assert "response: flagged=True" in expected
    assert [s.server_args for s in STEPS][-1] == ("--guard-mode", "annotate") and STEPS[0].server_args == ()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, ...], str]]:
    """One server per distinct ``server_args``, started on first use (each holds SmolLM2 + the guard)."""
    root = tmp_path_factory.mktemp("tour")
    started: dict[tuple[str, ...], str] = {}
    with ExitStack() as stack:

        class _Lazy(dict):
            def __missing__(self, args: tuple[str, ...]) -> str:
                log = root / f"serve{len(started)}.log"
                started[args] = stack.enter_context(spaguard_server(list(args), log, timeout_s=400))
                return started[args]

        yield _Lazy()


@pytest.mark.slow
@pytest.mark.skipif(not (SHIPPED_ARTIFACT / "config.json").is_file(), reason="the shipped classifier is not built")
@pytest.mark.parametrize("step", STEPS, ids=[f"step{s.index}" for s in STEPS])
def test_tour_step_prints_what_the_readme_says(step: Step, servers: dict[tuple[str, ...], str]) -> None:
    proc = run_step(step, servers[step.server_args])
    assert proc.returncode == 0, proc.stderr[-3000:]
    if step.expected is None:
        assert proc.stdout.strip(), "the step printed nothing"
    else:
        assert printed(proc.stdout) == printed(step.expected), proc.stdout


def main() -> int:
    """Print what every tour step prints now, against freshly started servers."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        bases: dict[tuple[str, ...], str] = {}
        for step in STEPS:
            if step.server_args not in bases:
                log = Path(tmp) / f"serve{len(bases)}.log"
                bases[step.server_args] = stack.enter_context(spaguard_server(list(step.server_args), log, 400))
            proc = run_step(step, bases[step.server_args])
            print(f"--- step {step.index} (server args {list(step.server_args)}), rc {proc.returncode}")
            print(proc.stdout, end="")
            if proc.returncode:
                print(proc.stderr[-2000:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
