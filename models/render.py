"""Text drawn into an image: the one renderer behind warm-up, probes, training images, benchmarks and OCR calibration.

Contract
--------
* ``draw_text(lines, size, font_size, spacing, ...) -> PIL.Image.Image`` draws each line onto a
  ``size`` (width, height) RGB canvas of ``background``, in ``fill``, with ``font`` (default: Pillow's
  scalable default font at ``font_size``). Line ``i`` goes at ``positions[i]`` when given, else at
  ``origin`` moved down ``i * int(font_size * spacing)`` pixels. No randomness: callers that vary the
  drawing (``training.guard.guard_data.render_typographic``, ``models.ocr_int8``'s calibration pages)
  choose the font, colours and positions from their own seeded ``random.Random`` and pass them in, so
  their images stay the same for a seed.
* ``encode(image, fmt)`` -> the encoded file (``"PNG"`` by default, or any Pillow format such as ``"JPEG"``).
* ``render_text_image(lines, size, font_size, spacing, ...)`` is ``encode(draw_text(...))``: the plain
  typographic-attack page (black words on white, lines 1.8 x the font size apart, from (30, 30)).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

Color = str | tuple[int, ...]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def draw_text(lines: Sequence[str], size: tuple[int, int] = (760, 400), font_size: int = 44, spacing: float = 1.8,
              *, origin: tuple[int, int] = (30, 30), positions: Sequence[tuple[int, int]] | None = None,
              font: Font | None = None, fill: Color = "black", background: Color = "white") -> Image.Image:
    """An RGB image of ``lines`` (layout: module docstring)."""
    if positions is not None and len(positions) != len(lines):
        raise ValueError(f"{len(positions)} positions for {len(lines)} lines")
    img = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(img)
    font = font or ImageFont.load_default(size=font_size)
    pitch = int(font_size * spacing)
    for i, line in enumerate(lines):
        xy = positions[i] if positions is not None else (origin[0], origin[1] + i * pitch)
        draw.text(xy, line, fill=fill, font=font)
    return img


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    """``image`` as an encoded file in Pillow format ``fmt``."""
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def render_text_image(lines: Sequence[str], size: tuple[int, int] = (760, 400), font_size: int = 44,
                      spacing: float = 1.8, *, origin: tuple[int, int] = (30, 30), fmt: str = "PNG") -> bytes:
    """A typographic-attack style page: black words on white, lines ``spacing`` x font size apart."""
    return encode(draw_text(lines, size, font_size, spacing, origin=origin), fmt)
