"""training.guard.real_answers on a tiny random Llama (``tests.tiny.save_tiny_text_llm``) and a made-up pack:
which rows are asked, the output schema, the cache, seeding, and batching that does not change an answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.llm import IMAGE_PLACEHOLDER
from tests.tiny import save_tiny_text_llm
from training.guard.real_answers import RealAnswersConfig, main, run, select_questions

ROWS = [
    {"uid": "p:0", "dataset": "toy", "modality": "text", "prompt": "Tell me about tea.", "images": [],
     "response": None, "label_prompt_unsafe": 0, "label_response_unsafe": None, "extra": {"k": 1}},
    {"uid": "p:1", "dataset": "toy", "modality": "text", "prompt": "How do I bake bread at home?", "images": [],
     "response": None, "label_prompt_unsafe": 0, "label_response_unsafe": None},
    {"uid": "p:2", "dataset": "toy", "modality": "image+text", "prompt": "What is shown?", "images": ["images/a.png"],
     "response": None, "label_prompt_unsafe": 0, "label_response_unsafe": None},
    # not asked: another model's answer is already there; an empty prompt
    {"uid": "p:3", "dataset": "toy", "prompt": "Hi", "response": "Hello!", "label_response_unsafe": 0},
    {"uid": "p:4", "dataset": "toy", "prompt": "  ", "response": None},
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_text_llm(tmp_path_factory.mktemp("tiny") / "llm", seed=3)


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    index = tmp_path / "toypack" / "index"
    index.mkdir(parents=True)
    (index / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (index / "_summary.jsonl").write_text(json.dumps({"uid": "s", "prompt": "bookkeeping"}) + "\n")
    return tmp_path / "toypack"


def _cfg(tmp_path: Path, pack: Path, tiny: Path, **kw) -> RealAnswersConfig:
    kw.setdefault("cache", str(tmp_path / "cache"))
    kw = {"per_file": 0, "max_tokens": 6, **kw}
    return RealAnswersConfig(out=str(tmp_path / "out"), packs=[str(pack)], model=str(tiny), threads=1, **kw)


def _answers(tmp_path: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in (tmp_path / "out" / "toypack" / "toy.jsonl").read_text().splitlines()]
    return {r["uid"]: r["response"] for r in rows}


def test_asks_unanswered_rows_and_writes_unlabelled_guard_rows(tmp_path: Path, pack: Path, tiny: Path) -> None:
    card = run(_cfg(tmp_path, pack, tiny))
    assert card["files"] == {"toypack/toy.jsonl": 3} and card["generated"] == 3 and card["from_cache"] == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "toypack" / "toy.jsonl").read_text().splitlines()]
    assert sorted(r["uid"] for r in rows) == ["p:0:answer", "p:1:answer", "p:2:answer"]
    for r in rows:
        assert isinstance(r["response"], str) and r["label_response_unsafe"] is None
        gen = r["extra"]["generation"]
        assert gen["model"] == str(tiny) and gen["finish_reason"] in {"stop", "length"}
        assert 1 <= gen["completion_tokens"] <= 6 and gen["source_uid"] == r["uid"].removesuffix(":answer")
    by_uid = {r["uid"]: r for r in rows}
    assert by_uid["p:0:answer"]["extra"]["k"] == 1  # the input row's own extra fields survive
    assert by_uid["p:2:answer"]["images"] == ["images/a.png"]  # paths kept, relative to the pack root
    assert json.loads((tmp_path / "out" / "card.json").read_text())["generated"] == 3


def test_images_become_the_servers_placeholder_before_the_text(tmp_path: Path, pack: Path, tiny: Path) -> None:
    by_uid = {q.row["uid"]: q.content for q in select_questions(_cfg(tmp_path, pack, tiny))}
    assert by_uid["p:2"] == f"{IMAGE_PLACEHOLDER}\nWhat is shown?"
    assert by_uid["p:0"] == "Tell me about tea."


def test_a_second_run_comes_from_the_cache(tmp_path: Path, pack: Path, tiny: Path) -> None:
    run(_cfg(tmp_path, pack, tiny))
    first = _answers(tmp_path)
    card = run(_cfg(tmp_path, pack, tiny))
    assert card["generated"] == 0 and card["from_cache"] == 3
    assert _answers(tmp_path) == first
    # Another setting is another cache file: generated again.
    assert run(_cfg(tmp_path, pack, tiny, max_tokens=4))["generated"] == 3


def test_greedy_answers_do_not_depend_on_the_batch(tmp_path: Path, pack: Path, tiny: Path) -> None:
    run(_cfg(tmp_path, pack, tiny, batch_size=8, cache=str(tmp_path / "c8")))
    batched = _answers(tmp_path)
    run(_cfg(tmp_path, pack, tiny, batch_size=1, cache=str(tmp_path / "c1")))
    assert _answers(tmp_path) == batched


def test_sampled_answers_are_seeded_per_row(tmp_path: Path, pack: Path, tiny: Path) -> None:
    def sampled(seed: int, per_file: int, cache: str) -> dict[str, str]:
        run(_cfg(tmp_path, pack, tiny, temperature=1.0, seed=seed, per_file=per_file, cache=str(tmp_path / cache)))
        return _answers(tmp_path)

    a, b = sampled(5, 0, "s1"), sampled(5, 0, "s2")  # fresh caches: generated twice
    assert a == b
    # A row's answer does not depend on which other rows were picked with it.
    one = sampled(5, 1, "s3")
    (uid, answer), = one.items()
    assert a[uid] == answer
    assert sampled(6, 0, "s4") != a  # another seed, other draws (6 tokens from a 259-symbol vocabulary)


def test_per_file_selection_is_seeded(tmp_path: Path, pack: Path, tiny: Path) -> None:
    def picked(seed: int) -> list[str]:
        cfg = RealAnswersConfig(packs=[str(pack)], model=str(tiny), per_file=2, seed=seed)
        return [q.row["uid"] for q in select_questions(cfg)]

    assert picked(0) == picked(0) and len(picked(0)) == 2
    assert {tuple(picked(s)) for s in range(6)} != {tuple(picked(0))}  # the seed changes the pick


def test_cli_runs_and_bad_input_is_one_clear_error(tmp_path: Path, pack: Path, tiny: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--out", str(tmp_path / "out"), "--packs", str(pack), "--model", str(tiny), "--max_tokens", "3",
            "--per_file", "1", "--threads", "1", "--cache", str(tmp_path / "cache")]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["files"] == {"toypack/toy.jsonl": 1}
    assert main([*args[:2], "--packs", str(tmp_path / "nowhere"), *args[4:]]) == 2
    assert "has no index/ folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="temperature"):
        RealAnswersConfig(temperature=-1)
