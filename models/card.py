"""Artifact cards and calibration: what an artifact is, and how its logits become verdicts.

Contract
--------
* ``card.json`` is a small JSON dict. A runtime checks ``taxonomy_version`` (fingerprint of the node
  keys), ``encoder`` + ``encoder_sha256`` (and the image encoder's, when set) with
  ``check_card_matches`` and refuses the artifact on any difference (``ArtifactMismatchError``).
  Training adds: data used, git commit (``git_commit()``), metrics, seed, the rebuild command.
* ``calibration.json`` (written by training, read by every backend)::

    {"temperature": {"prompt": T, "response": T}, "threshold": {"prompt": t, "response": t},
     "node_temperature": T, "node_thresholds": {node_key: t}, "node_override": p}

  ``unsafe_prob = sigmoid(logit / T[task])``; flagged when ``unsafe_prob >= threshold[task]``; node
  scores ``sigmoid(node_logit / node_temperature)``; a node fires when its score ≥ its threshold and
  the item is flagged, or when its score ≥ ``node_override`` (default 0.9) regardless. A node with
  no entry in ``node_thresholds`` uses ``DEFAULT_NODE_THRESHOLD`` (0.5); unknown node keys are an error.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASKS = ("prompt", "response")
DEFAULT_NODE_THRESHOLD = 0.5


class ArtifactMismatchError(ValueError):
    """An artifact's card does not match its config or the encoder weights on this machine."""


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


@dataclass
class Calibration:
    """Temperatures and thresholds shipped with an artifact (see module docstring)."""

    temperature: dict[str, float] = field(default_factory=lambda: {t: 1.0 for t in TASKS})
    threshold: dict[str, float] = field(default_factory=lambda: {t: 0.5 for t in TASKS})
    node_temperature: float = 1.0
    node_thresholds: dict[str, float] = field(default_factory=dict)
    node_override: float = 0.9

    @classmethod
    def identity(cls, node_keys: Sequence[str]) -> Calibration:
        """T = 1 everywhere, every threshold 0.5 (an uncalibrated model)."""
        return cls(node_thresholds={k: 0.5 for k in node_keys})

    @classmethod
    def from_dict(cls, data: dict[str, Any], node_keys: Sequence[str]) -> Calibration:
        """Parse and validate ``calibration.json``; every node key needs a threshold."""
        try:
            cal = cls(
                temperature={t: float(data["temperature"][t]) for t in TASKS},
                threshold={t: float(data["threshold"][t]) for t in TASKS},
                node_temperature=float(data["node_temperature"]),
                node_thresholds={str(k): float(v) for k, v in data["node_thresholds"].items()},
                node_override=float(data.get("node_override", 0.9)),
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
        probs = [*self.threshold.values(), *self.node_thresholds.values(), self.node_override]
        if not all(0.0 <= p <= 1.0 for p in probs):
            raise ValueError("thresholds and node_override must lie in [0, 1]")
        extra = set(self.node_thresholds) - set(node_keys)
        if extra:
            raise ValueError(f"node_thresholds name unknown node keys: {sorted(extra)[:3]}")

    def node_threshold(self, key: str) -> float:
        """The fire threshold of node ``key`` (``DEFAULT_NODE_THRESHOLD`` when uncalibrated)."""
        return self.node_thresholds.get(key, DEFAULT_NODE_THRESHOLD)

    def to_dict(self) -> dict[str, Any]:
        """The ``calibration.json`` form."""
        return {"temperature": dict(self.temperature), "threshold": dict(self.threshold),
                "node_temperature": self.node_temperature, "node_thresholds": dict(self.node_thresholds),
                "node_override": self.node_override}
