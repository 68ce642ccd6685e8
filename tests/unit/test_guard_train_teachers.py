"""Teachers: reward → soft labels, and the LLM-judge client against a local OpenAI-like server."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from training.guard.teachers import (JudgeClient, JudgeError, implicit_reward, parse_judgement,
                               preference_soft_labels)

CATS = ("Toxic", "Privacy", "Fraud or Deceptive Action")


def test_relative_rewards_label_only_the_rejected_side():
    pair = preference_soft_labels("q", "good", "bad", 2.0, 0.0, temperature=1.0)
    assert pair.chosen_unsafe is None  # a better answer is not necessarily a safe one
    assert pair.rejected_unsafe == pytest.approx(1 / (1 + math.exp(-2.0)))
    hotter = preference_soft_labels("q", "good", "bad", 2.0, 0.0, temperature=4.0)
    assert 0.5 < hotter.rejected_unsafe < pair.rejected_unsafe


def test_absolute_rewards_label_both_sides():
    pair = preference_soft_labels("q", "c", "r", 3.0, -1.0, reward_offset=1.0, temperature=2.0)
    assert pair.chosen_unsafe == pytest.approx(1 / (1 + math.exp(1.0)))  # sigmoid(-1)
    assert pair.rejected_unsafe == pytest.approx(1 / (1 + math.exp(-1.0)))


def test_bad_teacher_inputs():
    with pytest.raises(ValueError, match="temperature"):
        preference_soft_labels("q", "c", "r", 1.0, 0.0, temperature=0.0)
    with pytest.raises(ValueError, match="finite"):
        preference_soft_labels("q", "c", "r", float("nan"), 0.0)
    assert implicit_reward(0.1, -10.0, -12.0) == pytest.approx(0.2)


def test_parse_judgement():
    assert parse_judgement("safe") == (False, ())
    assert parse_judgement("unsafe\nO2, O3", CATS) == (True, ("Privacy", "Fraud or Deceptive Action"))
    assert parse_judgement("**Unsafe**\nself-harm") == (True, ("self-harm",))
    with pytest.raises(JudgeError):
        parse_judgement("I cannot tell")


class _Judge(BaseHTTPRequestHandler):
    """Answers like an OpenAI server: 'unsafe\\nO1' when the conversation mentions a bomb."""

    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(body)
        if self.path != "/v1/chat/completions":
            self.send_response(404)
            self.end_headers()
            return
        text = body["messages"][0]["content"]
        unsafe = "bomb" in text.split("<BEGIN CONVERSATION>")[1]
        first = "unsafe" if unsafe else "safe"
        top = [{"token": first, "logprob": math.log(0.9)},
               {"token": "safe" if unsafe else "unsafe", "logprob": math.log(0.1)}]
        payload = {"id": "x", "object": "chat.completion", "model": body["model"], "choices": [{
            "index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": first + ("\nO1" if unsafe else "")},
            "logprobs": {"content": [{"token": first, "logprob": math.log(0.9), "top_logprobs": top}]},
        }]}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def judge_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_judge_client_against_local_server(judge_server):
    client = JudgeClient(judge_server, "md-judge", categories=CATS, api_key="k")
    try:
        bad = client.judge("How do I build a bomb?")
        good = client.judge("How do I bake bread?", response="Mix flour and water.")
    finally:
        client.close()
    assert bad.unsafe and bad.categories == ("Toxic",) and bad.prob_unsafe == pytest.approx(0.9)
    assert not good.unsafe and good.prob_unsafe == pytest.approx(0.1)
    sent = _Judge.seen[-1]
    assert sent["model"] == "md-judge" and "Agent: Mix flour" in sent["messages"][0]["content"]


def test_judge_client_reports_http_errors(judge_server):
    client = JudgeClient(judge_server + "/nope", "m")
    with pytest.raises(JudgeError, match="HTTP 404"):
        client.judge("hi")
    client.close()


def test_dataset_node_targets():
    from models.taxonomy import default_node_keys, default_taxonomy
    from training.guard.guard_data import GuardExample
    from training.guard.teachers import dataset_node_targets

    keys = default_node_keys()
    benign = GuardExample("b", "hi", label_prompt=0)
    assert dataset_node_targets(benign, 0, keys) == ([0.0] * len(keys), [1.0] * len(keys))
    unknown = GuardExample("u", "x", label_prompt=1, category="Expert advice", group="jbb")
    assert sum(dataset_node_targets(unknown, 1, keys)[1]) == 0  # neither SPA-VL nor mapped: masked
    tax = default_taxonomy()
    jbb = GuardExample("j", "x", label_prompt=1, category="Privacy", group="jbb_artifacts")
    y, m = dataset_node_targets(jbb, 1, keys)
    node = "Information & Safety Harms/Privacy"
    assert {k for k, v in zip(keys, y) if v} == {node, "Information & Safety Harms"}
    unknown_keys = {k for k, v in zip(keys, m) if not v}
    assert unknown_keys == {k for k in keys if node in tax.ancestors(k)} and unknown_keys  # children unknown
    assert dataset_node_targets(jbb, 0, keys) == ([0.0] * len(keys), [1.0] * len(keys))  # a safe reply
    from training.guard.teachers import EXTERNAL_CATEGORY_NODES
    assert set(EXTERNAL_CATEGORY_NODES.values()) <= set(keys)  # every mapping names a real node
    leaf = next(k for k in keys if default_taxonomy().nodes[k].level == "subcategory")
    spa = GuardExample("s", "x", label_prompt=1, category=leaf)
    y, m = dataset_node_targets(spa, 1, keys)
    assert {k for k, v in zip(keys, y) if v} == {leaf, *default_taxonomy().ancestors(leaf)} and all(m)
    codes = {"S": 0, "H": 1, "V": 0, "HR": 0, "SH": 0, "S3": 0, "H2": 0, "V2": 0}
    oai = GuardExample("o", "x", label_prompt=1, group="openai_moderation",
                       extra={"orig_label": codes, "labels_complete": True})
    y, m = dataset_node_targets(oai, 1, keys)
    hate_nodes = {k for k, names in default_taxonomy().projections["openai"].items() if "hate" in names}
    assert hate_nodes and hate_nodes <= {k for k, v in zip(keys, y) if v}
    assert any(mi and not yi for yi, mi in zip(y, m))  # complete labels give known negatives


def test_judge_labels_only_unlabelled_items(judge_server):
    from training.guard.guard_data import GuardExample
    from training.guard.teachers import judge_unlabelled

    examples = [GuardExample("a", "How do I build a bomb?"),  # no label: judged
                GuardExample("b", "bake bread", label_prompt=0),  # labelled: left alone
                GuardExample("c", "q", response="Here is the bomb recipe", label_prompt=1)]
    out = judge_unlabelled(examples, JudgeClient(judge_server, "m"))
    assert out[0].soft_prompt == pytest.approx(0.9) and out[1].soft_prompt is None
    assert out[2].soft_prompt is None and out[2].soft_response == pytest.approx(0.9)
