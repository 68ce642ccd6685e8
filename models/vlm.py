"""Vision-language models: the tiny random-weights twins used by tests and the embedded default,
and the loader for real checkpoints.

Contract
--------
* ``build_tiny_vlm(arch, seed)`` returns ``(model, processor)``: a tiny ``LlavaForConditionalGeneration``
  (``arch="llava"``: CLIP vision tower + Llama text model) or ``Qwen2VLForConditionalGeneration``
  (``arch="qwen2_vl"``), hidden size 32, 2 layers, built offline from configs with random weights.
  The same seed gives identical weights. The processor is real (image processor + a byte-level
  tokenizer built with ``tokenizers`` + a chat template), so ``processor.apply_chat_template`` with
  image parts and ``processor(images=..., text=...)`` work exactly as with a hub checkpoint.
* ``save_tiny_vlm(out_dir, arch, seed)`` writes a checkpoint that ``load_vlm(out_dir)`` /
  ``AutoModelForImageTextToText.from_pretrained`` load back.
* ``load_vlm(None)`` is the tiny LLaVA; ``load_vlm("llava-hf/llava-1.5-7b-hf")`` (or any local path)
  goes through the Auto classes.

The tiny models' outputs are meaningless: they exist so that serving and training code runs the
real transformers code paths in seconds on a CPU. Run ``python -m models.vlm OUT_DIR [arch]`` to
write one to disk.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

TINY_ARCHS = ("llava", "qwen2_vl")
TINY_HIDDEN = 32
TINY_LAYERS = 2
TINY_IMAGE_SIZE = 32  # LLaVA: 32 px / patch 8 → 16 image tokens (CLS dropped)
TINY_PATCH = 8
TINY_MAX_POSITIONS = 512  # the tiny models' context length

# NOTE: the tokenizer is byte-level BPE with no merges: every UTF-8 byte is one token, so
# any text round-trips without training a vocabulary (STYLE.md section 8, "byte tokenizer").
_LLAVA_SPECIALS = ("<pad>", "<s>", "</s>", "<unk>", "<image>")
_QWEN_SPECIALS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
)  # fmt: skip

# LLaVA-1.5's "USER: <image>\n... ASSISTANT:" format; assistant turns end with </s> so that DPO
# teaches the model to stop.
LLAVA_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- message['role'].upper() + ': ' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<image>\n' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{{- '</s>' -}}{%- endif -%}"
    "{{- '\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)

# Qwen2-VL's ChatML format with vision markers around each image.
QWEN2_VL_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)


def build_byte_tokenizer(
    specials: tuple[str, ...], *, bos: str | None, eos: str, pad: str, unk: str | None, chat_template: str
) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: ids 0..len(specials)-1 are ``specials``, then the 256 byte symbols."""
    vocab = {tok: i for i, tok in enumerate(specials)}
    # NOTE: ``alphabet()`` is a set, so its order changes with PYTHONHASHSEED; sort it or
    # two processes build different vocabularies.
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(symbol, len(vocab))
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=unk))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(specials))
    if bos is not None:  # Llama-style: every encoded sequence starts with BOS
        core.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=bos, eos_token=eos, pad_token=pad, unk_token=unk,
        model_max_length=TINY_MAX_POSITIONS,
    )  # fmt: skip
    tok.chat_template = chat_template
    return tok


def _tiny_llama_config(vocab_size: int, tok: PreTrainedTokenizerFast, hidden: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=TINY_LAYERS, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=TINY_MAX_POSITIONS, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
    )  # fmt: skip


def _build_llava(hidden: int) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    tok = build_byte_tokenizer(
        _LLAVA_SPECIALS, bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", chat_template=LLAVA_CHAT_TEMPLATE
    )
    vision = CLIPVisionConfig(
        hidden_size=hidden, intermediate_size=2 * hidden, projection_dim=hidden,
        num_hidden_layers=TINY_LAYERS, num_attention_heads=2, image_size=TINY_IMAGE_SIZE,
        patch_size=TINY_PATCH,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=_tiny_llama_config(len(tok), tok, hidden),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-1,
        image_seq_length=(TINY_IMAGE_SIZE // TINY_PATCH) ** 2,
    )  # fmt: skip
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": TINY_IMAGE_SIZE},
        crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=TINY_PATCH,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )  # fmt: skip
    return LlavaForConditionalGeneration(config), processor


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """``Qwen2VLProcessor`` without its video processor.

    NOTE: transformers' only Qwen2-VL video processor imports torchvision, whose wheels here
    are CUDA builds that break beside torch+cpu; images and text need nothing from it.
    """

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None):
        # ProcessorMixin derives its sub-processor list from this signature: image + tokenizer only.
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template)


