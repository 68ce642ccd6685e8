"""``spaguard smoke-train --out runs/smoke``: the whole training pipeline on tiny models, on CPU.

Contract
--------
Synthetic SPA-VL data (``training.align.data.fixtures``) → tiny LLaVA (``models.vlm``) → DPO
(``training.align.dpo``, the tiny recipe) → reward model (``training.align.reward``) → classifier distillation
from the reward model (its soft labels written as ``soft_response_unsafe`` into a guard-schema
JSONL, then ``training.guard.distill`` with a tiny random text encoder) → harm evaluation of base vs
aligned (``training.align.eval_harm``, scored by the distilled classifier through
``models.backends.load_backend``). Writes ``<out>/summary.json``::

    {"dpo": {"loss_first", "loss_last", "reward_accuracy_last"},
     "reward_model": {"pairwise_accuracy"}, "distill": {"agreement_with_teacher"},
     "eval": {"base_unsafe_rate", "aligned_unsafe_rate"}, "seconds": {...}}

Every number comes from the run; the tiny models' answers are gibberish, so the eval rates test
the plumbing, not safety. Budget: well under 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

CONFIGS = Path(__file__).resolve().parent / "configs"
_BENIGN_QUESTIONS = tuple(f"{verb} the {thing} in this picture, please." for verb in (
    "Describe", "What colour is", "Count the shapes around", "Write a short poem about")
    for thing in ("square", "background", "block", "scene"))


def _stage(seconds: dict[str, float], name: str, t0: float) -> float:
    now = time.perf_counter()
    seconds[name] = round(now - t0, 1)
    return now


def _dpo(out: Path, data: Path, base: Path, steps: int) -> dict[str, Any]:
    from training.align import dpo

    argv = ["--config", str(CONFIGS / "tiny_llava_dpo_cpu.yaml"), "--data_files", str(data),
            "--model_name_or_path", str(base), "--output_dir", str(out / "dpo"), "--max_steps", str(steps),
            "--save_strategy", "no"]
    if dpo.main(argv) != 0:
        raise RuntimeError("DPO stage failed")
    logs = [json.loads(x) for x in (out / "dpo" / "metrics.jsonl").read_text().splitlines()]
    steps_logged = [r for r in logs if "loss" in r]
    return {"loss_first": steps_logged[0]["loss"], "loss_last": steps_logged[-1]["loss"],
            "reward_accuracy_last": steps_logged[-1]["rewards/accuracies"],
            "reward_margin_last": steps_logged[-1]["rewards/margins"], "steps": len(steps_logged)}


def _reward(out: Path, data: Path, base: Path) -> dict[str, Any]:
    from training.align import reward

    argv = ["--config", str(CONFIGS / "tiny_llava_reward_cpu.yaml"), "--data_files", str(data),
            "--model_name_or_path", str(base), "--output_dir", str(out / "reward")]
    if reward.main(argv) != 0:
        raise RuntimeError("reward stage failed")
    card = json.loads((out / "reward" / "reward_card.json").read_text())
    return {k: card[k] for k in ("pairwise_accuracy", "reward_offset", "loss_first", "loss_last")}


def write_teacher_jsonl(out: Path, data: Path, reward_dir: Path) -> tuple[Path, list[float]]:
    """Score every (prompt, chosen|rejected) with the reward model; write a guard-schema JSONL
    with ``soft_response_unsafe`` = σ(offset − reward) (training.guard.teachers) and the pair's hard
    labels (rejected = unsafe). Returns the path and the teacher probabilities in row order."""
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    from training.align.data import spa_vl
    from training.align.reward import load_reward_model, score_pairs
    from training.guard.teachers import preference_soft_labels

    model, processor, card = load_reward_model(reward_dir, device="cpu")
    rows = list(spa_vl.convert(spa_vl.parquet_rows(str(data))))
    chosen, rejected = score_pairs(model, DataCollatorForVisionPreference(processor=processor), rows)
    lines, probs = [], []
    for row, rc, rr in zip(rows, chosen, rejected, strict=True):
        q = row["prompt"][0]["content"]
        soft = preference_soft_labels(q, row["chosen"][0]["content"], row["rejected"][0]["content"], rc, rr,
                                      reward_offset=card["reward_offset"])
        for kind, p, label in (("chosen", soft.chosen_unsafe, 0), ("rejected", soft.rejected_unsafe, 1)):
            probs.append(float(p))
            lines.append({"uid": f"smoke-{row['id']}-{kind}", "dataset": "smoke_spa_vl", "modality": "text",
                          "prompt": q, "images": [], "response": row[kind][0]["content"],
                          "label_prompt_unsafe": None, "label_response_unsafe": label,
                          "soft_response_unsafe": p, "orig_category": row["class1"],
                          "label_source": "reward_model_teacher"})
    # NOTE: training.guard.calibrate sets node thresholds on benign *prompt* items, so the
    # response-only teacher file also carries the pairs' questions (unsafe) and benign questions.
    for i, q in enumerate(sorted({r["prompt"][0]["content"] for r in rows})):
        lines.append({"uid": f"smoke-q{i}", "dataset": "smoke_spa_vl", "modality": "text", "prompt": q,
                      "images": [], "label_prompt_unsafe": 1, "label_source": "spa_vl_harm_question"})
    for i, q in enumerate(_BENIGN_QUESTIONS):
        lines.append({"uid": f"smoke-b{i}", "dataset": "smoke_benign", "modality": "text", "prompt": q,
                      "images": [], "label_prompt_unsafe": 0, "label_source": "smoke_benign"})
    path = out / "distill_data" / "train.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path, probs


def _distill(out: Path, data: Path) -> dict[str, Any]:
    from models.backends import GuardInput, load_backend
    from models.encoders import build_tiny_text_encoder
    from training.guard import distill
    from training.align.eval_harm import score_in_batches

    jsonl, teacher = write_teacher_jsonl(out, data, out / "reward")
    encoder = build_tiny_text_encoder(out / "tiny_encoder", seed=0)
    argv = ["--config", str(CONFIGS / "guard_tiny.yaml"), "--encoder", str(encoder),
            "--data_root", str(jsonl.parent), "--output_dir", str(out / "guard"),
            "--cache_dir", str(out / "guard_cache"), "--soft_weight", "1.0"]
    if distill.main(argv) != 0:
        raise RuntimeError("distill stage failed")
    backend = load_backend("torch", out / "guard")
    rows = [json.loads(x) for x in jsonl.read_text().splitlines()]
    rows = [r for r in rows if r.get("response") is not None]  # the teacher's items only
    verdicts = score_in_batches(backend.score, [GuardInput(text=r["prompt"], response=r["response"]) for r in rows],
                                backend.max_batch_size)
    agree = [v.flagged == (p >= 0.5) for v, p in zip(verdicts, teacher, strict=True)]
    return {"agreement_with_teacher": sum(agree) / len(agree), "n": len(agree),
            "teacher_unsafe_share": sum(p >= 0.5 for p in teacher) / len(teacher)}


def _eval(out: Path, harm: Path, base: Path) -> dict[str, Any]:
    from models.backends import load_backend
    from training.align import eval_harm

    args = argparse.Namespace(guard_jsonl=None, spa_vl_parquet=[str(harm)], spa_vl_split=None, limit=None)
    rows = eval_harm.load_prompts(args)
    scorer = load_backend("torch", out / "guard").score
    results, records = eval_harm.evaluate({"base": str(base), "aligned": str(out / "dpo" / "final")}, rows,
                                          scorer, max_new_tokens=24, batch_size=4)
    (out / "eval").mkdir(parents=True, exist_ok=True)
    (out / "eval" / "harm_eval.json").write_text(json.dumps(results, indent=2))
    (out / "eval" / "harm_eval.md").write_text(eval_harm.markdown_table(results))
    return {"base_unsafe_rate": results["base"]["unsafe_rate"],
            "aligned_unsafe_rate": results["aligned"]["unsafe_rate"], "n_prompts": len(rows)}


def run(out: Path, n_pairs: int = 48, dpo_steps: int = 12, seed: int = 0) -> dict[str, Any]:
    """The whole pipeline; returns (and writes) the summary."""
    from models.vlm import save_tiny_vlm
    from training.align.data import fixtures

    torch.set_num_threads(2)
    seconds: dict[str, float] = {}
    t = t_start = time.perf_counter()
    data = fixtures.write_parquet(out / "data" / "train.parquet", n_pairs, seed)
    harm = fixtures.write_test_parquet(out / "data" / "harm.parquet", 8, seed + 1)
    base = save_tiny_vlm(out / "tiny_llava", "llava", seed)
    t = _stage(seconds, "data_and_model", t)
    summary: dict[str, Any] = {"dpo": _dpo(out, data, base, dpo_steps)}
    t = _stage(seconds, "dpo", t)
    summary["reward_model"] = _reward(out, data, base)
    t = _stage(seconds, "reward_model", t)
    summary["distill"] = _distill(out, data)
    t = _stage(seconds, "distill", t)
    summary["eval"] = _eval(out, harm, base)
    _stage(seconds, "eval", t)
    seconds["total"] = round(time.perf_counter() - t_start, 1)
    summary["seconds"] = seconds
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


# What a smoke run writes; a folder holding only these is a previous run and is replaced.
_RUN_ENTRIES = {"data", "tiny_llava", "dpo", "reward", "distill_data", "tiny_encoder", "guard", "guard_cache",
                "eval", "summary.json"}


def _clear_previous_run(out: Path) -> None:
    """Remove a previous smoke run in ``out`` (so ``make smoke-train`` can be rerun); refuse to
    touch a folder that holds anything else."""
    import shutil

    if not out.exists():
        return
    entries = {p.name for p in out.iterdir()}
    if entries - _RUN_ENTRIES:
        raise SystemExit(f"smoke-train: {out} holds files that are not a smoke run ({sorted(entries - _RUN_ENTRIES)}); "
                         "pass another --out")
    for name in entries:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="spaguard smoke-train", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/smoke")
    p.add_argument("--pairs", type=int, default=48)
    p.add_argument("--dpo-steps", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = Path(args.out)
    _clear_previous_run(out)
    out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(run(out, args.pairs, args.dpo_steps, args.seed), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
