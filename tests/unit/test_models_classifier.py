"""GuardClassifier on tiny encoders built from configs (no downloads): shapes, features, artifacts."""

from __future__ import annotations

import io
import json
import os

import pytest
import torch
from PIL import Image

from models.artifact import ArtifactMismatchError, Calibration, ClassifierConfig
from models.backends import GuardInput, ScoringBackend, load_backend
from models.classifier import GuardClassifier
from models.encoders import build_tiny_image_encoder, build_tiny_text_encoder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
NODES = ["Malicious Use", "Malicious Use/Security threats", "Malicious Use/Security threats/weapon"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny")
    return {"text": str(build_tiny_text_encoder(root / "text")), "image": str(build_tiny_image_encoder(root / "img"))}


def _png(color: tuple[int, int, int] = (255, 255, 255)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, "PNG")
    return buf.getvalue()


def _items() -> list[GuardInput]:
    return [GuardInput("how do I build a weapon"), GuardInput("hi", response="sure, here is how"),
            GuardInput("what is this", images=(_png(), _png((0, 0, 0))))]


def test_forward_shapes_and_feature_layout(tiny: dict[str, str]) -> None:
    torch.manual_seed(0)
    model = GuardClassifier(ClassifierConfig(encoder=tiny["text"], node_keys=NODES)).eval()
    feats = model.featurize(_items())
    assert set(feats) == {"input_ids", "attention_mask", "response_mask", "token_type_ids"}
    width = feats["input_ids"].shape[1]
    # Padded to the longest item rounded up to a multiple of 8, not to max_length.
    longest = int(feats["attention_mask"].sum(1).max())
    assert width % 8 == 0 and longest <= width < longest + 8 and width < model.config.max_length
    # Only the item with a response has response tokens, and they are inside the attention mask.
    assert feats["response_mask"].sum(1).tolist()[0] == 0 and feats["response_mask"][1].sum() > 0
    assert bool((feats["response_mask"] <= feats["attention_mask"]).all())
    with torch.no_grad():
        out = model(**feats)
    assert out["prompt"].shape == (3,) and out["response"].shape == (3,) and out["nodes"].shape == (3, 3)


def test_pair_and_single_items_tokenize_like_separate_calls(tiny: dict[str, str]) -> None:
    model = GuardClassifier(ClassifierConfig(encoder=tiny["text"], node_keys=NODES)).eval()
    mixed = model.featurize([GuardInput("a b c"), GuardInput("d", response="e f")])
    alone = model.featurize([GuardInput("d", response="e f")])
    n = int(alone["attention_mask"].sum())
    assert mixed["input_ids"][1, :n].tolist() == alone["input_ids"][0, :n].tolist()
    with torch.no_grad():
        assert torch.allclose(model(**mixed)["response"][1], model(**alone)["response"][0], atol=1e-5)


def test_image_encoder_features_and_round_trip(tiny: dict[str, str], tmp_path) -> None:
    torch.manual_seed(0)
    cfg = ClassifierConfig(encoder=tiny["text"], image_encoder=tiny["image"], node_keys=NODES, use_ocr=False)
    model = GuardClassifier(cfg).eval()
    feats = model.featurize(_items())
    assert feats["pixel_values"].shape == (3, 2, 3, 32, 32)  # (B, N_max, C, H, W)
    assert feats["image_mask"].tolist() == [[0, 0], [0, 0], [1, 1]]
    with torch.no_grad():
        before = model(**feats)
        text_only = model(**model.featurize(_items()[:2]))  # no pixel_values at all
    assert torch.allclose(before["prompt"][:2], text_only["prompt"], atol=1e-5)
    model.save(tmp_path / "art", {"seed": 0})
    loaded = GuardClassifier.load(tmp_path / "art")
    with torch.no_grad():
        after = loaded(**feats)
    for key in before:
        assert torch.equal(before[key], after[key])


@pytest.mark.parametrize("mode", ["frozen", "lora", "full"])
def test_save_load_round_trip_keeps_only_trainable_weights(tiny: dict[str, str], tmp_path, mode: str) -> None:
    torch.manual_seed(0)
    model = GuardClassifier(ClassifierConfig(encoder=tiny["text"], node_keys=NODES, encoder_trainable=mode))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("out.") for n in trainable)
    assert any("encoder." in n for n in trainable) == (mode != "frozen")
    with torch.no_grad():  # perturb every trainable weight so the round trip is not vacuous (LoRA B starts at 0)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    cal = Calibration.identity(NODES)
    cal.threshold["prompt"] = 0.7
    model.save(tmp_path / mode, {"seed": 1}, calibration=cal)
    from safetensors.torch import load_file

    saved = set(load_file(str(tmp_path / mode / "head.safetensors")))
    assert all(not k.startswith("encoder.") for k in saved) == (mode == "frozen")
    if mode == "lora":
        assert all("lora_" in k for k in saved if k.startswith("encoder."))
    loaded = GuardClassifier.load(tmp_path / mode)
    feats = model.featurize(_items()[:2])
    with torch.no_grad():
        a, b = model(**feats), loaded(**feats)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert loaded.calibration.threshold["prompt"] == 0.7
    card = json.loads((tmp_path / mode / "card.json").read_text())
    assert card["seed"] == 1 and card["taxonomy_version"] == model.config.taxonomy_version
    assert len(card["encoder_sha256"]) == 64


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        ClassifierConfig(encoder_trainable="half")
    with pytest.raises(ValueError):
        ClassifierConfig(node_keys=["a", "a"])
    with pytest.raises(ValueError, match="unknown"):
        ClassifierConfig.from_dict({"encoderr": "x"})


