"""How the transformers engine turns a request into model inputs (``Prompts``), and the text-only kind.

``Prompts.encode(request)`` returns one row of model inputs: ``input_ids`` and ``attention_mask`` of
shape (1, L), plus whatever image tensors the model takes. The engine left-pads rows into a batch.

``TextPrompts`` serves a text-only causal LM (the embedded default, SmolLM2-135M-Instruct) with the
model's own chat template. NOTE(images): the model cannot see. An image part becomes the text
``models.llm.IMAGE_PLACEHOLDER`` at its place in the message, so an image request is answered from
its text alone; the guard still scores every image (pixels and the text OCR reads in it) before the
model runs. ``/v1/models`` and the start-up log say so (``TransformersEngine.model_info``).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from models.llm import text_content
from service.engines.base import EngineRequest


class Prompts(Protocol):
    """The request → model-inputs half of a transformers engine."""

    tokenizer: Any  # decodes the generated ids; its pad/eos ids drive batching and stopping

    def encode(self, request: EngineRequest) -> dict[str, torch.Tensor]: ...


def text_messages(request: EngineRequest) -> list[dict[str, str]]:
    """Engine messages as plain-string chat messages (``models.llm.text_content``): most text-only chat
    templates take a string, not a part list."""
    return [
        {"role": m.role, "content": text_content([p if isinstance(p, str) else None for p in m.content])}
        for m in request.messages
    ]


class TextPrompts:
    """A text-only LLM's tokenizer and chat template (``add_generation_prompt``: the model answers)."""

    def __init__(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template")
        self.tokenizer = tokenizer

    def encode(self, request: EngineRequest) -> dict[str, torch.Tensor]:
        if request.prompt is not None:  # a raw prompt: continued as it is (the tokenizer adds its BOS)
            encoding = self.tokenizer(request.prompt, return_tensors="pt")
            return {"input_ids": encoding["input_ids"], "attention_mask": encoding["attention_mask"]}
        # The template writes the special tokens itself, so apply_chat_template tokenizes without
        # adding any (a second BOS would change the model's answer).
        encoding = self.tokenizer.apply_chat_template(
            text_messages(request), add_generation_prompt=True, tokenize=True, return_dict=True,
            return_tensors="pt",
        )  # fmt: skip
        return {"input_ids": encoding["input_ids"], "attention_mask": encoding["attention_mask"]}  # (1, L) each
