"""Encoded image bytes -> the pixels OCR reads: decoding with a decompression-bomb guard, and the size cap.

Contract
--------
* ``decode_bgr(image_bytes)`` -> (H, W, 3) uint8 BGR (first frame of animations); ``ValueError`` on
  undecodable bytes or on more than ``MAX_PIXELS`` pixels (checked before the pixels are decoded).
* ``cap_side(bgr, max_side)`` downscales so the longest side is ≤ ``max_side`` (area interpolation).
  The reader (``models.ocr``) and the int8 calibration (``models.ocr_int8``) both preprocess with it.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

# Decompression-bomb guard: images larger than this are refused before decoding pixels.
MAX_PIXELS = 40_000_000


def cap_side(bgr: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale (H, W, 3) ``bgr`` so its longest side is ≤ ``max_side`` (area interpolation keeps
    strokes legible); returned as is if it fits. int8 calibration preprocesses its pages with it too."""
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
