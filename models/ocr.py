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

Speed (see ``docs/benchmarks.md``, "Guard classifier (CPU)"): the defaults skip the text-angle
classifier (typographic and screenshot text is upright), downscale images whose longest side
exceeds ``max_side``, and return early, without running any model, for near-uniform images
(``blank_std``), which cannot carry text. A photo without text costs one detector pass.
Latency (``benchmarks/guard_bench.py --ocr-sweep``, docs/benchmarks.md): a cold 760x400 page with
2-3 lines of text took p50 276 ms / p95 405 ms with these defaults on the shared 2-core dev box
under a load average of ~6 (recognition is about two thirds of it); a cache hit costs one sha256
of the image bytes.

int8 (``OcrConfig.int8``, ``guard_bench.py --ocr-quant``): the bundled models keep their weights in
``Constant`` nodes, so ``constants_to_initializers`` lifts them before ORT static quantization
(QDQ, per-channel int8 weights, uint8 activations calibrated on seeded rendered pages and
scikit-image photos run through the fp32 pipeline). The recogniser quantizes its convolutions only:
with its attention and head MatMuls quantized too it ran in 0.54x the fp32 time but cut word recall
on 60 dev-prompt pages from 0.79 to 0.61 (spaces between words went missing; 0.85 conv-only).
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

# Decompression-bomb guard: images larger than this are refused before decoding pixels.
MAX_PIXELS = 40_000_000

INT8_VERSION = "ocr-int8-v1"
"""Part of the int8 cache key: bump it when the graph pass, calibration data or recipes change."""
INT8_RECIPES: dict[str, dict[str, Any]] = {"det": {}, "rec": {"op_types_to_quantize": ["Conv"]}}
"""Extra ``quantize_static`` arguments per model: the recogniser quantizes convolutions only (module docstring)."""
_INT8_BUILDS: dict[str, int] = {"det": 0, "rec": 0}  # quantization runs in this process (tests check reuse)


@dataclass(frozen=True)
class OcrConfig:
    """Knobs of the OCR pipeline (RapidOCR PP-OCRv4 det + rec; angle classifier optional)."""

    max_side: int = 640
    """Images are downscaled (area interpolation) so their longest side is ≤ this before detection.
    640 kept full word recall on rendered 760x400 pages and the same recall as 960 on 1280x960 ones
    at lower latency; 480 lost 11-14 % of words (docs/benchmarks.md). Small print in large images is
    the price: raise it for screenshot-heavy traffic."""
    use_cls: bool = False
    """Run the 0/180-degree text-angle classifier (off: upright text is the common case)."""
    text_score: float = 0.5
    """Recognised lines scoring below this are dropped."""
    unclip_ratio: float = 2.0
    """Detector box dilation (rapidocr's default is 1.6). Tight boxes make the recogniser drop spaces
    ("Howdoes a securedcredit"), and the classifier then sees unknown words; 2.0 keeps them
    (``guard_bench.py --ocr-quant``, docs/benchmarks.md)."""
    blank_std: float = 2.0
    """Per-channel pixel std below which an image is treated as blank (no text) without running OCR."""
    threads: int | None = 2
    """Intra-op threads of each ORT session (None: ORT's default, all cores). With spinning off, 2
    threads read a 3-line 760x400 page in p50 131 ms vs 212 ms with 1 on the idle 2-core box
    (docs/benchmarks.md, "OCR sessions")."""
    spin: bool = False
    """Let idle ORT threads busy-wait. Off: rapidocr builds one thread pool per model, and the
    detector's spinning pool stole the recogniser's cores (rec 104 ms spinning vs 84 ms not, 2 threads)."""
    cache_size: int = 1024
    """Entries in the sha256 -> text LRU cache."""
    int8: bool = False
    """Run the models in ``int8_models`` as int8 copies (static QDQ quantization, built once per
    machine and cached by ``ensure_int8_model``; the first build takes 1-2 minutes, and if it fails
    the reader logs a warning and runs fp32). Off by default: the detector, the only model that kept
    word recall as int8, made OCR 14 % faster, under the 15 % bar for a default (docs/benchmarks.md,
    "OCR int8")."""
    int8_models: tuple[str, ...] = ("det",)
    """Which models ``int8`` quantizes: "det" and/or "rec". The int8 recogniser is another 15 %
    faster (both: 0.69-0.73x fp32) but lost 0.5 points of word recall on 200 dev-prompt pages."""

    def __post_init__(self) -> None:
        unknown = set(self.int8_models) - set(INT8_RECIPES)
        if unknown:
            raise ValueError(f"int8_models must be among {sorted(INT8_RECIPES)}, got {sorted(unknown)}")


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
        bgr = _cap_side(bgr, self.config.max_side)
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
            # NOTE(helper3): in rapidocr 1.4.4, det_limit_type="max" ignores det_limit_side_len (it picks
            # 960/1500/2000 from the image size) and "min" upscales small images to 736 px (slow), so the
            # size cap is applied by _cap_side before the engine; images ≤ 960 px then pass unscaled.
            engine = RapidOCR(
                use_cls=cfg.use_cls, text_score=cfg.text_score, det_limit_type="max", det_unclip_ratio=cfg.unclip_ratio,
                intra_op_num_threads=threads, inter_op_num_threads=1 if threads > 0 else -1,
            )
            _replace_sessions(engine, threads, cfg.spin, _int8_paths(cfg))
            self._engine = engine
        return self._engine


