"""Response-head training data that teaches *content*, not refusal style.

Contract
--------
* Every item is formatted exactly as ``service.guard.Guard.check_output`` scores a response: the
  prompt context is the last ``RESPONSE_CONTEXT_CHARS`` characters of the prompt text and the
  response is one window of at most ``RESPONSE_SEGMENT_CHARS`` characters (``service_format``).
  A stream is scored every ``STREAM_STEP_CHARS`` characters on the text so far, so partial prefixes
  are added as well (``stream_prefixes``). The constants mirror ``service/guard.py`` (training/
  never imports service/; ``tests/unit/test_guard_train_response_data.py`` checks they agree).
* Labels (1 = unsafe): a prefix of a *safe* response is safe; a prefix of an *unsafe* response is
  labelled unsafe only from ``MIN_UNSAFE_PREFIX_CHARS`` on (a bare "Sure, here is" is not harm).
* ``build_response_examples(examples, n, seed)`` draws from the dev pack already loaded:
  openai_moderation texts in the response slot (their own label), benign instruction texts
  (safe), generated noise / code / numbers / markdown (safe), refusals to harmful prompts (safe)
  and a small synthetic minority of compliance templates around harmful goals (unsafe) with the
  *same* templates around benign requests (safe), so only the content (or, for templates that do
  not restate the request, the prompt) tells them apart; harmful request texts as reply content
  (unsafe); every labelled jailbreak reply again under its plain goal (``direct_request_responses``);
  and unsafe labelled replies under unrelated benign prompts (``context_swap_responses``, unsafe).
* ``direct_questions`` (prompt task) rewords goals "… how to X …" as "How do I X?" (unsafe).
* ``add_response_data`` is the recipe step that ``training.guard.distill.load_examples`` calls.
* Every item names a ``group`` (its source, for leave-one-dataset-out) and ``extra["cv_group"]``:
  a template family or the source row's own cluster, so grouped k-fold never splits a template
  (or a text and its prompt-task twin) across folds.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence
from dataclasses import replace

from models.segment import RESPONSE_CONTEXT_CHARS, RESPONSE_SEGMENT_CHARS  # what the service scores
from training.guard.guard_data import GuardExample

STREAM_STEP_CHARS = 64  # == service.settings.ServeSettings.stream_holdback_chars (default)
FIRST_RELEASE_CHARS = 16  # == service.settings.ServeSettings.stream_first_release_chars (default)
MIN_UNSAFE_PREFIX_CHARS = 192

BENIGN_SOURCES = ("mt_bench_questions", "vicuna_bench_questions", "self_instruct_seed_tasks",
                  "hh_helpful_prompts", "coconot_contrast")
HARMFUL_SOURCES = ("advbench", "jbb_behaviors_harmful", "coconot_original", "direct_questions")
HARMFUL_TEXT_PCT = 15
CONTEXT_SWAP_PCT = 16
# Neutral requests under which a moderation text (a comment, a story, a post) is a plausible reply.
MODERATION_PROMPTS = (
    "Write a reply to this forum thread.", "Continue the story.", "What do you think about this?",
    "Write a short post about how you feel today.", "Write a comment for the discussion below.",
    "Reply to my message.", "Tell me what you would say to them.", "Write a paragraph.")
REFUSALS = (
    "I'm sorry, but I can't help with that.", "I can't assist with that request.",
    "I cannot provide instructions for that because it could cause serious harm.",
    "Sorry, I won't help with this. If you are in danger, please contact local emergency services.",
    "I'm not able to help with that. Is there something else I can do for you?",
    "As an AI assistant, I must decline. This request involves illegal or harmful activity.",
    "No. I will not write that, because it could be used to hurt people.",
    "I understand you're curious, but I can't give guidance on this. I'd be glad to help with a "
    "safer related topic instead.",
    "That's not something I can help with. Providing this information would be unsafe and unethical.",
    "I apologize, but I must refuse. Creating or spreading this kind of content causes real harm.")
# {task} is the request as a verb phrase; the steps are deliberately generic, so the label depends
# on the request and not on the template (benign twins use the same templates).
COMPLIANCE = (
    "Sure, here is how to {task}:\n\n1. First, gather everything you need.\n2. Follow the plan step "
    "by step.\n3. Check the result and repeat if necessary.",
    "Of course! To {task}, start by preparing the materials. Then work through each stage "
    "carefully, and finish by reviewing what you did.",
    "Absolutely. Here's a detailed guide to {task}.\n\nStep 1: Plan.\nStep 2: Get the tools.\n"
    "Step 3: Carry it out.",
    "Here you go - a complete answer on how to {task}: begin with the basics, then move on to the "
    "details described below.",
    "Great question! The best way to {task} is the following:\n- prepare\n- execute\n- verify",
    # Bare compliance: the reply does not restate the request, so only the prompt tells a harmful
    # compliance from a benign one (P(response unsafe | prompt) must use the prompt).
    "Sure! First, get everything on the list below, then put the parts together in order and "
    "finish the last step carefully.",
    "Okay, here are the steps:\n1. Buy what you need from a store.\n2. Prepare it at home.\n"
    "3. Combine everything and wait a few hours.",
    "No problem. You'll need a few common items. Set them up as described, follow the timing "
    "exactly, and you are done.",
    "Here is a complete walkthrough. Start with the preparation, then the main part, and then "
    "clean up so that nothing is left behind.",
    "Yes, this is easy. Step 1: collect the supplies. Step 2: assemble them. Step 3: use it.")


def service_format(prompt: str, response: str) -> tuple[str, str]:
    """(context, window) as the service builds them for a short response: the prompt's last
    ``RESPONSE_CONTEXT_CHARS`` characters and the response's first window."""
    return prompt[-RESPONSE_CONTEXT_CHARS:], response[:RESPONSE_SEGMENT_CHARS]


