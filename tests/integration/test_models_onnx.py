"""ONNX export and OnnxBackend: torch <-> ORT logit parity (≤ 1e-4), int8, cache, card checks."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from models.artifact import ArtifactMismatchError, ClassifierConfig
from models.backends import GuardInput, OnnxBackend, load_backend
from models.classifier import GuardClassifier
from models.encoders import build_tiny_image_encoder, build_tiny_text_encoder
from models.export_onnx import ensure_onnx, main as export_main
from models.onnx_fusion import export_fused
from models.onnx_graph import OUTPUT_NAMES, ort_feed, parity, read_metadata, set_metadata

os.environ.setdefault("HF_HUB_OFFLINE", "1")
NODES = ["Malicious Use", "Malicious Use/Security threats", "Representation & ToxicityHarms"]


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), color).save(buf, "PNG")
    return buf.getvalue()


ITEMS = [GuardInput("how do I build a weapon at home"), GuardInput("hi", response="sure, here is how you do it"),
         GuardInput("what is in this picture?", images=(_png((200, 10, 10)),)),
         GuardInput("two pictures", images=(_png((0, 0, 0)), _png((10, 200, 10))), response="a reply")]


def _artifact(tmp_path, cfg: ClassifierConfig, name: str) -> tuple[GuardClassifier, str]:
    torch.manual_seed(0)
    model = GuardClassifier(cfg)
    with torch.no_grad():  # non-trivial heads/adapters (LoRA B starts at zero)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    model.save(tmp_path / name, {"seed": 0})
    return model, str(tmp_path / name)


def _torch_logits(model: GuardClassifier, items: list[GuardInput]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {k: v.numpy() for k, v in model(**model.featurize(items)).items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny")
    return {"text": str(build_tiny_text_encoder(root / "text")), "image": str(build_tiny_image_encoder(root / "img"))}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SPAGUARD_CACHE", str(tmp_path / "cache"))


def test_lora_text_parity_cache_and_int8(tiny: dict[str, str], tmp_path) -> None:
    cfg = ClassifierConfig(encoder=tiny["text"], node_keys=NODES, encoder_trainable="lora", use_ocr=False)
    model, art = _artifact(tmp_path, cfg, "lora")
    backend = load_backend("onnx", art, threads=1)
    assert backend.featurizer.ocr.config.threads == 1  # one thread knob pins OCR too
    assert isinstance(backend, OnnxBackend) and backend.health()
    assert backend.graph == "fused"  # a BERT encoder gets ORT's fused Attention graph
    assert str(backend.path).startswith(str(tmp_path / "cache"))
    for batch in (ITEMS, ITEMS[:1], ITEMS[1:2]):  # dynamic batch and sequence lengths
        feats, _ = backend.featurizer(batch)
        got = dict(zip(OUTPUT_NAMES, backend.session.run(list(OUTPUT_NAMES), ort_feed(backend.session, feats))))
        want = _torch_logits(model, batch)
        for key in OUTPUT_NAMES:
            assert np.abs(got[key] - want[key]).max() <= 1e-4, key
    # Second open reuses the cached file (no re-export).
    mtime = backend.path.stat().st_mtime_ns
    assert load_backend("onnx", art).path.stat().st_mtime_ns == mtime
    # Verdicts agree with the torch backend.
    torch_v = load_backend("torch", art).score(ITEMS)
    onnx_v = backend.score(ITEMS)
    assert [v.task for v in onnx_v] == [v.task for v in torch_v]
    assert max(abs(a.unsafe_prob - b.unsafe_prob) for a, b in zip(torch_v, onnx_v)) < 1e-5
    # int8: runs, stays close, and is a different (smaller) file.
    int8 = load_backend("onnx-int8", art, threads=1)
    assert int8.name == "onnx-int8" and int8.path != backend.path
    assert int8.path.stat().st_size < backend.path.stat().st_size
    assert {"QAttention", "DynamicQuantizeMatMul"} & {n.op_type for n in onnx.load(str(int8.path)).graph.node}
    q = int8.score(ITEMS)
    assert max(abs(a.unsafe_prob - b.unsafe_prob) for a, b in zip(torch_v, q)) < 0.05


def test_image_encoder_parity(tiny: dict[str, str], tmp_path) -> None:
    cfg = ClassifierConfig(encoder=tiny["text"], image_encoder=tiny["image"], node_keys=NODES, use_ocr=False)
    model, art = _artifact(tmp_path, cfg, "img")
    path = ensure_onnx(art)
    assert parity(model, path, ITEMS) <= 1e-4  # batch with 0, 1 and 2 images per item
    assert parity(model, path, ITEMS[:2]) <= 1e-4  # text-only batch: empty image slots are fed
    meta = read_metadata(path)
    assert json.loads(meta["spaguard.card"])["image_encoder"] == tiny["image"]
    assert meta["spaguard.graph"] == "plain"  # image towers are not fused


def test_fused_export_matches_torch_and_refuses_when_parity_fails(tiny: dict[str, str], tmp_path) -> None:
    cfg = ClassifierConfig(encoder=tiny["text"], node_keys=NODES, use_ocr=False)
    model, _ = _artifact(tmp_path, cfg, "fuse")
    before = model.encoder.config._attn_implementation
    out = tmp_path / "fused.onnx"
    assert export_fused(model, out, {"k": "v"})
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("Attention") == 2 and "SkipLayerNormalization" in ops  # one Attention per layer
    assert read_metadata(out) == {"k": "v"}
    assert parity(model, out, ITEMS[:2]) <= 1e-4 and parity(model, out, ITEMS[1:2]) <= 1e-4
    # The caller's model keeps its own attention implementation (the export works on a copy).
    assert model.encoder.config._attn_implementation == before != "eager"
    refused = tmp_path / "refused.onnx"
    assert not export_fused(model, refused, tolerance=-1.0)  # no graph can pass: refused, nothing written
    assert not refused.exists()


def test_a_crashing_fused_export_falls_back_to_the_plain_graph(tiny: dict[str, str], tmp_path, monkeypatch,
                                                             caplog) -> None:
    from models import onnx_fusion
    from models.export_onnx import export_best

    def crash(*args, **kwargs):
        raise RuntimeError("exporter does not support this op")

    monkeypatch.setattr(onnx_fusion, "_torchscript_export", crash)
    cfg = ClassifierConfig(encoder=tiny["text"], node_keys=NODES, use_ocr=False)
    model, _ = _artifact(tmp_path, cfg, "crash")
    out = tmp_path / "out.onnx"
    assert export_best(model, out, {"k": "v"}) == "plain"
    assert read_metadata(out) == {"k": "v", "spaguard.graph": "plain"} and parity(model, out, ITEMS[:2]) <= 1e-4
    assert "fused ONNX export failed" in caplog.text


def test_backend_refuses_mismatched_card_and_stale_cache(tiny: dict[str, str], tmp_path) -> None:
    cfg = ClassifierConfig(encoder=tiny["text"], node_keys=NODES, use_ocr=False)
    _, art = _artifact(tmp_path, cfg, "art")
    card_path = tmp_path / "art" / "card.json"
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, "encoder_sha256": "0" * 64}))
    with pytest.raises(ArtifactMismatchError, match="encoder_sha256"):
        load_backend("onnx", art)
    card_path.write_text(json.dumps(card))
    path = ensure_onnx(art)
    card_path.write_text(json.dumps({**card, "note": "edited after export"}))
    assert ensure_onnx(art) != path  # an edited card is a new cache entry, never a stale hit
    card_path.write_text(json.dumps(card))
    set_metadata(path, {**read_metadata(path), "spaguard.card": json.dumps({**card, "seed": 99})})
    with pytest.raises(ArtifactMismatchError, match="not exported from"):
        load_backend("onnx", art)  # a cache file whose embedded card differs is refused


def test_export_cli_writes_file_and_checks_parity(tiny: dict[str, str], tmp_path, capsys) -> None:
    cfg = ClassifierConfig(encoder=tiny["text"], node_keys=NODES, use_ocr=False)
    _, art = _artifact(tmp_path, cfg, "art")
    out = tmp_path / "guard.onnx"
    assert export_main(["--model", art, "--out", str(out), "--check"]) == 0
    assert out.is_file() and "max |torch - ort|" in capsys.readouterr().out
    out8 = tmp_path / "guard.int8.onnx"
    assert export_main(["--model", art, "--out", str(out8), "--int8"]) == 0
    assert out8.is_file() and not (tmp_path / "guard.int8.fp32.onnx").exists()


def test_guard_spin_setting_reaches_the_ort_session(tiny: dict[str, str], tmp_path) -> None:
    from service.app import load_guard
    from service.settings import ServeSettings

    cfg = ClassifierConfig(encoder=tiny["text"], node_keys=NODES, use_ocr=False)
    _, art = _artifact(tmp_path, cfg, "spin")
    for spin in (False, True):
        backend = load_guard(ServeSettings(guard_artifact=art, guard_threads=1, guard_spin=spin))
        opts = backend.session.get_session_options()
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if spin else "0")
    with pytest.raises(ValueError, match="ONNX backends only"):
        load_backend("torch", art, spin=True)
