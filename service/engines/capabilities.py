"""Which optional OpenAI parameters each engine honours: the one table the API consults.

``service.protocol`` lists every optional OpenAI chat parameter with the values that mean "not
used" (``OPTIONAL_PARAMS``); a request that sets one to anything else gets a 400 naming it
(``param``) unless the serving engine's ``capabilities`` hold its name. The core sampling
parameters (max_tokens, temperature, top_p, stop, seed, penalties, stream, user) are honoured by
every engine and are not listed here.

* ``openai`` (an upstream server): everything is passed on; the upstream refuses what it cannot do,
  and its 4xx comes back as a 400.
* ``transformers`` (in-process): ``n``, ``logprobs``/``top_logprobs`` and ``logit_bias`` (a logits
  processor). No tools, no structured output: constrained decoding is not implemented, so
  ``response_format`` json modes are refused.
* ``vllm`` (in-process ``AsyncLLM``): ``n``, ``logprobs``/``top_logprobs`` and ``logit_bias`` through
  ``vllm.SamplingParams`` (tested for real: tests/integration/test_openai_vllm_inprocess.py). Tools and
  structured output are not wired here; ``vllm serve`` behind the ``openai`` engine offers them.
* ``fake`` (tests): ``n`` (the script is answered once per choice) and ``tools`` (rules may script
  tool calls); its real twin for tools is ``openai`` in front of a scripted upstream.

``raw_prompt`` (``/v1/completions``): ``openai`` (the upstream's ``/v1/completions``), ``transformers``
(the prompt tokenized as it is) and ``fake``; not ``vllm`` in-process.
"""

from __future__ import annotations

# Every optional OpenAI chat parameter (the openai package's ``CompletionCreateParams`` minus the core
# ones above); ``service.protocol.OPTIONAL_PARAMS`` gives each its "not used" values.
ALL_OPTIONAL: frozenset[str] = frozenset({
    "n", "logprobs", "top_logprobs", "logit_bias", "tools", "tool_choice", "parallel_tool_calls",
    "response_format", "reasoning_effort", "metadata", "store", "service_tier", "audio", "modalities",
    "prediction", "web_search_options", "functions", "function_call", "verbosity", "prompt_cache_key",
    "safety_identifier",
})

RAW_PROMPT = "raw_prompt"
"""Not a request parameter: the engine continues a raw prompt (``EngineRequest.prompt``), so it serves
``/v1/completions``."""

OPENAI_UPSTREAM = ALL_OPTIONAL | {RAW_PROMPT}
TRANSFORMERS = frozenset({"n", "logprobs", "top_logprobs", "logit_bias", RAW_PROMPT})
VLLM = frozenset({"n", "logprobs", "top_logprobs", "logit_bias"})
FAKE = frozenset({"n", "tools", "tool_choice", "parallel_tool_calls", RAW_PROMPT})

TOOL_PARAMS = frozenset({"tools", "tool_choice", "parallel_tool_calls"})
"""An engine that honours these also takes ``tool`` messages and assistant ``tool_calls`` turns."""


def unsupported(requested: set[str] | frozenset[str], capabilities: frozenset[str]) -> str | None:
    """The first (sorted) requested parameter the engine cannot honour, or None."""
    missing = sorted(set(requested) - capabilities)
    return missing[0] if missing else None
