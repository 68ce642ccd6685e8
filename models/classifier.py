"""The guard's harm classifier: a pretrained text encoder (+ OCR text, + optional vision tower) and heads.

Contract (shared with training/, which trains it, and models/backends.py, which serves it)
----------------------------------------------------------------------------------------
* ``featurize(items)`` -> CPU tensors for ``forward`` (``models.featurize.Featurizer``: prompt text
  plus OCR text, the response as ``text_pair``, padded to a multiple of 8; pixels with an image encoder).
* ``forward(**features)`` -> ``{"prompt": (B,), "response": (B,), "nodes": (B, len(node_keys))}``
  logits. Pooling: masked mean over the prompt segment and over the response segment, each
  L2-normalised (sentence-transformers style), concatenated with a has-response flag.
* Artifact directory (layout, config, card and calibration: ``models.artifact``): ``save`` writes
  ``head.safetensors`` with only the weights that are not the frozen pretrained encoders (heads,
  projections, LoRA adapters; the whole encoder for ``"full"``) beside the JSON files. ``load`` refuses
  an artifact whose card does not match the config (node-key fingerprint) or the encoder weights found
  on this machine (sha256).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from models.artifact import (ArtifactMismatchError, Calibration, ClassifierConfig, check_card_matches, read_artifact,
                             runtime_card, write_artifact)
from models.contract import GuardInput
from models.encoders import load_image_encoder, load_text_encoder
from models.featurize import Featurizer


class GuardClassifier(torch.nn.Module):
    """Text encoder (+ vision tower) -> pooled features -> MLP trunk -> prompt / response / node logits."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = load_text_encoder(config.encoder)
        self.featurizer = Featurizer(config)
        hidden = int(self.encoder.config.hidden_size)
        in_dim = 2 * hidden + 1  # prompt pool, response pool, has-response flag
        self.image_encoder: torch.nn.Module | None = None
        if config.image_encoder:
            self.image_encoder = load_image_encoder(config.image_encoder)
            self.image_proj = torch.nn.Linear(int(self.image_encoder.config.hidden_size), hidden)
            in_dim += hidden + 1  # image pool, has-image flag
        self.trunk = torch.nn.Sequential(
            torch.nn.Linear(in_dim, config.head_hidden), torch.nn.GELU(), torch.nn.Dropout(config.dropout)
        )
        self.out = torch.nn.Linear(config.head_hidden, 2 + len(config.node_keys))
        self.calibration = Calibration.identity(config.node_keys)
        self._set_trainable()

    # ---- features -------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        """The encoder's fast tokenizer (owned by the featurizer)."""
        return self.featurizer.tokenizer

    def featurize(self, items: Sequence[GuardInput]) -> dict[str, torch.Tensor]:
        """CPU tensors for ``forward`` (see module docstring)."""
        return self.featurizer(items)[0]

    def prepare(self, items: Sequence[GuardInput]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """``featurize`` plus the OCR text of each item (for ``Verdict.ocr_text``)."""
        return self.featurizer(items)

    # ---- model ----------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                image_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Logits per task; see the module docstring for the feature layout."""
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state  # (B, T, H)
        resp = response_mask.to(h.dtype)
        prompt = attention_mask.to(h.dtype) - resp
        has_resp = (resp.sum(1, keepdim=True) > 0).to(h.dtype)  # (B, 1)
        feats = [_masked_mean(h, prompt), _masked_mean(h, resp), has_resp]
        if self.image_encoder is not None:
            feats += self._image_features(pixel_values, image_mask, h)
        z = self.trunk(torch.cat(feats, dim=-1))
        logits = self.out(z)  # (B, 2 + K)
        return {"prompt": logits[:, 0], "response": logits[:, 1], "nodes": logits[:, 2:]}

    def _image_features(self, pixel_values: torch.Tensor | None, image_mask: torch.Tensor | None,
                        h: torch.Tensor) -> list[torch.Tensor]:
        batch = h.shape[0]
        if pixel_values is None or image_mask is None:  # text-only batch
            return [h.new_zeros(batch, h.shape[-1]), h.new_zeros(batch, 1)]
        n = pixel_values.shape[1]
        pooled = self.image_encoder(pixel_values=pixel_values.flatten(0, 1)).pooler_output  # (B*N, D)
        v = self.image_proj(pooled).view(batch, n, -1)  # (B, N, H)
        w = image_mask.to(v.dtype).unsqueeze(-1)  # (B, N, 1)
        img = (v * w).sum(1) / w.sum(1).clamp(min=1.0)
        has_img = (image_mask.sum(1, keepdim=True) > 0).to(v.dtype)
        return [img, has_img]

    def _set_trainable(self) -> None:
        mode = self.config.encoder_trainable
        self.encoder.requires_grad_(mode == "full")
        if self.image_encoder is not None:
            self.image_encoder.requires_grad_(False)
        if mode == "lora":
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(r=self.config.lora_r, lora_alpha=self.config.lora_alpha,
                              lora_dropout=self.config.lora_dropout,
                              target_modules=self.config.lora_target_modules)
            self.encoder = get_peft_model(self.encoder, lora)

    def train(self, mode: bool = True) -> GuardClassifier:
        """Train mode for trainable parts; frozen pretrained towers stay in eval (no dropout noise)."""
        super().train(mode)
        if self.config.encoder_trainable == "frozen":
            self.encoder.eval()
        if self.image_encoder is not None:
            self.image_encoder.eval()
        return self

    # ---- artifacts ------------------------------------------------------------------------------
    def base_card(self) -> dict[str, Any]:
        """The card fields a backend checks (see ``runtime_card``)."""
        return runtime_card(self.config)

    def save(self, out_dir: str | Path, card: dict[str, Any],
             calibration: Calibration | dict[str, Any] | None = None) -> None:
        """Write the artifact directory. ``card`` is completed with ``base_card()``; conflicts raise."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        full_card = dict(card)
        for key, value in self.base_card().items():
            if full_card.setdefault(key, value) != value:
                raise ArtifactMismatchError(f"card[{key!r}]={full_card[key]!r} but this model has {value!r}")
        if calibration is not None:
            self.calibration = calibration if isinstance(calibration, Calibration) else Calibration.from_dict(
                calibration, self.config.node_keys)
        save_file(self._artifact_state(), str(out / "head.safetensors"))
        write_artifact(out, self.config, full_card, self.calibration)

    @classmethod
    def load(cls, artifact_dir: str | Path, check_card: bool = True) -> GuardClassifier:
        """Rebuild a classifier from an artifact directory (eval mode); refuses a mismatched card."""
        folder = Path(artifact_dir)
        config, card, calibration = read_artifact(folder)
        if check_card:  # before building: a mismatched artifact must not cost an encoder load
            check_card_matches(card, runtime_card(config))
        model = cls(config)
        state = load_file(str(folder / "head.safetensors"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected:
            raise ArtifactMismatchError(f"{folder}: head.safetensors has unknown weights {unexpected[:5]}")
        expected = set(model._artifact_state())
        absent = sorted(set(missing) & expected)
        if absent:
            raise ArtifactMismatchError(f"{folder}: head.safetensors lacks weights {absent[:5]}")
        model.calibration = calibration
        return model.eval()

    def _artifact_state(self) -> dict[str, torch.Tensor]:
        mode = self.config.encoder_trainable
        out = {}
        for key, value in self.state_dict().items():
            if key.startswith("image_encoder."):
                continue
            if key.startswith("encoder.") and not (mode == "full" or (mode == "lora" and "lora_" in key)):
                continue
            out[key] = value.detach().contiguous()
        return out


def _masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L2-normalised mean of ``h`` (B, T, H) over ``mask`` (B, T); all-zero mask -> zero vector."""
    w = mask.unsqueeze(-1)  # (B, T, 1)
    mean = (h * w).sum(1) / w.sum(1).clamp(min=1e-9)
    return F.normalize(mean, dim=-1)
