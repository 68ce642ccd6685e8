"""The tiny VLMs in models/vlm.py: deterministic, real processors, save/load round trip."""

from __future__ import annotations

import os

# Before transformers/huggingface_hub read it (they do at import time); nothing here needs the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from models.vlm import TINY_ARCHS, build_tiny_vlm, load_vlm, save_tiny_vlm  # noqa: E402


_MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Qu'est-ce que c'est? ✓"}]}]


def _inputs(processor, image: Image.Image) -> dict[str, torch.Tensor]:
    text = processor.apply_chat_template(_MESSAGES, add_generation_prompt=True)
    return processor(images=[image], text=[text], return_tensors="pt")


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.new("RGB", (80, 60), (10, 200, 30))


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_same_seed_same_weights_other_seed_differs(arch: str) -> None:
    a, _ = build_tiny_vlm(arch, seed=3)
    b, _ = build_tiny_vlm(arch, seed=3)
    c, _ = build_tiny_vlm(arch, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert sum(p.numel() for p in a.parameters()) < 500_000  # tiny


def test_building_does_not_touch_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_vlm("llava", seed=0)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_chat_template_and_image_tokens_reach_the_model(arch: str, image: Image.Image) -> None:
    model, processor = build_tiny_vlm(arch)
    inputs = _inputs(processor, image)
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    if arch == "llava":  # 32 px / patch 8 = 4x4 patches, CLS dropped
        assert n_image_tokens == 16
    else:  # one token per 2x2 merged patches of the resized image
        assert n_image_tokens == int(inputs["image_grid_thw"].prod()) // 4 > 0
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    n_prompt = inputs["input_ids"].shape[1]
    assert out.shape[0] == 1 and n_prompt < out.shape[1] <= n_prompt + 4


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_tokenizer_round_trips_any_text(arch: str) -> None:
    _, processor = build_tiny_vlm(arch)
    text = "naïve café — 東京 🙂"
    ids = processor.tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text.encode("utf-8"))  # one token per byte
    assert processor.tokenizer.decode(ids) == text


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_save_load_round_trip_generates_the_same(arch: str, image: Image.Image, tmp_path) -> None:
    model, processor = build_tiny_vlm(arch, seed=0)
    path = save_tiny_vlm(tmp_path / arch, arch, seed=0)
    loaded, loaded_processor = load_vlm(str(path))
    a, b = _inputs(processor, image), _inputs(loaded_processor, image)
    assert torch.equal(a["input_ids"], b["input_ids"])
    out_a = model.generate(**a, max_new_tokens=5, do_sample=False)
    out_b = loaded.generate(**b, max_new_tokens=5, do_sample=False)
    assert torch.equal(out_a, out_b)


def test_load_none_is_tiny_llava_and_dtype_is_honoured() -> None:
    model, processor = load_vlm(None, dtype="bfloat16")
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert next(model.parameters()).dtype == torch.bfloat16
    assert processor.tokenizer.eos_token == "</s>"


def test_bad_arguments_raise_clearly() -> None:
    with pytest.raises(ValueError, match="unknown tiny VLM arch"):
        build_tiny_vlm("gpt2")
    with pytest.raises(ValueError, match="unknown dtype"):
        load_vlm(None, dtype="float33")


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_wider_variant_for_vllm_head_size(arch: str, image: Image.Image) -> None:
    model, processor = build_tiny_vlm(arch, hidden_size=64)
    text_config = model.config.get_text_config()
    assert text_config.hidden_size // text_config.num_attention_heads == 32  # vLLM CPU minimum
    out = model.generate(**_inputs(processor, image), max_new_tokens=2, do_sample=False)
    assert out.shape[0] == 1
    with pytest.raises(ValueError, match="multiple of 16"):
        build_tiny_vlm(arch, hidden_size=40)
