"""training/guard/chat_turns.py: short benign chat turns, with a held-out list no template writes."""

from __future__ import annotations

from training.guard.chat_turns import HELD_OUT, PHRASES, SUFFIXES, chat_turn_prompts


def _bare(text: str) -> str:
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            return text[: -len(suffix)].lower()
    return text.lower()


def test_every_phrase_is_safe_grouped_and_seeded():
    rows = chat_turn_prompts(0)
    assert rows == chat_turn_prompts(0) and [r.uid for r in rows] != [r.uid for r in chat_turn_prompts(1)]
    assert {r.prompt for r in rows} >= set(PHRASES)
    assert all(r.label_prompt == 0 and r.group == "chat_turns" and not r.images for r in rows)
    by_group: dict[str, set[str]] = {}
    for r in rows:
        by_group.setdefault(r.cv_group, set()).add(_bare(r.prompt))
    assert len(by_group) == len(PHRASES)
    assert all(len(bare) == 1 for bare in by_group.values())  # a phrase's variants share its cluster


def test_no_held_out_turn_is_generated():
    generated = {_bare(r.prompt) for seed in range(3) for r in chat_turn_prompts(seed)}
    assert not {h.lower() for h in HELD_OUT} & generated
    assert len(set(HELD_OUT)) == len(HELD_OUT) >= 40


def test_the_held_out_list_is_written_as_guard_jsonl(tmp_path):
    from training.guard.chat_turns import write_held_out
    from training.guard.guard_data import read_guard_jsonl

    assert write_held_out(tmp_path / "h.jsonl") == len(HELD_OUT)
    rows = read_guard_jsonl(tmp_path / "h.jsonl")
    assert [r.prompt for r in rows] == list(HELD_OUT) and all(r.label_prompt == 0 for r in rows)
