#!/usr/bin/env bash
# The held-out evaluations every guard candidate is compared on (docs/classifier.md, candidates 8-10), for one
# artifact, on ONNX Runtime as the server scores:
#
#   training/guard/eval_candidate.sh MODEL OUT      # from the repo root, e.g. runs/cand9/soup runs/eval/soup
#
# It writes its inputs once under runs/ and reuses them: a seeded sample of every dev2 source
# (runs/dev2_heldout/sample.jsonl), the held-out chat turns and task / verb-sense lists (no template writes
# them), the embedded demo model's answers to benign prompts (runs/demo_replies.jsonl), and dev2 prompts
# drawn as typographic images behind unseen carriers (runs/render_dev2/). Per model,
# under OUT: eval-guard's metrics and per-item results for each set, the per-source tables of the dev2 sample
# with pooled recall at matched false-positive rates (dev2.tables.json, dev2.report.txt) and the probes
# (probes.json). Nothing here is trained on: a candidate trained on dev2 is not measured by it.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 MODEL OUT" >&2; exit 2; }
MODEL=$1
OUT=$2
PY=${PY:-.venv/bin/python}
SPAGUARD=${SPAGUARD:-.venv/bin/spaguard}
D=${SPAGUARD_SHARED_DIR:-../shared}/data/dev2
[ -d "$D/index" ] || { echo "$0: no dev2 pack at $D (set SPAGUARD_SHARED_DIR)" >&2; exit 2; }
mkdir -p "$OUT" runs/dev2_heldout

[ -s runs/dev2_heldout/sample.jsonl ] || "$PY" -m training.guard.pack_sample "$D" runs/dev2_heldout/sample.jsonl \
  --per-source 200 --per-image-source 100 --cap gptfuzz_labeled_responses=400
[ -s runs/chat_held_out.jsonl ] || "$PY" -m training.guard.chat_turns runs/chat_held_out.jsonl
[ -s runs/task_held_out.jsonl ] || "$PY" -m training.guard.task_prompts runs/task_held_out.jsonl
[ -s runs/demo_replies.jsonl ] || "$PY" -m training.guard.demo_replies runs/demo_replies.jsonl
if [ ! -s runs/render_dev2/items.jsonl ]; then
  args=()
  for s in ailuminate_demo_en redinstruct_dangerousqa redinstruct_catqa_en gptfuzz_questions hatecheck \
      dolly_subset gsm8k_test gpteacher_codegen cyberseceval_mitre_frr; do args+=(--data "$D/index/$s.jsonl"); done
  "$PY" -m training.guard.render_pack --out runs/render_dev2 --per-source 40 "${args[@]}"
fi

ev() {  # NAME DATA [extra eval-guard flags]
  local name=$1 data=$2
  shift 2
  "$SPAGUARD" eval-guard --backend onnx --model "$MODEL" --data "$data" --out "$OUT/$name" \
    --items "$OUT/$name.items.jsonl" "$@"
}
ev dev2 runs/dev2_heldout/sample.jsonl --root "$D"
ev chat runs/chat_held_out.jsonl
ev task runs/task_held_out.jsonl
ev render runs/render_dev2/items.jsonl
ev demo runs/demo_replies.jsonl
"$PY" -m training.guard.items_report "$OUT/dev2.items.jsonl" --skip prompt:gptfuzz_labeled_responses \
  --recall-at-fpr 0.05 0.1 0.2 --out "$OUT/dev2.tables.json" > "$OUT/dev2.report.txt"
"$PY" -m training.guard.probes --model "$MODEL" --json "$OUT/probes.json" > "$OUT/probes.txt"
echo "$0: $MODEL evaluated into $OUT"
