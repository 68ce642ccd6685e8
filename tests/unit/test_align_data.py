"""SPA-VL loaders: parquet / JSON list → TRL vision-preference rows, bad records counted, labels
recovered from image paths, and the max_length checks that protect image tokens."""

from __future__ import annotations

from collections import Counter

import pytest

from training.align.data import fixtures, spa_vl
from training.align.data.length import check_max_length, filter_by_length, pair_lengths
from training.align.data.source import SpaVLDataArgs, load_preference_splits, source_fingerprint


@pytest.fixture(scope="module")
def tiny_processor():
    from models.vlm import build_tiny_vlm

    return build_tiny_vlm("llava", 0)[1]


def test_parse_image_name_recovers_three_levels_and_pads_short_paths():
    assert spa_vl.parse_image_name("Malicious Use/Illegal activities/drug-related crimes/12.jpg") == (
        "Malicious Use", "Illegal activities", "drug-related crimes")
    assert spa_vl.parse_image_name("/data/images/c1/c2/c3/x.png") == ("c1", "c2", "c3")
    assert spa_vl.parse_image_name("a/b.jpg") == ("a", "unknown", "unknown")


def test_parquet_with_bad_records_counts_each_reason_and_keeps_the_rest(tmp_path):
    path = fixtures.write_parquet(tmp_path / "t.parquet", n=6, bad=3)
    stats = spa_vl.ConversionStats()
    ds = spa_vl.convert(spa_vl.parquet_rows(str(path)), stats=stats)
    assert len(ds) == 6
    assert stats.as_dict() == {"seen": 9, "kept": 6,
                               "skipped": {"bad_image": 1, "empty_question": 1, "missing_image": 1}}
    row = ds[0]
    assert set(spa_vl.PREFERENCE_COLUMNS) <= set(ds.column_names)
    assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    assert row["images"][0].size == (32, 32)
    assert row["class1"] == fixtures.classes()[0][0]


def test_json_list_layout_matches_parquet_layout(tmp_path):
    json_path, root = fixtures.write_json_list(tmp_path, n=5, bad=3)
    stats = spa_vl.ConversionStats()
    ds = spa_vl.convert(spa_vl.json_list_rows(json_path, root), stats=stats)
    assert (len(ds), stats.kept, sum(stats.skipped.values())) == (5, 5, 3)
    assert ds[1]["class3"] == fixtures.classes()[1][2]
    assert ds[2]["id"] == "2"


def test_json_list_rejects_a_non_list(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"id": 1}')
    with pytest.raises(ValueError, match="JSON list"):
        spa_vl.json_list_rows(bad, tmp_path)


def test_same_or_empty_responses_are_skipped_not_fatal():
    rows = fixtures.make_rows(2)
    rows[0]["rejected"] = rows[0]["chosen"]
    rows[1]["chosen"] = ""
    stats = spa_vl.ConversionStats()
    with pytest.raises(ValueError, match="no usable"):
        spa_vl.convert(rows, stats=stats)
    assert stats.skipped == Counter({"same_responses": 1, "empty_chosen": 1})


def test_test_split_converts_to_prompts_with_classes(tmp_path):
    path = fixtures.write_test_parquet(tmp_path / "harm.parquet", n=4)
    ds = spa_vl.convert(spa_vl.parquet_rows(str(path)), prompt_only=True)
    assert len(ds) == 4 and "chosen" not in ds.column_names
    assert ds[0]["question"] and ds[0]["class2"] == fixtures.classes()[0][1]


def test_data_args_validate_source_and_hub_split():
    with pytest.raises(ValueError, match="data_files"):
        SpaVLDataArgs(dataset_source="parquet")
    with pytest.raises(ValueError, match="no split"):
        SpaVLDataArgs(dataset_source="hub", dataset_config="test", dataset_train_split="train")
    with pytest.raises(ValueError, match="streaming"):
        SpaVLDataArgs(dataset_source="parquet", data_files=["x"], streaming=True)


def test_load_preference_splits_parquet_with_eval_and_limit(tmp_path):
    train = fixtures.write_parquet(tmp_path / "train.parquet", n=10, bad=2)
    val = fixtures.write_parquet(tmp_path / "val.parquet", n=4, seed=3)
    args = SpaVLDataArgs(dataset_source="parquet", data_files=[str(train)], eval_data_files=[str(val)],
                         max_train_samples=6)
    tr, ev, report = load_preference_splits(args)
    assert (len(tr), len(ev)) == (6, 4)
    assert report["eval"].kept == 4