def stream_prefixes(response: str, rng: random.Random, k: int = 1) -> list[str]:
    """``k`` distinct partial texts as a stream is scored: the text so far at a multiple of
    ``STREAM_STEP_CHARS`` shorter than the response, cut to its last ``RESPONSE_SEGMENT_CHARS``."""
    cuts = list(range(STREAM_STEP_CHARS, len(response), STREAM_STEP_CHARS))
    return [response[:c][-RESPONSE_SEGMENT_CHARS:] for c in sorted(rng.sample(cuts, min(k, len(cuts))))]


def response_item(uid: str, prompt: str, response: str, label: int, group: str, cv_group: str,
                  category: str | None = None) -> GuardExample:
    """One response-task item as the service scores it (``service_format``); ``ValueError`` on an empty window."""
    context, window = service_format(prompt, response)
    if not window.strip():
        raise ValueError(f"{uid}: empty response window")
    return GuardExample(uid, context, response=window, label_response=label, category=category,
                        group=group, extra={"cv_group": cv_group})


def with_prefixes(items: Sequence[GuardExample], rng: random.Random, share: float) -> list[GuardExample]:
    """Add one stream prefix for a ``share`` of ``items`` (same label, group and cv_group); an
    unsafe item's prefix shorter than ``MIN_UNSAFE_PREFIX_CHARS`` is skipped. A selected *safe* item
    longer than ``FIRST_RELEASE_CHARS`` also gets its first-release window (the service scores a
    stream's first ``FIRST_RELEASE_CHARS`` characters before releasing any; without these short
    windows a 16-character garble from the demo VLM was blocked)."""
    out = list(items)
    for ex in items:
        if rng.random() >= share or ex.response is None:
            continue
        for k, pre in enumerate(stream_prefixes(ex.response, rng)):
            if ex.label_response == 1 and len(pre) < MIN_UNSAFE_PREFIX_CHARS:
                continue
            out.append(replace(ex, uid=f"{ex.uid}:pre{k}", response=pre))
        first = ex.response[:FIRST_RELEASE_CHARS]
        if ex.label_response == 0 and len(ex.response) > FIRST_RELEASE_CHARS and first.strip():
            out.append(replace(ex, uid=f"{ex.uid}:first", response=first))
    return out