def _build_qwen2_vl(hidden: int) -> tuple[Qwen2VLForConditionalGeneration, Qwen2VLProcessor]:
    tok = build_byte_tokenizer(
        _QWEN_SPECIALS, bos=None, eos="<|im_end|>", pad="<|endoftext|>", unk=None,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )  # fmt: skip
    ids = tok.convert_tokens_to_ids
    half_rotary = hidden // 2 // 2  # head_dim / 2 rotary frequencies (2 heads)
    mrope_width = 3 * half_rotary // 8
    text = {
        "vocab_size": len(tok), "hidden_size": hidden, "intermediate_size": 2 * hidden,
        "num_hidden_layers": TINY_LAYERS, "num_attention_heads": 2, "num_key_value_heads": 1,
        "max_position_embeddings": TINY_MAX_POSITIONS, "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id, "bos_token_id": None,
        # mrope splits head_dim/2 rotary frequencies over (time, height, width)
        "rope_parameters": {
            "rope_type": "default", "rope_theta": 10000.0,
            "mrope_section": [half_rotary - 2 * mrope_width, mrope_width, mrope_width],
        },
    }  # fmt: skip
    vision = {
        "depth": TINY_LAYERS, "embed_dim": hidden, "hidden_size": hidden, "num_heads": 2,
        "mlp_ratio": 2, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
    }  # fmt: skip
    config = Qwen2VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"), vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"), tie_word_embeddings=False,
    )  # fmt: skip
    # 56x56 px → a 4x4 patch grid → 4 image tokens after the 2x2 merge; keeps sequences short.
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56)
    processor = ImageOnlyQwen2VLProcessor(image_processor, tok, chat_template=QWEN2_VL_CHAT_TEMPLATE)
    return Qwen2VLForConditionalGeneration(config), processor


def build_tiny_vlm(
    arch: str = "llava", seed: int = 0, hidden_size: int = TINY_HIDDEN
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Build the tiny random-weights VLM ``arch`` ("llava" | "qwen2_vl"); deterministic in ``seed``.

    ``hidden_size`` (2 attention heads) defaults to 32; vLLM's CPU attention needs head size ≥ 32,
    i.e. ``hidden_size=64``.
    """
    if arch not in TINY_ARCHS:
        raise ValueError(f"unknown tiny VLM arch {arch!r}; expected one of {TINY_ARCHS}")
    if hidden_size < 16 or hidden_size % 16:
        raise ValueError(f"hidden_size must be a positive multiple of 16, got {hidden_size}")
    # NOTE: fork the RNG so building a tiny model never perturbs the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor = _build_llava(hidden_size) if arch == "llava" else _build_qwen2_vl(hidden_size)
    model.eval()
    return model, processor


def save_tiny_vlm(out_dir: str | Path, arch: str = "llava", seed: int = 0, hidden_size: int = TINY_HIDDEN) -> Path:
    """Write the tiny VLM and its processor to ``out_dir`` (loadable with ``load_vlm(out_dir)``)."""
    out = Path(out_dir)
    model, processor = build_tiny_vlm(arch, seed, hidden_size)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use 'auto', 'float32', 'bfloat16' or 'float16'")
    return resolved


def load_processor(name_or_path: str, model_type: str, **hub_kwargs: Any) -> Any:
    """``AutoProcessor``, except Qwen2-VL without torchvision (see ``ImageOnlyQwen2VLProcessor``).

    ``model_type`` is the checkpoint's ``config.model_type``; ``hub_kwargs`` (e.g. ``revision``)
    go to ``from_pretrained``.
    """
    processor = AutoProcessor.from_pretrained(name_or_path, **hub_kwargs)
    if hasattr(processor, "image_processor"):
        return processor
    if model_type == "qwen2_vl":  # AutoProcessor fell back to the bare tokenizer
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(name_or_path, **hub_kwargs)
        return ImageOnlyQwen2VLProcessor(image_processor, processor, chat_template=processor.chat_template)
    raise ValueError(f"{name_or_path}: AutoProcessor returned {type(processor).__name__} without an image processor")


_load_processor = load_processor  # NOTE: training/align/dpo.py imported the private name first


def load_vlm(
    name_or_path: str | None = None, device: str = "cpu", dtype: str | torch.dtype = "auto", seed: int = 0
) -> tuple[PreTrainedModel, Any]:
    """Load ``(model, processor)`` in eval mode on ``device``.

    ``None`` → the tiny random-weights LLaVA built with ``seed``. Otherwise a hub id or a local directory,
    e.g. ``"llava-hf/llava-1.5-7b-hf"``, through ``AutoModelForImageTextToText``/``AutoProcessor``.
    """
    resolved = _resolve_dtype(dtype)
    if name_or_path is None:
        model, processor = build_tiny_vlm("llava", seed=seed)
        if isinstance(resolved, torch.dtype):
            model = model.to(resolved)
    else:
        model = AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=resolved)
        processor = load_processor(name_or_path, model.config.model_type)
    return model.to(device).eval(), processor


def main(argv: list[str] | None = None) -> int:
    """``python -m models.vlm OUT_DIR [llava|qwen2_vl] [SEED]``: write a tiny VLM checkpoint."""
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 3:
        print(main.__doc__, file=sys.stderr)
        return 2
    arch = args[1] if len(args) > 1 else "llava"
    out = save_tiny_vlm(args[0], arch, int(args[2]) if len(args) > 2 else 0)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
