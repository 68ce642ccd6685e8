"""Weight averaging ("model soup") of LoRA fine-tunes that differ only in their training noise.

    python -m training.guard.soup --members runs/cand9/lora runs/cand9/lora_t1 --output_dir runs/cand9/soup

Why: fine-tunes of one recipe differ on unseen data from run to run (docs/classifier.md, candidates 9
and 10), so a candidate picked from one run is picked partly by its draw. The average of several runs'
weights costs one model at inference and removes that draw.

Contract
--------
* Members: artifacts written by ``training.guard.finetune`` with one recipe (the card's ``config``,
  ``output_dir``, ``train_seed`` and ``threads`` aside) and hence one ``seed``. So they share data, split
  and warm-start heads and differ in ``train_seed``. ``ValueError`` if they differ in anything else,
  repeat a ``train_seed``, are not LoRA fine-tunes, or are fewer than two.
* The soup's encoder delta is the exact mean of the members' deltas, kept in LoRA form. The adapters are
  concatenated along the rank (A by rows, B by columns) into rank N·r at the members' ``lora_alpha``.
  peft scales an adapter by alpha / rank, and that scaling supplies the 1/N:
  (alpha / (N·r)) Σ B_i A_i = mean_i (alpha / r) B_i A_i. The heads (trunk, out) are the mean of the
  members' heads. That mean is meaningful because every member starts from the same warm-start heads.
  The ONNX export merges the adapters, so rank N·r costs nothing at inference.
* Calibration and measurement use the members' own split (``finetune.splits``): the soup is calibrated
  on the calibration half and measured on the measured half, exactly as ``finetune`` does for one
  member. None of those items was trained on by any member.
* Output: a standard artifact. Its card holds the soup's ``metrics.held_out.soup`` beside each member's
  own figures and the warm start's cross-validation. ``soup_report.json`` holds the same comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.artifact import git_commit, read_card
from training.guard.config import REPO_ROOT

# Card config keys that may differ between members: where a member was written, its noise and threads.
MEMBER_FREE_KEYS = frozenset({"output_dir", "train_seed", "threads"})
HEAD_PREFIXES = ("trunk.", "out.")


def member_recipe(members: list[str | Path]) -> tuple[Any, list[int], list[dict[str, Any]]]:
    """The one ``FinetuneConfig`` the members were trained with, each member's noise seed and card.
    ``ValueError`` where the members cannot be averaged (see the module contract)."""
    from training.guard.finetune import FinetuneConfig

    if len(members) < 2:
        raise ValueError("a soup needs at least two members")
    cards = [read_card(m) for m in members]
    configs = [dict(c.get("config") or {}) for c in cards]
    for m, cfg in zip(members, configs):
        if "lora_r" not in cfg or "init_from" not in cfg:
            raise ValueError(f"{m}: not a training.guard.finetune artifact (its card has no LoRA recipe)")
    ref = {k: v for k, v in configs[0].items() if k not in MEMBER_FREE_KEYS}
    for m, cfg in zip(members[1:], configs[1:]):
        other = {k: v for k, v in cfg.items() if k not in MEMBER_FREE_KEYS}
        diff = sorted(k for k in set(ref) | set(other) if ref.get(k) != other.get(k))
        if diff:
            raise ValueError(f"{m} was trained with another recipe than {members[0]}: {', '.join(diff)} differ")
    seeds = [int(cfg["train_seed"]) if cfg.get("train_seed") is not None else int(cfg["seed"]) for cfg in configs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"members repeat a train_seed ({seeds}): averaging a run with itself adds nothing")
    known = {f.name for f in fields(FinetuneConfig)}
    cfg = FinetuneConfig(**{k: v for k, v in configs[0].items() if k in known and k != "train_seed"})
    return cfg, seeds, cards


def average_state(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The soup's artifact weights from the members' (see the contract): LoRA A stacked by rows, B by
    columns, every other weight averaged. ``ValueError`` if the members hold different weights."""
    keys = set(states[0])
    for s in states[1:]:
        if set(s) != keys or any(s[k].shape != states[0][k].shape for k in keys):
            raise ValueError("members hold different weights (another LoRA shape or head)")
    out = {}
    for k in sorted(keys):
        if ".lora_A." in k:
            out[k] = torch.cat([s[k] for s in states], 0)
        elif ".lora_B." in k:
            out[k] = torch.cat([s[k] for s in states], 1)
        elif k.startswith(HEAD_PREFIXES):
            out[k] = torch.stack([s[k].float() for s in states]).mean(0).to(states[0][k].dtype)
        else:
            raise ValueError(f"don't know how to average {k!r}")
    return out


