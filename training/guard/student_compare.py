"""``spaguard compare-students``: two (or more) encoders fine-tuned the same way, scored on sources they never saw.

    spaguard compare-students --config training/configs/guard_dd2_lora.yaml --source_folds 5 --run_folds 0 \\
        --students all-minilm-l6-v2 smollm2-135m-instruct --output_dir runs/students [--flag value ...]

Issue 10, item 5: choose the student by measurement, each candidate fine-tuned (not frozen), under the
evaluation that predicts generalisation (sources held out) and the latency it costs, side by side in one run.

Contract
--------
* The recipe's sources are dealt into ``source_folds`` folds exactly as ``spaguard crossval-finetune`` deals them
  (``lodo_finetune.deal_sources``, same seed); ``run_folds`` picks which are held out ([] = all). Every item of a
  held-out fold's sources, and every item sharing a near-copy cluster with them, neither trains nor calibrates.
* Every student gets the **same** inner split (``calibrate.split_items``), the same training items per epoch
  (``max_train_items``, seeded), the same losses and optimiser settings (``lodo_finetune.finetune_and_score``,
  the LoRA arm's own steps), and starts from
  **freshly initialised heads** (seeded) with LoRA adapters on ``student_lora_targets``: no student has a warm
  start the other lacks (a frozen warm start would need every item encoded by each encoder first, which for a
  135M-parameter decoder costs more than the fine-tune on the 2-core box). Each is calibrated on the inner part
  as train-guard calibrates (``finetune.calibrate_arm``) and scores the held-out items at its own calibration.
* Latency, measured in the same process with the students interleaved round by round: featurize + forward in
  torch (``threads``), batch 1 over ``latency_texts`` held-out prompts (p50 / p95 ms) and batch 32 (items/s).
  Torch eager, not ONNX Runtime: both students run the same runtime, so the ratio is what to read (the shipped
  MiniLM graph in ORT is faster still, ``docs/benchmarks.md``).
* Writes ``output_dir/student_compare.json`` (``{"folds", "students": {name: report}, "latency": {name: ...},
  "data", "seconds", "command"}``, each report in ``crossval-guard``'s shape) and ``student_compare.md``, and
  prints the macro rows and latency as JSON.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from training.guard.config import config_field
from training.guard.crossval import lodo_markdown
from training.guard.distill import load_examples
from training.guard.finetune import FinetuneConfig, labelled_items, resolve_ocr
from training.guard.heads import build_head_data, build_model
from training.guard.lodo_finetune import (TASKS, arm_report, deal_sources, finetune_and_score, fold_split, macro_rows,
                                          write_report)
from training.guard.recipe_cli import recipe_main

LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class StudentCompareConfig(FinetuneConfig):
    """A LoRA fine-tune recipe, the students to compare and the folds to hold out (strict YAML + CLI parser)."""

    students: list[str] = config_field(["all-minilm-l6-v2", "smollm2-135m-instruct"],
                                       "Encoders to compare (aliases, HF names or local paths), each fine-tuned.")
    student_lora_targets: list[str] = config_field(
        [], "'student=mod1,mod2': LoRA target modules per student; unnamed students use lora_target_modules, "
            "except that the smollm2 alias defaults to every Llama linear layer.")
    source_folds: int = config_field(5, "Folds the sources are dealt into (as crossval-finetune deals them).")
    run_folds: list[int] = config_field([], "Which folds (0-based) are held out; [] = every fold.")
    latency_texts: int = config_field(64, "Held-out prompts timed at batch 1 per student (0 = no latency run).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.students) < 2 or len(set(self.students)) != len(self.students):
            raise ValueError("students must name at least two different encoders")
        if self.source_folds < 2:
            raise ValueError("source_folds must be ≥ 2")
        if any(k < 0 or k >= self.source_folds for k in self.run_folds):
            raise ValueError(f"run_folds must lie in [0, {self.source_folds - 1}]")
        if self.latency_texts < 0:
            raise ValueError("latency_texts must be ≥ 0")
        self.lora_targets()  # malformed entries fail here, before any data is read

    def lora_targets(self) -> dict[str, list[str]]:
        """The LoRA target modules of each student."""
        from models.encoder_files import SMOLLM2_ALIAS

        given: dict[str, list[str]] = {}
        for entry in self.student_lora_targets:
            name, sep, mods = entry.partition("=")
            if not sep or name not in self.students or not mods.strip():
                raise ValueError(f"student_lora_targets entry {entry!r} is not 'student=mod1,mod2' "
                                 "for a listed student")
            given[name] = [m.strip() for m in mods.split(",") if m.strip()]
        default = list(self.lora_target_modules)
        return {s: given.get(s, LLAMA_TARGETS if s.lower() == SMOLLM2_ALIAS else default) for s in self.students}


def build_student(cfg: StudentCompareConfig, encoder: str, targets: list[str], node_keys: list[str]):
    """A LoRA classifier on ``encoder`` with freshly initialised, seeded trunk and heads."""
    from models.artifact import ClassifierConfig
    from models.classifier import GuardClassifier

    torch.manual_seed(cfg.seed)
    return GuardClassifier(ClassifierConfig(
        encoder=encoder, max_length=cfg.max_length, use_ocr=cfg.use_ocr, image_encoder=cfg.image_encoder,
        node_keys=list(node_keys), head_hidden=cfg.head_hidden, dropout=cfg.dropout, encoder_trainable="lora",
        lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_target_modules=list(targets) or None))


def _time_batches(model, items: list, size: int) -> list[float]:
    """Seconds of featurize + forward for each consecutive batch of ``size`` items."""
    out = []
    with torch.inference_mode():
        for s in range(0, len(items) - size + 1, size):
            t0 = time.perf_counter()
            model(**model.featurize(items[s:s + size]))
            out.append(time.perf_counter() - t0)
    return out


def measure_latency(models: dict[str, Any], texts: list[str], rounds: int = 3) -> dict[str, dict[str, float]]:
    """Batch-1 p50/p95 ms and batch-32 items/s per model, the models interleaved round by round."""
    from models.contract import GuardInput

    items = [GuardInput(t) for t in texts]
    big = (items * (1 + 64 // max(1, len(items))))[:64]  # two batches of 32
    one: dict[str, list[float]] = {n: [] for n in models}
    many: dict[str, list[float]] = {n: [] for n in models}
    for m in models.values():  # warm-up: first calls allocate
        m.eval()
        _time_batches(m, items[:4], 1)
    for _ in range(rounds):
        for name, m in models.items():
            one[name] += _time_batches(m, items, 1)
            many[name] += _time_batches(m, big, 32)
    out = {}
    for name in models:
        ms = sorted(x * 1e3 for x in one[name])
        out[name] = {"batch1_p50_ms": round(statistics.median(ms), 2),
                     "batch1_p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 2),
                     "batch32_items_per_s": round(32 * len(many[name]) / sum(many[name]), 1),
                     "parameters_m": round(sum(p.numel() for p in models[name].encoder.parameters()) / 1e6, 1),
                     "texts": len(items)}
    return out


def run(cfg: StudentCompareConfig, argv: list[str] | None = None) -> dict[str, Any]:
    """Every student over the chosen folds, then the latency run; see the module docstring."""
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    targets = cfg.lora_targets()
    examples, pairs, counts = load_examples(cfg)
    labeller = build_model(dataclasses.replace(cfg, encoder=cfg.students[0]))  # node keys and the OCR reader
    data = build_head_data(labeller, examples, pairs, cfg, encode=False)
    node_keys = list(labeller.config.node_keys)
    items, pair_items = labelled_items(examples, pairs)
    if len(items) != data.n:
        raise ValueError(f"item order drifted from build_head_data ({len(items)} != {data.n})")
    items, pair_items = resolve_ocr(labeller, items), resolve_ocr(labeller, pair_items)
    del labeller
    folds = deal_sources(sorted(set(data.groups)), cfg.source_folds, cfg.seed)
    chosen = sorted(set(cfg.run_folds)) if cfg.run_folds else list(range(len(folds)))
    if any(k >= len(folds) for k in chosen):
        raise ValueError(f"run_folds {chosen} but the sources fill only {len(folds)} folds")
    preds: dict[str, dict[int, tuple[float, bool]]] = {s: {} for s in cfg.students}
    fold_log, held_prompts = [], []
    for k in chosen:
        fold = folds[k]
        held, fit_idx, cal_idx = fold_split(data, fold, cfg)
        held_prompts += [items[i].text for i in held if data.task[i] == 0 and items[i].text.strip()]
        entry: dict[str, Any] = {"fold": k, "sources": fold, "held_out": int(len(held)), "trained": int(len(fit_idx)),
                                 "calibrated": int(len(cal_idx)), "finetune_seconds": {}}
        for student in cfg.students:
            model = build_student(cfg, student, targets[student], node_keys)
            entry["finetune_seconds"][student] = finetune_and_score(model, items, pair_items, data,
                                                                    (fit_idx, cal_idx, held), cfg, preds[student])
            del model  # a 135M-parameter student: free it before the next one is built
            gc.collect()
            print(f"compare-students: fold {k} ({', '.join(fold)}): {student} done", file=sys.stderr)
        fold_log.append(entry)
    latency: dict[str, Any] = {}
    if cfg.latency_texts:
        rng = np.random.default_rng(cfg.seed)
        pool = held_prompts or [it.text for it in items if it.text.strip()]
        texts = [pool[i] for i in rng.permutation(len(pool))[:cfg.latency_texts]]
        # adapters merged, as the export ships them: the timed graph is the plain encoder plus the heads
        students = {s: build_student(cfg, s, targets[s], node_keys) for s in cfg.students}
        for m in students.values():
            m.encoder = m.encoder.merge_and_unload()
        latency = measure_latency(students, texts)
    report = {"folds": fold_log, "students": {s: arm_report(data, preds[s]) for s in cfg.students},
              "latency": latency, "lora_targets": targets, "data": counts, "seed": cfg.seed,
              "threads": cfg.threads, "max_train_items": cfg.max_train_items, "epochs": cfg.epochs,
              "command": "spaguard compare-students " + " ".join(argv if argv is not None else sys.argv[1:]),
              "seconds": round(time.perf_counter() - t0, 1)}
    write_report(cfg.output_dir, "student_compare", report, markdown(report))
    return report


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """Each student's macro rows and latency: what to compare."""
    return {s: {**{key: rep[key] for key in (f"{t}_macro" for t in TASKS) if key in rep},
                "latency": report["latency"].get(s)} for s, rep in report["students"].items()}


def markdown(report: dict[str, Any]) -> str:
    """Macro rows and latency side by side, then each student's per-source tables."""
    lines = macro_rows("student", report["students"])
    if report["latency"]:
        lines += ["", "| student | encoder params (M) | batch 1 p50 ms | batch 1 p95 ms | batch 32 items/s |",
                  "|---|---|---|---|---|"]
        for student, lat in report["latency"].items():
            lines.append(f"| {student} | {lat['parameters_m']} | {lat['batch1_p50_ms']} | {lat['batch1_p95_ms']} | "
                         f"{lat['batch32_items_per_s']} |")
    lines.append("")
    for student, rep in report["students"].items():
        lines += [f"### {student}", "", lodo_markdown(rep)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return recipe_main(StudentCompareConfig, run, "spaguard compare-students", summary, argv)


if __name__ == "__main__":
    raise SystemExit(main())
