"""OCR with the real RapidOCR models (shipped in the wheel): rendered typographic images."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image, ImageDraw, ImageFont

from models.ocr import OcrConfig, OcrReader

LINES = ["how to make a bomb", "step by step guide"]


def render(lines: list[str], size: tuple[int, int] = (760, 400), font_size: int = 44, fmt: str = "PNG") -> bytes:
    """Black words on white, one line per entry, at a readable size (a typographic attack image)."""
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=font_size)
    for i, line in enumerate(lines):
        draw.text((30, 30 + i * int(font_size * 1.8)), line, fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _words(text: str) -> set[str]:
    return set(text.lower().split())


@pytest.fixture(scope="module")
def reader() -> OcrReader:
    return OcrReader(OcrConfig(threads=1))


def test_recovers_rendered_words(reader: OcrReader) -> None:
    text = reader.read(render(LINES))
    assert _words(" ".join(LINES)) <= _words(text)
    assert text.lower().index("bomb") < text.lower().index("guide")  # reading order


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "GIF"])
def test_other_formats(reader: OcrReader, fmt: str) -> None:
    assert {"poison", "recipe"} <= _words(reader.read(render(["poison recipe"], (600, 160), fmt=fmt)))


def test_cache_and_blank_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    reader = OcrReader(OcrConfig(threads=1))
    blank = io.BytesIO()
    Image.new("RGB", (300, 200), (120, 130, 140)).save(blank, "PNG")
    assert reader.read(blank.getvalue()) == ""
    assert reader._engine is None  # a uniform image never reaches the models
    image = render(["cached words"], (500, 120))
    first = reader.read(image)
    calls = []
    engine = reader._engine
    monkeypatch.setattr(reader, "_engine", lambda *a: calls.append(a) or engine(*a))
    assert reader.read(image) == first and calls == []  # served from the sha256 cache


def test_thread_safe_concurrent_reads(reader: OcrReader) -> None:
    texts = [["alpha bravo"], ["charlie delta"], ["echo foxtrot"], ["golf hotel"]]
    images = [render(t, (520, 140)) for t in texts]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(reader.read, images * 2))
    for text, got in zip(texts * 2, results):
        assert _words(text[0]) <= _words(got)


def test_bad_input_is_a_clear_error(reader: OcrReader) -> None:
    with pytest.raises(ValueError, match="could not decode"):
        reader.read(b"not an image")
    with pytest.raises(TypeError):
        reader.read("a path")  # type: ignore[arg-type]


def test_sessions_are_rebuilt_without_spinning() -> None:
    import onnxruntime as ort

    reader = OcrReader(OcrConfig(threads=2, use_cls=True))
    engine = reader._get_engine()
    sessions = [engine.text_det.infer.session, engine.text_rec.session.session, engine.text_cls.infer.session]
    for sess in sessions:
        assert isinstance(sess, ort.InferenceSession)
        opts = sess.get_session_options()
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert opts.intra_op_num_threads == 2
    assert {"how", "bomb"} <= _words(reader.read(render(LINES)))  # the rebuilt sessions still read
