"""``spaguard train-guard``: train / distill the guard classifier, calibrate it, write the artifact.

    spaguard train-guard --config training/configs/guard_default.yaml [--flag value ...]

Pipeline (deterministic for a seed): data named by ``DistillConfig`` (guard JSONL, preference pairs,
SPA-VL, typographic renders, benign photos) → optional LLM-judge soft labels for unlabelled items
→ frozen-encoder features, cached on disk by content hash → heads trained on a stratified split,
temperature + FPR thresholds fitted on the rest (``training.guard.calibrate``) → optional grouped k-fold
and leave-one-dataset-out CV → ``GuardClassifier.save`` (config, heads, calibration, card).
Targets: ``(1 − soft_weight)·BCE(hard) + soft_weight·T²·BCE_T(soft)`` with teacher soft labels
(JSONL ``soft_*_unsafe``, ``training.guard.teachers``); node targets from SPA-VL categories (benign: all
0); preference pairs add a ranking loss on the response head (rejected above chosen).
"""

from __future__ import annotations

import glob
import json
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.artifact import git_commit
from training.guard.calibrate import split_items, train_and_calibrate
from training.guard.config import REPO_ROOT, DistillConfig
from training.guard.crossval import cross_validate, response_leave_one_source_out
from training.guard.guard_data import (GuardExample, PreferencePair, load_spa_vl, photo_examples,
                                       read_guard_jsonl, read_preference_pairs, typographic_examples)
from training.guard.heads import build_head_data, build_model
from training.guard.packs import pack_root, prepare_source_rows, split_pack
from training.guard.recipe_cli import recipe_main, recipe_parser


def load_examples(cfg: DistillConfig) -> tuple[list[GuardExample], list[PreferencePair], dict]:
    """Every example and pair the config names, plus per-source counts for the card."""
    root, counts = cfg.resolved_root(), {}
    examples: list[GuardExample] = []
    for entry in cfg.guard_files:
        pack, pattern = split_pack(entry)
        base = root if pack is None else pack_root(pack, cfg.data_roots, REPO_ROOT)
        paths = sorted(glob.glob(str(base / pattern)))
        if not paths:
            raise FileNotFoundError(f"guard_files entry {entry!r} matched nothing under {base}")
        for path in paths:
            # a named pack's image paths are relative to the pack; an unprefixed file's, to its folder
            rows = read_guard_jsonl(path, None if pack is None else base)
            rel = str(Path(path).relative_to(base))
            counts[rel if pack is None else f"{pack}:{rel}"] = len(rows)
            examples += rows
    if cfg.source_caps or cfg.source_weights or cfg.response_only_sources or cfg.question_grouped_sources:
        examples, rules = prepare_source_rows(examples, cfg)
        counts["source rules"] = rules
    for split in cfg.spa_vl_splits:
        rows = load_spa_vl(split, limit=cfg.spa_vl_limit)
        counts[f"sqrti/SPA-VL:{split}"] = len(rows)
        examples += rows
    if cfg.spa_vl_parquet:
        files = [str(root / p) for p in cfg.spa_vl_parquet]
        rows = load_spa_vl("train", data_files=files, limit=cfg.spa_vl_limit)
        counts["spa_vl_parquet"] = len(rows)
        examples += rows
    pairs: list[PreferencePair] = []
    for path in cfg.pair_files:
        got = read_preference_pairs(root / path)
        if cfg.max_pairs is not None and len(got) > cfg.max_pairs:
            got = random.Random(cfg.seed).sample(got, cfg.max_pairs)
        counts[path] = len(got)
        pairs += got
    if cfg.template_prompts:
        from training.guard.hazard_data import hazard_prompts, idiom_prompts

        for name, rows in (("hazard_templates", hazard_prompts(cfg.seed)), ("idiom_templates", idiom_prompts(cfg.seed))):
            counts[f"prompt items: {name}"] = len(rows)
            examples += rows
    if cfg.chat_turns:
        from training.guard.chat_turns import chat_turn_prompts

        rows = chat_turn_prompts(cfg.seed)
        counts["prompt items: chat_turns"] = len(rows)
        examples += rows
    if cfg.task_prompts:
        from training.guard.task_prompts import task_instruction_prompts, verb_sense_prompts

        for name, rows in (("task_instructions", task_instruction_prompts(cfg.seed)),
                           ("verb_senses", verb_sense_prompts(cfg.seed))):
            counts[f"prompt items: {name}"] = len(rows)
            examples += rows
    if cfg.task_twins:
        from training.guard.task_prompts import task_twin_prompts

        rows = task_twin_prompts(cfg.seed)
        counts["prompt items: task_twins"] = len(rows)
        examples += rows
    # generated items never draw on a calibration source's texts: those stay apart from training
    apart = set(cfg.calib_sources)
    pool = lambda: [e for e in examples if e.group not in apart]  # noqa: E731
    if cfg.ocr_format_count:
        from training.guard.carrier_data import ocr_format_examples

        rows = ocr_format_examples(pool(), cfg.ocr_format_count, cfg.seed)
        counts["prompt items: ocr_format"] = len(rows)
        examples += rows
    if cfg.typographic_count:
        typo = typographic_examples(pool(), cfg.typographic_count, cfg.seed)
        counts["typographic (rendered)"] = len(typo)
        examples += typo
    if cfg.photo_count:
        photos = photo_examples(pool(), cfg.photo_count, cfg.seed)
        counts["benign photos (scikit-image)"] = len(photos)
        examples += photos
    from training.guard.response_data import add_response_data as add

    examples = add(examples, counts, cfg.response_items, cfg.service_format_responses, cfg.seed)
    if cfg.light_replies:  # already in the service's response format, so after add()'s formatting
        from training.guard.light_replies import light_reply_responses

        rows = light_reply_responses(cfg.seed)
        counts["response items: light_replies"] = len(rows)
        examples += rows
    if cfg.model_answers_file:  # already in the service's response format, like light_replies
        from training.guard.model_answers import model_answer_responses

        path = Path(cfg.model_answers_file)
        rows = model_answer_responses(path if path.is_absolute() else REPO_ROOT / path, cfg.seed)
        counts["response items: model_answers"] = len(rows)
        examples += rows
    return examples, pairs, counts



