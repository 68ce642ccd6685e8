#!/usr/bin/env bash
# The whole training pipeline on tiny models, on CPU, in about a minute (STYLE.md section 7):
# synthetic SPA-VL → tiny LLaVA DPO → reward model → classifier distillation → base vs aligned eval.
#   training/runs/smoke_cpu.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-runs/smoke}"
rm -rf "$OUT"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/spaguard smoke-train --out "$OUT"
cat "$OUT/summary.json"