def test_backend_refuses_mismatched_card(tiny: dict[str, str], tmp_path) -> None:
    model = GuardClassifier(ClassifierConfig(encoder=tiny["text"], node_keys=NODES))
    model.save(tmp_path / "art", {})
    card_path = tmp_path / "art" / "card.json"
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, "encoder_sha256": "0" * 64}))
    with pytest.raises(ArtifactMismatchError, match="encoder_sha256"):
        load_backend("torch", tmp_path / "art")
    card_path.write_text(json.dumps({**card, "taxonomy_version": "spa-vl.1.000000000000"}))
    with pytest.raises(ArtifactMismatchError, match="taxonomy_version"):
        load_backend("torch", tmp_path / "art")
    with pytest.raises(ArtifactMismatchError):
        model.save(tmp_path / "other", {"encoder_sha256": "f" * 64})  # a card that lies is refused at save


def test_torch_backend_scores_with_calibration(tiny: dict[str, str], tmp_path) -> None:
    torch.manual_seed(0)
    model = GuardClassifier(ClassifierConfig(encoder=tiny["text"], node_keys=NODES)).eval()
    with torch.no_grad():
        model.out.bias.copy_(torch.tensor([3.0, -3.0, 1.5, 3.0, -1.0]))  # prompt unsafe, response safe
        model.out.weight.zero_()
    cal = Calibration.identity(NODES)
    cal.temperature["prompt"] = 2.0
    model.save(tmp_path / "art", {}, calibration=cal)
    backend = load_backend("torch", tmp_path / "art", threads=1, max_batch_size=4)
    assert isinstance(backend, ScoringBackend) and backend.health()
    assert backend.model.featurizer.ocr.config.threads == 1  # one thread knob pins OCR too
    prompt, response = backend.score([GuardInput("x"), GuardInput("x", response="y")])
    assert prompt.task == "prompt" and prompt.flagged
    assert prompt.unsafe_prob == pytest.approx(torch.sigmoid(torch.tensor(1.5)).item(), abs=1e-6)
    assert response.task == "response" and not response.flagged
    assert set(prompt.scores) == set(NODES)
    # Flagged item: every node above its threshold fires (0.82 and 0.95; not 0.27).
    assert set(prompt.categories) == {"Malicious Use", "Malicious Use/Security threats"}
    # Unflagged item: only nodes above node_override (0.9) fire.
    assert set(response.categories) == {"Malicious Use/Security threats"}
    assert backend.score([]) == []
    with pytest.raises(ValueError, match="max_batch_size"):
        backend.score([GuardInput("x")] * 5)
    with pytest.raises(FileNotFoundError):
        load_backend("torch", tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown backend"):
        load_backend("tensorrt", tmp_path / "art")


def test_featurize_is_thread_safe(tiny: dict[str, str]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    model = GuardClassifier(ClassifierConfig(encoder=tiny["text"], node_keys=NODES, max_length=64))
    batches = [[GuardInput(f"prompt number {i} " * (1 + i % 7), response=None if i % 2 else "ok")] * 4
               for i in range(48)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(model.featurize, batches))
    for batch, feats in zip(batches, got):
        assert torch.equal(feats["input_ids"], model.featurize(batch)["input_ids"])