def run(cfg: DistillConfig, argv: list[str] | None = None) -> dict:
    """The whole job; returns the card written next to the weights."""
    torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    t0 = time.perf_counter()
    examples, pairs, counts = load_examples(cfg)
    if cfg.judge_url:
        from training.guard.teachers import JudgeClient, judge_unlabelled

        examples = judge_unlabelled(examples, JudgeClient(cfg.judge_url, cfg.judge_model))
    model = build_model(cfg)
    data = build_head_data(model, examples, pairs, cfg)
    t_feat = time.perf_counter() - t0

    card_metrics: dict[str, Any] = {}
    if cfg.cv_folds or cfg.cv_leave_one_dataset_out:
        card_metrics = cross_validate(model, data, cfg)
        if cfg.cv_leave_one_dataset_out and (data.task == 1).any():
            card_metrics["leave_one_dataset_out"].update(response_leave_one_source_out(model, data, cfg))
    train_idx, held_idx = split_items(data, np.arange(data.n), cfg.calib_fraction, cfg.seed, cfg.calib_sources)
    calibration, losses = train_and_calibrate(model, data, train_idx, held_idx, cfg)
    card = {
        "data": counts, "n_items": int(data.n), "n_pairs": len(data.pair_x),
        "git_commit": git_commit(REPO_ROOT) or "unknown", "seed": cfg.seed, "config": asdict(cfg),
        "command": "spaguard train-guard " + " ".join(argv if argv is not None else sys.argv[1:]),
        "metrics": card_metrics, "train_loss": {"first": losses[0], "last": losses[-1]},
        "calibration": {"target_fpr": cfg.target_fpr, "node_target_fpr": cfg.node_target_fpr,
                        "held_out_items": int(len(held_idx)),
                        "calibrated_tasks": sorted({("prompt", "response")[t] for t in data.task[held_idx]})},
        "build_seconds": {"features": round(t_feat, 1), "total": round(time.perf_counter() - t0, 1)},
    }
    model.save(cfg.output_dir, card, calibration)
    return json.loads((Path(cfg.output_dir) / "card.json").read_text())


def make_parser():
    return recipe_parser(DistillConfig)


def main(argv: list[str] | None = None) -> int:
    return recipe_main(DistillConfig, run, "spaguard train-guard", lambda card: {k: card[k] for k in ("metrics", "build_seconds")}, argv)


if __name__ == "__main__":
    raise SystemExit(main())
