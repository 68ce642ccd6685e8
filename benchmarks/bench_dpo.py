"""LoRA DPO throughput of a LLaVA-1.5-7B-shaped model: TRL defaults vs tuned settings, one run.

Contract
--------
Builds a randomly initialised LLaVA-1.5-7B-shaped model (CLIP ViT-L/14-336 + Llama-2-7B text
model, 576 image tokens; no download) or, with ``--tiny``, the project's tiny LLaVA, and runs
``DPOTrainer`` (LoRA r=64 on the language model, bf16 on GPU) on synthetic SPA-VL-shaped pairs
(one 336-px image, then ~250 text tokens of question + response per sequence, fixed lengths, so
every step has the same token count). For each variant (``VARIANTS``: ``trl_default`` = DPOConfig defaults; ``tuned``;
``tuned_ckpt``) it measures, after ``--warmup`` steps: s/step, samples/s, tokens/s, MFU and peak
memory, and, on one fixed held-out batch after training, the DPO loss and reward margin (all
variants start from the same seed, data order and LoRA init, so these must agree within bf16
noise: the tuning must not change the loss).

Accounting (the issue's): model FLOPs per step = 6 · N · T, N = all parameters, T = tokens of
the step (chosen + rejected sequences, image tokens included): 2·N·T policy forward,
2·N·T backward through the activations (frozen base, LoRA grads negligible), 2·N·T reference
forward (adapters disabled). Recomputation under gradient checkpointing is not counted (model
FLOPs, not hardware FLOPs). The peak is a bf16 matmul measured in this script (``--peak-n``).

Writes one table to stdout and ``<out>/bench_dpo.json`` (+ ``.csv``).

    python benchmarks/bench_dpo.py --out runs/bench_dpo                # GPU, 7B shape
    python benchmarks/bench_dpo.py --tiny --steps 4 --warmup 1 --out /tmp/b   # CPU smoke
"""

from __future__ import annotations

import argparse
import csv
import gc
import io
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere in the repo

LORA_REGEX = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"

# Settings that differ from DPOConfig's defaults. Every variant trains the same batches.
VARIANTS: dict[str, dict[str, Any]] = {
    # TRL 1.16 defaults: gradient checkpointing on, collator (image decode + processing) in the
    # training process.
    "trl_default": {},
    # No recomputation (LoRA on a frozen 7B leaves room for the activations on an 80 GB card) and
    # image processing in 4 worker processes, off the GPU's critical path.
    "tuned": {"gradient_checkpointing": False, "dataloader_num_workers": 4, "dataloader_pin_memory": True,
              "dataloader_persistent_workers": True, "dataloader_prefetch_factor": 4},
    # Fallback where activations do not fit: keep checkpointing, non-reentrant, workers on.
    "tuned_ckpt": {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False},
                   "dataloader_num_workers": 4, "dataloader_pin_memory": True,
                   "dataloader_persistent_workers": True, "dataloader_prefetch_factor": 4},
}


@dataclass
class Result:
    variant: str
    steps_timed: int
    s_per_step: float
    samples_per_s: float
    tokens_per_s: float
    tflops: float
    mfu: float
    peak_mem_gib: float
    fixed_batch_loss: float
    fixed_batch_margin: float


