"""int8 copies of RapidOCR's bundled detector and recogniser, built once per machine and cached.

    .venv/bin/python -c "from models.ocr_int8 import ensure_int8_model; print(ensure_int8_model('det'))"

Contract
--------
* ``ensure_int8_model(kind, cache_dir=None, calib_pages=32) -> Path`` returns an int8 ONNX file for
  ``kind`` ("det" or "rec", the keys of ``INT8_RECIPES``), quantizing on a cache miss (1-2 minutes on
  the 2-core dev box). ``models.ocr.OcrReader`` calls it when ``OcrConfig.int8`` is set.
* Recipe: the bundled models (paddle2onnx exports) keep their weights in ``Constant`` nodes, so
  ``constants_to_initializers`` lifts them, the graph is converted to opset 13 (per-channel
  ``DequantizeLinear``), and ORT ``quantize_static`` writes QDQ with per-channel 7-bit int8 weights
  (``REDUCE_RANGE``) and uint8 activations, min-max calibrated on ``calib_pages`` seeded rendered pages
  plus scikit-image's sample photos, run through the fp32 pipeline at the reader's default ``max_side`` but rapidocr's
  box dilation (``CALIB_UNCLIP_RATIO``; why: its docstring). The recogniser quantizes its
  convolutions only: with its attention and head MatMuls quantized too it ran in 0.54x the fp32
  time but cut word recall on 60 dev-prompt pages from 0.79 to 0.61 (spaces between words went
  missing; 0.85 conv-only). Measurements: docs/benchmarks.md, "OCR int8".
* Cache: ``cache_dir`` (default ``models.cache.cache_root()/"ocr"``, i.e. ``$SPAGUARD_CACHE/ocr``) holds
  ``{kind}-{key}.onnx`` and a ``{kind}-{key}.json`` card (source name and sha256, version, recipe,
  onnxruntime version, ``calib_pages``, the model's sha256). ``key`` hashes the source model's
  sha256, ``INT8_VERSION``, the recipe, onnxruntime's version and ``calib_pages``, so any of them
  changing builds a new file beside the old ones (calibration changes must bump ``INT8_VERSION``).
* Failure modes: a model whose sha256 does not match its card (missing, truncated, corrupt, or a
  crashed writer's leftovers) is rebuilt. Files appear atomically (temp file + rename, mode 0644),
  so concurrent builders leave one valid file. A failed build raises whatever the quantizer, ORT or
  the filesystem raised and writes nothing; the reader then logs it and runs fp32.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from models.cache import cache_root
from models.ocr_config import OcrConfig
from models.ocr_image import cap_side
from models.render import draw_text

INT8_VERSION = "ocr-int8-v2"
"""Part of the int8 cache key: bump it when the graph pass, calibration data or recipes change."""
INT8_RECIPES: dict[str, dict[str, Any]] = {"det": {}, "rec": {"op_types_to_quantize": ["Conv"]}}
"""Extra ``quantize_static`` arguments per model: the recogniser quantizes convolutions only (module docstring)."""
REDUCE_RANGE = True
"""Quantize weights to 7 bits. NOTE: ORT's uint8 x int8 kernels on x86 CPUs without VNNI (AVX2, AVX-512F)
sum pairs of products in int16 and saturate; with full-range weights the int8 recogniser read "how to
make a bomb" as "howtomake a bomb" on an AVX2-only EPYC, while the same recipe built on a VNNI box read it
right. With 7-bit weights a pair sum stays under 2**15, so it cannot saturate; on VNNI machines it costs one
bit of weight precision, which was not measured there (the AVX2 figures: docs/benchmarks.md, "OCR int8").
The files are built per machine but a cache may be shared, so the recipe does not depend on the CPU that
built it."""
_INT8_BUILDS: dict[str, int] = {"det": 0, "rec": 0}  # quantization runs in this process (tests check reuse)
CALIB_UNCLIP_RATIO = 1.6
"""Detector box dilation of the calibration pipeline: rapidocr's default, not the reader's 2.0.
NOTE: recogniser activations calibrated on crops cut at 2.0 made the int8 recogniser drop
spaces: whitespace word recall 0.975 (calibrated at 1.6) -> 0.554 (at 2.0) on 40 seeded rendered
PNG/JPEG pages read at the reader's 2.0, fp32 0.967; recall with spaces removed 0.992 for all three.
The detector's calibration inputs precede box dilation, so its int8 file is the same either way."""


def ensure_int8_model(kind: str, cache_dir: Path | None = None, calib_pages: int = 32) -> Path:
    """Path of the int8 copy of rapidocr's ``kind`` ("det"/"rec") model, quantizing on a cache miss
    (layout, keying and failure modes: module docstring)."""
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
            "recipe": recipe, "reduce_range": REDUCE_RANGE, "onnxruntime": ort.__version__, "calib_pages": calib_pages,
            "sha256": hashlib.sha256(data).hexdigest()}
    _atomic_write(path, data)
    _atomic_write(card_path, json.dumps(card, indent=2).encode())
    _INT8_BUILDS[kind] += 1
    return path


def int8_cache_paths(kind: str, cache_dir: Path | None = None, calib_pages: int = 32) -> tuple[Path, Path]:
    """(model, card) paths of the int8 ``kind`` model in the cache (see module docstring)."""
    import onnxruntime as ort

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
                        reduce_range=REDUCE_RANGE, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        **recipe)
        return out.read_bytes()


def _calibration_inputs(kind: str, pages: int) -> list[dict[str, np.ndarray]]:
    """The ``kind`` model's real inputs on seeded calibration images, captured from the fp32 pipeline.

    Running rapidocr itself gives exactly its preprocessing (det: resized, normalized pages; rec:
    batches of padded line crops cut by the detector at ``CALIB_UNCLIP_RATIO``).
    """
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR(use_cls=False, det_limit_type="max", det_unclip_ratio=CALIB_UNCLIP_RATIO,
                      intra_op_num_threads=2, inter_op_num_threads=1)
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
        engine(cap_side(bgr, OcrConfig().max_side))
    return seen


def _calibration_images(pages: int, seed: int = 0) -> list[np.ndarray]:
    """``pages`` seeded typographic pages (varied fonts, sizes, colours) plus scikit-image's sample
    photos when installed (text-free activations: photos are what the detector sees most).

    The pages are part of the int8 cache key through ``INT8_VERSION``: the draws from ``rng`` and their
    order must not change without bumping it."""
    import random

    from PIL import ImageFont

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
        size = rng.randint(max(12, h // 24), max(14, h // 7))
        font = ImageFont.truetype(rng.choice(fonts), size) if fonts and rng.random() < 0.7 else ImageFont.load_default(size=size)
        lines, positions, y = [], [], rng.randint(4, 30)
        while y + size < h:
            lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 7))))
            positions.append((rng.randint(4, 60), y))
            y += int(size * rng.uniform(1.3, 2.4))
        img = draw_text(lines, (w, h), size, positions=positions, font=font, fill=fg, background=bg)
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
    """Write ``data`` to ``path`` (mode 0644) via a temp file in the same folder and a rename (no torn files)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache may be shared by the service's user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
