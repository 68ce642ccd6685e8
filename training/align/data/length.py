"""Token-length checks so that ``max_length`` never cuts image tokens (STYLE.md section 7).

Contract
--------
TRL's ``DataCollatorForVisionPreference`` truncates ``prompt + completion`` to ``max_length``
keeping the start. Image tokens sit in the prompt, so a pair is only unsafe to truncate when its
*prompt* (with images expanded to their tokens) does not fit. ``filter_by_length`` therefore

* drops pairs whose prompt needs more than ``max_length - 1`` tokens (counted as
  ``prompt_too_long``: the cut would fall inside the prompt, maybe inside the image tokens, and
  leave no response token to score), and
* keeps, but counts as ``response_truncated``, pairs whose longer response is cut.

``check_max_length`` fails early, with the fix in the message, when ``max_length`` cannot even
hold one image's tokens. Lengths are measured with the job's own processor and chat template,
exactly as the collator will build them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from trl.data_utils import apply_chat_template, prepare_multimodal_messages


def image_token_id(processor: Any) -> int | None:
    """The id the processor expands images into (``<image>``, ``<|image_pad|>``), if it has one."""
    tid = getattr(processor, "image_token_id", None)
    if tid is None and getattr(processor, "image_token", None):
        tid = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    return tid


def pair_lengths(example: dict[str, Any], processor: Any) -> dict[str, int]:
    """Token counts of one vision-preference row: ``prompt`` (images expanded), ``image``,
    ``chosen`` and ``rejected``, as the TRL collator will tokenize them."""
    images = list(example.get("images") or [])
    ex = {
        "prompt": prepare_multimodal_messages(example["prompt"], images=images),
        "chosen": prepare_multimodal_messages(example["chosen"]),
        "rejected": prepare_multimodal_messages(example["rejected"]),
    }
    text = apply_chat_template(ex, processor)
    prompt = processor(images=images or None, text=[text["prompt"]], add_special_tokens=False)
    ids = list(prompt["input_ids"][0])
    tid = image_token_id(processor)
    tok = processor.tokenizer
    return {
        "prompt": len(ids),
        "image": sum(1 for i in ids if i == tid) if tid is not None else 0,
        "chosen": len(tok(text["chosen"], add_special_tokens=False)["input_ids"]),
        "rejected": len(tok(text["rejected"], add_special_tokens=False)["input_ids"]),
    }


def check_max_length(max_length: int | None, example: dict[str, Any], processor: Any) -> dict[str, int]:
    """Raise ``ValueError`` with the fix when ``max_length`` cannot hold ``example``'s image tokens
    plus one response token; return the example's lengths otherwise."""
    lengths = pair_lengths(example, processor)
    if max_length is not None and lengths["image"] + 1 > max_length:
        raise ValueError(
            f"max_length={max_length} cannot hold one image ({lengths['image']} image tokens) and a "
            f"response; image tokens would be cut and the model would fail on a pixel/token mismatch. "
            f"Set max_length >= {lengths['prompt'] + max(lengths['chosen'], lengths['rejected'])} "
            "(this example's full length) or max_length: null."
        )
    return lengths


def filter_by_length(dataset: Any, processor: Any, max_length: int | None, counts: Counter | None = None,
                     num_proc: int | None = None):
    """Drop pairs whose prompt would be cut; count drops and truncated responses in ``counts``.

    A ``Dataset`` gets its lengths as columns through ``map`` (cached by ``datasets`` with the
    data, parallel with ``num_proc``), then counted and selected, so the counts are right on a
    cache hit too. A streaming ``IterableDataset`` is filtered lazily and ``counts`` grows while
    it is consumed. ``max_length=None`` keeps everything."""
    from datasets import IterableDataset

    counts = counts if counts is not None else Counter()
    if max_length is None:
        return dataset
    if isinstance(dataset, IterableDataset):
        return dataset.filter(lambda ex: _count(pair_lengths(ex, processor), max_length, counts))

    def lengths(example: dict[str, Any]) -> dict[str, int]:
        n = pair_lengths(example, processor)
        return {"_n_prompt": n["prompt"], "_n_full": n["prompt"] + max(n["chosen"], n["rejected"])}

    measured = dataset.map(lengths, num_proc=num_proc, desc="measuring token lengths")
    keep = [i for i, (p, f) in enumerate(zip(measured["_n_prompt"], measured["_n_full"], strict=True))
            if _count({"prompt": p, "full": f}, max_length, counts)]
    return measured.select(keep).remove_columns(["_n_prompt", "_n_full"])


def _count(n: dict[str, int], max_length: int, counts: Counter) -> bool:
    """Count one pair's fate; True when it is kept."""
    full = n.get("full", n["prompt"] + max(n.get("chosen", 0), n.get("rejected", 0)))
    if n["prompt"] + 1 > max_length:
        counts["prompt_too_long"] += 1
        return False
    if full > max_length:
        counts["response_truncated"] += 1
    counts["length_ok"] += 1
    return True
