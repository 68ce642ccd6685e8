"""OCR with the real RapidOCR models (shipped in the wheel), fp32 and int8: rendered typographic images."""

from __future__ import annotations

import io
import json
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from models import ocr_int8
from models.ocr import OcrReader
from models.ocr_config import OcrConfig

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


def _model_path(session: object) -> str:
    """The file an ORT session or an ``OpenVinoSession`` was built from."""
    return str(getattr(session, "_model_path", None) or getattr(session, "model_path"))


def test_sessions_are_rebuilt_without_spinning() -> None:
    import onnxruntime as ort

    reader = OcrReader(OcrConfig(threads=2, use_cls=True, openvino_models=()))
    engine = reader._get_engine()
    sessions = [engine.text_det.infer.session, engine.text_rec.session.session, engine.text_cls.infer.session]
    for sess in sessions:
        assert isinstance(sess, ort.InferenceSession)
        opts = sess.get_session_options()
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert opts.intra_op_num_threads == 2
    assert {"how", "bomb"} <= _words(reader.read(render(LINES)))  # the rebuilt sessions still read


def test_fp32_reader_keeps_spaces() -> None:
    # At rapidocr's box dilation (1.6) this line came back as "Howdoes a securedcredit cardwork?".
    line = "How does a secured credit card work?"
    reader = OcrReader(OcrConfig(threads=1, int8=False))
    assert _words(line) <= _words(reader.read(render([line, "Search for a mexican casserole recipe"], font_size=40)))
    assert "ch_PP-OCRv4_rec" in _model_path(reader._engine.text_rec.session.session)  # the bundled fp32 model


def test_int8_build_failure_falls_back_to_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(kind: str) -> Path:
        raise RuntimeError("quantizer exploded")

    monkeypatch.setattr(ocr_int8, "ensure_int8_model", broken)  # the reader imports it at engine build
    reader = OcrReader(OcrConfig(threads=1, int8=True))
    assert {"poison", "recipe"} <= _words(reader.read(render(["poison recipe"], (600, 160))))
    assert "ch_PP-OCRv4_det" in _model_path(reader._engine.text_det.infer.session)


# ---- OpenVINO sessions ------------------------------------------------------------------------------

def test_default_models_run_on_openvino_and_read_what_ort_reads() -> None:
    import onnxruntime as ort

    from models.ocr_openvino import OpenVinoSession

    ov_reader, ort_reader = OcrReader(OcrConfig(threads=2)), OcrReader(OcrConfig(threads=2, openvino_models=()))
    ov_reader._get_engine()
    rec = ov_reader._engine.text_rec.session.session
    assert isinstance(rec, OpenVinoSession) and "ch_PP-OCRv4_rec" in rec.model_path
    assert isinstance(ov_reader._engine.text_det.infer.session, OpenVinoSession)
    assert isinstance(ort_reader._get_engine().text_det.infer.session, ort.InferenceSession)
    pages = [render(LINES), render(["poison recipe"], (600, 160), fmt="JPEG"),
             render(["How does a secured credit card work?", "Search for a mexican casserole recipe"], font_size=40),
             render(["a b c", "one two three four five six seven eight"], (900, 300), font_size=36)]
    for page in pages:  # new sizes and widths every page: shapes OpenVINO has not compiled for
        assert ov_reader.read(page) == ort_reader.read(page)


def test_openvino_session_checks_its_feed_and_returns_owned_arrays() -> None:
    import numpy as np

    from models.ocr_openvino import OpenVinoSession

    engine = OcrReader(OcrConfig(threads=1, openvino_models=()))._get_engine()
    path = engine.text_rec.session.session._model_path
    session = OpenVinoSession(path, threads=1)
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    x = np.random.default_rng(0).random((2, 3, 48, 320), dtype=np.float32)
    first = session.run([out.name], {inp.name: x})[0]
    want = engine.text_rec.session.session.run(None, {inp.name: x})[0]
    assert first.shape == want.shape and np.abs(first - want).max() < 1e-3
    again = session.run(None, {inp.name: x[:1]})[0]  # a second call must not overwrite the first result
    assert np.abs(first - want).max() < 1e-3 and again.shape[0] == 1
    with pytest.raises(ValueError, match="wants"):
        session.run(None, {"nope": x})


