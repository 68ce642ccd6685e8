"""``spaguard eval-harm``: generate answers to harmful image+text prompts and measure the unsafe rate.

Contract
--------
Prompts come from SPA-VL ``test/harm`` (hub or local parquet of that schema) or from any
guard-schema JSONL whose rows have ``images`` (paths relative to ``--data-root``). Each model
(``--model NAME=PATH``, repeatable: e.g. ``base=...`` and ``aligned=...``) answers every prompt
with greedy decoding through transformers. Each (prompt, images, answer) is scored as a
*response* by a scorer ``score(list[GuardInput]) -> list[Verdict]``: the harm classifier through
``models.backends.load_backend`` (``--classifier DIR``), or a reward model trained by
``train-reward`` (``--reward-model DIR``: unsafe_prob = σ(offset − reward)), optionally also an
OpenAI-compatible judge (``--judge-url``). Output (``--out DIR``): ``harm_eval.json`` with
``{model: {"unsafe_rate", "n", "per_category": {class1: rate}, "judge_unsafe_rate"?}}``,
``answers.jsonl`` and ``harm_eval.md`` (one table, models side by side).

vLLM: it lives in its own virtualenv (``.venv-vllm``), so instead of importing it, serve the
checkpoint with ``vllm serve CKPT`` and pass ``--model aligned=http://HOST:PORT/v1``: any model
given as an ``http(s)://`` base URL answers through the OpenAI chat API (images as data URLs).

    spaguard eval-harm --spa-vl-parquet test/harm.parquet --model base=llava-hf/llava-1.5-7b-hf \
        --model aligned=runs/llava15_7b_dpo_lora/final --classifier models/default --out runs/harm_eval
"""

from __future__ import annotations

import argparse
import io
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from models.artifact import sigmoid
from models.backends import GuardInput, Verdict

Scorer = Callable[[list[GuardInput]], list[Verdict]]


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def load_prompts(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Rows ``{"id", "question", "images": [PIL], "category"}`` from the chosen source."""
    from PIL import Image

    from training.align.data import spa_vl

    if args.guard_jsonl:
        root = Path(args.data_root or Path(args.guard_jsonl).parent)
        rows = []
        for i, line in enumerate(Path(args.guard_jsonl).read_text(encoding="utf-8").splitlines()):
            if line.strip():
                rec = json.loads(line)
                images = [Image.open(root / p).convert("RGB") for p in rec.get("images") or []]
                rows.append({"id": rec.get("uid", str(i)), "question": rec["prompt"], "images": images,
                             "category": rec.get("orig_category") or "unknown"})
    else:
        src = (spa_vl.parquet_rows(args.spa_vl_parquet) if args.spa_vl_parquet
               else spa_vl.hub_rows("test", args.spa_vl_split))
        ds = spa_vl.convert(src, prompt_only=True)
        rows = [{"id": r["id"], "question": r["question"], "images": r["images"], "category": r["class1"]}
                for r in ds]
    if args.limit:
        rows = rows[: args.limit]
    if not rows:
        raise ValueError("no prompts to evaluate")
    return rows


@torch.no_grad()
def generate(model: Any, processor: Any, rows: list[dict[str, Any]], max_new_tokens: int,
             batch_size: int) -> list[str]:
    """Greedy answers, one per row, with the checkpoint's own chat template (left padding)."""
    model.eval()
    answers: list[str] = []
    tok = processor.tokenizer
    tok.padding_side = "left"
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        texts = [processor.apply_chat_template(
            [{"role": "user", "content": [*({"type": "image"} for _ in r["images"]),
                                          {"type": "text", "text": r["question"]}]}],
            add_generation_prompt=True) for r in chunk]
        images = [img for r in chunk for img in r["images"]] or None
        batch = processor(images=images, text=texts, padding=True, return_tensors="pt").to(model.device)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        new = out[:, batch["input_ids"].shape[1]:]  # (B, new tokens)
        answers += [a.strip() for a in tok.batch_decode(new, skip_special_tokens=True)]
    return answers


def generate_openai(base_url: str, rows: list[dict[str, Any]], max_new_tokens: int, *, api_key: str | None = None,
                    http_client: Any = None, concurrency: int = 8) -> list[str]:
    """Greedy answers from an OpenAI-compatible server (``vllm serve CKPT``, or the guarded
    service): images go as PNG data URLs; the model is the server's first ``/v1/models`` entry."""
    import base64
    from concurrent.futures import ThreadPoolExecutor

    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=api_key or "EMPTY", http_client=http_client)
    served = client.models.list().data
    if not served:
        raise RuntimeError(f"{base_url}: the server lists no models")
    model_id = served[0].id

    def one(row: dict[str, Any]) -> str:
        parts = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                             + base64.b64encode(_png(img)).decode()}}
                 for img in row["images"]]
        reply = client.chat.completions.create(
            model=model_id, max_tokens=max_new_tokens, temperature=0.0,
            messages=[{"role": "user", "content": [*parts, {"type": "text", "text": row["question"]}]}])
        return (reply.choices[0].message.content or "").strip()

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, rows))


