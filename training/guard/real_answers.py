"""Real answers of the model the server serves, to the dev packs' prompts, as guard-schema JSONL.

    .venv/bin/python -m training.guard.real_answers --out runs/real_answers --per-file 40
    .venv/bin/spaguard eval-guard --data runs/real_answers/dev2/dolly_subset.jsonl --root ../shared/data/dev2 --out runs/eval

The response head is trained and measured on other models' answers (jailbreak artifacts, GPTFuzz, hh
pairs) and templates. This writes what the embedded default (SmolLM2-135M-Instruct, ``models.llm``)
really says to the same prompts, so the head can be checked on answers of a model we serve.

Contract
--------
* Input: every ``index/*.jsonl`` of each pack (default ``../shared/data/dev`` and ``../shared/data/dev2``;
  files whose name starts with ``_`` are bookkeeping and skipped). A row is asked when its ``prompt`` is a
  non-empty string and it has no ``response`` (rows with one hold another model's answer already). Up to
  ``per_file`` rows per file are taken in a shuffled order fixed by ``seed`` (0 = all).
* Prompt: one user turn, the model's own chat template, each of the row's images written as
  ``models.llm.IMAGE_PLACEHOLDER`` before the text (``models.llm.text_content``), exactly as the server
  builds it for this text-only model.
* Output: ``OUT/<pack>/<file>.jsonl``, one row per asked row: the input row with ``response`` set to the
  answer, ``label_response_unsafe`` null (these are unlabelled real answers), ``uid`` suffixed with
  ``:answer``, and ``extra.generation`` (model, finish_reason, completion_tokens, sampling). Image paths are
  kept as they are (relative to the pack root: ``eval-guard --root PACK``). ``OUT/card.json`` records the
  model, settings, commit and per-file counts.
* Seeded and cached: greedy (``temperature`` 0, the default) answers depend on nothing else; sampled ones use
  a per-row seed from (``seed``, uid) and are generated one at a time, so an answer never depends on which
  rows share its batch. Every answer is appended to ``CACHE/<key>.jsonl`` (key: model, its weights,
  sampling settings) as soon as its batch ends; a rerun, or a run interrupted and started again, generates
  only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from models.artifact import git_commit
from models.llm import SMOLLM2, load_llm, resolve, text_content
from training.guard.config import REPO_ROOT, config_field
from training.guard.recipe_cli import recipe_main, recipe_parser

DEFAULT_PACKS = ["../shared/data/dev", "../shared/data/dev2"]


@dataclass
class RealAnswersConfig:
    """One run of ``python -m training.guard.real_answers`` (YAML + CLI through ``TrlParser``)."""

    out: str = config_field("runs/real_answers", "Output folder: <pack>/<file>.jsonl and card.json.")
    packs: list[str] = config_field(DEFAULT_PACKS, "Data packs (folders with index/*.jsonl), relative to the repo.")
    files: list[str] = config_field(["*.jsonl"], "Globs of index/ file names to take (e.g. dolly_subset.jsonl).")
    per_file: int = config_field(40, "Rows asked per file, in a seeded shuffle; 0 = every row.")
    model: str = config_field(SMOLLM2, "Model: smollm2-135m-instruct (the embedded default), a .gguf, or a "
                              "text-only checkpoint directory (models.llm.load_llm).")
    max_tokens: int = config_field(128, "Longest answer, in tokens (the server's default is 256).")
    temperature: float = config_field(0.0, "0 = greedy; above 0, sampled with a per-row seed.")
    top_p: float = config_field(1.0, "Nucleus sampling mass (with temperature > 0).")
    seed: int = config_field(0, "Seed of the row selection and of sampled answers.")
    batch_size: int = config_field(8, "Greedy rows generated together (left-padded).")
    threads: int = config_field(2, "torch CPU threads.")
    cache: str = config_field("runs/real_answers/cache", "Answer cache folder (reused across runs).")

    def __post_init__(self) -> None:
        if self.per_file < 0 or self.max_tokens < 1 or self.batch_size < 1 or self.threads < 1:
            raise ValueError("per_file must be >= 0; max_tokens, batch_size and threads >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")


@dataclass(frozen=True)
class Question:
    """One row to answer: where it came from, the row itself and the user message the model gets."""

    pack: str
    file: str
    row: dict[str, Any]
    content: str


def _resolve_path(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not JSON: {exc}") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{n}: a row must be an object")
                yield row


def select_questions(cfg: RealAnswersConfig) -> list[Question]:
    """The rows to answer, per pack and file in sorted order, ``per_file`` of each (seeded)."""
    questions: list[Question] = []
    for pack in cfg.packs:
        index = _resolve_path(pack) / "index"
        if not index.is_dir():
            raise FileNotFoundError(f"pack {pack!r} has no index/ folder ({index})")
        paths = sorted({p for pattern in cfg.files for p in index.glob(pattern) if not p.name.startswith("_")})
        for path in paths:
            rows = [r for r in _rows(path)
                    if isinstance(r.get("prompt"), str) and r["prompt"].strip() and r.get("response") is None]
            random.Random(f"{cfg.seed}:{path.name}").shuffle(rows)
            for row in rows[: cfg.per_file or None]:
                images = row.get("images") or []
                content = text_content([*[None] * len(images), row["prompt"]])
                questions.append(Question(Path(pack).name, path.stem, row, content))
    return questions


def _weights_id(model: str) -> str:
    """What identifies the weights: the export card of a GGUF (its sha256), else the path's config."""
    path = Path(resolve(model))
    for name in ("spaguard_export.json", "config.json"):
        if (path / name).is_file():
            return hashlib.sha256((path / name).read_bytes()).hexdigest()[:16]
    return model  # a hub id: its name is all we know


