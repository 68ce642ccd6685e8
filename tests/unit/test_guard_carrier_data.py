"""training.guard.carrier_data: carrier + text items in the featurizer's image-text form, both labels."""

from __future__ import annotations

from collections import Counter

import pytest

from training.guard.carrier_data import CARRIERS, ocr_format_examples
from training.guard.guard_data import GuardExample


def _sources() -> list[GuardExample]:
    rows = [GuardExample(f"u{i}", f"How do I hurt someone badly, case {i}?", label_prompt=1, category="Malicious Use",
                         group="advbench") for i in range(30)]
    rows += [GuardExample(f"s{i}", f"What is a good name for my cat number {i}?", label_prompt=0, group="mt_bench")
             for i in range(30)]
    rows += [GuardExample("img", "Describe it.", images=(b"png",), label_prompt=0),  # images: never a source
             GuardExample("resp", "Hi there friend", response="a reply", label_prompt=0),  # response rows: never
             GuardExample("short", "Hi", label_prompt=1)]  # too short to be a request
    return rows


def test_items_copy_text_and_label_under_a_carrier() -> None:
    items = ocr_format_examples(_sources(), 40, seed=0)
    assert Counter(i.label_prompt for i in items) == {0: 20, 1: 20}
    by_uid = {s.uid: s for s in _sources()}
    for item in items:
        carrier, text = item.prompt.split("\n", 1)
        src = by_uid[item.uid.split(":", 3)[3]]
        assert carrier in CARRIERS and text.removesuffix(" 1. 2. 3.") == src.prompt
        assert item.label_prompt == src.label_prompt and item.category == src.category
        assert item.group == "ocr_format" and item.cv_group == src.cv_group and not item.images
    assert {"img", "resp", "short"}.isdisjoint(i.uid.split(":", 3)[3] for i in items)
    assert any(i.prompt.endswith(" 1. 2. 3.") for i in items) and any(not i.prompt.endswith("3.") for i in items)


def test_seeded_and_needs_both_labels() -> None:
    assert ocr_format_examples(_sources(), 10, seed=3) == ocr_format_examples(_sources(), 10, seed=3)
    with pytest.raises(ValueError, match="both safe and unsafe"):
        ocr_format_examples([s for s in _sources() if s.label_prompt == 1], 10, seed=0)
