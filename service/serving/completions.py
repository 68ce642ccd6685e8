"""``ServingCompletions.create_completion``: the guarded legacy completions pipeline (``/v1/completions``).

Like chat (``service.serving.chat``), on raw prompts: refuse what no engine here honours
(``CompletionRequest.refused_param``) and what this engine cannot (its ``capabilities``: ``raw_prompt``,
``n``, ``logit_bias``) → ``engine.check_request`` → ``guard.check_input`` on each prompt (scored as a
user turn) → ``engine.generate`` (the prompt continued as it is, ``EngineRequest.prompt``) →
``guard.check_output`` on each choice's text. A list of prompts gives ``n`` choices per prompt, indexed
prompt by prompt (OpenAI's order). ``echo`` puts the prompt (already scored as input) before each choice.

A blocked prompt is not generated: its choices are the refusal with ``finish_reason: "content_filter"``
(or the request is a 400 with ``--block-style error``). A blocked choice is replaced by the refusal;
streamed, it ends with ``content_filter`` and nothing unscored of it has been sent
(``service.serving.choices.StreamChoice``). Streamed prompts are generated one after another; without
streaming, concurrently. A client that leaves, or the request timeout, aborts every engine request.

With ``--prompt-check during`` every prompt starts generating while it is scored (``EarlyStart``), so
streamed prompts generate concurrently too and are released in order; a refused prompt's generation, or
all of them when the request is rejected, are discarded unread.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field

from starlette.requests import Request

from models.backends import GuardInput
from service.engines.base import ChatMessage, EngineOutput, EngineRequest
from service.engines.capabilities import RAW_PROMPT
from service.errors import InvalidRequest, NotFound
from service.guard import GuardDecision
from service.protocol import CompletionChoice, CompletionRequest, CompletionResponse, SafetyVerdict, UsageInfo
from service.serving.chat import ServingChat
from service.serving.choices import StreamChoice, collect, usage_of, worst_decision
from service.serving.early_start import EarlyStart
from service.serving.sse import run_cancellable
from service.serving.streaming import Served, produce_sse
from service.serving.verdict_render import guard_headers, safety_field


CompletionResult = Served[CompletionResponse]


@dataclass
class _Prompt:
    """One prompt of the request: its engine request, what the guard scores, and the guard's answer."""

    text: str
    engine_req: EngineRequest
    scored: GuardInput
    decision: GuardDecision | None = None
    refusal: str | None = None  # set when the guard refused the prompt
    early: EarlyStart[EngineOutput] | None = None  # its generation, started during its check

    def outputs(self, chat: ServingChat) -> AsyncIterable[EngineOutput]:
        """Its engine outputs: the early-started ones, else a generation started now."""
        return self.early if self.early is not None else chat.outputs(self.engine_req)


def sse_completion(chunk: CompletionResponse) -> str:
    """One SSE event; ``usage``/``safety`` appear only when set."""
    data = chunk.model_dump(mode="json")
    for key in ("usage", "safety"):
        if data.get(key) is None:
            data.pop(key, None)
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


