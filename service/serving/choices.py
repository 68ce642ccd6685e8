"""A generation's choices, each with every output surface the guard must score, collected whole
(``collect``/``ChoiceText``) or streamed through stream guards (``StreamChoice``).

Surfaces of one choice: the content, the reasoning text (an upstream's ``reasoning_content``), the
model's ``refusal`` and its tool calls (name and arguments). ``ChoiceText.scored_text`` is all of
them as one text (what a non-streamed choice is scored on); ``StreamChoice`` gives each surface its
own ``StreamGuard``, so nothing of any of them is released before it is scored. A tool call's name
goes into its guard first (as ``name(``) so that it is scored with its arguments, and the call's
first chunk (id, name) is sent only once that header has been released. Logprobs of the content
are held until the text they describe is released, and dropped with it on a block.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from service.engines.base import EngineOutput, TokenLogprob
from service.guard import GuardDecision, StreamGuard, StreamStep
from service.protocol import (
    AssistantMessage,
    ChatCompletionChoice,
    ChoiceLogprobs,
    DeltaFunction,
    DeltaMessage,
    DeltaToolCall,
    FunctionCall,
    TokenLogprobOut,
    ToolCallOut,
    TopLogprob,
    UsageInfo,
)

_TEXT_SURFACES = ("reasoning", "text", "refusal")  # EngineOutput fields, in the order they are scored


def tool_call_id() -> str:
    """An id for a tool call whose engine gave none (OpenAI's ``call_...`` form)."""
    return f"call_{uuid.uuid4().hex[:24]}"


def logprobs_out(entries: Sequence[TokenLogprob], empty: bool = False) -> ChoiceLogprobs | None:
    """Engine logprobs on the wire (``bytes``: the token's UTF-8 bytes); None when there are none,
    unless ``empty`` (logprobs were asked for: a choice of no tokens has an empty list)."""
    if not entries and not empty:
        return None
    return ChoiceLogprobs(content=[
        TokenLogprobOut(token=e.token, logprob=e.logprob, bytes=list(e.token.encode("utf-8")),
                        top_logprobs=[TopLogprob(token=t, logprob=lp, bytes=list(t.encode("utf-8")))
                                      for t, lp in e.top])
        for e in entries
    ])


def usage_of(last: Iterable[EngineOutput | None]) -> UsageInfo:
    """Usage over the choices' last outputs: the prompt once, the completions summed."""
    outs = [o for o in last if o is not None]
    prompt = max((o.prompt_tokens for o in outs), default=0)
    completion = sum(o.completion_tokens for o in outs)
    return UsageInfo(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def worst_decision(decisions: Iterable[GuardDecision | None]) -> GuardDecision | None:
    """The decision to report for several checks of one kind: a block first, else the most unsafe."""
    found = [d for d in decisions if d is not None]
    return max(found, key=lambda d: (d.blocked, d.verdict.unsafe_prob if d.verdict else -1.0), default=None)


@dataclass
class _ToolCallText:
    id: str | None = None
    name: str = ""
    arguments: str = ""


@dataclass
class ChoiceText:
    """One choice collected whole."""

    index: int
    text: str = ""
    reasoning: str = ""
    refusal: str = ""
    tools: dict[int, _ToolCallText] = field(default_factory=dict)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str = "stop"
    last: EngineOutput | None = None

    def add(self, out: EngineOutput) -> None:
        self.text += out.text
        self.reasoning += out.reasoning
        self.refusal += out.refusal
        for piece in out.tool_calls:
            call = self.tools.setdefault(piece.index, _ToolCallText())
            call.id = call.id or piece.id
            call.name += piece.name or ""
            call.arguments += piece.arguments
        self.logprobs.extend(out.logprobs)
        self.finish_reason = out.finish_reason or self.finish_reason
        self.last = out

    def scored_text(self) -> str:
        """Every surface of the choice as one text, as the guard scores it."""
        calls = [f"{c.name}({c.arguments}" for _, c in sorted(self.tools.items())]
        return "\n".join(t for t in (self.reasoning, self.text, self.refusal, *calls) if t)

    def build(self, refusal: str | None, logprobs: bool = False) -> ChatCompletionChoice:
        """The choice on the wire; with ``refusal`` (the guard blocked it) that text replaces all of it.
        ``logprobs``: they were asked for (the choice reports a list, empty or not)."""
        if refusal is not None:
            return ChatCompletionChoice(index=self.index, message=AssistantMessage(content=refusal),
                                        finish_reason="content_filter")
        calls = [ToolCallOut(id=c.id or tool_call_id(), function=FunctionCall(name=c.name, arguments=c.arguments))
                 for _, c in sorted(self.tools.items())]
        message = AssistantMessage(
            content=self.text if self.text or not (calls or self.refusal) else None, refusal=self.refusal or None,
            tool_calls=calls or None, reasoning_content=self.reasoning or None,
        )
        return ChatCompletionChoice(index=self.index, message=message, finish_reason=self.finish_reason,
                                    logprobs=logprobs_out(self.logprobs, empty=logprobs))


@dataclass
class Generation:
    choices: dict[int, ChoiceText] = field(default_factory=dict)

    def usage(self) -> UsageInfo:
        return usage_of(c.last for c in self.choices.values())


async def collect(outputs: AsyncIterable[EngineOutput], n: int = 1) -> Generation:
    """All outputs of a generation, by choice (every index 0 .. n-1 is present)."""
    gen = Generation({i: ChoiceText(i) for i in range(n)})
    async for out in outputs:
        gen.choices.setdefault(out.index, ChoiceText(out.index)).add(out)
    return gen


@dataclass
class _ToolStream:
    id: str
    header_left: int = 0  # characters of the "name(" header not yet released
    started: bool = False  # its first chunk (id, name) was sent
    name: str = ""


Event = tuple[DeltaMessage, ChoiceLogprobs | None]


class StreamChoice:
    """One streamed choice: a ``StreamGuard`` per surface; see the module docstring."""

    def __init__(self, index: int, new_guard: Callable[[], StreamGuard]) -> None:
        self.index = index
        self._new_guard = new_guard
        self._guards: dict[str | int, StreamGuard] = {}
        self._tools: dict[int, _ToolStream] = {}
        self._logprobs: list[tuple[int, tuple[TokenLogprob, ...]]] = []  # (content end offset, entries)
        self._content_len = self._content_sent = 0
        self.blocked = False
        self.ended = False
        self.last: EngineOutput | None = None

    def worst(self) -> GuardDecision | None:
        return worst_decision(g.last for g in self._guards.values())

    async def push(self, out: EngineOutput) -> list[Event]:
        """Feed one engine output; returns the deltas now released (stops at a block)."""
        self.last = out
        events: list[Event] = []
        if out.logprobs:
            self._logprobs.append((self._content_len + len(out.text), out.logprobs))
        self._content_len += len(out.text)
        for key in _TEXT_SURFACES:
            text = getattr(out, key)
            if text and not self._take(await self._guard(key).push(text), key, events):
                return events
        for piece in out.tool_calls:
            tool = self._tools.get(piece.index)
            if tool is None:
                tool = self._tools[piece.index] = _ToolStream(piece.id or tool_call_id())
            text = piece.arguments
            if piece.name and not tool.name:
                tool.name = piece.name
                tool.header_left = len(piece.name) + 1
                text = piece.name + "(" + text
            if text and not self._take(await self._guard(piece.index).push(text), piece.index, events):
                return events
        return events

    async def finish(self) -> list[Event]:
        """Score and release what every surface still holds; then the remaining logprobs."""
        events: list[Event] = []
        for key, guard in list(self._guards.items()):
            if not self._take(await guard.finish(), key, events):
                return events
        rest = [e for _, entries in self._logprobs for e in entries]
        self._logprobs.clear()
        if rest:
            events.append((DeltaMessage(), logprobs_out(rest)))
        return events

    def _guard(self, key: str | int) -> StreamGuard:
        if key not in self._guards:
            self._guards[key] = self._new_guard()
        return self._guards[key]

    def _take(self, step: StreamStep, key: str | int, events: list[Event]) -> bool:
        """Append ``step``'s release as a delta; False (and ``blocked``) when the step blocked."""
        if step.blocked:
            self.blocked = True
            return False
        if step.release:
            events.append(self._delta(key, step.release))
        return True

    def _delta(self, key: str | int, text: str) -> Event:
        if key == "text":
            self._content_sent += len(text)
            ready = [e for end, entries in self._logprobs if end <= self._content_sent for e in entries]
            self._logprobs = [(end, entries) for end, entries in self._logprobs if end > self._content_sent]
            return DeltaMessage(content=text), logprobs_out(ready)
        if key == "reasoning":
            return DeltaMessage(reasoning_content=text), None
        if key == "refusal":
            return DeltaMessage(refusal=text), None
        assert isinstance(key, int)
        tool = self._tools[key]
        header = min(tool.header_left, len(text))
        tool.header_left -= header
        arguments = text[header:]
        if tool.started:
            call = DeltaToolCall(index=key, function=DeltaFunction(arguments=arguments))
        else:  # its guard released the whole header: the call's first chunk names it
            tool.started = True
            call = DeltaToolCall(index=key, id=tool.id, type="function",
                                 function=DeltaFunction(name=tool.name, arguments=arguments))
        return DeltaMessage(tool_calls=[call]), None
