"""The ``spaguard`` command: one entry point, one subcommand per job.

Each subcommand lives in its own module exposing ``main(argv: list[str] | None) -> int``; it is
imported only when chosen, so ``spaguard serve`` never imports the training stack.

    spaguard serve [--config FILE.yaml] [--flags ...]     guarded OpenAI-compatible server
    spaguard keys create|list|revoke|allow ...            tenant API keys (--db URL)
    spaguard audit export|report --since T ...            the audit log: records, the shadow report
    spaguard eval-guard --data FILE.jsonl --out DIR       evaluate a harm classifier
    spaguard train-guard [--config FILE.yaml] ...         train / distill the harm classifier
    spaguard finetune-guard --config FILE.yaml            LoRA-fine-tune the classifier's encoder
    spaguard soup-guard --members A B ... --output_dir D  weight-average fine-tunes of one recipe
    spaguard crossval-guard --config FILE.yaml --out DIR  leave-one-dataset-out of a (frozen) recipe
    spaguard crossval-finetune --config FILE.yaml         sources held out: LoRA vs frozen, same folds
    spaguard compare-students --config FILE.yaml          students fine-tuned alike, held out, timed
    spaguard export-onnx --model DIR --out FILE.onnx      export the classifier to ONNX
    spaguard triton-repo --out DIR                        a Triton model repository of the classifier
    spaguard train-dpo  training/configs/<recipe>.yaml    align a VLM with DPO
    spaguard train-reward training/configs/<recipe>.yaml  train the VLM reward model
    spaguard train-rl training/configs/<recipe>.yaml      GRPO against the VLM reward model
    spaguard eval-harm ...                                unsafe rate of a VLM's answers
    spaguard smoke-train --out runs/smoke                 the whole training pipeline on tiny models
"""

from __future__ import annotations

import importlib
import sys

_COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("service.serve", "run the guarded OpenAI-compatible server"),
    "keys": ("service.tenancy.cli", "create, list and revoke tenant API keys"),
    "audit": ("service.audit.cli", "export the audit log; the shadow report (text, PNG)"),
    "eval-guard": ("training.guard.evaluate", "evaluate a harm classifier on guard-schema JSONL"),
    "train-guard": ("training.guard.distill", "train / distill the harm classifier"),
    "finetune-guard": ("training.guard.finetune", "LoRA fine-tune of the classifier's encoder (warm start)"),
    "soup-guard": ("training.guard.soup", "weight average of LoRA fine-tunes that differ only in train_seed"),
    "crossval-guard": ("training.guard.lodo_report",
                       "leave-one-dataset-out of a classifier recipe (per source + macro)"),
    "crossval-finetune": ("training.guard.lodo_finetune",
                          "sources held out for the LoRA fine-tune, the frozen recipe on the same folds"),
    "compare-students": ("training.guard.student_compare",
                         "encoders fine-tuned alike, scored on held-out sources, timed side by side"),
    "export-onnx": ("models.export_onnx", "export a classifier artifact to ONNX"),
    "triton-repo": ("models.triton_repo", "write a Triton model repository of the classifier's ONNX graph"),
    "train-dpo": ("training.align.dpo", "align a VLM with DPO from a YAML recipe"),
    "train-reward": ("training.align.reward", "train a VLM reward model from a YAML recipe"),
    "train-rl": ("training.align.rl", "on-policy RL (GRPO) of a VLM against the VLM reward model"),
    "eval-harm": ("training.align.eval_harm", "generate answers and measure the unsafe rate"),
    "smoke-train": ("training.smoke", "run the whole training pipeline on tiny models"),
}


def _usage() -> str:
    width = max(map(len, _COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, help_) in _COMMANDS.items())
    return f"usage: spaguard <command> [args...]\n\ncommands:\n{rows}\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in _COMMANDS:
        print(f"spaguard: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(_COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
