"""``ServingChat.create_chat_completion``: the guarded chat pipeline.

validate → refuse any optional parameter the engine cannot honour (``service.engines.capabilities``:
400 naming it) → load images → ``engine.check_request`` (a prompt the engine's context cannot hold is
refused before the guard spends anything) → ``guard.check_input`` → ``engine.generate`` →
``guard.check_output`` → build. With ``--prompt-check during`` generation starts before the prompt's check
and runs while it is scored (``service.serving.early_start.EarlyStart``): nothing is released, scored as a
reply or returned before the prompt's verdict is proceed; a refused prompt, a failed check or a client
that leaves discards the generation unread and aborts it. After each check it does what
``guard.outcome`` says (proceed, refuse, or raise); streamed text follows the ``StreamGuard``;
``service.serving.verdict_render`` renders the verdicts.

Every output surface is guarded, per choice (``n``): the content, the reasoning text
(``reasoning_content``), the model's ``refusal`` and each tool call (its name and arguments). The
prompt check scores ``scored_messages``: tool results, earlier tool calls and the tool definitions
too. Without streaming, each choice is scored as one text of all its surfaces; a blocked choice is
replaced by the refusal (``finish_reason: "content_filter"``, no tool calls, no logprobs). Streamed,
each surface of each choice has its own ``StreamGuard`` (a tool call's name is scored with its
arguments, and its first piece is held until both are scored); a block ends that choice with
``content_filter``; once every choice has ended and one was blocked, the engine request is aborted.
Logprobs are held back with the content they describe.

Returns a ``ChatResult`` holding either a response body or an async iterator of SSE strings, plus
the ``x-guard-*`` headers. Errors are raised (``APIError``/``EngineError``) before a stream
starts; once streaming, an error becomes one error event. Every stream ends with
``data: [DONE]`` unless the client went away. A client disconnect or a timeout cancels the work
and calls ``engine.abort(request_id)``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from starlette.requests import Request

from models.backends import GuardInput
from service.engines.base import EngineClient, EngineOutput, EngineRequest
from service.engines.capabilities import unsupported
from service.config import PromptCheck
from service.errors import InvalidRequest, NotFound
from service.guard import Guard, GuardDecision, Outcome
from service.images import RemoteImageFetcher
from service.metrics import GuardMetrics
from service.protocol import (
    AssistantMessage,
    ChatCompletionChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamChoice,
    ChatCompletionStreamResponse,
    ChoiceLogprobs,
    DeltaMessage,
    SafetyVerdict,
    UsageInfo,
)
from service.serving.choices import StreamChoice, collect, usage_of, worst_decision
from service.serving.early_start import EarlyStart
from service.serving.messages import scored_messages, to_engine_messages
from service.serving.sse import DONE, run_cancellable, sse
from service.serving.streaming import Served, produce_sse
from service.serving.verdict_render import guard_headers, safety_field

log = logging.getLogger("spaguard.chat")


ChatResult = Served[ChatCompletionResponse]


@dataclass
class _Ctx:
    """Per-request state shared by the stream helpers."""

    req: ChatCompletionRequest
    request_id: str
    model: str
    report: bool = False  # show the verdict (Outcome.report, the same for every check)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def n(self) -> int:
        return self.req.n or 1

    def chunk(
        self,
        delta: DeltaMessage | None = None,
        finish: str | None = None,
        usage: UsageInfo | None = None,
        safety: SafetyVerdict | None = None,
        index: int = 0,
        logprobs: ChoiceLogprobs | None = None,
    ) -> str:
        choices = [] if delta is None else [
            ChatCompletionStreamChoice(index=index, delta=delta, finish_reason=finish, logprobs=logprobs)]
        return sse(
            ChatCompletionStreamResponse(
                id=self.request_id, created=self.created, model=self.model,
                choices=choices, usage=usage, safety=safety,
            )
        )


class ServingChat:
    """Handles ``POST /v1/chat/completions``."""

    def __init__(
        self,
        engine: EngineClient,
        guard: Guard,
        metrics: GuardMetrics,
        model_name: str | None,
        request_timeout_s: float,
        fetcher: RemoteImageFetcher | None = None,
        prompt_check: PromptCheck = "before",
    ) -> None:
        self.engine = engine
        self.prompt_check = prompt_check
        self.guard = guard
        self.metrics = metrics
        self._model_name = model_name
        self.request_timeout_s = request_timeout_s
        self.fetcher = fetcher

    @property
    def model_name(self) -> str:
        """The served name: the one configured, else the engine's, read live (an upstream engine
        may learn its model's name only after start-up)."""
        return self._model_name or self.engine.model_name

    def check_capabilities(self, requested: set[str]) -> None:
        """400 naming the first requested optional parameter the engine cannot honour."""
        name = unsupported(requested, getattr(self.engine, "capabilities", frozenset()))
        if name is not None:
            raise InvalidRequest(f"{name}: not supported by this server's engine (see docs/api.md)",
                                 param=name, code="unsupported_parameter")

    async def create_chat_completion(
        self, req: ChatCompletionRequest, raw: Request | None = None
    ) -> ChatResult:
        if req.model is not None and req.model != self.model_name:
            raise NotFound("model not found; see GET /v1/models", param="model",
                           code="model_not_found")
        ctx = _Ctx(req, f"chatcmpl-{uuid.uuid4().hex}", self.model_name)
        if raw is not None:
            raw.state.request_id = ctx.request_id  # for the failure log in service.errors
        self.check_capabilities(req.requested_params())
        # The client is watched from the start: one that leaves during image loading or a guard
        # check stops that work too (its batcher items leave the queue), not only generation.
        # Nothing to undo here: cancelling ``_create`` aborts a generation under way (below).
        return await run_cancellable(self._create(ctx, raw), raw, None, _nothing)

    async def _create(self, ctx: _Ctx, raw: Request | None) -> ChatResult:
        req = ctx.req
        messages = await to_engine_messages(req.messages, self.fetcher)
        engine_req = EngineRequest(ctx.request_id, messages, req.to_engine_params(upstream=True))
        await self.engine.check_request(engine_req)  # before the guard: see the module docstring
        prompt = self.guard.prompt_input(scored_messages(messages, req))
        early = (EarlyStart(self.outputs(engine_req), lambda: self.engine.abort(ctx.request_id))
                 if self.prompt_check == "during" else None)  # service.serving.early_start
        try:
            decision = await self.guard.check_input(ctx.request_id, prompt)
        except BaseException as exc:
            await self._discard(early, "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed")
            raise
        outcome = self.guard.outcome(decision)
        ctx.report = outcome.report
        headers = guard_headers(decision, report=ctx.report) | {"x-request-id": ctx.request_id}
        if outcome.kind != "proceed":
            await self._discard(early, "refused")
            return self._blocked_prompt(ctx, decision, outcome, headers)
        outputs = early if early is not None else self.outputs(engine_req)
        # A timeout or a client gone aborts the engine request; an early start's reading task stops with it.
        abort = early.discard if early is not None else lambda: self.engine.abort(ctx.request_id)
        if req.stream:
            return ChatResult(stream=self._stream(ctx, outputs, prompt, decision, abort), headers=headers)
        gen = await run_cancellable(  # the client is watched by create_chat_completion
            collect(outputs, ctx.n), None, self.request_timeout_s, abort)
        choices = [gen.choices[i] for i in sorted(gen.choices)]
        outs = await asyncio.gather(*(
            self.guard.check_output(ctx.request_id, prompt, decision, c.scored_text()) for c in choices))

        worst = worst_decision(outs)
        headers = guard_headers(decision, worst, report=ctx.report) | {"x-request-id": ctx.request_id}
        built = []
        for choice, out in zip(choices, outs, strict=True):
            outcome = self.guard.outcome(out)
            if outcome.error is not None:
                raise outcome.error
            built.append(choice.build(outcome.refusal, logprobs=bool(req.logprobs)))
        body = ChatCompletionResponse(
            id=ctx.request_id, created=ctx.created, model=self.model_name, choices=built,
            usage=gen.usage(), safety=safety_field(decision, worst, report=ctx.report),
        )
        return ChatResult(body=body, headers=headers)

    async def _discard(self, early: EarlyStart[EngineOutput] | None, why: str) -> None:
        """Drop an early-started generation unread, abort it and count it (nothing without one)."""
        if early is not None:
            await early.discard()
            self.metrics.early_discarded.labels(why).inc()

    def _blocked_prompt(
        self, ctx: _Ctx, decision: GuardDecision, outcome: Outcome, headers: dict[str, str]
    ) -> ChatResult:
        """A prompt the guard refused or rejected: the error is raised, or the refusal is the
        answer (for every choice); nothing is generated."""
        if outcome.error is not None:
            raise outcome.error
        assert outcome.refusal is not None  # Outcome: kind "refuse"
        safety = safety_field(decision, report=ctx.report)
        if ctx.req.stream:
            return ChatResult(stream=self._refusal_stream(ctx, outcome.refusal, safety),
                              headers=headers)
        body = ChatCompletionResponse(
            id=ctx.request_id, created=ctx.created, model=self.model_name,
            choices=[ChatCompletionChoice(index=i, message=AssistantMessage(content=outcome.refusal),
                                          finish_reason="content_filter") for i in range(ctx.n)],
            usage=UsageInfo(), safety=safety,
        )
        return ChatResult(body=body, headers=headers)

    async def _refusal_stream(
        self, ctx: _Ctx, refusal: str, safety: SafetyVerdict | None
    ) -> AsyncIterator[str]:
        for i in range(ctx.n):
            yield ctx.chunk(DeltaMessage(role="assistant", content=""), index=i)
            yield ctx.chunk(DeltaMessage(content=refusal), index=i)
            yield ctx.chunk(DeltaMessage(), index=i, finish="content_filter", safety=safety)
        if ctx.req.include_usage:
            yield ctx.chunk(usage=UsageInfo())
        yield DONE

    async def outputs(self, engine_req: EngineRequest) -> AsyncIterator[EngineOutput]:
        """Engine outputs with time-to-first-token and token metrics."""
        start, first = time.perf_counter(), True
        last: dict[int, EngineOutput] = {}
        async for out in self.engine.generate(engine_req):
            if first:
                self.metrics.ttft.observe(time.perf_counter() - start)
                first = False
            last[out.index] = out
            yield out
        if last:
            self.metrics.tokens.labels("prompt").inc(max(o.prompt_tokens for o in last.values()))
            self.metrics.tokens.labels("completion").inc(sum(o.completion_tokens for o in last.values()))

    def _stream(
        self, ctx: _Ctx, outputs: AsyncIterable[EngineOutput], prompt: GuardInput, decision: GuardDecision,
        abort: Callable[[], Awaitable[None]],
    ) -> AsyncIterator[str]:
        """SSE events: each choice's role chunk, then what the stream guards release
        (``service.serving.streaming.produce_sse``); ``abort`` on a timeout or a client gone."""
        first = [ctx.chunk(DeltaMessage(role="assistant", content=""), index=i) for i in range(ctx.n)]
        return produce_sse(first, self._guarded_events(ctx, outputs, prompt, decision),
                           request_id=ctx.request_id, timeout_s=self.request_timeout_s, abort=abort,
                           metrics=self.metrics)

    async def _guarded_events(
        self, ctx: _Ctx, outputs: AsyncIterable[EngineOutput], prompt: GuardInput, decision: GuardDecision
    ) -> AsyncIterator[str]:
        """Chunks released by the stream guards of every choice, then each choice's final chunk."""
        choices = {i: StreamChoice(i, lambda: self.guard.stream(ctx.request_id, prompt, decision))
                   for i in range(ctx.n)}
        blocked = False
        async for out in outputs:
            choice = choices.get(out.index)
            if choice is None or choice.ended:
                continue  # a blocked choice's later deltas are dropped
            for delta, logprobs in await choice.push(out):
                yield ctx.chunk(delta, index=choice.index, logprobs=logprobs)
            if choice.blocked or out.finish_reason is not None:
                async for event in self._end_choice(ctx, choice, decision, out.finish_reason):
                    yield event
                blocked = blocked or choice.blocked
            if all(c.ended for c in choices.values()):
                break
        if blocked:  # every choice ended, one of them on a block: stop whatever the engine still does
            await self.engine.abort(ctx.request_id)
        for choice in choices.values():  # the engine stopped without finishing these
            if not choice.ended:
                async for event in self._end_choice(ctx, choice, decision, "stop"):
                    yield event
        if ctx.req.include_usage:
            yield ctx.chunk(usage=usage_of(c.last for c in choices.values()))

    async def _end_choice(self, ctx: _Ctx, choice: StreamChoice, decision: GuardDecision,
                          finish: str | None) -> AsyncIterator[str]:
        if not choice.blocked:
            for delta, logprobs in await choice.finish():
                yield ctx.chunk(delta, index=choice.index, logprobs=logprobs)
        choice.ended = True
        reason = "content_filter" if choice.blocked else finish or "stop"
        yield ctx.chunk(DeltaMessage(), index=choice.index, finish=reason,
                        safety=safety_field(decision, choice.worst(), report=ctx.report))


async def _nothing() -> None:
    return None
