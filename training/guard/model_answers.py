"""The embedded model's own answers to benign training prompts, as safe response items.

Contract
--------
* ``answer_prompts(root, per_source, seed)`` picks benign, text-only prompts from the dev pack's benign sources
  (``BENIGN_SOURCES`` under ``root/index/``): at most ``per_source`` from each, a seeded sample. It never picks a
  ``demo_replies.DEMO_PROMPTS`` item, a ``task_prompts.HELD_OUT`` text or a prompt containing a
  ``task_prompts.FORBIDDEN`` phrase (those lists measure candidates and must stay unseen), nor a prompt longer
  than ``MAX_PROMPT_CHARS``. Returns ``(uid, source, prompt)``, sorted by uid.
* ``generate_answers(prompts, max_new_tokens, batch_size)`` returns the greedy answer of the embedded default
  model (SmolLM2-135M-Instruct, ``demo_replies.greedy_answers``) to each prompt under its chat template, in
  order.
* ``write_model_answers(path, rows)`` writes them as guard-schema JSONL (dataset ``model_answers``, every reply
  ``label_response_unsafe`` 0, ``extra.source`` the prompt's dataset); ``python -m training.guard.model_answers
  OUT.jsonl [--per_source N] [--seed S] [--data_root DIR]`` picks, generates and writes.
* ``model_answer_responses(path, seed)`` reads such a file into response-task items as the service scores them
  (``response_data.response_item``, group ``model_answers``), one ``cv_group`` per prompt, and adds each answer's
  first-release window and a seeded stream prefix (``response_data.with_prefixes``, share 1). A row whose
  label is not 0 or whose response is empty is a ``ValueError`` naming it: the file is a recipe input, and a bad
  one must stop the build, not thin it silently.

Why: every candidate's response head flagged some of the demo model's harmless answers (docs/classifier.md,
candidates 11 and 12): the dev pack's benign responses are refusals, human-written helpful text and rewritten
abuse, so a model's own fluent, list-shaped, enthusiastic answer on an everyday topic is unlike any safe reply it
was trained on. These are real answers of the model the product serves, to prompts the guard already trains on.
The labels are team-assigned (a benign prompt answered by an instruct model), not annotated per item.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
from collections.abc import Sequence
from pathlib import Path

from training.guard.guard_data import GuardExample, read_guard_jsonl
from training.guard.response_data import response_item, with_prefixes

BENIGN_SOURCES: tuple[str, ...] = ("hh_helpful_prompts", "mt_bench_questions", "vicuna_bench_questions",
                                   "self_instruct_seed_tasks", "coconot_contrast")
MAX_PROMPT_CHARS = 600
LABEL_SOURCE = "team-assigned: a benign training prompt and the embedded model's greedy answer"


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


@functools.cache
def _measuring_texts() -> frozenset[str]:
    from training.guard.demo_replies import DEMO_PROMPTS
    from training.guard.task_prompts import HELD_OUT

    return frozenset(_norm(p) for p in DEMO_PROMPTS) | frozenset(_norm(t) for t, _ in HELD_OUT)


def _excluded(prompt: str) -> bool:
    from training.guard.task_prompts import FORBIDDEN

    norm = _norm(prompt)
    return norm in _measuring_texts() or any(f in norm for f in FORBIDDEN)


def answer_prompts(root: str | Path, per_source: int = 160, seed: int = 0) -> list[tuple[str, str, str]]:
    """``(uid, source, prompt)`` of the benign prompts to answer (module doc)."""
    rng = random.Random(seed)
    out = []
    for source in BENIGN_SOURCES:
        rows = [e for e in read_guard_jsonl(Path(root) / "index" / f"{source}.jsonl", root)
                if e.label_prompt == 0 and not e.images and e.prompt.strip()
                and len(e.prompt) <= MAX_PROMPT_CHARS and not _excluded(e.prompt)]
        rows = sorted(rows, key=lambda e: e.uid)
        picked = rng.sample(rows, per_source) if len(rows) > per_source else rows
        out += [(e.uid, source, e.prompt) for e in picked]
    return sorted(out)


def generate_answers(prompts: Sequence[str], max_new_tokens: int = 96, batch_size: int = 16) -> list[str]:
    """Greedy answers of the embedded default model, in the order of ``prompts``, stripped (module doc)."""
    from training.guard.demo_replies import greedy_answers

    return [a.strip() for a in greedy_answers(prompts, max_new_tokens, batch_size)]


def write_model_answers(path: str | Path, rows: Sequence[tuple[str, str, str, str]]) -> int:
    """``(uid, source, prompt, answer)`` rows as guard-schema JSONL, every answer safe; empty answers are
    dropped (nothing to score). Returns the count written."""
    lines = []
    for uid, source, prompt, answer in rows:
        if not answer.strip():
            continue
        lines.append(json.dumps({"uid": f"model_answers:{uid}", "dataset": "model_answers", "prompt": prompt,
                                 "images": [], "response": answer, "label_response_unsafe": 0,
                                 "label_source": LABEL_SOURCE, "extra": {"source": source}},
                                ensure_ascii=False) + "\n")
    Path(path).write_text("".join(lines))
    return len(lines)


def model_answer_responses(path: str | Path, seed: int = 0) -> list[GuardExample]:
    """Response items of a ``write_model_answers`` file (module doc)."""
    items = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        uid, prompt, answer = row.get("uid"), row.get("prompt"), row.get("response")
        if row.get("label_response_unsafe") != 0 or not isinstance(answer, str) or not answer.strip() \
                or not isinstance(prompt, str) or not isinstance(uid, str):
            raise ValueError(f"{path}:{n}: a model_answers row needs a uid, a prompt, a non-empty response and "
                             "label_response_unsafe 0")
        items.append(response_item(uid, prompt, answer, 0, "model_answers", uid))
    rng = random.Random(seed)
    out = with_prefixes(items, rng, 1.0)
    rng.shuffle(out)
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI of the module doc; returns the count written."""
    from training.guard.config import REPO_ROOT
    from training.guard.guard_data import default_shared_dir

    ap = argparse.ArgumentParser(prog="python -m training.guard.model_answers", description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--per_source", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data_root", default=None, help="the dev pack (default: the shared one)")
    ap.add_argument("--max_new_tokens", type=int, default=96)
    ap.add_argument("--batch_size", type=int, default=16)
    args = ap.parse_args(argv)
    root = Path(args.data_root) if args.data_root else default_shared_dir(REPO_ROOT) / "data" / "dev"
    picked = answer_prompts(root, args.per_source, args.seed)
    answers = generate_answers([p for _, _, p in picked], args.max_new_tokens, args.batch_size)
    n = write_model_answers(args.out, [(u, s, p, a) for (u, s, p), a in zip(picked, answers, strict=True)])
    print(f"model_answers: wrote {n} answers to {args.out}")
    return n


if __name__ == "__main__":
    main()
