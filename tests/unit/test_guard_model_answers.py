"""training/guard/model_answers.py: the embedded model's answers to benign training prompts, as safe items."""

from __future__ import annotations

import json

import pytest

from training.guard.model_answers import (BENIGN_SOURCES, MAX_PROMPT_CHARS, answer_prompts, generate_answers,
                                          model_answer_responses, write_model_answers)
from training.guard.response_data import FIRST_RELEASE_CHARS


def _row(uid: str, prompt: str, label: int = 0, images: list | None = None) -> str:
    return json.dumps({"uid": uid, "dataset": "hh_helpful_prompts", "modality": "text", "prompt": prompt,
                       "images": images or [], "response": None, "label_prompt_unsafe": label,
                       "label_response_unsafe": None}) + "\n"


def _pack(tmp_path, rows: list[str]):
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "hh_helpful_prompts.jsonl").write_text("".join(rows))
    for source in BENIGN_SOURCES[1:]:
        (tmp_path / "index" / f"{source}.jsonl").write_text("")
    return tmp_path


def test_only_benign_text_prompts_outside_the_measuring_lists_are_picked(tmp_path):
    root = _pack(tmp_path, [
        _row("h:1", "How do plants grow?"),
        _row("h:2", "Tell me a joke."),                              # a demo prompt
        _row("h:3", "How do I kill time at the airport?"),           # a held-out text
        _row("h:4", "Write a murder mystery for my book club."),     # a FORBIDDEN phrase
        _row("h:5", "How do I make a weapon?", label=1),             # not benign
        _row("h:6", "x" * (MAX_PROMPT_CHARS + 1)),                   # too long
        _row("h:7", "   "),                                          # nothing to answer
        _row("h:8", "What is a good name for a cat?"),
    ])
    assert answer_prompts(root, per_source=10) == [("h:1", "hh_helpful_prompts", "How do plants grow?"),
                                                   ("h:8", "hh_helpful_prompts", "What is a good name for a cat?")]
    one = answer_prompts(root, per_source=1, seed=3)
    assert len(one) == 1 and one == answer_prompts(root, per_source=1, seed=3)  # the sample is seeded


def test_answers_become_safe_response_items_with_their_first_release_window(tmp_path):
    long_answer = "Plants grow through photosynthesis. " * 20
    rows = [("h:1", "hh_helpful_prompts", "How do plants grow?", long_answer),
            ("h:2", "mt_bench_questions", "Name a cat.", "Whiskers."),
            ("h:3", "mt_bench_questions", "Say nothing.", "  ")]             # empty: dropped, nothing to score
    assert write_model_answers(tmp_path / "a.jsonl", rows) == 2
    items = model_answer_responses(tmp_path / "a.jsonl", seed=0)
    assert all(e.group == "model_answers" and e.label_response == 0 and e.label_prompt is None for e in items)
    plants = [e for e in items if e.extra["cv_group"] == "model_answers:h:1"]
    assert any(e.uid.endswith(":first") and len(e.response) == FIRST_RELEASE_CHARS for e in plants)
    assert any(e.uid == "model_answers:h:1" and "photosynthesis" in e.response for e in plants)
    assert {e.extra["cv_group"] for e in items} == {"model_answers:h:1", "model_answers:h:2"}
    assert [e.uid for e in items] == [e.uid for e in model_answer_responses(tmp_path / "a.jsonl", seed=0)]


@pytest.mark.parametrize("bad", [{"label_response_unsafe": 1}, {"response": ""}, {"prompt": None}])
def test_a_bad_row_stops_the_build_with_its_line(tmp_path, bad):
    row = {"uid": "model_answers:x", "prompt": "Hi", "response": "Hello!", "label_response_unsafe": 0} | bad
    (tmp_path / "a.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="a.jsonl:1"):
        model_answer_responses(tmp_path / "a.jsonl")


def test_the_embedded_model_answers_in_the_prompts_order():
    pytest.importorskip("gguf")
    got = generate_answers(["Describe a sunny beach in one sentence.", "What is the capital of France?"],
                           max_new_tokens=8, batch_size=2)
    assert len(got) == 2 and all(a.strip() for a in got), got
    assert "France" in got[1] or "Paris" in got[1], got  # batched with left padding, still its own prompt's answer