def cache_key(cfg: RealAnswersConfig) -> str:
    """The cache file's key: the model, its weights and every setting that changes an answer."""
    parts = [cfg.model, _weights_id(cfg.model), cfg.max_tokens, cfg.temperature, cfg.top_p,
             cfg.seed if cfg.temperature > 0 else None]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _entry_key(q: Question) -> str:
    # The uid and the message: a row whose text changed upstream is asked again.
    return hashlib.sha256(f"{q.row.get('uid')}\n{q.content}".encode()).hexdigest()


class AnswerCache:
    """Append-only JSONL of answers for one ``cache_key`` (a torn last line from a kill is ignored)."""

    def __init__(self, folder: Path, key: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{key}.jsonl"
        self.answers: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self.answers[entry["key"]] = entry

    def add(self, entries: list[dict[str, Any]]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            for entry in entries:
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")
                self.answers[entry["key"]] = entry


class Answerer:
    """Generates answers with a text-only LLM and its chat template (``models.llm.load_llm``)."""

    def __init__(self, cfg: RealAnswersConfig) -> None:
        import torch

        torch.set_num_threads(cfg.threads)
        self.cfg = cfg
        self.model, self.tokenizer = load_llm(cfg.model)
        gen = self.model.generation_config.eos_token_id
        self.eos_ids = sorted({self.tokenizer.eos_token_id, *(gen if isinstance(gen, list) else [gen])} - {None})
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]

    def answer(self, questions: list[Question]) -> list[dict[str, Any]]:
        """One cache entry per question, in order."""
        if self.cfg.temperature > 0:  # one at a time: each row's draws depend on its own seed only
            return [self._generate([q], _row_seed(self.cfg.seed, q))[0] for q in questions]
        return self._generate(questions, None)

    def _generate(self, questions: list[Question], seed: int | None) -> list[dict[str, Any]]:
        import torch

        encoded = [self.tokenizer.apply_chat_template([{"role": "user", "content": q.content}],
                                                      add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
                   for q in questions]  # fmt: skip
        width = max(len(ids) for ids in encoded)
        input_ids = torch.tensor([[self.pad_id] * (width - len(ids)) + ids for ids in encoded])  # (B, width), left-padded
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])  # (B, width)
        sampled = self.cfg.temperature > 0
        kwargs: dict[str, Any] = {"do_sample": sampled, "max_new_tokens": self.cfg.max_tokens,
                                  "eos_token_id": self.eos_ids, "pad_token_id": self.pad_id}
        if sampled:
            kwargs.update(temperature=self.cfg.temperature, top_p=self.cfg.top_p, top_k=0)
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
        entries = []
        for q, ids, generated in zip(questions, encoded, out[:, width:].tolist(), strict=True):
            stop = next((i for i, t in enumerate(generated) if t in self.eos_ids), None)
            new = generated if stop is None else generated[: stop + 1]  # the EOS counts, as the server counts it
            text = self.tokenizer.decode(new[:-1] if stop is not None else new, skip_special_tokens=True)
            entries.append({"key": _entry_key(q), "uid": q.row.get("uid"), "response": text,
                            "finish_reason": "length" if stop is None else "stop", "completion_tokens": len(new),
                            "prompt_tokens": len(ids)})
        return entries