def build_soup(models: list[Any]) -> Any:
    """A ``GuardClassifier`` (eval mode) whose encoder delta and heads are the members' means."""
    from models.classifier import GuardClassifier

    cfg0 = models[0].config
    for m in models[1:]:
        if asdict(m.config) != asdict(cfg0):
            raise ValueError("members have different classifier configs")
    if cfg0.encoder_trainable != "lora" or cfg0.lora_dropout:
        raise ValueError("a soup averages LoRA fine-tunes without adapter dropout")
    soup = GuardClassifier(replace(cfg0, lora_r=cfg0.lora_r * len(models)))
    state = average_state([m._artifact_state() for m in models])
    missing, unexpected = soup.load_state_dict(state, strict=False)
    if unexpected or set(soup._artifact_state()) - set(state):
        raise ValueError(f"the averaged weights do not fit the soup: {unexpected[:5]}")
    return soup.eval()


def run(members: list[str], output_dir: str, threads: int = 2, argv: list[str] | None = None) -> dict:
    """Build, calibrate, measure and write the soup; returns the report (also ``soup_report.json``)."""
    from models.classifier import GuardClassifier
    from training.guard.distill import load_examples
    from training.guard.finetune import (calibrate_arm, init_cv_metrics, labelled_items, measure_arm,
                                         predict_items, probe_logits, resolve_ocr, splits)
    from training.guard.heads import build_head_data

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    cfg, seeds, member_cards = member_recipe(members)
    soup = build_soup([GuardClassifier.load(m) for m in members])
    examples, pairs, counts = load_examples(cfg)
    data = build_head_data(soup, examples, pairs, cfg, encode=False)  # labels and groups: the split
    items, _ = labelled_items(examples, pairs)
    if len(items) != data.n:
        raise ValueError(f"item order drifted from build_head_data ({len(items)} != {data.n})")
    _, cal_idx, eval_idx = splits(data, cfg)
    held = np.concatenate([cal_idx, eval_idx])
    resolved = resolve_ocr(soup, [items[i] for i in held])  # OCR once, for the held-out items only
    for i, it in zip(held, resolved):
        items[i] = it
    out = predict_items(soup, items, held, data.task)
    c = len(cal_idx)
    cal = calibrate_arm(data, cal_idx, {k: v[:c] for k, v in out.items()}, soup.config.node_keys, cfg)
    measured = measure_arm(data, eval_idx, {k: v[c:] for k, v in out.items()}, cal, probe_logits(soup))
    held_out: dict[str, Any] = {"soup": measured}
    held_out["frozen_baseline"] = member_cards[0]["metrics"]["held_out"].get("frozen_baseline")
    for seed, card in zip(seeds, member_cards):
        held_out[f"member_train_seed_{seed}"] = card["metrics"]["held_out"].get("lora")
    split = {"calibration": int(len(cal_idx)), "measured": int(len(eval_idx)), "seed": cfg.seed,
             "calib_fraction": cfg.calib_fraction, "eval_fraction": cfg.eval_fraction}
    report = {"members": [str(m) for m in members], "train_seeds": seeds, "split": split, "arms": held_out,
              "seconds": round(time.perf_counter() - t0, 1)}
    card = {"data": counts, "n_items": int(data.n), "n_pairs": len(pairs), "seed": cfg.seed,
            "git_commit": git_commit(REPO_ROOT) or "unknown",
            "config": {**asdict(cfg), "output_dir": output_dir, "lora_r": soup.config.lora_r, "train_seed": None},
            "init_from": cfg.init_from,
            "command": "python -m training.guard.soup " + " ".join(argv if argv is not None else sys.argv[1:]),
            "soup": {"members": [{"dir": str(m), "train_seed": s, "git_commit": mc.get("git_commit"),
                                  "command": mc.get("command")} for m, s, mc in zip(members, seeds, member_cards)],
                     "method": "mean of the members' LoRA deltas (exact, rank concatenated) and heads"},
            "metrics": {"held_out": held_out, "split": split, **init_cv_metrics(cfg.init_from)},
            "calibration": {"target_fpr": cfg.target_fpr, "node_target_fpr": cfg.node_target_fpr,
                            "held_out_items": int(len(cal_idx))}}
    soup.save(output_dir, card, cal)
    (Path(output_dir) / "soup_report.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m training.guard.soup", description=__doc__.split("\n")[0])
    parser.add_argument("--members", nargs="+", required=True, help="finetune artifacts of one recipe")
    parser.add_argument("--output_dir", required=True, help="artifact directory to write")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(args_list)
    try:
        report = run(args.members, args.output_dir, args.threads, args_list)
    except (OSError, ValueError) as exc:
        print(f"soup: error: {exc}", file=sys.stderr)
        return 2
    summary = {k: {"prompt": v["prompt"], "response": v["response"]} if v else None
               for k, v in report["arms"].items()}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
