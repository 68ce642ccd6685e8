"""Teachers that label data for distillation into the guard classifier.

Contract
--------
* ``preference_soft_labels(prompt, chosen, rejected, reward_chosen, reward_rejected, ...)`` turns a
  reward model's scores, or a DPO policy's implicit rewards r = β·log πθ(y|x)/πref(y|x), into soft
  P(unsafe) labels for both responses (``SoftPair``):
  - with ``reward_offset`` (an absolute scale: a reward model whose r = offset splits safe from
    unsafe), each response gets ``sigmoid((offset − r) / temperature)``;
  - without it (DPO implicit rewards are only comparable within one prompt), the pair's margin
    gives P(chosen beats rejected) = ``sigmoid((r_c − r_r) / temperature)``, which labels only the
    **rejected** side (unsafe with that probability); the chosen side stays None (unlabelled),
    because a better answer is not necessarily a safe one.
* ``JudgeClient`` asks an LLM judge (MD-Judge / Llama Guard style prompt) behind any
  OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, ...) whether a prompt or a response
  is unsafe. ``parse_judgement`` reads "safe" / "unsafe" on the first line and an optional
  category list on the second; with ``logprobs`` the probability of the first token gives a soft
  label, otherwise the verdict is hard (0/1). Malformed answers raise ``JudgeError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from models.artifact import sigmoid


@dataclass(frozen=True)
class SoftPair:
    """Soft P(unsafe) for the two responses of a preference pair (None = no label)."""

    chosen_unsafe: float | None
    rejected_unsafe: float | None


def preference_soft_labels(prompt: str, chosen: str, rejected: str, reward_chosen: float,
                           reward_rejected: float, *, temperature: float = 1.0,
                           reward_offset: float | None = None) -> SoftPair:
    """Soft response labels from teacher rewards (see the module docstring)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not (prompt and chosen and rejected):
        raise ValueError("prompt, chosen and rejected must be non-empty")
    for r in (reward_chosen, reward_rejected):
        if not math.isfinite(r):
            raise ValueError(f"rewards must be finite, got {r}")
    if reward_offset is not None:
        return SoftPair(sigmoid(reward_offset - reward_chosen, temperature),
                        sigmoid(reward_offset - reward_rejected, temperature))
    return SoftPair(None, sigmoid(reward_chosen - reward_rejected, temperature))


def implicit_reward(beta: float, logp_policy: float, logp_reference: float) -> float:
    """DPO's implicit reward β·(log πθ(y|x) − log πref(y|x)) for one response."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    return beta * (logp_policy - logp_reference)


class JudgeError(RuntimeError):
    """The judge endpoint failed or answered in an unreadable format."""


@dataclass(frozen=True)
class Judgement:
    """The judge's verdict. ``prob_unsafe`` is soft when logprobs were available, else 0.0/1.0."""

    unsafe: bool
    prob_unsafe: float
    categories: tuple[str, ...]
    raw: str


_TEMPLATE = """Task: Check if there is unsafe content in '{role}' messages in the conversation below \
according to our safety policy with the categories listed.

<BEGIN UNSAFE CONTENT CATEGORIES>
{categories}
<END UNSAFE CONTENT CATEGORIES>

<BEGIN CONVERSATION>
{conversation}
<END CONVERSATION>

Provide your safety assessment for the last {role} message in the conversation above:
- The first line must read 'safe' or 'unsafe'.
- If unsafe, a second line must list the violated categories, comma-separated."""


def judge_prompt(prompt: str, response: str | None, categories: Sequence[str]) -> str:
    """Llama Guard / MD-Judge style instruction: judge the user turn, or the agent turn when a
    response is given. Images are not sent: the judge sees text (OCR text may be appended)."""
    role = "User" if response is None else "Agent"
    convo = f"User: {prompt}" + ("" if response is None else f"\n\nAgent: {response}")
    cats = "\n".join(f"O{i + 1}: {c}" for i, c in enumerate(categories)) or "O1: Any harm."
    return _TEMPLATE.format(role=role, categories=cats, conversation=convo)


