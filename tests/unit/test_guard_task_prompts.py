"""training/guard/task_prompts.py: benign task instructions and verb senses, with a held-out list no template writes."""

from __future__ import annotations

from training.guard.task_prompts import (FORBIDDEN, HELD_OUT, SENSES, task_instruction_prompts, verb_sense_prompts,
                                         write_held_out)


def _all(seed: int):
    return task_instruction_prompts(seed) + verb_sense_prompts(seed)


def test_task_instructions_are_safe_seeded_and_grouped_by_artifact():
    rows = task_instruction_prompts(0)
    assert rows == task_instruction_prompts(0)
    assert [r.prompt for r in rows] != [r.prompt for r in task_instruction_prompts(1)]
    assert len(rows) >= 300 and len({r.prompt for r in rows}) == len(rows)
    assert all(r.label_prompt == 0 and r.group == "task_instructions" and not r.images for r in rows)
    # every variant of "a haiku ..." shares the haiku's cluster, whatever the opener
    haiku = {r.cv_group for r in rows if " a haiku " in r.prompt}
    assert haiku == {"task_prose_a haiku"}
    assert all(r.prompt.endswith("?") == r.prompt.startswith(("Can ", "Could ")) for r in rows if r.uid.count(":") == 3)


def test_every_sense_pair_is_a_safe_and_an_unsafe_item_in_one_cluster():
    rows = verb_sense_prompts(0)
    assert len(rows) == 2 * len(SENSES)
    by_group: dict[str, list[int]] = {}
    for r in rows:
        by_group.setdefault(r.cv_group, []).append(r.label_prompt)
    assert len(by_group) == len(SENSES) and all(sorted(v) == [0, 1] for v in by_group.values())
    assert all(r.category for r in rows if r.label_prompt == 1)


def test_no_held_out_or_forbidden_phrase_is_generated():
    generated = [r.prompt.lower() for seed in range(3) for r in _all(seed)]
    held = {t.lower() for t, _ in HELD_OUT}
    assert not held & set(generated)
    hits = [(phrase, g) for phrase in FORBIDDEN for g in generated if phrase.lower() in g]
    assert hits == []
    assert len(held) == len(HELD_OUT) >= 40 and {label for _, label in HELD_OUT} == {0, 1}


def test_the_held_out_list_is_written_as_guard_jsonl(tmp_path):
    from training.guard.guard_data import read_guard_jsonl

    assert write_held_out(tmp_path / "h.jsonl") == len(HELD_OUT)
    rows = read_guard_jsonl(tmp_path / "h.jsonl")
    assert [(r.prompt, r.label_prompt) for r in rows] == list(HELD_OUT)
