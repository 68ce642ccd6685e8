#!/usr/bin/env bash
# The paper-scale pipeline on one 8-GPU node (needs the hub, `pip install deepspeed`, ~80 GB GPUs):
# LLaVA-1.5-7B full DPO on SPA-VL (the paper's setup) → reward model → GRPO against it →
# harm evaluation of base vs DPO vs GRPO on SPA-VL test/harm with the shipped classifier.
#   training/runs/full_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
$PY -m accelerate.commands.launch --config_file training/accelerate/zero2.yaml -m training.align.dpo \
    --config training/configs/llava15_7b_dpo_full.yaml
.venv/bin/spaguard train-reward --config training/configs/llava15_7b_reward.yaml
$PY -m accelerate.commands.launch --config_file training/accelerate/zero2.yaml -m training.align.rl \
    --config training/configs/llava15_7b_grpo_lora.yaml
.venv/bin/spaguard eval-harm --spa-vl-split harm \
    --model base=llava-hf/llava-1.5-7b-hf \
    --model dpo=runs/llava15_7b_dpo_full/final \
    --model grpo=runs/llava15_7b_grpo_lora/final \
    --classifier models/default --out runs/harm_eval_full