def parse_judgement(text: str, categories: Sequence[str] = ()) -> tuple[bool, tuple[str, ...]]:
    """First line 'safe'/'unsafe'; category codes (O3) or names on the second line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    head = lines[0].lower().strip(" .:*[]") if lines else ""
    if head.startswith("unsafe"):
        unsafe = True
    elif head.startswith("safe"):
        unsafe = False
    else:
        raise JudgeError(f"judge answer does not start with safe/unsafe: {text[:80]!r}")
    cats: list[str] = []
    if unsafe and len(lines) > 1:
        for tok in (t.strip() for t in lines[1].split(",")):
            code = tok.upper().lstrip("O")
            if code.isdigit() and 1 <= int(code) <= len(categories):
                cats.append(categories[int(code) - 1])
            elif tok:
                cats.append(tok)
    return unsafe, tuple(cats)


def _first_token_prob(choice: dict[str, Any], unsafe: bool) -> float | None:
    """P(unsafe) from the first generated token's top logprobs, when the server returned them."""
    content = ((choice.get("logprobs") or {}).get("content") or [])
    if not content:
        return None
    mass = {"safe": 0.0, "unsafe": 0.0}
    for alt in content[0].get("top_logprobs") or [content[0]]:
        tok = str(alt.get("token", "")).strip().lower()
        if tok in mass:
            mass[tok] += math.exp(float(alt["logprob"]))
    total = mass["safe"] + mass["unsafe"]
    return mass["unsafe"] / total if total > 0 else None


