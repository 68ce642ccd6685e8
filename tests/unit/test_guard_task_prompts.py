"""training/guard/task_prompts.py: benign task instructions and verb senses, with a held-out list no template writes."""

from __future__ import annotations

from training.guard import probes
from training.guard.hazard_data import AGENTS
from training.guard.task_prompts import (FORBIDDEN, HELD_OUT, SENSES, TWINS, task_instruction_prompts,
                                         task_twin_prompts, verb_sense_prompts, write_held_out)


def _all(seed: int):
    return task_instruction_prompts(seed) + verb_sense_prompts(seed) + task_twin_prompts(seed)


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


def test_task_twins_put_both_labels_in_every_frame_and_one_cluster_per_artifact():
    rows = task_twin_prompts(0)
    assert rows == task_twin_prompts(0) and [r.prompt for r in rows] != [r.prompt for r in task_twin_prompts(1)]
    assert len({r.prompt for r in rows}) == len(rows) and all(r.group == "task_twins" for r in rows)
    by_group: dict[str, set[int]] = {}
    for r in rows:
        by_group.setdefault(r.cv_group, set()).add(r.label_prompt)
    assert set(by_group) == {f"task_twin_{a}" for a in TWINS} and all(v == {0, 1} for v in by_group.values())
    # 3 openers for every subject of either side, so the frame itself is balanced
    assert sum(r.label_prompt for r in rows) * 2 == len(rows) == 3 * sum(len(b) + len(u) for b, u in TWINS.values())
    nodes = {r.category for r in rows if r.label_prompt == 1}
    assert None not in nodes and len(nodes) >= 6
    assert all(r.category is None for r in rows if r.label_prompt == 0)
    # an agent-bearing item carries the agent's own family node
    family = dict(AGENTS)
    for r in rows:
        named = [a for a in family if f" {a} " in f" {r.prompt[:-1]} "]
        if r.label_prompt == 1 and named:
            assert r.category == family[max(named, key=len)], r.prompt


def test_no_held_out_or_forbidden_phrase_is_generated():
    generated = [r.prompt.lower() for seed in range(3) for r in _all(seed)]
    held = {t.lower() for t, _ in HELD_OUT}
    assert not held & set(generated)
    hits = [(phrase, g) for phrase in FORBIDDEN for g in generated if phrase.lower() in g]
    assert hits == []
    assert len(held) == len(HELD_OUT) >= 40 and {label for _, label in HELD_OUT} == {0, 1}
    probe_texts = {t.lower() for t in probes.TEXT_UNSAFE + probes.TEXT_SAFE + probes.TYPO_UNSAFE + probes.TYPO_SAFE}
    assert not probe_texts & set(generated)


def test_the_held_out_list_is_written_as_guard_jsonl(tmp_path):
    from training.guard.guard_data import read_guard_jsonl

    assert write_held_out(tmp_path / "h.jsonl") == len(HELD_OUT)
    rows = read_guard_jsonl(tmp_path / "h.jsonl")
    assert [(r.prompt, r.label_prompt) for r in rows] == list(HELD_OUT)