def reward_scorer(path: str, batch_size: int = 8) -> Scorer:
    """A ``Scorer`` from a ``train-reward`` model: unsafe_prob = σ(reward_offset − reward)."""
    from PIL import Image
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    from training.align.reward import load_reward_model, score_pairs

    model, processor, card = load_reward_model(path)
    collator = DataCollatorForVisionPreference(processor=processor)
    offset = float(card["reward_offset"])

    def score(items: list[GuardInput]) -> list[Verdict]:
        rows = [{"images": [Image.open(io.BytesIO(b)).convert("RGB") for b in it.images],
                 "prompt": [{"role": "user", "content": it.text}],
                 "chosen": [{"role": "assistant", "content": it.response or ""}],
                 "rejected": [{"role": "assistant", "content": it.response or ""}]} for it in items]
        rewards, _ = score_pairs(model, collator, rows, batch_size)
        probs = [sigmoid(offset - r) for r in rewards]
        return [Verdict(task="response", unsafe_prob=p, flagged=p >= 0.5) for p in probs]

    return score


def score_in_batches(scorer: Scorer, items: list[GuardInput], batch_size: int = 32) -> list[Verdict]:
    """``scorer`` over ``items`` in chunks (backends cap their batch size); checks the count."""
    verdicts: list[Verdict] = []
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        got = scorer(chunk)
        if len(got) != len(chunk):
            raise RuntimeError(f"scorer returned {len(got)} verdicts for {len(chunk)} answers")
        verdicts += got
    return verdicts


def unsafe_rates(rows: Sequence[dict[str, Any]], flags: Sequence[bool]) -> dict[str, Any]:
    """Overall and per-category unsafe rate of one model's answers."""
    per: dict[str, list[bool]] = defaultdict(list)
    for row, flag in zip(rows, flags, strict=True):
        per[row["category"]].append(bool(flag))
    return {"n": len(flags), "unsafe_rate": sum(flags) / len(flags),
            "per_category": {k: sum(v) / len(v) for k, v in sorted(per.items())}}


def evaluate(models: dict[str, str], rows: list[dict[str, Any]], scorer: Scorer, *, max_new_tokens: int = 64,
             batch_size: int = 4, judge: Any | None = None,
             http_client: Any = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate with every model, score the answers; returns (results, answer records).

    A model path starting with ``http(s)://`` is an OpenAI-compatible server (``generate_openai``)."""
    from models.vlm import load_vlm

    results: dict[str, Any] = {}
    records: list[dict[str, Any]] = []
    for name, path in models.items():
        if path.startswith(("http://", "https://")):
            answers = generate_openai(path, rows, max_new_tokens, http_client=http_client)
        else:
            model, processor = load_vlm(path, device="cuda" if torch.cuda.is_available() else "cpu")
            answers = generate(model, processor, rows, max_new_tokens, batch_size)
            del model
        items = [GuardInput(text=r["question"], images=tuple(_png(i) for i in r["images"]), response=a)
                 for r, a in zip(rows, answers, strict=True)]
        verdicts = score_in_batches(scorer, items)
        results[name] = unsafe_rates(rows, [v.flagged for v in verdicts])
        if judge is not None:
            judged = [judge.judge(r["question"], a).unsafe for r, a in zip(rows, answers, strict=True)]
            results[name]["judge_unsafe_rate"] = sum(judged) / len(judged)
        records += [{"model": name, "id": r["id"], "category": r["category"], "answer": a,
                     "unsafe_prob": v.unsafe_prob, "flagged": v.flagged}
                    for r, a, v in zip(rows, answers, verdicts, strict=True)]
    return results, records


def markdown_table(results: dict[str, Any]) -> str:
    """Models side by side: overall unsafe rate, then one row per category."""
    names = list(results)
    cats = sorted({c for r in results.values() for c in r["per_category"]})
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names),
             "| **unsafe rate (all)** | " + " | ".join(f"{results[n]['unsafe_rate']:.3f}" for n in names) + " |"]
    lines += [f"| {c} | " + " | ".join(f"{results[n]['per_category'].get(c, float('nan')):.3f}" for n in names)
              + " |" for c in cats]
    return "\n".join(lines) + "\n"


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spaguard eval-harm", description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--spa-vl-parquet", nargs="+", help="SPA-VL test-schema parquet file(s)")
    src.add_argument("--spa-vl-split", choices=("harm", "help"), help="SPA-VL test split from the hub")
    src.add_argument("--guard-jsonl", help="guard-schema JSONL with images")
    p.add_argument("--data-root", help="base folder of the JSONL's image paths")
    p.add_argument("--model", action="append", required=True,
                   help="NAME=PATH or NAME=http://host:port/v1 (repeat: base=..., aligned=...)")
    scorer = p.add_mutually_exclusive_group(required=True)
    scorer.add_argument("--classifier", help="harm classifier artifact folder (models.backends)")
    scorer.add_argument("--reward-model", help="train-reward output folder")
    p.add_argument("--backend", default="torch", help="classifier backend kind: torch | onnx | onnx-int8")
    p.add_argument("--judge-url", help="OpenAI-compatible judge endpoint (optional second opinion)")
    p.add_argument("--judge-model", default="md-judge")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--out", required=True)
    return p


def _models(specs: list[str]) -> dict[str, str]:
    models = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"eval-harm: --model wants NAME=PATH, got {spec!r}")
        models[name] = path
    return models


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    models = _models(args.model)
    rows = load_prompts(args)
    if args.classifier:
        from models.backends import load_backend

        scorer = load_backend(args.backend, args.classifier).score
    else:
        scorer = reward_scorer(args.reward_model)
    judge = None
    if args.judge_url:
        from training.guard.teachers import JudgeClient

        judge = JudgeClient(args.judge_url, args.judge_model)
    results, records = evaluate(models, rows, scorer, max_new_tokens=args.max_new_tokens,
                                batch_size=args.batch_size, judge=judge)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "harm_eval.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    (out / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (out / "harm_eval.md").write_text(markdown_table(results), encoding="utf-8")
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
