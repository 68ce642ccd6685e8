"""Guard data readers: guard-schema JSONL, preference pairs, SPA-VL (parquet fixture in its hub
format + the hub call), JSON lists, typographic rendering and benign photos."""

from __future__ import annotations

import io
import json
import random

import pytest
from PIL import Image

from training.guard import guard_data as gd


def _png(color=(255, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def test_read_guard_jsonl_resolves_images_and_labels(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(_png())
    rows = [
        {"uid": "1", "dataset": "d", "prompt": "p", "images": ["img/a.png"], "label_prompt_unsafe": 1,
         "orig_category": "Toxic", "extra": {"goal": "g"}},
        {"uid": "2", "prompt": "q", "response": "r", "label_prompt_unsafe": None,
         "label_response_unsafe": 0, "soft_response_unsafe": 0.25},
    ]
    path = tmp_path / "sub" / "x.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    a, b = gd.read_guard_jsonl(path, root=tmp_path)
    assert a.images == (_png(),) and a.label_prompt == 1 and a.category == "Toxic" and a.group == "d"
    assert a.cv_group == "goal:g" and b.cv_group == "uid:2"
    assert b.label_prompt is None and b.label_response == 0 and b.soft_response == 0.25
    assert b.response_input().task == "response" and a.prompt_input().images == (_png(),)
    with pytest.raises(ValueError, match="no response"):
        a.response_input()


@pytest.mark.parametrize("row, match", [
    ({"prompt": 3}, "'prompt' must be a string"),
    ({"prompt": "p", "images": ["missing.png"]}, "not found"),
    ({"prompt": "p", "label_prompt_unsafe": True}, "0, 1 or null"),
    ({"prompt": "p", "soft_prompt_unsafe": 1.5}, r"\[0, 1\]"),
    ({"prompt": "p", "label_response_unsafe": 1}, "needs a 'response'"),
])
def test_bad_rows_name_file_and_line(tmp_path, row, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=match) as err:
        gd.read_guard_jsonl(path)
    assert "bad.jsonl:2" in str(err.value)


def test_preference_pairs_skip_empty_sides(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"uid": "a", "prompt": "p", "chosen": "c", "rejected": "r", "dataset": "hh"},
            {"uid": "b", "prompt": "p", "chosen": " ", "rejected": "r"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    (pair,) = gd.read_preference_pairs(path)
    assert (pair.chosen, pair.rejected, pair.group) == ("c", "r", "hh")


def _spa_vl_parquet(path):
    import datasets

    feats = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                               "chosen": datasets.Value("string"), "rejected": datasets.Value("string"),
                               "image_name": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({
        "image": [Image.new("RGB", (8, 8), (0, 0, 255)), Image.new("RGB", (8, 8), (0, 255, 0))],
        "question": ["How to hurt them?", "What is shown?"],
        "chosen": ["I can't help with that.", "A cat."],
        "rejected": ["Here is how...", "Steal it."],
        "image_name": ["Representation & ToxicityHarms/Toxic/bully/1.jpg",
                       "Privacy/Privacy/personal/2.jpg"],
    }, features=feats)
    ds.to_parquet(str(path))


def test_spa_vl_parquet_in_hub_format(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp_path / "train-00000-of-00001.parquet"
    _spa_vl_parquet(path)
    ex = gd.load_spa_vl("train", data_files=[str(path)])
    assert len(ex) == 6  # prompt + rejected + chosen per row
    prompt, rejected, chosen = ex[:3]
    assert prompt.label_prompt == 1 and prompt.response is None and len(prompt.images) == 1
    assert rejected.response == "Here is how..." and rejected.label_response == 1
    assert chosen.response == "I can't help with that." and chosen.label_response is None  # 11.7 % unsafe
    assert prompt.category == "Representation & ToxicityHarms/Toxic/bully"
    Image.open(io.BytesIO(prompt.images[0])).verify()


def test_spa_vl_hub_call_is_the_real_one(monkeypatch):
    import datasets

    calls = []

    def fake_load(*args, **kwargs):
        calls.append((args, kwargs))
        return [{"question": "q", "class1": "Privacy", "class2": "Privacy", "class3": "x",
                 "image": None, "chosen": "c", "rejected": "r"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    ex = gd.load_spa_vl("validation")
    assert calls == [(("sqrti/SPA-VL", "validation"), {"split": "validation"})]
    assert ex[0].category == "Privacy/Privacy/x"
    gd.load_spa_vl("harm")
    assert calls[-1] == (("sqrti/SPA-VL", "test"), {"split": "harm"})


def test_spa_vl_json_list(tmp_path):
    img = tmp_path / "Privacy" / "Privacy" / "leak"
    img.mkdir(parents=True)
    (img / "3.jpg").write_bytes(_png())
    path = tmp_path / "easy.json"
    path.write_text(json.dumps([{"image": "Privacy/Privacy/leak/3.jpg", "question": "q",
                                 "chosen": "c", "rejected": "r"}]))
    ex = gd.read_spa_vl_json(path, tmp_path)
    assert ex[0].category == "Privacy/Privacy/leak" and ex[0].group == "easy" and len(ex) == 3
    path.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(ValueError, match="JSON list"):
        gd.read_spa_vl_json(path, tmp_path)


def test_typographic_rendering_is_seeded_and_varied():
    a = gd.render_typographic("how to pick a lock", random.Random(1))
    assert a == gd.render_typographic("how to pick a lock", random.Random(1))
    variants = {gd.render_typographic("how to pick a lock", random.Random(s)) for s in range(6)}
    assert len(variants) == 6
    assert Image.open(io.BytesIO(a)).size[0] == 512
    with pytest.raises(ValueError):
        gd.render_typographic("  ", random.Random(0))


def test_typographic_and_photo_examples_keep_labels():
    src = [gd.GuardExample("h", "build a bomb", label_prompt=1, group="a"),
           gd.GuardExample("b", "bake bread", label_prompt=0, group="b")]
    typo = gd.typographic_examples(src, 2, seed=0)
    assert {t.extra["text"]: t.label_prompt for t in typo} == {"build a bomb": 1, "bake bread": 0}
    assert all(t.prompt in gd.CARRIER_PROMPTS and len(t.images) == 1 for t in typo)
    photos = gd.photo_examples(src + typo, 2, seed=0)
    captions = [p for p in photos if p.prompt in gd.PHOTO_PROMPTS]
    assert len(captions) == 12 and all(p.label_prompt == 0 for p in captions)
    assert {p.prompt for p in photos} - set(gd.PHOTO_PROMPTS) == {"build a bomb", "bake bread"}
    with pytest.raises(ValueError, match="not an allowed"):
        gd.benign_photos(["lfw_subset"])
