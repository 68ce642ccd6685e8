"""Pure logic of the transformers engine: the per-row router (streamer + stopping criterion),
stop-string hold-back, left-pad collation, OpenAI penalties, image decoding."""

from __future__ import annotations

import asyncio

import pytest
import torch

from service.engines.base import ChatMessage, EngineBadRequest, EngineOutput, EngineRequest, SamplingParams
from service.engines.hf import (
    _collate,
    _decode_image,
    _held_back,
    _Job,
    _PenaltyProcessor,
    _Row,
    _RowRouter,
)

EOS = 0


def _decode(ids: list[int]) -> str:
    """Fake detokenizer: id n ↦ chr(n); 1 is a lone UTF-8 lead byte (shown as U+FFFD)."""
    return "".join("\ufffd" if i == 1 else chr(i) for i in ids if i != EOS)


def _job(rid: str, **params) -> _Job:
    return _Job(EngineRequest(rid, (ChatMessage("user", ("hi",)),), SamplingParams(**params)), asyncio.Queue())


def _router(*rows: _Row) -> tuple[_RowRouter, list[tuple[str, object]]]:
    sent: list[tuple[str, object]] = []
    router = _RowRouter(list(rows), _decode, {EOS}, lambda job, item: sent.append((job.request.request_id, item)))
    router.put(torch.tensor([[5, 6]] * len(rows)))  # the prompt: ignored
    return router, sent


def _steps(router: _RowRouter, *columns: list[int]) -> None:
    for col in columns:
        router.put(torch.tensor(col))


def _texts(sent: list, rid: str) -> list[str]:
    return [item.text for r, item in sent if r == rid and isinstance(item, EngineOutput)]


@pytest.mark.parametrize(
    ("text", "stops", "held"),
    [("abc", (), 0), ("ab\ufffd", (), 1), ("xxEN", ("END",), 2), ("xxE", ("END", "Ex"), 1), ("END", ("END",), 0)],
)  # fmt: skip
def test_held_back(text: str, stops: tuple[str, ...], held: int) -> None:
    assert _held_back(text, stops) == held


def test_router_streams_rows_independently_with_eos_and_budget() -> None:
    a = _Row(_job("a"), prompt_tokens=2, budget=10)
    b = _Row(_job("b"), prompt_tokens=2, budget=2)
    router, sent = _router(a, b)
    _steps(router, [ord("h"), ord("x")], [ord("i"), ord("y")], [EOS, ord("z")])
    assert _texts(sent, "a") == ["h", "i", ""]
    assert _texts(sent, "b") == ["x", "y"]
    finals = {r: item for r, item in sent if item.finish_reason}
    assert finals["a"].finish_reason == "stop" and finals["a"].completion_tokens == 3  # EOS counted
    assert finals["b"].finish_reason == "length" and finals["b"].completion_tokens == 2
    assert finals["a"].prompt_tokens == 2
    assert router(torch.zeros(2, 1), torch.zeros(2, 3)).tolist() == [True, True]


def test_router_holds_back_stop_prefixes_and_cuts_at_the_stop_string() -> None:
    row = _Row(_job("s", stop=("END",)), prompt_tokens=1, budget=50)
    router, sent = _router(row)
    _steps(router, *[[ord(c)] for c in "okENxEND"])
    # "E" and "EN" are held until they turn out not to start "END"; the stop string is never sent
    assert "".join(_texts(sent, "s")) == "okENx"
    assert sent[-1][1].finish_reason == "stop"
    assert all("END" not in t for t in _texts(sent, "s"))


def test_router_holds_incomplete_utf8_until_it_completes() -> None:
    row = _Row(_job("u"), prompt_tokens=1, budget=50)
    router, sent = _router(row)
    _steps(router, [ord("a")], [1])
    assert _texts(sent, "u") == ["a"]  # the U+FFFD is held back


def test_router_abort_signals_the_consumer_and_stops_the_row() -> None:
    a, b = _Row(_job("a"), 1, 10), _Row(_job("b"), 1, 10)
    router, sent = _router(a, b)
    _steps(router, [ord("x"), ord("y")])
    a.job.abort.set()
    assert router(torch.zeros(2, 1), torch.zeros(2, 3)).tolist() == [True, False]
    _steps(router, [ord("z"), ord("w")])
    assert ("a", None) in sent and _texts(sent, "b") == ["y", "w"]
    router.end()  # b ran out of max_new_tokens: finished with "length"
    assert sent[-1][0] == "b" and sent[-1][1].finish_reason == "length"
    assert sum(1 for r, _ in sent if r == "a") == 2  # nothing more for the aborted row


def test_collate_left_pads_sequences_and_concatenates_images() -> None:
    short = {"input_ids": torch.tensor([[7, 8]]), "attention_mask": torch.ones(1, 2, dtype=torch.long)}
    long = {
        "input_ids": torch.tensor([[1, 2, 3, 4]]),
        "attention_mask": torch.ones(1, 4, dtype=torch.long),
        "pixel_values": torch.zeros(1, 3, 8, 8),  # (n_img, C, H, W)
    }
    batch = _collate([short, long, long], pad_id=99)
    assert batch["input_ids"].tolist()[0] == [99, 99, 7, 8]
    assert batch["attention_mask"].tolist()[0] == [0, 0, 1, 1]
    assert batch["pixel_values"].shape == (2, 3, 8, 8)


def test_penalties_count_generated_tokens_only() -> None:
    proc = _PenaltyProcessor(prompt_len=2, presence=0.5, frequency=1.0)
    input_ids = torch.tensor([[3, 3, 1, 1, 2]])  # prompt [3, 3], generated [1, 1, 2]
    out = proc(input_ids, torch.zeros(1, 5))
    assert out.tolist()[0] == [0.0, -2.5, -1.5, 0.0, 0.0]


def test_undecodable_image_is_a_bad_request() -> None:
    with pytest.raises(EngineBadRequest, match="cannot decode image"):
        _decode_image(b"not an image")


def test_empty_stop_strings_are_ignored() -> None:
    row = _Row(_job("e", stop=("",)), prompt_tokens=1, budget=2)
    router, sent = _router(row)
    _steps(router, [ord("a")], [ord("b")])
    assert "".join(_texts(sent, "e")) == "ab" and sent[-1][1].finish_reason == "length"
