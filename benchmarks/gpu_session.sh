#!/usr/bin/env bash
# The project's two GPU benchmarks in one command on a lent GPU machine (docs/benchmarks.md, "Running the GPU
# benchmarks on a lent machine"). Run in the repo root, after `make gpu-wheels` here:
#   device run: command "bash benchmarks/gpu_session.sh", carry [".whl"], timeout_s 600
# Steps: install the carried wheels, print the machine and versions, benchmarks/guard_cuda_bench.py (budget
# GUARD_BUDGET_S), then `python3 benchmarks/bench_dpo.py` (DPO_ARGS, killed after DPO_TIMEOUT_S). About 6 minutes,
# at most ~8.5 by the timeouts, so a rerun fits in a 15-minute lease. Leaves 6 files in $OUT:
#   session.log  guard_cuda/guard_cuda_bench.{json,csv,md}  bench_dpo/bench_dpo.{json,csv}
# Every step runs even if an earlier one failed; the exit status is the last failing step's (0 if none).
set -uo pipefail

OUT=${OUT:-runs/gpu_session}
GUARD_BUDGET_S=${GUARD_BUDGET_S:-150}
GUARD_ARGS=${GUARD_ARGS:---compile reduce-overhead}
DPO_ARGS=${DPO_ARGS:---steps 14 --warmup 4}
DPO_TIMEOUT_S=${DPO_TIMEOUT_S:-240}
# Exactly the wheels `make gpu-wheels` downloads into .whl/ (tests/unit/test_guard_cuda_bench.py checks that
# the two lists agree). The machine's image has torch, transformers, peft, accelerate, pandas, pyarrow and
# xxhash, but not these.
GPU_WHEELS=(trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0)

status=0

step() {  # step NAME CMD...: run CMD, log its exit status, remember a failure, carry on
    local name=$1 rc
    shift
    echo "=== $name ($(date -u +%T)): $*"
    "$@"
    rc=$?
    echo "=== $name: exit $rc"
    if [ "$rc" -ne 0 ]; then status=$rc; fi
    return 0
}

install_wheels() {
    # Resolve against the image's packages first. If one of its versions misses a pin (datasets wants
    # pyarrow>=24), install the wheels alone; the versions step's imports then show whether that works.
    python3 -m pip install -q --no-index --find-links .whl "${GPU_WHEELS[@]}" && return 0
    echo "pip could not resolve against the image; installing the carried wheels with --no-deps"
    python3 -m pip install -q --no-index --no-deps --find-links .whl "${GPU_WHEELS[@]}"
}

versions() {
    python3 - <<'EOF'
import sys

import accelerate, datasets, peft, torch, transformers, trl

print("python", sys.version.split()[0], "| torch", torch.__version__, "cuda", torch.version.cuda,
      "| transformers", transformers.__version__, "| trl", trl.__version__, "| datasets", datasets.__version__,
      "| peft", peft.__version__, "| accelerate", accelerate.__version__)
print("device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "NO CUDA DEVICE")
EOF
}

session() {
    step wheels install_wheels
    step machine nvidia-smi
    step versions versions
    # The guard bench writes after every point, so a kill keeps what it measured.
    # shellcheck disable=SC2086  # GUARD_ARGS / DPO_ARGS are flag lists, split on purpose
    step guard_cuda timeout $((GUARD_BUDGET_S + 90)) \
        python3 benchmarks/guard_cuda_bench.py --budget-s "$GUARD_BUDGET_S" $GUARD_ARGS --out "$OUT/guard_cuda"
    # bench_dpo writes its trainers' output folders beside its results: run it outside $OUT, copy the results.
    rm -rf /tmp/bench_dpo
    # shellcheck disable=SC2086
    step bench_dpo timeout "$DPO_TIMEOUT_S" python3 benchmarks/bench_dpo.py $DPO_ARGS --out /tmp/bench_dpo
    cp /tmp/bench_dpo/bench_dpo.json /tmp/bench_dpo/bench_dpo.csv "$OUT/bench_dpo/" || echo "bench_dpo wrote no results"
    echo "=== files in $OUT:"
    find "$OUT" -type f | sort
    return "$status"
}

mkdir -p "$OUT/guard_cuda" "$OUT/bench_dpo"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
session 2>&1 | tee "$OUT/session.log"