def llava_7b_config_and_processor():
    """LLaVA-1.5-7B's shapes (CLIP ViT-L/14-336, Llama-2-7B, vocab 32064, 576 image tokens) with the
    project's byte tokenizer, so no file is downloaded."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from models.vlm import LLAVA_CHAT_TEMPLATE, build_byte_tokenizer

    tok = build_byte_tokenizer(("<pad>", "<s>", "</s>", "<unk>", "<image>"), bos="<s>", eos="</s>", pad="<pad>",
                               unk="<unk>", chat_template=LLAVA_CHAT_TEMPLATE)
    tok.model_max_length = 4096  # the tiny models' 512 would warn on every 7B-shaped sequence
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768)
    text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-2, image_seq_length=576,
                         projector_hidden_act="gelu")
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}),
        tokenizer=tok, patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE)
    return config, processor


def build_llava_7b_shape(tiny: bool, seed: int):
    """``(model, processor)``: random weights, LLaVA-1.5-7B shapes on the GPU (or the tiny LLaVA)."""
    from transformers import LlavaForConditionalGeneration

    from models.vlm import build_tiny_vlm

    if tiny:
        return build_tiny_vlm("llava", seed)
    config, processor = llava_7b_config_and_processor()
    torch.manual_seed(seed)
    # Build directly in bf16 on the GPU: a 7B fp32 model on the host would need 28 GB and minutes.
    with torch.device("cuda"):
        prev = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            model = LlavaForConditionalGeneration(config)
        finally:
            torch.set_default_dtype(prev)
    return model, processor


def synthetic_pairs(n: int, image_px: int, text_tokens: int, seed: int):
    """SPA-VL-shaped vision-preference rows with fixed lengths: each sequence (question + one
    response) carries ``text_tokens`` text tokens besides the image's (byte tokenizer: 1 byte = 1
    token; the chat template adds a few more)."""
    from datasets import Dataset, Features, List, Value
    from datasets import Image as ImageFeature

    rng = np.random.default_rng(seed)
    q_len = text_tokens * 2 // 5  # SPA-VL questions are shorter than its answers
    r_len = text_tokens - q_len

    def text(k: int) -> str:
        return "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz "), size=k))

    rows = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, size=(image_px, image_px, 3), dtype=np.uint8)).save(buf, format="PNG")
        rows.append({"images": [{"bytes": buf.getvalue(), "path": None}],
                     "prompt": [{"role": "user", "content": text(q_len)}],
                     "chosen": [{"role": "assistant", "content": text(r_len)}],
                     "rejected": [{"role": "assistant", "content": text(r_len)}]})
    turn = List({"role": Value("string"), "content": Value("string")})
    feats = Features({"images": List(ImageFeature()), "prompt": turn, "chosen": turn, "rejected": turn})
    return Dataset.from_list(rows, features=feats)


def measure_peak_tflops(n: int, iters: int, device: str) -> float:
    """Measured bf16 (GPU) / fp32 (CPU) matmul TFLOP/s: the MFU denominator."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    _sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - t0) / 1e12


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (device-synchronised)."""

    def __init__(self, device: str) -> None:
        self.device, self.times, self._t0 = device, [], 0.0

    def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - Trainer signature
        _sync(self.device)
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        _sync(self.device)
        self.times.append(time.perf_counter() - self._t0)


def _dpo_config(variant: str, args: argparse.Namespace, out: Path, device: str):
    from trl import DPOConfig

    base = dict(output_dir=str(out / variant), per_device_train_batch_size=args.batch_size, max_steps=args.steps,
                learning_rate=1e-4, beta=0.1, max_length=None, logging_steps=1, save_strategy="no",
                report_to="none", seed=args.seed, bf16=device == "cuda", use_cpu=device == "cpu",
                disable_tqdm=True)
    overrides = dict(VARIANTS[variant])
    if device == "cpu":  # worker processes only add noise on a 2-core CPU smoke run
        overrides = {k: v for k, v in overrides.items() if not k.startswith("dataloader_")}
    return DPOConfig(**base, **overrides)


def fixed_batch_metrics(trainer: Any, rows: list[dict]) -> tuple[float, float]:
    """DPO loss and mean reward margin of one fixed batch (no grad, eval mode)."""
    trainer.model.eval()
    batch = trainer._prepare_inputs(trainer.data_collator([dict(r) for r in rows]))
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()
    margins = trainer._metrics["eval"].get("rewards/margins", [float("nan")])
    return loss, float(margins[-1])


def run_variant(variant: str, args: argparse.Namespace, out: Path, device: str, peak: float,
                train_ds: Any, fixed_rows: list[dict]) -> Result:
    from peft import LoraConfig
    from trl import DPOTrainer

    model, processor = build_llava_7b_shape(args.tiny, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    model.requires_grad_(False)
    peft = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, target_modules=LORA_REGEX,
                      task_type="CAUSAL_LM")
    timer = StepTimer(device)
    trainer = DPOTrainer(model=model, args=_dpo_config(variant, args, out, device), train_dataset=train_ds,
                         processing_class=processor, peft_config=peft, callbacks=[timer])
    seq_tokens = int(trainer.data_collator([dict(r) for r in fixed_rows[:1]])["attention_mask"].sum())
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    timed = timer.times[args.warmup:]
    if not timed:
        raise ValueError(f"--steps {args.steps} must exceed --warmup {args.warmup}")
    s_step = float(np.median(timed))
    tokens_step = seq_tokens * args.batch_size  # chosen + rejected rows of every pair, all same length
    tflops = 6 * n_params * tokens_step / s_step / 1e12
    loss, margin = fixed_batch_metrics(trainer, fixed_rows)
    mem = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    trainer.accelerator.free_memory()  # drops the accelerator's references to model and optimizer
    del trainer, model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return Result(variant, len(timed), s_step, args.batch_size / s_step, tokens_step / s_step, tflops,
                  tflops / peak, mem, loss, margin)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny LLaVA on CPU (tests)")
    p.add_argument("--variants", default="trl_default,tuned", help=f"comma list of {list(VARIANTS)}")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lora-r", type=int, default=64)
    p.add_argument("--text-tokens", type=int, default=250, help="question + one response per sequence")
    p.add_argument("--peak-n", type=int, default=8192)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench_dpo")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"bench_dpo: unknown variants {unknown}; choose from {list(VARIANTS)}")
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if device == "cpu" and not args.tiny:
        raise SystemExit("bench_dpo: the 7B shape needs a CUDA GPU; use --tiny on CPU")
    torch.set_num_threads(2 if device == "cpu" else torch.get_num_threads())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image_px = 32 if args.tiny else 336
    train_ds = synthetic_pairs(args.steps * args.batch_size, image_px, args.text_tokens, args.seed)
    fixed_rows = list(synthetic_pairs(args.batch_size, image_px, args.text_tokens, args.seed + 1))
    peak = measure_peak_tflops(args.peak_n if device == "cuda" else 512, 50 if device == "cuda" else 5, device)
    results = [run_variant(v, args, out, device, peak, train_ds, fixed_rows) for v in variants]
    base = results[0]
    meta = {"device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
            "peak_tflops_measured": peak, "torch": torch.__version__, "args": vars(args),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    rows = [{**asdict(r), "speedup_vs_first": r.tokens_per_s / base.tokens_per_s,
             "loss_delta_vs_first": r.fixed_batch_loss - base.fixed_batch_loss} for r in results]
    (out / "bench_dpo.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    with (out / "bench_dpo.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"device={meta['device']} measured matmul peak={peak:.4g} TFLOP/s")
    print(f"{'variant':<12} {'s/step':>8} {'samples/s':>10} {'tokens/s':>10} {'MFU':>6} {'mem GiB':>8} "
          f"{'x first':>7} {'fixed loss':>10}")
    for r in rows:
        print(f"{r['variant']:<12} {r['s_per_step']:8.3f} {r['samples_per_s']:10.2f} {r['tokens_per_s']:10.0f} "
              f"{r['mfu']:6.1%} {r['peak_mem_gib']:8.1f} {r['speedup_vs_first']:7.2f} {r['fixed_batch_loss']:10.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
