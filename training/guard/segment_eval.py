"""How the guard's input handling changes its verdicts on long prompts: the server's ``Segmenter`` against the
windowing the server used before it (one 1000-character window per 850 characters, no sentence chunks, no
decoding), side by side on the same items and the same classifier.

    python -m training.guard.segment_eval --out runs/segment_eval [--model DIR] [--per-set 150] [--seed 0]
                                          [--chunk-thresholds 0.97,0.99]

Two measurements, both on guard-schema dev data (``--data-root``, default ``<repo>/../shared/data``):

* **long benign prompts**: every benign prompt longer than one window of the sets in ``BENIGN_SETS``; the
  share flagged per set (a false-positive rate);
* **harm hidden in long benign text**: short harmful requests of ``HARMFUL_SETS`` inserted at a random
  sentence of a random long benign prompt (seeded); the share flagged, next to the share of the same
  requests flagged on their own (the ceiling).

Arms: ``legacy`` and the server's segmenter at each of ``--chunk-thresholds`` (``segmenter@0.97``, ...; the
shipped ``Segmenter.chunk_threshold`` is one of them). Verdicts are cached by item, so an item shared by two
arms is scored once. Writes ``<out>/segment_eval.json`` and prints a Markdown table. Every figure is counted
here, on the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
from pathlib import Path
from typing import Any

from models.backends import GuardInput, Segmenter, load_backend, segmenter_for
from models.segment import Piece, response_windows, split_sentences
from training.guard.config import REPO_ROOT
from training.guard.guard_data import GuardExample, default_shared_dir, read_guard_jsonl
from training.guard.scoring import score_examples

BENIGN_SETS = ("dev2/index/dolly_subset.jsonl", "dev2/index/gpteacher_roleplay.jsonl",
               "dev2/index/gsm8k_test.jsonl", "dev/index/openai_moderation.jsonl",
               "dev2/index/toxigen_statements.jsonl")
HARMFUL_SETS = ("dev/index/advbench.jsonl", "dev/index/jbb_behaviors_harmful.jsonl",
                "dev2/index/ailuminate_demo_en.jsonl", "dev2/index/redinstruct_dangerousqa.jsonl")
LEGACY_WINDOW_CHARS = 1000  # the server's prompt windows before models.segment (overlap 150)


class LegacySegmenter(Segmenter):
    """The prompt windowing the server used before ``models.segment``, for the side-by-side arm."""

    def prompt_pieces(self, prompt: GuardInput) -> list[Piece]:
        texts = response_windows(prompt.text, LEGACY_WINDOW_CHARS)
        return [Piece(GuardInput(t, prompt.images if i == 0 else ())) for i, t in enumerate(texts)]


def _read(root: Path, rel: str) -> list[GuardExample]:
    pack = root / rel.split("/")[0]
    return read_guard_jsonl(root / rel, pack)


def _flag_rate(backend: Any, segmenter: Segmenter, examples: list[GuardExample]) -> float:
    scored = score_examples(backend, segmenter, examples, "prompt")
    return sum(s.verdict.flagged for s in scored) / len(scored)


class CachedBackend:
    """A backend that scores each distinct item once (arms share most of their items)."""

    def __init__(self, backend: Any) -> None:
        self.backend, self.name, self.max_batch_size = backend, backend.name, backend.max_batch_size
        self.cache: dict[GuardInput, Any] = {}

    def health(self) -> bool:
        return self.backend.health()

    def score(self, batch: list[GuardInput]) -> list[Any]:
        todo = list(dict.fromkeys(i for i in batch if i not in self.cache))
        if todo:
            self.cache.update(zip(todo, self.backend.score(todo)))
        return [self.cache[i] for i in batch]


def run(root: Path, model: str | None, per_set: int, seed: int,
        chunk_thresholds: tuple[float, ...] = (0.97,)) -> dict[str, Any]:
    backend = CachedBackend(load_backend("onnx", model, threads=2))
    shipped = segmenter_for(model)
    arms: dict[str, Segmenter] = {"legacy": LegacySegmenter(decode=False)}
    arms.update({f"segmenter@{t:g}": dataclasses.replace(shipped, chunk_threshold=t) for t in chunk_thresholds})
    window = shipped.window_chars
    rng = random.Random(seed)
    report: dict[str, Any] = {"window_chars": window, "benign_long": {}, "hidden_harm": {}}
    long_benign: list[str] = []
    for rel in BENIGN_SETS:
        rows = [e for e in _read(root, rel) if e.label_prompt == 0 and len(e.prompt) > window]
        rng.shuffle(rows)
        rows = rows[:per_set]
        long_benign += [e.prompt for e in rows if len(e.prompt) > 2 * window]
        if rows:
            report["benign_long"][rel] = {"n": len(rows), **{a: _flag_rate(backend, s, rows) for a, s in arms.items()}}
    requests: list[str] = []
    for rel in HARMFUL_SETS:
        rows = [e.prompt for e in _read(root, rel) if e.label_prompt == 1 and len(e.prompt) < window]
        rng.shuffle(rows)
        requests += rows[:per_set // 2]
    hidden = []
    for i, request in enumerate(requests):
        sentences = split_sentences(rng.choice(long_benign))
        at = rng.randrange(len(sentences) + 1)
        hidden.append(GuardExample(uid=f"hidden:{i}", prompt=" ".join(sentences[:at] + [request] + sentences[at:]),
                                   label_prompt=1))
    alone = [GuardExample(uid=f"alone:{i}", prompt=r, label_prompt=1) for i, r in enumerate(requests)]
    report["hidden_harm"] = {"n": len(hidden), "alone": _flag_rate(backend, shipped, alone),
                             **{a: _flag_rate(backend, s, hidden) for a, s in arms.items()}}
    return report


def markdown(report: dict[str, Any]) -> str:
    arms = [k for k in report["hidden_harm"] if k not in ("n", "alone")]
    lines = ["| long benign prompts: flagged share | n | " + " | ".join(arms) + " |",
             "|---|---|" + "---|" * len(arms)]
    for rel, r in report["benign_long"].items():
        lines.append(f"| {rel} | {r['n']} | " + " | ".join(f"{r[a]:.3f}" for a in arms) + " |")
    h = report["hidden_harm"]
    lines += ["", "| harm hidden in long benign text: recall | n | alone | " + " | ".join(arms) + " |",
              "|---|---|---|" + "---|" * len(arms),
              f"| recall | {h['n']} | {h['alone']:.3f} | " + " | ".join(f"{h[a]:.3f}" for a in arms) + " |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.guard.segment_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--model", default=None, help="classifier artifact (default: models/default)")
    p.add_argument("--data-root", default=None, help="folder holding dev/ and dev2/ (default: ../shared/data)")
    p.add_argument("--per-set", type=int, default=150, help="long benign prompts per set; half as many requests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk-thresholds", default=f"{Segmenter.chunk_threshold:g}",
                   help="comma-separated sentence-chunk thresholds, one segmenter arm each")
    args = p.parse_args(argv)
    root = Path(args.data_root) if args.data_root else default_shared_dir(REPO_ROOT) / "data"
    thresholds = tuple(float(t) for t in args.chunk_thresholds.split(","))
    report = run(root, args.model, args.per_set, args.seed, thresholds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "segment_eval.json").write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report), file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
