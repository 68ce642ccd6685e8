"""training/guard/demo_replies.py: the embedded model's answers to the demo prompts, as guard JSONL."""

from __future__ import annotations

import pytest

from training.guard.demo_replies import DEMO_PROMPTS, demo_replies, write_demo_replies
from training.guard.guard_data import read_guard_jsonl


def test_replies_are_written_as_safe_response_items(tmp_path):
    replies = [(p, f"answer {i}") for i, p in enumerate(DEMO_PROMPTS)]
    assert write_demo_replies(tmp_path / "d.jsonl", replies) == len(DEMO_PROMPTS)
    rows = read_guard_jsonl(tmp_path / "d.jsonl")
    assert [(r.prompt, r.response) for r in rows] == replies
    assert all(r.label_response == 0 and r.label_prompt is None and r.group == "demo_replies" for r in rows)
    assert len({r.uid for r in rows}) == len(rows)


def test_the_embedded_model_answers_every_demo_prompt():
    pytest.importorskip("gguf")
    got = demo_replies(max_new_tokens=6)
    assert [p for p, _ in got] == list(DEMO_PROMPTS)
    assert all(r.strip() for _, r in got), got
    # the real model, decoded greedily: a factual question gets its factual answer
    assert got[2][1].startswith("The capital of France"), got[2]
