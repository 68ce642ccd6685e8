"""``ServingChat.create_chat_completion``: the guarded chat pipeline.

validate → load images → ``engine.check_request`` (a prompt the engine's context cannot hold is
refused before the guard spends anything) → ``guard.check_input`` → ``engine.generate`` →
``guard.check_output`` → build. After each check it does what ``guard.outcome`` says (proceed,
refuse, or raise); streamed text follows the ``StreamGuard``; ``service.serving.verdict_render``
renders the verdicts.
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
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
from starlette.requests import Request

from service.engines.base import EngineClient, EngineError, EngineOutput, EngineRequest
from service.errors import APIError, GatewayTimeout, NotFound, from_engine_error
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
    DeltaMessage,
    SafetyVerdict,
    UsageInfo,
)
from service.serving.messages import to_engine_messages
from service.serving.sse import DONE, run_cancellable, sse, sse_error
from service.serving.verdict_render import guard_headers, safety_field

log = logging.getLogger("spaguard.chat")


@dataclass
class ChatResult:
    """A JSON body or an SSE stream, with the headers to send either way."""

    body: ChatCompletionResponse | None = None
    stream: AsyncIterator[str] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Generation:
    text: str = ""
    finish_reason: str = "stop"
    usage: UsageInfo = field(default_factory=UsageInfo)


@dataclass
class _Ctx:
    """Per-request state shared by the stream helpers."""

    req: ChatCompletionRequest
    request_id: str
    model: str
    report: bool = False  # show the verdict (Outcome.report, the same for every check)
    created: int = field(default_factory=lambda: int(time.time()))

    def chunk(
        self,
        delta: DeltaMessage | None = None,
        finish: str | None = None,
        usage: UsageInfo | None = None,
        safety: SafetyVerdict | None = None,
    ) -> str:
        choices = [] if delta is None else [ChatCompletionStreamChoice(delta=delta, finish_reason=finish)]
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
    ) -> None:
        self.engine = engine
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

    async def create_chat_completion(
        self, req: ChatCompletionRequest, raw: Request | None = None
    ) -> ChatResult:
        if req.model is not None and req.model != self.model_name:
            raise NotFound("model not found; see GET /v1/models", param="model",
                           code="model_not_found")
        ctx = _Ctx(req, f"chatcmpl-{uuid.uuid4().hex}", self.model_name)
        if raw is not None:
            raw.state.request_id = ctx.request_id  # for the failure log in service.errors
        # The client is watched from the start: one that leaves during image loading or a guard
        # check stops that work too (its batcher items leave the queue), not only generation.
        # Nothing to undo here: cancelling ``_create`` aborts a generation under way (below).
        return await run_cancellable(self._create(ctx, raw), raw, None, _nothing)

    async def _create(self, ctx: _Ctx, raw: Request | None) -> ChatResult:
        req = ctx.req
        messages = await to_engine_messages(req.messages, self.fetcher)
        engine_req = EngineRequest(ctx.request_id, messages, req.to_engine_params())
        await self.engine.check_request(engine_req)  # before the guard: see the module docstring
        prompt = self.guard.prompt_input(messages)
        decision = await self.guard.check_input(ctx.request_id, prompt)
        outcome = self.guard.outcome(decision)
        ctx.report = outcome.report
        headers = guard_headers(decision, report=ctx.report) | {"x-request-id": ctx.request_id}
        if outcome.kind != "proceed":
            return self._blocked_prompt(ctx, decision, outcome, headers)
        if req.stream:
            return ChatResult(stream=self._stream(ctx, engine_req, decision), headers=headers)
        gen = await run_cancellable(  # the client is watched by create_chat_completion
            self._collect(engine_req), None, self.request_timeout_s,
            lambda: self.engine.abort(ctx.request_id),
        )
        out = await self.guard.check_output(ctx.request_id, prompt, decision, gen.text)
        outcome = self.guard.outcome(out)
        headers = guard_headers(decision, out, report=ctx.report) | {"x-request-id": ctx.request_id}
        if outcome.error is not None:
            raise outcome.error
        text, finish = gen.text, gen.finish_reason
        if outcome.refusal is not None:
            text, finish = outcome.refusal, "content_filter"
        body = ChatCompletionResponse(
            id=ctx.request_id, created=ctx.created, model=self.model_name,
            choices=[ChatCompletionChoice(message=AssistantMessage(content=text),
                                          finish_reason=finish)],
            usage=gen.usage, safety=safety_field(decision, out, report=ctx.report),
        )
        return ChatResult(body=body, headers=headers)

    def _blocked_prompt(
        self, ctx: _Ctx, decision: GuardDecision, outcome: Outcome, headers: dict[str, str]
    ) -> ChatResult:
        """A prompt the guard refused or rejected: the error is raised, or the refusal is the
        answer; nothing is generated."""
        if outcome.error is not None:
            raise outcome.error
        assert outcome.refusal is not None  # Outcome: kind "refuse"
        safety = safety_field(decision, report=ctx.report)
        if ctx.req.stream:
            return ChatResult(stream=self._refusal_stream(ctx, outcome.refusal, safety),
                              headers=headers)
        body = ChatCompletionResponse(
            id=ctx.request_id, created=ctx.created, model=self.model_name,
            choices=[ChatCompletionChoice(message=AssistantMessage(content=outcome.refusal),
                                          finish_reason="content_filter")],
            usage=UsageInfo(), safety=safety,
        )
        return ChatResult(body=body, headers=headers)

    async def _refusal_stream(
        self, ctx: _Ctx, refusal: str, safety: SafetyVerdict | None
    ) -> AsyncIterator[str]:
        yield ctx.chunk(DeltaMessage(role="assistant", content=""))
        yield ctx.chunk(DeltaMessage(content=refusal))
        yield ctx.chunk(DeltaMessage(), finish="content_filter", safety=safety)
        if ctx.req.include_usage:
            yield ctx.chunk(usage=UsageInfo())
        yield DONE

    async def _outputs(self, engine_req: EngineRequest) -> AsyncIterator[EngineOutput]:
        """Engine outputs with time-to-first-token and token metrics."""
        start, first, last = time.perf_counter(), True, None
        async for out in self.engine.generate(engine_req):
            if first:
                self.metrics.ttft.observe(time.perf_counter() - start)
                first = False
            last = out
            yield out
        if last is not None:
            self.metrics.tokens.labels("prompt").inc(last.prompt_tokens)
            self.metrics.tokens.labels("completion").inc(last.completion_tokens)

    async def _collect(self, engine_req: EngineRequest) -> _Generation:
        gen = _Generation()
        async for out in self._outputs(engine_req):
            gen.text += out.text
            gen.finish_reason = out.finish_reason or gen.finish_reason
            gen.usage = _usage(out)
        return gen

    async def _stream(
        self, ctx: _Ctx, engine_req: EngineRequest, decision: GuardDecision
    ) -> AsyncIterator[str]:
        """SSE events. A producer task runs engine + guard and feeds a queue, so the timeout
        wraps only the wait for the next event (never a ``yield``) and a closed stream (client
        gone) just cancels the producer."""
        queue: asyncio.Queue[str | APIError | None] = asyncio.Queue()
        producer = asyncio.create_task(self._produce(ctx, engine_req, decision, queue))
        deadline = asyncio.get_running_loop().time() + self.request_timeout_s
        finished = failed = False
        try:
            yield ctx.chunk(DeltaMessage(role="assistant", content=""))
            while (event := await _next_event(queue, deadline)) is not None:
                if isinstance(event, APIError):
                    raise event
                yield event
            finished = True
        except APIError as error:
            failed = True
            log.warning("stream %s failed: %s (%s)", ctx.request_id, error.code, error.status)
            self.metrics.failures.labels("stream").inc()
            yield sse_error(error)
        finally:
            producer.cancel()
            if not finished:
                if not failed:  # closed from outside: the client went away mid-stream
                    self.metrics.failures.labels("client_disconnected").inc()
                # Client gone, error or timeout: stop the engine (shielded: we may be cancelled).
                with anyio.CancelScope(shield=True):
                    await asyncio.gather(producer, return_exceptions=True)
                    await self.engine.abort(ctx.request_id)
                log.info("stream %s ended early; engine request aborted", ctx.request_id)
        yield DONE

    async def _produce(
        self,
        ctx: _Ctx,
        engine_req: EngineRequest,
        decision: GuardDecision,
        queue: asyncio.Queue[str | APIError | None],
    ) -> None:
        try:
            async for event in self._guarded_events(ctx, engine_req, decision):
                queue.put_nowait(event)
            queue.put_nowait(None)
        except (APIError, EngineError) as exc:
            queue.put_nowait(_as_api_error(exc))
        except Exception:  # noqa: BLE001 - a bug must still end the stream with an error event
            log.exception("stream %s crashed", ctx.request_id)
            queue.put_nowait(APIError("internal server error"))

    async def _guarded_events(
        self, ctx: _Ctx, engine_req: EngineRequest, decision: GuardDecision
    ) -> AsyncIterator[str]:
        """Content chunks released by the stream guard, then the final chunk(s)."""
        prompt = self.guard.prompt_input(engine_req.messages)
        holdback = self.guard.stream(ctx.request_id, prompt, decision)
        usage, finish = UsageInfo(), "stop"
        async for out in self._outputs(engine_req):
            usage, finish = _usage(out), out.finish_reason or finish
            step = await holdback.push(out.text)
            if step.blocked:
                break
            if step.release:
                yield ctx.chunk(DeltaMessage(content=step.release))
        else:
            step = await holdback.finish()
            if step.release:
                yield ctx.chunk(DeltaMessage(content=step.release))
        if step.blocked:
            await self.engine.abort(ctx.request_id)
            finish = "content_filter"
        yield ctx.chunk(DeltaMessage(), finish=finish,
                        safety=safety_field(decision, holdback.last, report=ctx.report))
        if ctx.req.include_usage:
            yield ctx.chunk(usage=usage)


async def _nothing() -> None:
    return None


def _usage(out: EngineOutput) -> UsageInfo:
    return UsageInfo(
        prompt_tokens=out.prompt_tokens,
        completion_tokens=out.completion_tokens,
        total_tokens=out.prompt_tokens + out.completion_tokens,
    )


def _as_api_error(exc: Exception) -> APIError:
    return exc if isinstance(exc, APIError) else from_engine_error(exc)  # type: ignore[arg-type]


async def _next_event(
    queue: asyncio.Queue[str | APIError | None], deadline: float
) -> str | APIError | None:
    try:
        async with asyncio.timeout_at(deadline):
            return await queue.get()
    except TimeoutError:
        raise GatewayTimeout("generation timed out", code="generation_timeout") from None
