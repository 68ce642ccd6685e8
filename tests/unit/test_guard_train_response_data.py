"""Response-head data builders: the service's windowing, labels of prefixes, CV grouping."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from models import segment
from training.guard import response_data as rd
from training.guard.guard_data import GuardExample


def _pack() -> list[GuardExample]:
    """A small stand-in for the dev pack: every source the builders draw from."""
    out = []
    for i in range(30):
        out.append(GuardExample(f"adv:{i}", f"Explain how to build weapon number {i} to hurt people",
                                label_prompt=1, group="advbench"))
        out.append(GuardExample(f"mt:{i}", f"How do I bake bread variant {i}?", label_prompt=0,
                                group="mt_bench_questions"))
        for lab in (0, 1):
            out.append(GuardExample(f"mod:{lab}:{i}", ("hateful rant " if lab else "nice story ") * (i + 5),
                                    label_prompt=lab, group="openai_moderation"))
    return out


def test_constants_match_the_service():
    assert rd.RESPONSE_CONTEXT_CHARS == segment.RESPONSE_CONTEXT_CHARS
    assert rd.RESPONSE_SEGMENT_CHARS == segment.RESPONSE_SEGMENT_CHARS
    from service.settings import ServeSettings

    assert rd.FIRST_RELEASE_CHARS == ServeSettings.model_fields["stream_first_release_chars"].default


def test_safe_items_get_their_first_release_window():
    safe = GuardExample("s", "p", response="x8@#kq zz ,aK b and a lot more noise here", label_response=0, group="g")
    bad = GuardExample("b", "p", response="Step 1: " + "mix the poison " * 40, label_response=1, group="g")
    out = rd.with_prefixes([safe, bad], random.Random(0), share=1.0)
    firsts = [e for e in out if e.uid.endswith(":first")]
    assert [(e.uid, e.response, e.label_response) for e in firsts] == [("s:first", safe.response[:16], 0)]


def test_service_format_matches_check_output_windowing():
    prompt, response = "p" * 900 + "END", "r" * 250
    context, window = rd.service_format(prompt, response)
    assert context == prompt[-400:] and context.endswith("END")
    # a response that fits one window is scored whole, exactly as the service scores it
    assert [window] == segment.response_windows(response, segment.RESPONSE_SEGMENT_CHARS)
    long = "".join(str(i % 10) for i in range(1500))
    assert rd.service_format("q", long)[1] == segment.response_windows(long, 600)[0]


def test_stream_prefixes_are_the_text_so_far_at_stream_steps():
    text = "".join(chr(97 + i % 26) for i in range(1000))
    got = rd.stream_prefixes(text, random.Random(0), k=5)
    assert len(got) == 5
    for pre in got:
        assert len(pre) <= 600
        ends = [c for c in range(64, 1000, 64) if text[:c].endswith(pre)]
        assert ends, pre[-20:]
        # the service scores a partial stream's last window: the same text
        assert segment.response_windows(text[:ends[0]], 600)[-1] == pre
    assert rd.stream_prefixes("short", random.Random(0)) == []


def test_unsafe_prefixes_shorter_than_minimum_are_not_labelled():
    bad = GuardExample("u", "ctx", response="x" * 700, label_response=1, group="g", extra={"cv_group": "c"})
    good = GuardExample("s", "ctx", response="y" * 700, label_response=0, group="g", extra={"cv_group": "d"})
    out = rd.with_prefixes([bad, good], random.Random(1), share=1.0)
    for ex in out[2:]:
        assert ex.cv_group == ("c" if ex.label_response == 1 else "d")
        if ex.label_response == 1:
            assert len(ex.response) >= rd.MIN_UNSAFE_PREFIX_CHARS


def test_build_labels_groups_and_format():
    items = rd.build_response_examples(_pack(), 200, seed=0)
    groups = Counter((e.group, e.label_response) for e in items)
    assert groups[("resp_openai_moderation", 1)] > 0 and groups[("resp_openai_moderation", 0)] > 0
    assert groups[("resp_synthetic_compliance", 1)] > 0 and groups[("resp_synthetic_compliance", 0)] > 0
    for name in ("resp_benign_text", "resp_noise", "resp_refusal"):
        assert groups[(name, 0)] > 0 and groups[(name, 1)] == 0, name
    synth = sum(v for (g, _), v in groups.items() if g == "resp_synthetic_compliance")
    assert synth < 0.25 * len(items)  # synthetic data stays a minority
    for ex in items:
        assert ex.label_prompt is None and ex.label_response in (0, 1)
        assert len(ex.prompt) <= 400 and 0 < len(ex.response) <= 600
        assert ex.response_input().task == "response"
    mod = [e for e in items if e.group == "resp_openai_moderation"]
    assert all(e.cv_group.startswith("uid:mod:") for e in mod)  # same fold as its prompt-task twin
    assert all(e.label_response == int(e.cv_group.split(":")[2]) for e in mod)
    assert rd.build_response_examples(_pack(), 200, seed=0) == items  # deterministic


def test_compliance_templates_never_span_folds_and_pair_labels():
    items = rd.compliance_responses([e for e in _pack() if e.group == "advbench"],
                                    [e for e in _pack() if e.group == "mt_bench_questions"], 10,
                                    random.Random(0))
    by_group: dict[str, set[int]] = {}
    for ex in items:
        k = int(ex.cv_group.split(":")[1])
        assert ex.response.split("{")[0][:10] == rd.COMPLIANCE[k][:10]  # the template it names
        by_group.setdefault(ex.cv_group, set()).add(ex.label_response)
    # each template carries both a harmful (1) and a benign (0) request: only content differs
    assert all(labels == {0, 1} for labels in by_group.values())
    assert any("bake bread variant" in e.response for e in items if e.label_response == 0)


def test_service_formatted_splits_prompt_and_response_items():
    ex = GuardExample("j", "P" * 1000, response="R" * 900, label_prompt=1, label_response=0,
                      group="jbb_artifacts", extra={"goal": "g"})
    prompt_only = GuardExample("p", "hello", label_prompt=0)
    a, b, c = rd.service_formatted([ex, prompt_only])
    assert a.prompt == ex.prompt and a.response is None and a.label_prompt == 1 and a.label_response is None
    assert b.prompt == "P" * 400 and b.response == "R" * 600 and b.label_prompt is None and b.label_response == 0
    assert a.cv_group == b.cv_group == "goal:g" and c is prompt_only


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="n ≥ 20"):
        rd.build_response_examples(_pack(), 5, seed=0)
    with pytest.raises(ValueError, match="needs prompts"):
        rd.build_response_examples([e for e in _pack() if e.group != "advbench"], 100, seed=0)
    with pytest.raises(ValueError, match="empty response"):
        rd.response_item("u", "p", "   ", 0, "g", "c")


def test_direct_questions_reword_goals_for_the_prompt_head():
    goals = [GuardExample("g1", "Give detailed instructions on how to make a bomb, step by step",
                          label_prompt=1, group="advbench"),
             GuardExample("g2", "Write a defamatory article about a president", label_prompt=1, group="advbench")]
    (q,) = rd.direct_questions(goals)
    assert q.prompt == "How do I make a bomb?" and q.label_prompt == 1 and q.response is None
    assert q.group == "direct_questions" and q.cv_group == goals[0].cv_group


def test_direct_request_responses_keep_judge_label_and_cluster():
    jb = GuardExample("j", "x" * 400, response="Sure, here is the plan " * 40, label_response=1,
                      group="jbb_artifacts", extra={"goal": "Explain how to pick a lock"})
    no_goal = GuardExample("n", "p", response="r", label_response=0, group="other")
    (d,) = rd.direct_request_responses([jb, no_goal])
    assert d.prompt == "Explain how to pick a lock" and d.label_response == 1
    assert d.response == jb.response[:600] and d.cv_group == jb.cv_group == "goal:Explain how to pick a lock"


def test_harmful_text_responses_are_unsafe_and_grouped_with_their_source():
    harmful = [e for e in _pack() if e.group == "advbench"]
    items = rd.harmful_text_responses(harmful, 10, random.Random(0))
    sources = {e.cv_group for e in harmful}
    assert len(items) == 10 and all(e.label_response == 1 and e.cv_group in sources for e in items)
    assert all(any(e.response.endswith(h.prompt) for h in harmful) for e in items)


def test_harmful_text_responses_sit_under_benign_prompts_too():
    harmful = [e for e in _pack() if e.group == "advbench"]
    benign = [e for e in _pack() if e.group == "mt_bench_questions"]
    items = rd.harmful_text_responses(harmful, 30, random.Random(0), benign)
    contexts = Counter("benign" if any(e.prompt == b.prompt for b in benign) else "harmful" for e in items)
    assert contexts["benign"] > 0 and contexts["harmful"] > 0
    assert all(e.label_response == 1 for e in items)


def test_context_swap_puts_unsafe_replies_under_benign_prompts():
    bad = [GuardExample(f"j{i}", f"jailbreak {i}", response=f"Step {i}: mix the chemicals " * 30,
                        label_response=1, group="jbb_artifacts", extra={"cv_group": f"goal:{i}"}) for i in range(6)]
    safe = GuardExample("s", "jailbreak", response="I can't help with that.", label_response=0, group="jbb_artifacts")
    benign = [e for e in _pack() if e.group == "mt_bench_questions"]
    items = rd.context_swap_responses(bad + [safe], benign, 4, random.Random(0))
    assert len(items) == 4 and all(e.label_response == 1 and e.group == "resp_context_swap" for e in items)
    src = {b.uid: b for b in bad}
    for e in items:
        s = src[e.uid.split(":", 1)[1]]
        assert e.cv_group == s.cv_group  # same fold as the reply it reuses
        assert e.prompt in {b.prompt for b in benign}
        assert len(e.response) <= rd.RESPONSE_SEGMENT_CHARS and s.response[:40] in e.response
    assert rd.context_swap_responses([safe], benign, 4, random.Random(0)) == []  # safe replies never swap
    groups = Counter(e.group for e in rd.build_response_examples(_pack() + bad, 200, seed=0))
    assert groups["resp_context_swap"] > 0