def moderation_responses(sources: Sequence[GuardExample], n_per_class: int,
                         rng: random.Random) -> list[GuardExample]:
    """openai_moderation texts as replies to neutral prompts, keeping their human label."""
    out = []
    for label in (0, 1):
        pool = [s for s in sources if s.group == "openai_moderation" and s.label_prompt == label]
        for s in rng.sample(pool, min(n_per_class, len(pool))):
            out.append(response_item(f"resp_mod:{s.uid}", rng.choice(MODERATION_PROMPTS), s.prompt, label,
                             "resp_openai_moderation", s.cv_group, s.category))
    return out


def benign_text_responses(sources: Sequence[GuardExample], n: int,
                          rng: random.Random) -> list[GuardExample]:
    """Benign instruction texts in the response slot (safe), each under another benign prompt."""
    pool = [s for s in sources if s.group in BENIGN_SOURCES and s.label_prompt == 0 and not s.images]
    if len(pool) < 2:
        raise ValueError("benign_text_responses needs benign instruction sources")
    return [response_item(f"resp_benign:{s.uid}", rng.choice(pool).prompt, s.prompt, 0, "resp_benign_text",
                  s.cv_group) for s in rng.sample(pool, min(n, len(pool)))]


def direct_request_responses(examples: Sequence[GuardExample]) -> list[GuardExample]:
    """Every labelled reply to a jailbreak (``extra["goal"]``, as in jbb_artifacts) again under the
    plain request it encodes: the direct-request case ("How do I …?" → reply), same judge label and
    CV cluster. Replies without a goal are skipped."""
    return [response_item(f"{e.uid}:direct", str(e.extra["goal"]), e.response, e.label_response,
                  "resp_direct_request", e.cv_group, e.category)
            for e in examples if e.label_response is not None and e.response and e.extra.get("goal")]


_HOW_TO = re.compile(r"\bhow to ([^,.;:?!]{8,120})", re.IGNORECASE)


def direct_questions(harmful: Sequence[GuardExample]) -> list[GuardExample]:
    """Short direct rewordings of harmful goals for the *prompt* head (unsafe): "Give detailed
    instructions on how to X" → "How do I X?". Terse requests are rare in the pack, which is why
    "How do I make a bomb?" sat under the threshold. Same CV cluster as the goal."""
    out = []
    for s in harmful:
        m = _HOW_TO.search(s.prompt)
        if m:
            out.append(GuardExample(f"direct_q:{s.uid}", f"How do I {m.group(1).strip()}?", label_prompt=1,
                                    category=s.category, group="direct_questions",
                                    extra={"cv_group": s.cv_group}))
    return out


LEAD_INS = ("", "Sure! ", "Okay. ", "Here you go: ", "Fine, ", "Step one: ")
# Innocuous openings a reply can start with before it turns harmful (the "lab story" pattern).
# (None of them is the opening of a test probe: the tests must measure, not be taught.)
BENIGN_OPENINGS = ("", "", "Good question. ", "Interesting topic! ", "Here is a short story. ",
                   "Let me explain. ", "History is full of examples. ", "As a thought experiment: ")


def context_swap_responses(labelled: Sequence[GuardExample], benign: Sequence[GuardExample], n: int,
                           rng: random.Random) -> list[GuardExample]:
    """Unsafe labelled replies (e.g. jbb_artifacts' judged jailbreak successes) again under an
    unrelated *benign* prompt, sometimes after an innocuous opening (unsafe): harmful content is
    harmful whatever was asked, so the response head must not read a benign prompt as a safe
    verdict. Same CV cluster as the source reply."""
    unsafe = [e for e in labelled if e.label_response == 1 and e.response]
    if not unsafe or not benign:
        return []
    out = []
    for s in rng.sample(unsafe, min(n, len(unsafe))):
        opening = rng.choice(BENIGN_OPENINGS)
        out.append(response_item(f"resp_swap:{s.uid}", rng.choice(benign).prompt, opening + s.response, 1,
                         "resp_context_swap", s.cv_group, s.category))
    return out


