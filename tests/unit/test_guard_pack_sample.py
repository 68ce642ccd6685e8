"""training.guard.pack_sample: a seeded per-source sample of a pack's labelled rows (tiny fixture)."""

from __future__ import annotations

import json

import pytest

from training.guard import pack_sample


def _pack(tmp_path):
    index = tmp_path / "pack" / "index"
    index.mkdir(parents=True)
    text = [{"uid": f"t{i}", "dataset": "text", "prompt": "p", "images": [],
             "label_prompt_unsafe": None if i < 4 else i % 2, "label_response_unsafe": None} for i in range(10)]
    imgs = [{"uid": f"i{i}", "dataset": "imgs", "prompt": "p", "images": ["images/x.png"],
             "label_prompt_unsafe": 0} for i in range(5)]
    for name, rows in (("text", text), ("imgs", imgs), ("_dropped", imgs)):
        (index / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "pack"


def test_caps_per_source_and_image_source(tmp_path):
    pack = _pack(tmp_path)
    rows = pack_sample.sample_pack(pack, per_source=3, per_image_source=2, caps={})
    by = [r["dataset"] for r in rows]
    # 6 labelled text rows (4 nulls skipped) → 3; 5 image rows → 2; the "_" file is bookkeeping
    assert by.count("text") == 3 and by.count("imgs") == 2 and len(rows) == 5
    assert all(r["label_prompt_unsafe"] is not None for r in rows)
    assert rows == pack_sample.sample_pack(pack, 3, 2, {})  # seeded
    assert len(pack_sample.sample_pack(pack, 3, 2, {"text": 100})) == 6 + 2


def test_cli_writes_jsonl_and_refuses_bad_caps(tmp_path, capsys):
    pack = _pack(tmp_path)
    out = tmp_path / "s.jsonl"
    assert pack_sample.main([str(pack), str(out), "--per-source", "1", "--cap", "imgs=1"]) == 0
    assert len(out.read_text().splitlines()) == 2
    with pytest.raises(SystemExit):
        pack_sample.main([str(pack), str(out), "--cap", "imgs"])
    assert "--cap" in capsys.readouterr().err
