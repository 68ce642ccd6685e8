"""Scoring backends: the one door from the service into the harm classifier.

The service imports ``models`` only through this module (STYLE.md section 1): the contract
(``GuardInput``, ``Verdict``, ``ScoringBackend``: ``models.contract``), the artifact folder
(``DEFAULT_ARTIFACT``, ``resolve_artifact``: ``models.artifact``), the taxonomy projections
(``project_scores``, ``target_names``: ``models.projection``), the text-image renderer that warm-up
draws with (``render_text_image``: ``models.render``) and the runtimes below.

Contract
--------
* ``load_backend(kind, artifact)`` opens a ``ScoringBackend`` of ``BACKEND_KINDS`` on an artifact
  folder (None: ``models/default/``) and refuses an artifact whose card does not match this machine
  (``ArtifactMismatchError``).
* ``score(batch)`` follows ``models.contract.ScoringBackend``: one ``Verdict`` per item, in order;
  bad inputs (e.g. undecodable images) raise before the model runs, and a failure inside the model
  runtime makes ``health()`` False until the next successful call.
* ``segmenter_for(artifact)`` is the ``models.segment.Segmenter`` that cuts prompts and responses into the
  items this artifact scores (windows sized to its token budget, sentence chunks, decoded variants); the
  service and ``spaguard eval-guard`` both score through it, and ``combine`` merges one input's verdicts.
* ``verdicts_from_logits`` turns raw logits into verdicts with the artifact's ``Calibration``
  (formula: ``models.artifact``).

Importing this module stays cheap (no torch, numpy or onnxruntime): the runtimes import them, and
the modules that need them, when a backend is built.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.artifact import (DEFAULT_ARTIFACT, ArtifactMismatchError, Calibration, check_card_matches, read_artifact,
                             resolve_artifact, runtime_card)
from models.contract import GuardInput, ScoringBackend, Verdict, check_batch
from models.ocr_config import OcrConfig
from models.projection import nodes_for_target, project_scores, target_names
from models.render import render_text_image
from models.segment import (IMAGE_READINGS, SEGMENT_OVERLAP_CHARS, ImageReading, Piece, Segmenter, combine,
                            nothing_to_score, response_context, window_chars_for)

__all__ = [
    "BACKEND_KINDS", "DEFAULT_ARTIFACT", "IMAGE_READINGS", "SEGMENT_OVERLAP_CHARS", "ArtifactMismatchError",
    "GuardInput", "ImageReading", "OnnxBackend", "Piece", "ScoringBackend", "Segmenter", "TorchBackend", "Verdict",
    "combine", "load_backend", "nodes_for_target", "nothing_to_score", "project_scores", "render_text_image",
    "resolve_artifact", "response_context", "segmenter_for", "target_names", "verdicts_from_logits",
]

BACKEND_KINDS = ("torch", "onnx", "onnx-int8", "triton")
DEVICES = ("auto", "cpu", "cuda")


def verdicts_from_logits(items: Sequence[GuardInput], logits: dict[str, Any], calibration: Calibration,
                         node_keys: Sequence[str], ocr_texts: Sequence[str]) -> list[Verdict]:
    """Apply ``calibration`` to raw logits: one ``Verdict`` per item.

    ``logits`` holds array-likes ``prompt`` (B,), ``response`` (B,) and ``nodes`` (B, K); each item
    reads the head of its own task.
    """
    cal = calibration
    out = []
    for i, item in enumerate(items):
        task = item.task
        prob = cal.prob(task, float(logits[task][i]))
        flagged = prob >= cal.threshold[task]
        row = logits["nodes"][i]
        scores = {k: cal.node_prob(float(row[j])) for j, k in enumerate(node_keys)}
        fired = {k: s for k, s in scores.items() if cal.node_fires(k, s, flagged)}
        out.append(Verdict(task=task, unsafe_prob=prob, flagged=flagged, categories=fired, scores=scores,
                           ocr_text=ocr_texts[i]))
    return out


class _BackendBase:
    """Shared batch checks and verdict building; subclasses provide ``_prepare`` and ``_logits``."""

    name = "base"

    def __init__(self, max_batch_size: int) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be ≥ 1, got {max_batch_size}")
        self.max_batch_size = max_batch_size
        self._healthy = True

    def health(self) -> bool:
        """True unless the last ``score`` call failed inside the model runtime."""
        return self._healthy

    def score(self, batch: list[GuardInput]) -> list[Verdict]:
        """One verdict per item, in order (see ``ScoringBackend``)."""
        if not batch:
            return []
        check_batch(batch, self.max_batch_size)
        features, ocr_texts = self._prepare(batch)  # bad inputs (e.g. undecodable images) raise here
        try:
            logits = self._logits(features)
        except Exception:
            self._healthy = False
            raise
        self._healthy = True
        return verdicts_from_logits(batch, logits, self.calibration, self.node_keys, ocr_texts)

    # Set by subclasses.
    calibration: Calibration
    node_keys: list[str]

    def _prepare(self, batch: list[GuardInput]) -> tuple[dict[str, Any], list[str]]:
        raise NotImplementedError

    def _logits(self, features: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class TorchBackend(_BackendBase):
    """The classifier in eager PyTorch (CPU, or CUDA when ``device="cuda"``)."""

    name = "torch"

    def __init__(self, artifact: str | Path, *, threads: int | None = None, max_batch_size: int = 32,
                 device: str = "cpu") -> None:
        import torch

        from models.classifier import GuardClassifier  # torch: loaded when a backend is built (module docstring)

        super().__init__(max_batch_size)
        if threads is not None:
            # NOTE: torch's intra-op pool is process-wide; pinning here pins the process.
            torch.set_num_threads(int(threads))
        self.device = torch.device(device)
        self.model = GuardClassifier.load(artifact).to(self.device).eval()
        if threads is not None:
            self.model.featurizer.ocr = _ocr_reader(threads)
        self.calibration = self.model.calibration
        self.node_keys = list(self.model.config.node_keys)

    def _prepare(self, batch: list[GuardInput]) -> tuple[dict[str, Any], list[str]]:
        return self.model.prepare(batch)

    def _logits(self, features: dict[str, Any]) -> dict[str, Any]:
        import torch

        with torch.inference_mode():
            out = self.model(**{k: v.to(self.device) for k, v in features.items()})
        return {k: v.float().cpu().numpy() for k, v in out.items()}


def _ocr_reader(threads: int) -> Any:
    """The process-wide OCR reader whose ORT sessions use ``threads`` intra-op threads (a backend's
    ``threads`` pins OCR too: one knob for all the guard's CPU work)."""
    from models.ocr import get_reader  # numpy, PIL and the OCR runtimes: loaded when a backend is built

    return get_reader(OcrConfig(threads=int(threads)))


def load_backend(kind: str = "onnx", artifact: str | Path | None = None, *, threads: int | None = None,
                 max_batch_size: int = 32, device: str | None = None, spin: bool = False,
                 triton_url: str | None = None, timeout_s: float = 5.0) -> ScoringBackend:
    """Open a scoring backend: ``"torch"``, ``"onnx"``, ``"onnx-int8"`` or ``"triton"`` on ``artifact``.

    ``artifact`` None means ``models/default/``. ``threads`` pins intra-op threads of the model
    runtime and of OCR (None: the runtime's default and OCR's ``OcrConfig`` default, or
    ``$SPAGUARD_THREADS``). Raises ``ArtifactMismatchError`` when the
    artifact's card does not match the encoder weights or node keys found here. ``device``: ``"cpu"``,
    ``"cuda"`` or None / ``"auto"`` (CUDA when available). Torch moves the model there; ONNX Runtime
    takes its CUDA provider for ``"cuda"`` (onnxruntime-gpu, the ``gpu`` extra) and raises
    ``RuntimeError`` when that provider is absent or fails to load, never falling back to CPU quietly;
    ``"cpu"`` keeps ORT on its CPU provider. ``spin`` (ONNX only) lets idle ORT threads
    busy-wait (``OnnxBackend``); asking it of torch raises ``ValueError``. ``"triton"`` scores on the
    Triton server at ``triton_url`` (``models.triton_backend``; per-call deadline ``timeout_s``);
    its device is Triton's instance group, so ``device`` must stay None / ``"auto"``.
    """
    if kind not in BACKEND_KINDS:
        raise ValueError(f"unknown backend {kind!r}; expected one of {BACKEND_KINDS}")
    if device not in (None, *DEVICES):
        raise ValueError(f"unknown device {device!r}; expected one of {DEVICES}")
    device = None if device == "auto" else device
    if spin and kind in ("torch", "triton"):
        raise ValueError(f"spin applies to the ONNX backends only, not {kind}")
    folder = resolve_artifact(artifact)
    if threads is None and os.environ.get("SPAGUARD_THREADS"):
        threads = int(os.environ["SPAGUARD_THREADS"])
    if kind == "triton":
        if not triton_url:
            raise ValueError("the triton backend needs triton_url (--triton-url HOST:PORT)")
        if device is not None:
            raise ValueError("the triton backend's device is its Triton instance group (spaguard triton-repo --kind)")
        from models.triton_backend import TritonBackend  # tritonclient: loaded only for this kind

        return TritonBackend(folder, triton_url, verdicts=verdicts_from_logits, threads=threads,
                             max_batch_size=max_batch_size, timeout_s=timeout_s)
    if kind == "torch":
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        return TorchBackend(folder, threads=threads, max_batch_size=max_batch_size, device=device)
    providers = {None: None, "cpu": ["CPUExecutionProvider"],
                 "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}[device]
    if device == "cuda":
        _require_ort_cuda()
    backend = OnnxBackend(folder, threads=threads, max_batch_size=max_batch_size, int8=kind == "onnx-int8",
                          spin=spin, providers=providers)
    if device == "cuda" and backend.session.get_providers()[0] != "CUDAExecutionProvider":
        # ORT drops a provider whose libraries (CUDA, cuDNN) fail to load and runs on CPU with a warning.
        raise RuntimeError("device cuda: ONNX Runtime could not start its CUDA provider (CUDA or cuDNN "
                           f"libraries missing or no GPU visible); session providers: {backend.session.get_providers()}")
    return backend


def _require_ort_cuda() -> None:
    """Raise a clear ``RuntimeError`` unless this onnxruntime build has the CUDA provider."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise RuntimeError(
            f"device cuda: this onnxruntime ({ort.__version__}) has no CUDAExecutionProvider (available: "
            f"{available}). Install onnxruntime-gpu in place of onnxruntime (the `gpu` extra, or the GPU image "
            "deploy/Dockerfile.gpu) on a machine with CUDA, or use --guard-device cpu.")


class OnnxBackend(_BackendBase):
    """The classifier in ONNX Runtime: CPU, or the CUDA provider where onnxruntime-gpu is installed.

    The ONNX file is exported from the artifact on first use and cached (``models.export_onnx``);
    tokenization and OCR run outside the graph in the shared ``Featurizer``. ``threads`` sets ORT's
    intra-op threads (None: ORT's default, one per physical core); ``spin`` lets idle ORT threads
    busy-wait (off by default: see the note in ``__init__``); ``fuse=False`` runs the plain graph
    instead of ORT's fused one (``models.export_onnx.export_best``).
    """

    name = "onnx"

    def __init__(self, artifact: str | Path, *, threads: int | None = None, max_batch_size: int = 32,
                 int8: bool = False, cache_dir: str | Path | None = None,
                 providers: Sequence[str] | None = None, spin: bool = False, fuse: bool = True) -> None:
        import json

        import onnxruntime as ort

        # torch and onnx: loaded when a backend is built (module docstring)
        from models.export_onnx import artifact_key, ensure_onnx
        from models.featurize import Featurizer
        from models.onnx_graph import read_metadata

        super().__init__(max_batch_size)
        folder = Path(artifact)
        config, card, self.calibration = read_artifact(folder)
        check_card_matches(card, runtime_card(config))  # refuse before the (slow) first export
        self.node_keys = list(config.node_keys)
        self.featurizer = Featurizer(config, ocr=None if threads is None else _ocr_reader(threads))
        self.path = ensure_onnx(folder, int8=int8, cache_dir=cache_dir, fuse=fuse)
        meta = read_metadata(self.path)
        if meta.get("spaguard.key") != artifact_key(folder, int8, fuse) or json.loads(meta.get("spaguard.card", "{}")) != card:
            raise ArtifactMismatchError(f"{self.path} was not exported from {folder} (stale cache entry?)")
        self.graph = meta.get("spaguard.graph", "plain")  # "fused" or "plain" (models.export_onnx.export_best)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        # NOTE: ORT's idle intra-op threads spin-wait by default; on a small shared CPU they
        # steal the cores OCR, tokenization and the event loop need (guard_bench, onnx vs onnx-spin,
        # loaded 2-core box: same at batch 1, 2.7x faster at batch 8, 1.2x at 32). ``spin=True`` restores it.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
        available = ort.get_available_providers()
        wanted = list(providers) if providers else ["CUDAExecutionProvider", "CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(self.path), opts, providers=[p for p in wanted if p in available])
        self.name = "onnx-int8" if int8 else "onnx"

    def _prepare(self, batch: list[GuardInput]) -> tuple[dict[str, Any], list[str]]:
        return self.featurizer(batch)

    def _logits(self, features: dict[str, Any]) -> dict[str, Any]:
        from models.onnx_graph import OUTPUT_NAMES, ort_feed  # already loaded by __init__

        out = self.session.run(list(OUTPUT_NAMES), ort_feed(self.session, features))
        return dict(zip(OUTPUT_NAMES, out))


# Tokens of the prompt budget kept free for [CLS]/[SEP] and the first words of the OCR text.
_RESERVED_TOKENS = 8


def segmenter_for(artifact: str | Path | None = None, *, decode: bool = True,
                  image_reading: ImageReading = "joined") -> Segmenter:
    """The ``Segmenter`` for an artifact folder (None: ``models/default/``): prompt windows fit its
    ``max_length`` tokens; fragments are re-joined with its encoder's whole-word vocabulary; images are read
    by ``image_reading`` (``IMAGE_READINGS``), and count without OCR text when it has an image encoder."""
    from models.encoders import load_tokenizer  # transformers: loaded when the guard is built

    config, _card, _cal = read_artifact(resolve_artifact(artifact))
    tokenizer = load_tokenizer(config.encoder)
    budget = min(config.max_length, int(tokenizer.model_max_length or config.max_length))
    words = frozenset(w for w in tokenizer.get_vocab() if w.isascii() and w.isalpha() and (len(w) > 1 or w in "ai"))
    return Segmenter(window_chars=window_chars_for(budget, _RESERVED_TOKENS), vocabulary=words, decode=decode,
                     image_reading=image_reading, reads_pixels=config.image_encoder is not None)
