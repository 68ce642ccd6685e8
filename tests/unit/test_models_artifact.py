"""models.artifact (one sigmoid, one Calibration, the artifact files), models.cache and models.ocr_config."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.artifact import (DEFAULT_ARTIFACT, DEFAULT_NODE_OVERRIDE, Calibration, ClassifierConfig, read_artifact,
                             resolve_artifact, sigmoid, write_artifact)
from models.cache import cache_root
from models.ocr_config import REPLACEABLE_MODELS, OcrConfig

NODES = ["Malicious Use", "Malicious Use/Security threats"]


def test_sigmoid_scalar_is_exact_in_both_tails() -> None:
    assert sigmoid(0.0) == 0.5 and sigmoid(2.0, 2.0) == 1.0 / (1.0 + math.exp(-1.0))
    assert sigmoid(-800.0) == 0.0 and sigmoid(800.0) == 1.0  # no OverflowError
    assert sigmoid(-100.0) == pytest.approx(math.exp(-100.0), rel=1e-12)  # the tail is kept, not clipped
    assert isinstance(sigmoid(1), float)


def test_sigmoid_array_matches_scalar_and_keeps_numpy_types() -> None:
    z = np.linspace(-50, 50, 1001)
    np.testing.assert_allclose(sigmoid(z, 1.3), [sigmoid(float(x), 1.3) for x in z], rtol=1e-15, atol=0)
    assert sigmoid(np.array([[0.0, 1e4]])).shape == (1, 2)  # clipped: no overflow warning
    assert isinstance(sigmoid(np.float64(0.3)), np.floating)
    assert sigmoid(z.astype(np.float32)).dtype == np.float64


def test_calibration_file_round_trip_and_node_override() -> None:
    fitted = Calibration({"prompt": 1.5, "response": 2.0}, {"prompt": 0.3, "response": 0.4}, 0.8, {NODES[0]: 0.2})
    data = fitted.to_dict()
    assert "node_override" not in data and fitted.override == DEFAULT_NODE_OVERRIDE  # not fitted: the default
    read = Calibration.from_dict(data, NODES)
    assert read.node_override == DEFAULT_NODE_OVERRIDE and read.to_dict() == {**data, "node_override": 0.9}
    assert Calibration.identity(NODES).to_dict()["node_override"] == 0.9
    assert read.prob("prompt", 1.5) == sigmoid(1.0) and read.node_prob(0.8) == sigmoid(1.0)
    assert read.node_threshold(NODES[1]) == 0.5  # uncalibrated node: the default
    assert read.node_fires(NODES[0], 0.5, flagged=True) and not read.node_fires(NODES[0], 0.5, flagged=False)
    assert read.node_fires(NODES[0], 0.95, flagged=False)  # above node_override: fires on its own
    with pytest.raises(ValueError, match="unknown node keys"):
        Calibration.from_dict({**data, "node_thresholds": {"nope": 0.5}}, NODES)
    with pytest.raises(ValueError, match="malformed"):
        Calibration.from_dict({"temperature": {}}, NODES)


def test_artifact_json_files_round_trip(tmp_path) -> None:
    config = ClassifierConfig(encoder="enc", node_keys=NODES)
    card = {"taxonomy_version": config.taxonomy_version, "note": "test"}
    write_artifact(tmp_path, config, card, Calibration.identity(NODES))
    (tmp_path / "head.safetensors").write_bytes(b"")
    got_config, got_card, got_cal = read_artifact(tmp_path)
    assert got_config == config and got_card == card and got_cal == Calibration.identity(NODES)
    assert json.loads((tmp_path / "config.json").read_text())["format_version"] == 1
    assert resolve_artifact(tmp_path) == tmp_path and resolve_artifact(None) == DEFAULT_ARTIFACT
    with pytest.raises(FileNotFoundError, match="no classifier artifact"):
        resolve_artifact(tmp_path / "missing")


def test_the_shipped_calibration_reads_and_writes_back_byte_for_byte() -> None:
    config, _, cal = read_artifact(DEFAULT_ARTIFACT)
    assert json.dumps(cal.to_dict(), indent=2) == (DEFAULT_ARTIFACT / "calibration.json").read_text()
    assert set(cal.node_thresholds) <= set(config.node_keys)


def test_cache_root_follows_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("SPAGUARD_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("SPAGUARD_CACHE")
    assert cache_root().parts[-2:] == (".cache", "spaguard")


def test_ocr_config_names_the_models_the_int8_builder_has_recipes_for() -> None:
    from models.ocr_int8 import INT8_RECIPES

    assert set(INT8_RECIPES) == set(REPLACEABLE_MODELS)
    with pytest.raises(ValueError, match="int8_models must be among"):
        OcrConfig(int8_models=("cls",))


def test_the_service_door_imports_without_torch_numpy_or_onnxruntime() -> None:
    code = ("import sys, models.backends; "
            "print(sorted(m for m in ('torch', 'numpy', 'onnxruntime', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    assert out.strip() == "[]"
