"""training/guard/light_replies.py: harmless and abusive answers to one prompt, kept apart from the demo list."""

from __future__ import annotations

from models.segment import RESPONSE_CONTEXT_CHARS, RESPONSE_SEGMENT_CHARS
from training.guard.demo_replies import DEMO_PROMPTS
from training.guard.light_replies import PAIRS, light_reply_responses
from training.guard.response_data import FIRST_RELEASE_CHARS


def test_each_prompt_is_answered_both_ways_in_one_cluster():
    rows = light_reply_responses(0)
    assert rows == light_reply_responses(0) and [r.uid for r in rows] != [r.uid for r in light_reply_responses(1)]
    assert all(r.group == "light_replies" and r.label_prompt is None for r in rows)
    whole = [r for r in rows if r.uid.count(":") == 2]
    assert len(whole) == 2 * len(PAIRS)
    by_cluster: dict[str, set[int]] = {}
    for r in rows:
        by_cluster.setdefault(r.cv_group, set()).add(r.label_response)
    assert len(by_cluster) == len(PAIRS) and all(v == {0, 1} for v in by_cluster.values())
    assert all(r.category for r in rows if r.label_response == 1)
    assert all(r.category is None for r in rows if r.label_response == 0)
    # every safe answer also comes as its first-release window, as the service scores a stream first
    firsts = [r for r in rows if r.uid.endswith(":first")]
    assert len(firsts) == len(PAIRS) and all(len(r.response) == FIRST_RELEASE_CHARS for r in firsts)
    assert all(len(r.prompt) <= RESPONSE_CONTEXT_CHARS and len(r.response) <= RESPONSE_SEGMENT_CHARS for r in rows)


def test_the_demo_list_stays_a_measurement():
    texts = [t.lower() for p, safe, harm, _ in PAIRS for t in (p, safe, harm)]
    assert not {p.lower() for p in DEMO_PROMPTS} & set(texts)
    assert not [t for t in texts if "joke" in t]
    assert not [t for t in texts if "can't remember their own name" in t or "caffeine" in t]
