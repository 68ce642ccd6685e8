"""OCR for the guard: typographic attacks put the harmful request in the image, so read it.

Contract
--------
* ``OcrReader.read(image_bytes) -> str`` returns the text found in an encoded image (PNG, JPEG,
  WebP, GIF, ...), lines joined by spaces in reading order (top-to-bottom, left-to-right), or ``""``.
  Undecodable bytes raise ``ValueError``.
* Results are cached by the image's sha256 (LRU, ``cache_size`` entries), so featurizing the same
  image twice (prompt check, then response check) costs one OCR run.
* Thread-safe: the RapidOCR engine is created lazily once, and calls into it are serialized by a
  lock (RapidOCR mutates per-call state; ORT sessions use ``threads`` intra-op threads each and do
  not spin-wait unless ``spin``).
* ``get_reader(config)`` returns one shared reader per config in this process.
* Knobs: ``models.ocr_config.OcrConfig``; decoding and the size cap: ``models.ocr_image``.

Speed (see ``docs/benchmarks.md``, "Guard classifier (CPU)"): the defaults skip the text-angle
classifier (typographic and screenshot text is upright), downscale images whose longest side
exceeds ``max_side``, and return early, without running any model, for near-uniform images
(``blank_std``), which cannot carry text. A photo without text costs one detector pass.
Latency (``benchmarks/ocr_runtime_bench.py``, docs/benchmarks.md "OCR on OpenVINO"): the models run on
OpenVINO's CPU plugin by default (``OcrConfig.openvino_models``), p50 93 ms per page of 1-4 lines
on 2 idle cores for image sizes seen before, 114 ms on first sight, vs 143-148 ms on ONNX Runtime;
a cache hit costs one sha256 of the image bytes.

int8 (``OcrConfig.int8``, off by default): the reader loads int8 copies of the models that
``models.ocr_int8.ensure_int8_model`` builds and caches (recipe, cache and failure modes there), and
runs fp32 if building them fails.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from models import ocr_int8, ocr_openvino
from models.ocr_config import OcrConfig
from models.ocr_image import cap_side, decode_bgr


class OcrReader:
    """A cached, thread-safe text reader for encoded images (see module docstring)."""

    def __init__(self, config: OcrConfig | None = None) -> None:
        self.config = config or OcrConfig()
        if self.config.max_side < 64:
            raise ValueError(f"max_side must be ≥ 64 pixels, got {self.config.max_side}")
        self._engine: Any = None
        self._lock = threading.Lock()  # guards the cache
        self._engine_lock = threading.Lock()  # serializes engine creation and calls
        self._cache: OrderedDict[str, str] = OrderedDict()

    def read(self, image: bytes) -> str:
        """Text in ``image`` (encoded bytes), ``""`` if none. Raises ``ValueError`` on bad bytes."""
        if not isinstance(image, (bytes, bytearray, memoryview)):
            raise TypeError(f"OCR expects encoded image bytes, got {type(image).__name__}")
        key = hashlib.sha256(image).hexdigest()
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        text = self._run(decode_bgr(bytes(image)))
        with self._lock:
            self._cache[key] = text
            while len(self._cache) > self.config.cache_size:
                self._cache.popitem(last=False)
        return text

    def clear_cache(self) -> None:
        """Forget cached results (benchmarks measure cold OCR this way)."""
        with self._lock:
            self._cache.clear()

    def read_many(self, images: list[bytes] | tuple[bytes, ...]) -> list[str]:
        """``read`` for each image, in order."""
        return [self.read(img) for img in images]

    def _run(self, bgr: np.ndarray) -> str:
        # Fast path: a near-uniform image has no strokes, so no text to find.
        if float(bgr.reshape(-1, 3).std(axis=0).max()) < self.config.blank_std:  # per-channel std
            return ""
        bgr = cap_side(bgr, self.config.max_side)
        with self._engine_lock:
            engine = self._get_engine()
            result, _ = engine(bgr)
        if not result:
            return ""
        return " ".join(str(line[1]).strip() for line in result if str(line[1]).strip())

    def _get_engine(self) -> Any:
        # Called with the lock held: build the ORT sessions once, on first use.
        if self._engine is None:
            from rapidocr_onnxruntime import RapidOCR

            cfg = self.config
            threads = -1 if cfg.threads is None else int(cfg.threads)
            # NOTE: in rapidocr 1.4.4, det_limit_type="max" ignores det_limit_side_len (it picks
            # 960/1500/2000 from the image size) and "min" upscales small images to 736 px (slow), so the
            # size cap is applied by cap_side before the engine; images ≤ 960 px then pass unscaled.
            engine = RapidOCR(
                use_cls=cfg.use_cls, text_score=cfg.text_score, det_limit_type="max", det_unclip_ratio=cfg.unclip_ratio,
                intra_op_num_threads=threads, inter_op_num_threads=1 if threads > 0 else -1,
            )
            _replace_sessions(engine, threads, cfg.spin, _int8_paths(cfg), _openvino_models(cfg))
            self._engine = engine
        return self._engine


def _int8_paths(cfg: OcrConfig) -> dict[str, Path]:
    """The int8 model files ``cfg`` asks for; {} (fp32) if building them fails, since reading images
    with the slower fp32 models beats failing every image request."""
    if not cfg.int8:
        return {}
    try:  # through the module, so a test can stand in for the builder
        return {kind: ocr_int8.ensure_int8_model(kind) for kind in cfg.int8_models}
    except Exception:  # noqa: BLE001 - any quantizer/ORT/IO failure; logged with its traceback
        logging.getLogger(__name__).warning("OCR int8 models unavailable; using fp32", exc_info=True)
        return {}


def _openvino_models(cfg: OcrConfig) -> tuple[str, ...]:
    """``cfg.openvino_models``, or () with a logged warning when OpenVINO is not installed."""
    if cfg.openvino_models and not ocr_openvino.available():
        logging.getLogger(__name__).warning("openvino is not installed; OCR models %s run on ONNX Runtime",
                                            list(cfg.openvino_models))
        return ()
    return tuple(cfg.openvino_models)


def _replace_sessions(engine: Any, threads: int, spin: bool, paths: dict[str, Path] | None = None,
                      openvino: tuple[str, ...] = ()) -> None:
    """Swap rapidocr's ORT sessions for ones built with our options (the bundled model files, or
    ``paths[kind]`` for kind "det"/"rec", e.g. int8 copies); the kinds in ``openvino`` get an
    ``OpenVinoSession`` on the same file instead.

    rapidocr 1.4.4 (pinned) exposes no session options beyond thread counts and always lets idle
    threads spin; the detector, recogniser and angle classifier each own a pool, so a spinning pool
    steals cores from the next model. The attributes replaced here are the ones 1.4.4 reads
    (``text_det.infer.session``, ``text_rec.session.session``, ``text_cls.infer.session``); a
    different layout raises instead of silently keeping the spinning sessions.
    """
    import onnxruntime as ort

    paths = paths or {}
    slots = [("det", engine.text_det.infer, "session"), ("rec", engine.text_rec.session, "session")]
    if getattr(engine, "use_cls", False):
        slots.append(("cls", engine.text_cls.infer, "session"))
    for kind, holder, attr in slots:
        old = getattr(holder, attr, None)
        if not isinstance(old, ort.InferenceSession):
            raise RuntimeError(f"unexpected rapidocr layout: {type(holder).__name__}.{attr} is {type(old).__name__}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.inter_op_num_threads = 1
        if threads > 0:
            opts.intra_op_num_threads = threads
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        path = str(paths.get(kind, old._model_path))
        if kind in openvino:
            setattr(holder, attr, ocr_openvino.OpenVinoSession(path, threads if threads > 0 else None))
            continue
        setattr(holder, attr, ort.InferenceSession(path, opts, providers=old.get_providers()))


_READERS: dict[OcrConfig, OcrReader] = {}
_READERS_LOCK = threading.Lock()


def get_reader(config: OcrConfig | None = None) -> OcrReader:
    """The process-wide reader for ``config`` (created on first request)."""
    cfg = config or OcrConfig()
    with _READERS_LOCK:
        if cfg not in _READERS:
            _READERS[cfg] = OcrReader(cfg)
        return _READERS[cfg]
