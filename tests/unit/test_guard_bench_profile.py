"""``loadtests/profile_guard.py``'s reading of py-spy's collapsed stacks: per thread, and a subtree's children.
The profiler run itself needs py-spy and a server (``loadtests/profile_guard.py``, docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
import sys

from tests.tiny import REPO_ROOT

_spec = importlib.util.spec_from_file_location("loadtests_profile_guard", REPO_ROOT / "loadtests" / "profile_guard.py")
profile_guard = importlib.util.module_from_spec(_spec)
sys.modules["loadtests_profile_guard"] = profile_guard
_spec.loader.exec_module(profile_guard)

RAW = [
    "thread (1234): guard-batch_0;_worker (thread.py:89);_BackendBase.score (models/backends.py:98);"
    "OnnxBackend._logits (models/backends.py:271);Session.run (ort.py:220) 90",
    "thread (1234): guard-batch_0;_worker (thread.py:89);_BackendBase.score (models/backends.py:97);"
    "OnnxBackend._prepare (models/backends.py:268) 8",
    "thread (1234): guard-batch_0;_worker (thread.py:89);_BackendBase.score (models/backends.py:99) 2",
    "thread (1200): MainThread;BaseEventLoop._run_once (base_events.py:1900);EpollSelector.select (s.py:468) 30",
    "not a stack line",
]


def test_stacks_parse_per_thread_with_line_numbers_dropped() -> None:
    stacks = profile_guard.parse_stacks(RAW)
    assert [(t, n) for t, _, n in stacks] == [("thread: guard-batch_0", 90), ("thread: guard-batch_0", 8),
                                            ("thread: guard-batch_0", 2), ("thread: MainThread", 30)]
    assert stacks[0][1][1] == "_BackendBase.score (models/backends.py)"  # one frame whatever line it was on


def test_subtree_counts_children_and_self_in_the_named_thread_only() -> None:
    stacks = profile_guard.parse_stacks(RAW)
    total, children = profile_guard.subtree(stacks, "_BackendBase.score", "guard-batch")
    assert total == 100
    assert children == {"OnnxBackend._logits (models/backends.py)": 90, "OnnxBackend._prepare (models/backends.py)": 8,
                        "<self>": 2}
    assert profile_guard.subtree(stacks, "_BackendBase.score", "MainThread") == (0, {})
    text = profile_guard.report(stacks, rate_hz=100)
    assert "| thread: guard-batch_0 | 100 | 76.9 % |" in text and "100 samples = 1.0 s" in text
