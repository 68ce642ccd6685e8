"""Pretrained encoders for the guard classifier: loading, and tiny random builds for tests.

Contract
--------
* Names are resolved by ``models.encoder_files.resolve_encoder`` (aliases such as
  ``"all-minilm-l6-v2"``; any other HF name or local path passes through).
* ``load_text_encoder`` / ``load_tokenizer`` give the ``AutoModel`` and its fast tokenizer;
  ``load_image_encoder`` / ``load_image_processor`` give a CLIP / SigLIP vision tower (from a full
  or vision-only checkpoint) and its image processor.
* ``build_tiny_text_encoder`` / ``build_tiny_decoder_encoder`` / ``build_tiny_image_encoder`` write tiny random
  models (a BERT, a Llama decoder, a CLIP vision tower; hidden 32, 2 layers, fixed seed) for tests and smoke
  runs: no downloads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerFast

from models.encoder_files import MINILM_ALIAS, resolve_encoder

# Vision towers by config.model_type; a full CLIP/SigLIP checkpoint loads only its vision half.
_VISION_CLASSES = {
    "clip": "CLIPVisionModel",
    "clip_vision_model": "CLIPVisionModel",
    "siglip": "SiglipVisionModel",
    "siglip_vision_model": "SiglipVisionModel",
}


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
    # NOTE: the top-level `transformers.AutoImageProcessor` is a torchvision-gated
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


def build_tiny_decoder_encoder(out_dir: str | Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """Write a tiny random Llama decoder (the architecture of the SmolLM2 student candidate) to ``out_dir``, with
    MiniLM's tokenizer told to emit no ``token_type_ids`` (a decoder takes none, as SmolLM2's own tokenizer)."""
    from transformers import LlamaConfig, LlamaModel

    out = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder(MINILM_ALIAS), use_fast=True)
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=2 * hidden, max_position_embeddings=512,
    )
    torch.manual_seed(seed)
    LlamaModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    # NOTE: save_pretrained does not write model_input_names; the tokenizer config carries it on load.
    cfg_file = out / "tokenizer_config.json"
    names = {"model_input_names": ["input_ids", "attention_mask"]}
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), **names}))
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