def test_without_openvino_the_reader_uses_ort_and_says_so(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    import onnxruntime as ort

    from models import ocr_openvino

    monkeypatch.setattr(ocr_openvino, "available", lambda: False)
    reader = OcrReader(OcrConfig(threads=1))
    assert {"poison", "recipe"} <= _words(reader.read(render(["poison recipe"], (600, 160))))
    assert isinstance(reader._engine.text_rec.session.session, ort.InferenceSession)
    assert isinstance(reader._engine.text_det.infer.session, ort.InferenceSession)
    assert "openvino is not installed" in caplog.text
    with pytest.raises(ValueError, match="openvino_models"):
        OcrConfig(openvino_models=("cls",))


# ---- int8 models ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def int8_reader() -> OcrReader:
    # Uses the real cache (cache_root()/"ocr"): quantizing costs 1-2 minutes once per machine.
    reader = OcrReader(OcrConfig(threads=2, int8=True, int8_models=("det", "rec")))
    reader._get_engine()
    return reader


def test_int8_reader_recovers_rendered_words(int8_reader: OcrReader) -> None:
    from models.cache import cache_root

    text = int8_reader.read(render(LINES))
    assert _words(" ".join(LINES)) <= _words(text)
    assert text.lower().index("bomb") < text.lower().index("guide")
    assert {"poison", "recipe"} <= _words(int8_reader.read(render(["poison recipe"], (600, 160), fmt="JPEG")))
    for sess in (int8_reader._engine.text_det.infer.session, int8_reader._engine.text_rec.session.session):
        assert Path(_model_path(sess)).parent == cache_root() / "ocr"  # the cached int8 copies were loaded


def test_int8_cache_is_reused(int8_reader: OcrReader) -> None:
    paths = [ocr_int8.ensure_int8_model(k) for k in ("det", "rec")]
    mtimes, builds = [p.stat().st_mtime_ns for p in paths], dict(ocr_int8._INT8_BUILDS)
    OcrReader(OcrConfig(threads=1, int8=True, int8_models=("det", "rec")))._get_engine()  # a second reader
    assert ocr_int8._INT8_BUILDS == builds
    assert [p.stat().st_mtime_ns for p in paths] == mtimes
    for kind in ("det", "rec"):  # 7-bit weights: full-range ones saturate on CPUs without VNNI (ocr_int8.REDUCE_RANGE)
        card = json.loads(ocr_int8.int8_cache_paths(kind)[1].read_text())
        assert card["reduce_range"] is True and card["version"] == ocr_int8.INT8_VERSION


def test_corrupt_int8_cache_is_rebuilt(tmp_path: Path) -> None:
    import onnxruntime as ort

    path, card = ocr_int8.int8_cache_paths("det", tmp_path, calib_pages=1)  # tiny calibration: a fast build
    path.write_bytes(b"\x08\x07torn write")  # a crashed writer's leftovers at the final paths
    card.write_text('{"sha256": "0"}')
    builds = ocr_int8._INT8_BUILDS["det"]
    assert ocr_int8.ensure_int8_model("det", tmp_path, calib_pages=1) == path
    assert ocr_int8._INT8_BUILDS["det"] == builds + 1
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # a valid model again
    assert ocr_int8.ensure_int8_model("det", tmp_path, calib_pages=1) == path
    assert ocr_int8._INT8_BUILDS["det"] == builds + 1
    assert not list(tmp_path.glob("*.tmp"))
    # readable by the service's user, whoever built them (mkstemp alone would leave 0600)
    assert [stat.S_IMODE(p.stat().st_mode) for p in (path, card)] == [0o644, 0o644]


@pytest.mark.parametrize(("kind", "shape"), [("det", (1, 3, 96, 160)), ("rec", (2, 3, 48, 200))])
def test_constants_to_initializers_is_exact(kind: str, shape: tuple[int, ...]) -> None:
    import numpy as np
    import onnx
    import onnxruntime as ort

    src = ocr_int8._bundled_model(kind)
    model = ocr_int8.constants_to_initializers(onnx.load(str(src)))
    assert not [n for n in model.graph.node if n.op_type == "Constant"] and len(model.graph.initializer) > 100
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    before = ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    after = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)


def test_int8_calibration_keeps_rapidocr_box_dilation(monkeypatch: pytest.MonkeyPatch) -> None:
    # Calibrating on crops cut at the reader's 2.0 made the int8 recogniser drop spaces (CALIB_UNCLIP_RATIO).
    import rapidocr_onnxruntime

    seen: dict[str, object] = {}
    real = rapidocr_onnxruntime.RapidOCR
    monkeypatch.setattr(rapidocr_onnxruntime, "RapidOCR", lambda **kw: seen.update(kw) or real(**kw))
    monkeypatch.setattr(ocr_int8, "_calibration_images", lambda pages: [])
    assert ocr_int8._calibration_inputs("rec", 0) == []
    assert seen["det_unclip_ratio"] == ocr_int8.CALIB_UNCLIP_RATIO == 1.6 != OcrConfig().unclip_ratio


def test_int8_models_are_validated() -> None:
    with pytest.raises(ValueError, match="int8_models"):
        OcrConfig(int8=True, int8_models=("cls",))