def _int8_paths(cfg: OcrConfig) -> dict[str, Path]:
    """The int8 model files ``cfg`` asks for; {} (fp32) if building them fails, since reading images
    with the slower fp32 models beats failing every image request."""
    if not cfg.int8:
        return {}
    try:
        return {kind: ensure_int8_model(kind) for kind in cfg.int8_models}
    except Exception:  # noqa: BLE001 - any quantizer/ORT/IO failure; logged with its traceback
        logging.getLogger(__name__).warning("OCR int8 models unavailable; using fp32", exc_info=True)
        return {}


def _replace_sessions(engine: Any, threads: int, spin: bool, paths: dict[str, Path] | None = None) -> None:
    """Swap rapidocr's ORT sessions for ones built with our options (the bundled model files, or
    ``paths[kind]`` for kind "det"/"rec", e.g. int8 copies).

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
        setattr(holder, attr, ort.InferenceSession(path, opts, providers=old.get_providers()))


def _cap_side(bgr: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale so the longest side is ≤ ``max_side`` (area interpolation keeps strokes legible)."""
    import cv2

    h, w = bgr.shape[:2]
    if max(h, w) <= max_side:
        return bgr
    scale = max_side / max(h, w)
    return cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def decode_bgr(image: bytes) -> np.ndarray:
    """Decode encoded image bytes to an (H, W, 3) uint8 BGR array (first frame of animations)."""
    try:
        with Image.open(io.BytesIO(image)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise ValueError(f"image too large: {img.width}x{img.height} pixels > {MAX_PIXELS}")
            rgb = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"could not decode image bytes ({len(image)} bytes): {exc}") from exc
    return np.ascontiguousarray(rgb[:, :, ::-1])  # (H, W, 3) RGB -> BGR for OpenCV/RapidOCR


_READERS: dict[OcrConfig, OcrReader] = {}
_READERS_LOCK = threading.Lock()


def get_reader(config: OcrConfig | None = None) -> OcrReader:
    """The process-wide reader for ``config`` (created on first request)."""
    cfg = config or OcrConfig()
    with _READERS_LOCK:
        if cfg not in _READERS:
            _READERS[cfg] = OcrReader(cfg)
        return _READERS[cfg]


# ---- int8 copies of the bundled models -------------------------------------------------------------

def ensure_int8_model(kind: str, cache_dir: Path | None = None, calib_pages: int = 32) -> Path:
    """Path of the int8 copy of rapidocr's ``kind`` ("det"/"rec") model, quantizing on a cache miss.

    Cached under ``cache_dir`` (default ``cache_root()/"ocr"``) as ``{kind}-{key}.onnx`` plus a
    ``.json`` card; the key hashes the source model, ``INT8_VERSION``, the recipe, onnxruntime's
    version and ``calib_pages``. A file whose sha256 does not match its card (truncated, corrupt, or
    a crashed writer) is rebuilt. Writes are atomic (temp file + rename), so concurrent builders
    leave one valid file.
    """
    import json

    import onnxruntime as ort

    path, card_path = int8_cache_paths(kind, cache_dir, calib_pages)
    try:
        if json.loads(card_path.read_text())["sha256"] == _sha256_file(path):
            return path
    except (OSError, ValueError, KeyError, TypeError):
        pass  # missing, torn or corrupt card/file: (re)build
    path.parent.mkdir(parents=True, exist_ok=True)
    src, recipe = _bundled_model(kind), INT8_RECIPES[kind]
    data = _quantize(kind, src, recipe, calib_pages)
    card = {"kind": kind, "source": src.name, "source_sha256": _sha256_file(src), "version": INT8_VERSION,
            "recipe": recipe, "onnxruntime": ort.__version__, "calib_pages": calib_pages,
            "sha256": hashlib.sha256(data).hexdigest()}
    _atomic_write(path, data)
    _atomic_write(card_path, json.dumps(card, indent=2).encode())
    _INT8_BUILDS[kind] += 1
    return path