class ServingCompletions:
    """Handles ``POST /v1/completions`` with the chat handler's engine, guard and settings."""

    def __init__(self, chat: ServingChat) -> None:
        self.chat = chat

    async def create_completion(self, req: CompletionRequest, raw: Request | None = None) -> CompletionResult:
        chat = self.chat
        if req.model is not None and req.model != chat.model_name:
            raise NotFound("model not found; see GET /v1/models", param="model", code="model_not_found")
        request_id = f"cmpl-{uuid.uuid4().hex}"
        if raw is not None:
            raw.state.request_id = request_id  # for the failure log in service.errors
        refused = req.refused_param()
        if refused is not None:
            raise InvalidRequest(f"{refused}: not supported on /v1/completions (see docs/api.md)", param=refused,
                                 code="unsupported_parameter")
        if RAW_PROMPT not in getattr(chat.engine, "capabilities", frozenset()):
            raise InvalidRequest("this server's engine serves chat only; use /v1/chat/completions", param="prompt",
                                 code="unsupported_parameter")
        chat.check_capabilities(req.requested_params())
        return await run_cancellable(self._create(req, request_id), raw, None, _nothing)

    async def _create(self, req: CompletionRequest, request_id: str) -> CompletionResult:
        chat, params = self.chat, req.to_engine_params()
        prompts = []
        for k, text in enumerate(req.prompts):
            messages = (ChatMessage("user", (text,)),)
            engine_req = EngineRequest(f"{request_id}-{k}", messages, params, prompt=text)
            prompts.append(_Prompt(text, engine_req, chat.guard.prompt_input(messages)))
        for p in prompts:  # before the guard, as in chat
            await chat.engine.check_request(p.engine_req)
        if chat.prompt_check == "during":  # each prompt generates while it is scored: service.serving.early_start
            for p in prompts:
                p.early = EarlyStart(chat.outputs(p.engine_req), functools.partial(chat.engine.abort,
                                                                                   p.engine_req.request_id))
        try:
            decisions = await asyncio.gather(*(chat.guard.check_input(request_id, p.scored) for p in prompts))
        except BaseException as exc:
            await self._discard(prompts, "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed")
            raise
        report = False
        for p, decision in zip(prompts, decisions, strict=True):
            outcome = chat.guard.outcome(decision)
            if outcome.error is not None:
                await self._discard(prompts, "refused")
                raise outcome.error
            p.decision, p.refusal, report = decision, outcome.refusal, outcome.report
        await self._discard([p for p in prompts if p.refusal is not None], "refused")
        prompt_worst = worst_decision(decisions)
        headers = guard_headers(prompt_worst, report=report) | {"x-request-id": request_id}
        ctx = _Ctx(req, request_id, chat.model_name, params.n, report)
        if req.stream:
            stream = produce_sse([], self._events(ctx, prompts), request_id=request_id,
                                 timeout_s=chat.request_timeout_s, abort=lambda: self._abort(prompts),
                                 metrics=chat.metrics)
            return CompletionResult(stream=stream, headers=headers)
        live = [p for p in prompts if p.refusal is None]
        gens = await run_cancellable(
            asyncio.gather(*(collect(p.outputs(chat), params.n) for p in live)), None,
            chat.request_timeout_s, lambda: self._abort(prompts))
        by_prompt = dict(zip(map(id, live), gens, strict=True))
        choices: list[CompletionChoice] = []
        outs: list[GuardDecision] = []
        for k, p in enumerate(prompts):
            gen = by_prompt.get(id(p))
            for i in range(params.n):
                index = k * params.n + i
                if gen is None:
                    choices.append(CompletionChoice(index=index, text=ctx.echo(p) + (p.refusal or ""),
                                                    finish_reason="content_filter"))
                    continue
                choice = gen.choices[i]
                assert p.decision is not None
                out = await chat.guard.check_output(request_id, p.scored, p.decision, choice.text)
                outs.append(out)
                outcome = chat.guard.outcome(out)
                if outcome.error is not None:
                    raise outcome.error
                text, finish = choice.text, choice.finish_reason
                if outcome.refusal is not None:
                    text, finish = outcome.refusal, "content_filter"
                choices.append(CompletionChoice(index=index, text=ctx.echo(p) + text, finish_reason=finish))
        worst = worst_decision(outs)
        usage = _sum(g.usage() for g in gens)
        body = CompletionResponse(id=request_id, created=ctx.created, model=ctx.model, choices=choices, usage=usage,
                                  safety=safety_field(prompt_worst, worst, report=report))
        return CompletionResult(body=body, headers=guard_headers(prompt_worst, worst, report=report)
                                | {"x-request-id": request_id})

    async def _events(self, ctx: _Ctx, prompts: list[_Prompt]) -> AsyncIterator[str]:
        """Each prompt's choices in turn: echo, the released text, the final chunk; then usage."""
        chat, n = self.chat, ctx.n
        usages: list[UsageInfo] = []
        for k, p in enumerate(prompts):
            if p.refusal is not None:
                for i in range(n):
                    yield ctx.chunk(k * n + i, ctx.echo(p) + p.refusal, "content_filter",
                                    safety_field(p.decision, report=ctx.report))
                continue
            assert p.decision is not None
            decision = p.decision
            streams = {i: StreamChoice(i, lambda: chat.guard.stream(ctx.request_id, p.scored, decision))
                       for i in range(n)}
            if ctx.req.echo:
                for i in range(n):
                    yield ctx.chunk(k * n + i, p.text)
            blocked = False
            async for out in p.outputs(chat):
                choice = streams.get(out.index)
                if choice is None or choice.ended:
                    continue
                for delta, _ in await choice.push(out):
                    if delta.content:
                        yield ctx.chunk(k * n + choice.index, delta.content)
                if choice.blocked or out.finish_reason is not None:
                    async for event in self._end(ctx, k, choice, decision, out.finish_reason):
                        yield event
                    blocked = blocked or choice.blocked
                if all(c.ended for c in streams.values()):
                    break
            if blocked:
                await chat.engine.abort(p.engine_req.request_id)
            for choice in streams.values():
                if not choice.ended:
                    async for event in self._end(ctx, k, choice, decision, "stop"):
                        yield event
            usages.append(usage_of(c.last for c in streams.values()))
        if ctx.req.include_usage:
            yield sse_completion(CompletionResponse(id=ctx.request_id, created=ctx.created, model=ctx.model,
                                                    choices=[], usage=_sum(usages)))

    async def _end(self, ctx: _Ctx, k: int, choice: StreamChoice, decision: GuardDecision,
                   finish: str | None) -> AsyncIterator[str]:
        if not choice.blocked:
            for delta, _ in await choice.finish():
                if delta.content:
                    yield ctx.chunk(k * ctx.n + choice.index, delta.content)
        choice.ended = True
        yield ctx.chunk(k * ctx.n + choice.index, "", "content_filter" if choice.blocked else finish or "stop",
                        safety_field(decision, choice.worst(), report=ctx.report))

    async def _abort(self, prompts: list[_Prompt]) -> None:
        for p in prompts:
            if p.early is not None:
                await p.early.discard()  # stops its reading task, then aborts
            else:
                await self.chat.engine.abort(p.engine_req.request_id)

    async def _discard(self, prompts: list[_Prompt], why: str) -> None:
        """Drop the early generations of ``prompts`` unread and count them (nothing without early starts)."""
        for p in prompts:
            if p.early is not None:
                await p.early.discard()
                self.chat.metrics.early_discarded.labels(why).inc()


@dataclass
class _Ctx:
    req: CompletionRequest
    request_id: str
    model: str
    n: int
    report: bool
    created: int = field(default_factory=lambda: int(time.time()))

    def echo(self, p: _Prompt) -> str:
        return p.text if self.req.echo else ""

    def chunk(self, index: int, text: str, finish: str | None = None, safety: SafetyVerdict | None = None) -> str:
        return sse_completion(CompletionResponse(
            id=self.request_id, created=self.created, model=self.model, safety=safety,
            choices=[CompletionChoice(index=index, text=text, finish_reason=finish)]))


def _sum(usages: Iterable[UsageInfo]) -> UsageInfo:
    total = UsageInfo()
    for u in usages:
        total.prompt_tokens += u.prompt_tokens
        total.completion_tokens += u.completion_tokens
    total.total_tokens = total.prompt_tokens + total.completion_tokens
    return total


async def _nothing() -> None:
    return None
