"""Items -> classifier inputs, outside any graph: OCR, fast tokenization, image preprocessing.

Shared by ``models.classifier.GuardClassifier`` and the ONNX backend (which never loads the torch encoder).

Contract
--------
* ``Featurizer(config)(items) -> (features, ocr_texts)``: CPU tensors for ``GuardClassifier.forward``
  (and the ONNX graph's inputs, ``Featurizer.input_names``) plus the OCR text of each item. The prompt
  text plus the OCR text of its images, tokenized by the encoder's fast tokenizer with the response as
  ``text_pair``, padded to the longest item rounded up to a multiple of ``PAD_MULTIPLE`` (not to
  ``max_length``); plus ``pixel_values``/``image_mask`` when an image encoder is configured and the
  batch has images.
* ``tokenize(...)`` is that tokenization step alone; it adds ``response_mask`` (1 on response tokens).
* Thread-safe: tokenizer calls are serialized (see the note in ``Featurizer.__init__``); OCR is the
  process-wide reader's (``models.ocr.get_reader``) unless a caller pins its own.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from typing import Any

import torch

from models.artifact import ClassifierConfig
from models.contract import GuardInput
from models.encoders import load_image_processor, load_tokenizer
from models.ocr import OcrReader, get_reader

PAD_MULTIPLE = 8  # token axis is padded to a multiple of this (see tokenize)


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
        # NOTE: a fast tokenizer call sets truncation/padding state on the shared Rust object;
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