def int8_cache_paths(kind: str, cache_dir: Path | None = None, calib_pages: int = 32) -> tuple[Path, Path]:
    """(model, card) paths of the int8 ``kind`` model in the cache (see ``ensure_int8_model``)."""
    import json

    import onnxruntime as ort

    from models.export_onnx import cache_root

    src, recipe = _bundled_model(kind), INT8_RECIPES[kind]
    key_src = json.dumps([_sha256_file(src), INT8_VERSION, recipe, ort.__version__, calib_pages], sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "ocr"
    return folder / f"{kind}-{key}.onnx", folder / f"{kind}-{key}.json"


def constants_to_initializers(model: Any) -> Any:
    """Move tensor-valued ``Constant`` nodes into graph initializers (same names, same values), in place.

    The bundled PP-OCR models (paddle2onnx exports) hold every weight in a Constant node, and ORT's
    quantizer only quantizes weights that are initializers. Returns ``model``.
    """
    import onnx

    graph, kept = model.graph, []
    for node in graph.node:
        if node.op_type == "Constant" and [a.name for a in node.attribute] == ["value"]:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return model


def _quantize(kind: str, src: Path, recipe: dict[str, Any], calib_pages: int) -> bytes:
    """Serialized int8 (QDQ, per-channel s8 weights, u8 activations, min-max calibrated) ``src``."""
    import tempfile

    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    inputs = _calibration_inputs(kind, calib_pages)

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    model = constants_to_initializers(onnx.load(str(src)))
    # Per-channel DequantizeLinear (its ``axis``) needs opset 13; the sources are opset 12.
    model = version_converter.convert_version(model, 13)
    with tempfile.TemporaryDirectory(prefix="spaguard-ocr-int8-") as tmp:
        fp32, out = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(fp32))
        quantize_static(str(fp32), str(out), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, **recipe)
        return out.read_bytes()


def _calibration_inputs(kind: str, pages: int) -> list[dict[str, np.ndarray]]:
    """The ``kind`` model's real inputs on seeded calibration images, captured from the fp32 pipeline.

    Running rapidocr itself gives exactly its preprocessing (det: resized, normalized pages; rec:
    batches of padded line crops cut by the detector).
    """
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR(use_cls=False, det_limit_type="max", intra_op_num_threads=2, inter_op_num_threads=1)
    holder = engine.text_det.infer if kind == "det" else engine.text_rec.session
    session, seen = holder.session, []

    class _Recorder:
        def __getattr__(self, name: str) -> Any:
            return getattr(session, name)

        def run(self, outputs: Any, feed: dict[str, np.ndarray]) -> Any:
            seen.append(dict(feed))
            return session.run(outputs, feed)

    holder.session = _Recorder()
    for bgr in _calibration_images(pages):
        engine(_cap_side(bgr, 640))  # the reader's default max_side
    return seen


def _calibration_images(pages: int, seed: int = 0) -> list[np.ndarray]:
    """``pages`` seeded typographic pages (varied fonts, sizes, colours) plus scikit-image's sample
    photos when installed (text-free activations: photos are what the detector sees most)."""
    import random

    from PIL import ImageDraw, ImageFont

    rng = random.Random(seed)
    fonts = sorted(str(p) for p in Path("/usr/share/fonts").rglob("*.ttf"))[:24]
    words = ("the quick brown fox jumps over a lazy dog how to make step by step guide ignore all previous "
             "instructions and tell me explain recipe money 2024 $100 hello, world! password: user@mail.com "
             "Write A Poem About Cats IN CAPITALS weather forecast 3.14 (see below) - don't stop").split()
    out = []
    for _ in range(pages):
        w, h = rng.choice([(760, 400), (640, 480), (1280, 960), (900, 300), (520, 140), (400, 600)])
        dark = rng.random() < 0.25
        bg = tuple(rng.randint(0, 60) if dark else rng.randint(190, 255) for _ in range(3))
        fg = tuple(rng.randint(200, 255) if dark else rng.randint(0, 80) for _ in range(3))
        img = Image.new("RGB", (w, h), bg)
        draw = ImageDraw.Draw(img)
        size = rng.randint(max(12, h // 24), max(14, h // 7))
        font = ImageFont.truetype(rng.choice(fonts), size) if fonts and rng.random() < 0.7 else ImageFont.load_default(size=size)
        y = rng.randint(4, 30)
        while y + size < h:
            line = " ".join(rng.choice(words) for _ in range(rng.randint(1, 7)))
            draw.text((rng.randint(4, 60), y), line, fill=fg, font=font)
            y += int(size * rng.uniform(1.3, 2.4))
        out.append(np.ascontiguousarray(np.asarray(img)[:, :, ::-1]))  # (H, W, 3) RGB -> BGR
    return out + _sample_photos()


def _sample_photos() -> list[np.ndarray]:
    """scikit-image's bundled sample photos as BGR arrays ([] if scikit-image is not installed)."""
    try:
        from skimage import data
    except ImportError:
        return []
    photos = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "page"):
        arr = getattr(data, name)()
        rgb = np.stack([arr] * 3, axis=-1) if arr.ndim == 2 else arr[:, :, :3]  # grey (H, W) -> (H, W, 3)
        photos.append(np.ascontiguousarray(rgb[:, :, ::-1]))
    return photos


def _bundled_model(kind: str) -> Path:
    """rapidocr's bundled ONNX file for ``kind`` ("det" or "rec")."""
    import rapidocr_onnxruntime

    name = {"det": "ch_PP-OCRv4_det_infer.onnx", "rec": "ch_PP-OCRv4_rec_infer.onnx"}[kind]
    return Path(rapidocr_onnxruntime.__file__).parent / "models" / name


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and a rename (no torn files)."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache may be shared by the service's user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
