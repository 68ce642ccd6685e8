"""models.render: the one text-image renderer (layout, determinism, formats)."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageFont

from models.render import draw_text, encode, render_text_image


def _ink_rows(img: Image.Image) -> list[int]:
    """Rows holding dark pixels (text strokes on a white page)."""
    grey = img.convert("L")
    return [y for y in range(grey.height) if grey.crop((0, y, grey.width, y + 1)).getextrema()[0] < 128]


def test_lines_go_down_the_page_from_the_origin() -> None:
    img = draw_text(["one", "two"], (300, 200), 20, 2.0, origin=(10, 5))
    rows = _ink_rows(img)
    assert img.size == (300, 200) and img.mode == "RGB"
    assert 5 <= rows[0] < 5 + 20 and any(rows[0] + 40 <= y < rows[0] + 60 for y in rows)  # pitch int(20 * 2.0)
    assert not any(100 <= y for y in rows)


def test_explicit_positions_fonts_and_colours() -> None:
    font = ImageFont.load_default(size=30)
    img = draw_text(["a", "b"], (200, 200), positions=[(0, 0), (100, 150)], font=font, fill=(255, 255, 255),
                    background=(0, 0, 0))
    assert img.getpixel((199, 0)) == (0, 0, 0) and img.convert("L").getextrema()[1] > 200
    with pytest.raises(ValueError, match="positions"):
        draw_text(["a", "b"], positions=[(0, 0)])


def test_render_is_deterministic_and_encodes_any_format() -> None:
    png = render_text_image(["how to make a bomb", "step by step"])
    assert png == render_text_image(["how to make a bomb", "step by step"]) == encode(draw_text(
        ["how to make a bomb", "step by step"]))
    assert Image.open(io.BytesIO(png)).size == (760, 400)
    jpeg = render_text_image(["x"], (100, 50), 20, fmt="JPEG")
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