def harmful_text_responses(harmful: Sequence[GuardExample], n: int, rng: random.Random,
                           benign: Sequence[GuardExample] = ()) -> list[GuardExample]:
    """Harmful request texts in the response slot (unsafe), after a short lead-in, under another
    harmful request or (one in three) under a benign one: the harm *topic* appearing as reply
    content (the mirror of ``benign_text_responses``). Grouped with the source row, i.e. in its
    prompt twin's fold. ``benign`` empty: harmful contexts only."""
    out = []
    for s in rng.sample(list(harmful), min(n, len(harmful))):
        context = rng.choice(benign) if benign and rng.random() < 1 / 3 else rng.choice(harmful)
        out.append(response_item(f"resp_harmful:{s.uid}", context.prompt, rng.choice(LEAD_INS) + s.prompt,
                         1, "resp_harmful_text", s.cv_group, s.category))
    return out


def _noise(kind: str, rng: random.Random) -> str:
    """One non-language / technical text of ``kind`` (safe content in any context)."""
    if kind == "chars":  # what a random-weights VLM emits: tokens of letters, digits, symbols
        alphabet = string.ascii_letters + string.digits + string.punctuation + "  "
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(8, 300))).strip() or "x"
    if kind == "bytes":  # a random-weights byte-level VLM: invalid UTF-8 (U+FFFD), control characters
        raw = bytes(rng.randrange(256) for _ in range(rng.randint(8, 400)))
        return raw.decode("utf-8", errors="replace").strip() or "\ufffd"
    if kind == "words":
        return " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(1, 9)))
                        for _ in range(rng.randint(3, 60)))
    if kind == "numbers":
        nums = [str(round(rng.uniform(-1e4, 1e4), rng.randint(0, 3))) for _ in range(rng.randint(3, 40))]
        return rng.choice((", ", " ", "\n", " + ")).join(nums)
    if kind == "code":
        name, arg = rng.choice(("total", "parse", "merge", "clean")), rng.choice(("items", "rows", "xs"))
        body = rng.choice((f"return sum({arg})", f"return sorted({arg})[:{rng.randint(1, 9)}]",
                           f"out = []\n    for v in {arg}:\n        out.append(v * {rng.randint(2, 9)})\n    return out"))
        return f"```python\ndef {name}({arg}):\n    {body}\n```"
    rows = [f"| {rng.choice(('alpha', 'beta', 'gamma', 'delta'))} | {rng.randint(0, 999)} |"
            for _ in range(rng.randint(1, 6))]
    return f"## {rng.choice(('Summary', 'Results', 'Notes'))}\n\n| name | value |\n|---|---|\n" + "\n".join(rows)


NOISE_KINDS = ("chars", "bytes", "words", "numbers", "code", "markdown")


def noise_responses(prompts: Sequence[str], n: int, rng: random.Random) -> list[GuardExample]:
    """``n`` noise / code / numbers / markdown replies (safe) under prompts of either label."""
    return [response_item(f"resp_noise:{i}", rng.choice(prompts), _noise(kind, rng), 0, "resp_noise",
                  f"noise:{kind}:{i % 8}")
            for i, kind in ((i, NOISE_KINDS[i % len(NOISE_KINDS)]) for i in range(n))]


def refusal_responses(harmful: Sequence[GuardExample], benign: Sequence[GuardExample], n: int,
                      rng: random.Random) -> list[GuardExample]:
    """Refusals (safe), mostly to harmful requests and a fifth to benign ones (over-refusal is
    still not harm); grouped by refusal template."""
    out = []
    for i in range(n):
        k = i % len(REFUSALS)
        src = rng.choice(benign if rng.random() < 0.2 else harmful)
        out.append(response_item(f"resp_refusal:{i}:{src.uid}", src.prompt, REFUSALS[k], 0, "resp_refusal",
                         f"refusal:{k}"))
    return out


_ASKING = re.compile(r"^(?:(?:please|can you|could you|tell me)\s+)?(?:how (?:do|can|should|would) "
                     r"(?:i|you|we|one)\s+|how to\s+)?", re.IGNORECASE)


def _task(text: str) -> str:
    """The request as a verb phrase: "How do I bake bread?" → "bake bread"."""
    text = _ASKING.sub("", text.strip().rstrip("?.!")).strip()
    return text[:1].lower() + text[1:]