def test_lengths_count_image_tokens_and_filter_protects_them(tiny_processor, tmp_path):
    ds = spa_vl.convert(spa_vl.parquet_rows(str(fixtures.write_parquet(tmp_path / "t.parquet", n=4))))
    lengths = [pair_lengths(row, tiny_processor) for row in ds]
    assert all(n["image"] == 16 and n["prompt"] > n["image"] for n in lengths)
    longest_prompt = max(n["prompt"] for n in lengths)
    counts: Counter = Counter()
    kept = filter_by_length(ds, tiny_processor, longest_prompt + 5, counts)
    assert len(kept) == 4 and counts["response_truncated"] == 4  # responses are > 5 tokens
    counts = Counter()
    shortest_prompt = min(n["prompt"] for n in lengths)
    assert len(filter_by_length(ds, tiny_processor, shortest_prompt - 1, counts)) == 0
    assert counts["prompt_too_long"] == 4
    with pytest.raises(ValueError, match="image tokens would be cut"):
        check_max_length(8, ds[0], tiny_processor)


def test_hub_split_names_are_checked_before_any_download():
    with pytest.raises(ValueError, match="no split 'train' in config 'test'"):
        spa_vl.hub_rows("test", "train")


def test_streaming_conversion_counts_lazily(tmp_path):
    from datasets import Image as ImageFeature
    from datasets import load_dataset

    path = fixtures.write_parquet(tmp_path / "t.parquet", n=5, bad=3)
    stream = load_dataset("parquet", data_files=str(path), split="train", streaming=True)
    stream = stream.cast_column("image", ImageFeature(decode=False))
    stats = spa_vl.ConversionStats()
    converted = spa_vl.convert_streaming(stream, stats=stats)
    assert stats.seen == 0  # nothing is read before the trainer iterates
    rows = list(converted)
    assert len(rows) == 5 and rows[0]["prompt"][0]["role"] == "user"
    assert rows[0]["images"][0].size == (32, 32)
    assert stats.as_dict() == {"seen": 8, "kept": 5,
                               "skipped": {"bad_image": 1, "empty_question": 1, "missing_image": 1}}


def test_cached_conversion_is_reused_with_its_counts(tmp_path):
    path = fixtures.write_parquet(tmp_path / "t.parquet", n=6, bad=2)
    first, second = spa_vl.ConversionStats(), spa_vl.ConversionStats()
    cache = str(tmp_path / "cache")
    a = spa_vl.convert(spa_vl.parquet_rows(str(path)), stats=first, fingerprint="fp-test", cache_dir=cache)
    rows_read = []

    def spy_rows():  # a cache hit must not read the source again
        for row in spa_vl.parquet_rows(str(path)):
            rows_read.append(row)
            yield row

    b = spa_vl.convert(spy_rows(), stats=second, fingerprint="fp-test", cache_dir=cache)
    assert rows_read == [] and len(a) == len(b) == 6 and a[3]["chosen"] == b[3]["chosen"]
    assert first.as_dict() == second.as_dict() == {"seen": 8, "kept": 6,
                                                   "skipped": {"bad_image": 1, "empty_question": 1}}


def test_fingerprint_changes_with_the_file_and_the_limit(tmp_path):
    path = fixtures.write_parquet(tmp_path / "t.parquet", n=4)
    args = SpaVLDataArgs(dataset_source="parquet", data_files=[str(path)])
    fp = source_fingerprint(args, "train")
    assert fp == source_fingerprint(SpaVLDataArgs(dataset_source="parquet", data_files=[str(path)]), "train")
    assert fp != source_fingerprint(SpaVLDataArgs(dataset_source="parquet", data_files=[str(path)],
                                                  max_train_samples=2), "train")
    fixtures.write_parquet(path, n=5)
    assert fp != source_fingerprint(args, "train")


def test_fixture_classes_resolve_in_the_project_taxonomy():
    from models.taxonomy import default_taxonomy

    tax = default_taxonomy()
    for c1, c2, c3 in fixtures.classes():
        assert tax.resolve(c1, c2, c3) == f"{c1}/{c2}/{c3}"


def test_length_counts_survive_a_datasets_cache_hit(tiny_processor, tmp_path):
    path = fixtures.write_parquet(tmp_path / "t.parquet", n=4)
    ds = spa_vl.convert(spa_vl.parquet_rows(str(path)), fingerprint="fp-len", cache_dir=str(tmp_path / "c"))
    first, second = Counter(), Counter()
    a = filter_by_length(ds, tiny_processor, 200, first)
    b = filter_by_length(ds, tiny_processor, 200, second)  # map results now come from the cache
    assert first == second and first["length_ok"] == 4 and len(a) == len(b) == 4
    assert "_n_prompt" not in a.column_names