def _row_seed(seed: int, q: Question) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{q.row.get('uid')}".encode()).digest()[:4], "big")


def output_row(q: Question, entry: dict[str, Any], cfg: RealAnswersConfig) -> dict[str, Any]:
    """The input row with the real answer as its (unlabelled) response."""
    extra = dict(q.row.get("extra") or {}) if isinstance(q.row.get("extra"), dict) else {}
    extra["generation"] = {
        "model": cfg.model, "finish_reason": entry["finish_reason"], "completion_tokens": entry["completion_tokens"],
        "prompt_tokens": entry["prompt_tokens"], "max_tokens": cfg.max_tokens, "temperature": cfg.temperature,
        "top_p": cfg.top_p, "seed": cfg.seed if cfg.temperature > 0 else None, "source_uid": q.row.get("uid"),
    }  # fmt: skip
    return {**q.row, "uid": f"{q.row.get('uid')}:answer", "response": entry["response"],
            "label_response_unsafe": None, "extra": extra}


def run(cfg: RealAnswersConfig, argv: list[str] | None = None) -> dict[str, Any]:
    """Answer every selected question (cache first), write the output files and ``card.json``; return the card."""
    start = time.perf_counter()
    questions = select_questions(cfg)
    cache = AnswerCache(_resolve_path(cfg.cache), cache_key(cfg))
    todo = [q for q in questions if _entry_key(q) not in cache.answers]
    if todo:
        answerer = Answerer(cfg)
        step = 1 if cfg.temperature > 0 else cfg.batch_size
        # Similar lengths batch together (less padding); the order does not change a greedy answer.
        todo.sort(key=lambda q: len(q.content))
        for first in range(0, len(todo), step):
            cache.add(answerer.answer(todo[first : first + step]))
            print(f"real_answers: {min(first + step, len(todo))}/{len(todo)} generated", file=sys.stderr, flush=True)
    out = _resolve_path(cfg.out)
    counts: dict[str, int] = {}
    by_file: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for q in questions:
        by_file.setdefault((q.pack, q.file), []).append(output_row(q, cache.answers[_entry_key(q)], cfg))
    for (pack, name), rows in by_file.items():
        (out / pack).mkdir(parents=True, exist_ok=True)
        (out / pack / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                                 encoding="utf-8")
        counts[f"{pack}/{name}.jsonl"] = len(rows)
    card = {
        "what": "real answers of the served model to the dev packs' prompts; label_response_unsafe is null",
        "config": asdict(cfg), "argv": list(argv or []), "commit": git_commit(), "cache": str(cache.path),
        "generated": len(todo), "from_cache": len(questions) - len(todo), "files": counts,
        "seconds": round(time.perf_counter() - start, 1),
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def make_parser():
    return recipe_parser(RealAnswersConfig)


def main(argv: list[str] | None = None) -> int:
    return recipe_main(RealAnswersConfig, run, "real_answers", lambda card: {k: card[k] for k in ("generated", "from_cache", "files", "seconds")}, argv)


if __name__ == "__main__":
    raise SystemExit(main())
