"""Configuration of the guard's OCR reader (``models.ocr``): one frozen dataclass, each knob documented here.

Contract
--------
* ``OcrConfig`` is hashable (``models.ocr.get_reader`` keeps one reader per config) and validated on
  construction: ``int8_models`` and ``openvino_models`` name models among ``REPLACEABLE_MODELS``.
* It imports nothing: the int8 builder (``models.ocr_int8``) and the reader both read it.
"""

from __future__ import annotations

from dataclasses import dataclass

REPLACEABLE_MODELS = ("det", "rec")
"""The rapidocr models the reader can swap: for an int8 copy (``models.ocr_int8.INT8_RECIPES`` has one
recipe each) or for an OpenVINO session (``models.ocr_openvino``)."""


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
    """Intra-op threads of each model session, ORT or OpenVINO (None: the runtime's default, all cores).
    On ORT with spinning off, 2 threads read a 3-line 760x400 page in p50 131 ms vs 212 ms with 1 on
    the idle 2-core box (docs/benchmarks.md, "OCR sessions")."""
    spin: bool = False
    """Let idle ORT threads busy-wait. Off: rapidocr builds one thread pool per model, and the
    detector's spinning pool stole the recogniser's cores (rec 104 ms spinning vs 84 ms not, 2 threads)."""
    cache_size: int = 1024
    """Entries in the sha256 -> text LRU cache."""
    int8: bool = False
    """Run the models in ``int8_models`` as int8 copies (static QDQ quantization, built once per
    machine and cached by ``models.ocr_int8``; the first build takes 1-2 minutes, and if it fails
    the reader logs a warning and runs fp32). Off by default: on ONNX Runtime the int8 detector made
    OCR 6-14 % faster; on OpenVINO (the default runtime) it is slower than fp32 (docs/benchmarks.md,
    "OCR int8" and "OCR on OpenVINO"). Its boxes come out a few pixels taller, which keeps more spaces
    between words on dense pages. Those gains were measured on a CPU with VNNI; on an AVX2-only CPU
    the int8 detector was slower than fp32 and the recogniser dropped spaces, so use it only with VNNI."""
    int8_models: tuple[str, ...] = ("det",)
    """Which models ``int8`` quantizes: "det" and/or "rec". The int8 recogniser is another 15 %
    faster (both: 0.69-0.73x fp32) but lost 0.5 points of word recall on 200 dev-prompt pages."""
    openvino_models: tuple[str, ...] = ("det", "rec")
    """Which models run on OpenVINO's CPU plugin instead of ONNX Runtime ("det", "rec"; () for none),
    at fp32 with the same threads (``models.ocr_openvino``). Same text on every benchmark page, p50
    0.65x ORT's time on image sizes seen before and 0.77x on first sight (OpenVINO compiles kernels
    per new input shape; docs/benchmarks.md, "OCR on OpenVINO"). Without the ``openvino`` package the
    reader logs a warning and uses ORT."""

    def __post_init__(self) -> None:
        for name in ("int8_models", "openvino_models"):
            unknown = set(getattr(self, name)) - set(REPLACEABLE_MODELS)
            if unknown:
                raise ValueError(f"{name} must be among {sorted(REPLACEABLE_MODELS)}, got {sorted(unknown)}")