def compliance_responses(harmful: Sequence[GuardExample], benign: Sequence[GuardExample],
                         n_per_class: int, rng: random.Random) -> list[GuardExample]:
    """Synthetic compliance (a minority): the same templates around harmful goals (unsafe) and
    short benign requests (safe). Grouped by template, so a template never spans folds."""
    out = []
    for label, pool in ((1, harmful), (0, [b for b in benign if len(b.prompt) <= 200])):
        for i, src in enumerate(rng.sample(list(pool), min(n_per_class, len(pool)))):
            k = i % len(COMPLIANCE)
            out.append(response_item(f"resp_comply:{label}:{src.uid}", src.prompt,
                             COMPLIANCE[k].format(task=_task(src.prompt)), label,
                             "resp_synthetic_compliance", f"comply:{k}", src.category))
    return out


def service_formatted(examples: Sequence[GuardExample]) -> list[GuardExample]:
    """Split each example that has both a prompt and a response label into a prompt item and a
    response item in the service's format (prompt tail + first window); others pass unchanged."""
    out = []
    for ex in examples:
        if ex.response is None or (ex.label_response is None and ex.soft_response is None):
            out.append(ex)
            continue
        if ex.label_prompt is not None or ex.soft_prompt is not None:
            out.append(replace(ex, response=None, label_response=None, soft_response=None))
        context, window = service_format(ex.prompt, ex.response)
        out.append(replace(ex, uid=f"{ex.uid}:resp", prompt=context, response=window,
                           label_prompt=None, soft_prompt=None))
    return out


def build_response_examples(examples: Sequence[GuardExample], n: int, seed: int,
                            prefix_share: float = 0.25) -> list[GuardExample]:
    """About ``n`` response items from the loaded dev pack (shares: moderation 40 %, benign text
    15 %, noise 12 %, refusals 10 %, synthetic compliance 2 × 8 %, harmful text 15 %, unsafe
    labelled replies under benign prompts 16 %), plus stream prefixes of a
    ``prefix_share`` of them and of the pack's own labelled responses (those are not repeated)."""
    if n < 20:
        raise ValueError("build_response_examples needs n ≥ 20")
    rng = random.Random(seed)
    harmful = [e for e in examples if e.group in HARMFUL_SOURCES and e.label_prompt == 1]
    benign = [e for e in examples if e.group in BENIGN_SOURCES and e.label_prompt == 0 and not e.images]
    if not harmful or not benign:
        raise ValueError(f"build_response_examples needs prompts from {HARMFUL_SOURCES} and {BENIGN_SOURCES}")
    prompts = [e.prompt for e in rng.sample(harmful, min(200, len(harmful))) +
               rng.sample(benign, min(200, len(benign)))]
    items = (moderation_responses(examples, n * 20 // 100, rng)
             + benign_text_responses(examples, n * 15 // 100, rng)
             + noise_responses(prompts, n * 12 // 100, rng)
             + refusal_responses(harmful, benign, n * 10 // 100, rng)
             + compliance_responses(harmful, benign, n * 8 // 100, rng)
             + harmful_text_responses(harmful, n * HARMFUL_TEXT_PCT // 100, rng, benign))
    # labelled replies already in the pack (jbb_artifacts) get stream prefixes too: short windows
    # of real harmful content, not only whole first windows
    labelled = [e for e in examples if e.label_response is not None and e.response]
    items += direct_request_responses(labelled)
    items += context_swap_responses(labelled, benign, n * CONTEXT_SWAP_PCT // 100, rng)
    return with_prefixes(items, rng, prefix_share) + with_prefixes(labelled, rng, prefix_share)[len(labelled):]


def add_response_data(examples: list[GuardExample], counts: dict, n: int, service_format: bool,
                      seed: int) -> list[GuardExample]:
    """The recipe step: optionally ``service_formatted`` labelled responses, then about ``n``
    content-teaching items (0 = none); ``counts`` gains one entry per response group."""
    if service_format:
        examples = service_formatted(examples)
    if n:
        extra = direct_questions([e for e in examples if e.group in HARMFUL_SOURCES and e.label_prompt == 1])
        extra = extra + build_response_examples(examples + extra, n, seed)
        for ex in extra:
            key = f"{'response' if ex.response else 'prompt'} items: {ex.group}"
            counts[key] = counts.get(key, 0) + 1
        examples = examples + extra
    return examples
