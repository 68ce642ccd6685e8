"""The in-process vLLM engine's optional parameters for real (issue 14, item 1): ``n``, ``logprobs`` /
``top_logprobs`` and ``logit_bias`` mapped onto ``vllm.SamplingParams``, run under ``$SPAGUARD_VLLM_PYTHON``
(vLLM pins its own torch) as a script printing one JSON line, like ``test_vllm_inprocess.py``. Run with
``make test-vllm``; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.tiny import REPO_ROOT, check_vllm_python, save_tiny_text_llm, vllm_env

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

# NOTE: AsyncLLM starts its engine core in a child process, so the script body sits under __main__.
SCENARIO = r'''
import asyncio, json, sys
from service.engines.base import ChatMessage, EngineConfig, EngineRequest, SamplingParams
from service.engines.vllm_engine import VLLMEngine


def req(rid, **params):
    return EngineRequest(rid, (ChatMessage("user", ("Tell me a story.",)),), SamplingParams(**params))


async def collect(engine, request):
    return [o async for o in engine.generate(request)]


async def main(model_dir, token):
    config = EngineConfig(kind="vllm", model=model_dir, served_model_name="tiny", dtype="float32",
                          max_model_len=256, max_batch_size=4)
    result = {}
    async with VLLMEngine(config, engine_kwargs={"enforce_eager": True}) as engine:
        outs = await collect(engine, req("n", n=3, max_tokens=8, temperature=1.0, seed=3))
        result["n_indices"] = sorted({o.index for o in outs})
        result["n_finishes"] = sorted(o.index for o in outs if o.finish_reason)
        result["n_texts"] = ["".join(o.text for o in outs if o.index == i) for i in range(3)]
        greedy = await collect(engine, req("lp", max_tokens=6, temperature=0.0, logprobs=True, top_logprobs=2))
        entries = [e for o in greedy for e in o.logprobs]
        result["lp"] = [[e.logprob, [t[1] for t in e.top]] for e in entries]
        result["lp_tokens"] = greedy[-1].completion_tokens
        biased = await collect(engine, req("bias", max_tokens=5, temperature=0.0, logit_bias=((token, 100.0),)))
        result["biased"] = "".join(o.text for o in biased)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
'''


def test_vllm_engine_n_logprobs_logit_bias(tmp_path) -> None:
    check_vllm_python(os.environ["SPAGUARD_VLLM_PYTHON"])
    model_dir = save_tiny_text_llm(tmp_path / "tiny-llama")
    from transformers import AutoTokenizer

    token = AutoTokenizer.from_pretrained(model_dir)("a", add_special_tokens=False).input_ids[-1]
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    proc = subprocess.run(
        [os.environ["SPAGUARD_VLLM_PYTHON"], str(script), str(model_dir), str(token)],
        cwd=REPO_ROOT, env=vllm_env(), capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"scenario failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["n_indices"] == [0, 1, 2] and result["n_finishes"] == [0, 1, 2]
    assert len(set(result["n_texts"])) > 1  # sampled apart
    assert result["lp"] and len(result["lp"]) <= result["lp_tokens"]
    for logprob, top in result["lp"]:
        assert len(top) == 2 and logprob == pytest.approx(top[0]) and top[0] >= top[1]  # greedy: the argmax
    assert result["biased"] == "aaaaa"