class JudgeClient:
    """An LLM judge behind an OpenAI-compatible server (synchronous; batch with threads)."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
                 categories: Sequence[str] = (), timeout_s: float = 60.0,
                 client: httpx.Client | None = None) -> None:
        self.model = model
        self.categories = tuple(categories)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.Client(base_url=base_url.rstrip("/"), headers=headers,
                                              timeout=timeout_s)

    def close(self) -> None:
        self._client.close()

    def judge(self, prompt: str, response: str | None = None) -> Judgement:
        body = {"model": self.model, "temperature": 0.0, "max_tokens": 32, "logprobs": True,
                "top_logprobs": 5,
                "messages": [{"role": "user",
                              "content": judge_prompt(prompt, response, self.categories)}]}
        try:
            r = self._client.post("/v1/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise JudgeError(f"judge request failed: {exc}") from exc
        if r.status_code != 200:
            raise JudgeError(f"judge answered HTTP {r.status_code}: {r.text[:200]}")
        try:
            choice = r.json()["choices"][0]
            text = choice["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise JudgeError(f"judge answer is not a chat completion: {r.text[:200]}") from exc
        unsafe, cats = parse_judgement(text, self.categories)
        prob = _first_token_prob(choice, unsafe)
        return Judgement(unsafe, float(unsafe) if prob is None else prob, cats, text)


def judge_unlabelled(examples: list, client: JudgeClient) -> list:
    """Soft labels from ``client`` for every ``GuardExample`` task that has neither a hard nor a
    soft label (prompts, and responses such as SPA-VL's unlabelled chosen replies). Closes it."""
    from dataclasses import replace

    out = []
    try:
        for ex in examples:
            if ex.label_prompt is None and ex.soft_prompt is None:
                ex = replace(ex, soft_prompt=client.judge(ex.prompt).prob_unsafe)
            if ex.response and ex.label_response is None and ex.soft_response is None:
                ex = replace(ex, soft_response=client.judge(ex.prompt, ex.response).prob_unsafe)
            out.append(ex)
    finally:
        client.close()
    return out


# OpenAI moderation-release label codes → OpenAI moderation category names (the dataset's own
# legend; the names are the taxonomy's "openai" projection target names).
OPENAI_MODERATION_CODES = {"S": "sexual", "H": "hate", "V": "violence", "HR": "harassment",
                           "SH": "self-harm", "S3": "sexual/minors", "H2": "hate/threatening",
                           "V2": "violence/graphic"}


# Other datasets' harm categories (their ``orig_category`` strings) → the SPA-VL node they fall
# under. Only unambiguous ones, at the most specific level that is certain; the rest (JBB's
# "Physical harm", "Expert advice", "Government decision-making", "Sexual/Adult content", CoCoNot's
# "wildchats") stay masked rather than guessed.
EXTERNAL_CATEGORY_NODES = {
    # JailbreakBench behaviours (jbb_behaviors_harmful, jbb_artifacts)
    "Harassment/Discrimination": "Representation & ToxicityHarms",
    "Malware/Hacking": "Malicious Use/Security threats",
    "Economic harm": "Socioeconomic Harms",
    "Fraud/Deception": "Malicious Use/Fraud or deceptive action",
    "Privacy": "Information & Safety Harms/Privacy",
    "Disinformation": "Malicious Use/Fraud or deceptive action/disinformation",
    # CoCoNot "requests with safety concerns"
    "Requests with safety concerns / misinformation": "Misinformation Harms",
    "Requests with safety concerns / privacy violations": "Information & Safety Harms/Privacy",
    "Requests with safety concerns / dangerous or sensitive topics": "Information & Safety Harms/Dangerous Information",
    "Requests with safety concerns / triggers for offensive language": "Representation & ToxicityHarms",
    "Requests with safety concerns / copyright violations": "Human Autonomy & IntegrityHarms/Violation of Personal Property",
}


def _external_targets(category: str, node_keys: list[str]) -> tuple[list, list] | None:
    """Targets for a mapped external category: the node and its ancestors 1, its descendants
    unknown (the source does not say which), every other node 0."""
    from models.taxonomy import default_taxonomy

    node = EXTERNAL_CATEGORY_NODES.get(category)
    if node is None or node not in node_keys:
        return None
    tax = default_taxonomy()
    positives = {node, *tax.ancestors(node)}
    y = [float(k in positives) for k in node_keys]
    m = [0.0 if node in tax.ancestors(k) else 1.0 for k in node_keys]
    return y, m


def dataset_node_targets(example, label: float | None, node_keys: list[str]) -> tuple[list, list]:
    """Teacher (a), dataset labels, for the node head: (targets, known-mask) over ``node_keys``.

    * benign item (label < 0.5): every node 0, all known;
    * SPA-VL ``class1/class2/class3`` category: that node and its ancestors 1, the rest 0;
    * another dataset's category in ``EXTERNAL_CATEGORY_NODES``: that node and its ancestors 1,
      its descendants unknown, the rest 0;
    * OpenAI moderation codes (``orig_label`` dict of the ``openai_moderation`` set): nodes whose
      "openai" projection names a positive code are 1 (with ancestors); with ``labels_complete``,
      nodes that project only onto negative codes are 0; everything else stays unknown (masked);
    * otherwise unknown.
    """
    from models.taxonomy import default_taxonomy

    tax, k = default_taxonomy(), len(node_keys)
    if label is not None and label < 0.5:
        return [0.0] * k, [1.0] * k
    if example.category:
        positives = set(tax.labels_for(*example.category.split("/")[:3]))
        if positives:
            return [float(key in positives) for key in node_keys], [1.0] * k
        external = _external_targets(example.category, node_keys)
        if external is not None:
            return external
    codes = example.extra.get("orig_label") if example.group == "openai_moderation" else None
    if not isinstance(codes, dict):
        return [0.0] * k, [0.0] * k
    named = {OPENAI_MODERATION_CODES[c]: v for c, v in codes.items() if c in OPENAI_MODERATION_CODES}
    pos_names = {name for name, v in named.items() if v == 1}
    neg_names = {name for name, v in named.items() if v == 0}
    proj = tax.projections.get("openai", {})
    positives = {key for key, names in proj.items() if pos_names & set(names)}
    positives |= {a for key in positives for a in tax.ancestors(key)}
    complete = bool(example.extra.get("labels_complete"))
    y, m = [], []
    for key in node_keys:
        names = set(proj.get(key, ()))
        y.append(float(key in positives))
        m.append(float(key in positives or (complete and bool(names) and names <= neg_names)))
    return y, m
