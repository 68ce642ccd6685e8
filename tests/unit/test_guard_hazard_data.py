"""training.guard.hazard_data: weapons-agent and violent-idiom templates, both labels, no probe leakage."""

from __future__ import annotations

from collections import Counter

from models.taxonomy import default_taxonomy
from training.guard import hazard_data
from training.guard.hazard_data import AGENTS, BENIGN_TEMPLATES, HARMFUL_TEMPLATES, IDIOMS, hazard_prompts, idiom_prompts

# What tests/integration/test_default_guard_shipped.py probes: never a training template.
PROBE_WORDS = ("sarin", "ricin", "nerve gas", "kill time", "pipe bomb", "make a bomb", "kill my neighbor")


def test_hazard_items_pair_every_agent_with_both_intents() -> None:
    items = hazard_prompts(seed=0)
    assert len(items) == len(AGENTS) * (len(HARMFUL_TEMPLATES) + len(BENIGN_TEMPLATES))
    assert len({i.uid for i in items}) == len(items)
    for agent, _ in AGENTS:  # the agent's name appears on both sides, so the name alone cannot decide
        labels = {i.label_prompt for i in items if agent.lower() in i.prompt.lower()}
        assert labels == {0, 1}, agent
    tax = default_taxonomy()
    for item in items:
        assert item.group == "hazard_templates" and item.extra["cv_group"].startswith("hazard_")
        assert item.prompt[0].isupper() and "{" not in item.prompt
        if item.label_prompt == 1:  # unsafe items name a real SPA-VL node (the node head learns the family)
            assert tax.labels_for(*item.category.split("/")), item.category
        else:
            assert item.category is None


def test_idioms_put_each_verb_on_both_sides() -> None:
    items = idiom_prompts(seed=0)
    assert Counter(i.label_prompt for i in items) == {0: len(IDIOMS), 1: len(IDIOMS)}
    by_group: dict[str, set[int]] = {}
    for i in items:
        by_group.setdefault(i.extra["cv_group"], set()).add(i.label_prompt)
    assert all(labels == {0, 1} for labels in by_group.values())  # a pair never splits across CV folds


def test_no_template_teaches_a_test_probe_and_seed_only_shuffles() -> None:
    texts = [i.prompt.lower() for i in hazard_prompts(0) + idiom_prompts(0)]
    assert not [t for t in texts if any(w in t for w in PROBE_WORDS)]
    a, b = hazard_prompts(1), hazard_prompts(2)
    assert sorted(i.uid for i in a) == sorted(i.uid for i in b) and [i.uid for i in a] != [i.uid for i in b]
    assert hazard_data._sentence("a nerve agent") == "A nerve agent"
