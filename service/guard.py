"""The in-path guard: the only place safety policy lives.

* ``Guard.check_input`` scores the prompt (all user text parts + all user images as encoded bytes;
  the classifier does OCR itself) before generation.
* ``Guard.check_output`` scores a response given its prompt; ``Guard.stream`` returns a
  ``StreamGuard`` that holds streamed text back until it is scored (block mode), so no token
  reaches the client unscored.
* ``Guard.outcome(decision)`` says what serving does about a check: proceed, refuse with
  ``REFUSAL_MESSAGE`` (``block_style=refusal``) or raise ``ContentFiltered``
  (``block_style=error``), and whether the verdict is reported (annotate). Serving follows it;
  ``service.serving.verdict_render`` turns reported verdicts into headers and the ``safety`` field.
* Policy (``service.config.GuardPolicy``): ``mode`` block (flagged → ``decision.blocked``),
  annotate (verdict reported) or shadow (logs and metrics only). A guard failure (backend error,
  full queue, timeout) follows ``fail_policy``: open → the request proceeds with action
  ``fail_open``; closed → the error is raised (503, or 429/504 for overload and timeouts).
* Every blocked, flagged or failed check is logged as one JSON line with the request id.

All classifier work goes through the shared ``DynamicBatcher``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from models.backends import (SEGMENT_OVERLAP_CHARS, GuardInput, Piece, Segmenter, Verdict, nothing_to_score,
                             response_context)
from service.batching import BatchTiming, DynamicBatcher
from service.config import ALL_GUARD_ROLES, Action, GuardPolicy, GuardRole
from service.engines.base import ChatMessage
from service.errors import APIError, ContentFiltered, GatewayTimeout, ServiceUnavailable
from service.judge import JudgeClient, JudgeError
from service.metrics import GuardMetrics
from service.tenancy import scope as tenancy_scope

log = logging.getLogger("spaguard.guard")

# A big prompt's items go to the batcher this many at a time, so other requests' items interleave with
# them (one 64k-character prompt is hundreds of items) and it never holds more than this many queue slots.
SLICE_ITEMS = 8

REFUSAL_MESSAGE = "I can't help with that request because it was flagged by the safety guard."


@dataclass(frozen=True)
class GuardDecision:
    """What the guard decided for one check. ``verdict`` is None when the guard failed open or is off."""

    task: str
    action: Action
    verdict: Verdict | None
    timing: BatchTiming | None = None

    @property
    def blocked(self) -> bool:
        return self.action == "block"


@dataclass(frozen=True)
class Outcome:
    """What serving does after one check (``Guard.outcome``).

    * ``kind="proceed"``: serve as usual (safe, shadow, annotate, failed open).
    * ``kind="refuse"``: answer 200 with ``refusal`` as the assistant's content, in place of any
      generated text, and ``finish_reason="content_filter"``; a refused prompt is not generated.
    * ``kind="reject"``: raise ``error`` (400, code ``content_filter``) instead of answering.

    ``report``: the verdict goes in the body's ``safety`` field and the ``x-guard-*`` headers.
    A stream already under way follows ``StreamStep.blocked`` instead: text that was sent cannot
    be replaced, so a block ends the stream with ``finish_reason="content_filter"``.
    """

    kind: Literal["proceed", "refuse", "reject"]
    report: bool
    refusal: str | None = None  # set iff kind == "refuse"
    error: ContentFiltered | None = None  # set iff kind == "reject"


def prompt_input(messages: Sequence[ChatMessage], roles: Sequence[GuardRole] = ALL_GUARD_ROLES) -> GuardInput:
    """The prompt as the classifier sees it: the text of every message whose role is scored (default all:
    system and developer, user, earlier assistant turns), in conversation order, and every image.

    Harm hidden in a system message or a made-up assistant turn is scored like the user's own words."""
    scored = [m for m in messages if m.role in roles]
    text = "\n".join(m.text for m in scored if m.text)
    images = tuple(img.data for m in scored for img in m.images)
    return GuardInput(text=text, images=images)


class Guard:
    """Scores prompts and responses through the batcher and applies ``GuardPolicy``."""

    def __init__(
        self,
        batcher: DynamicBatcher[GuardInput, Verdict],
        policy: GuardPolicy,
        metrics: GuardMetrics,
        segmenter: Segmenter | None = None,
        judge: JudgeClient | None = None,
    ) -> None:
        self.batcher = batcher
        self.policy = policy
        # The request's tenant policy (service.tenancy.scope) changes the knobs and decides per taxonomy
        # node; the moderation guard sets this False (its answers always annotate and fail closed).
        self.follows_tenant_policy = True
        self.metrics = metrics
        # What of a text is scored (models.segment): windows sized to the classifier's token budget
        # (``models.backends.segmenter_for``), sentence chunks and decoded variants.
        self.segmenter = segmenter or Segmenter()
        # Optional escalation of uncertain verdicts to a judge model (service.judge).
        self.judge = judge

    @property
    def policy(self) -> GuardPolicy:
        """The server's policy, as the current request's tenant policy changes it (``service.tenancy.scope``;
        unchanged outside a tenant request)."""
        if self.follows_tenant_policy:
            return tenancy_scope.guard_policy(self._policy)
        return self._policy

    @policy.setter
    def policy(self, value: GuardPolicy) -> None:
        self._policy = value

    def prompt_input(self, messages: Sequence[ChatMessage]) -> GuardInput:
        """The prompt this guard scores for ``messages``: the policy's roles (``prompt_input``)."""
        return prompt_input(messages, self.policy.roles)

    async def check_input(self, request_id: str, prompt: GuardInput) -> GuardDecision:
        """Score the prompt; raises only under ``fail_policy=closed`` (or on overload, see ``_failed``).

        The prompt is cut by ``Segmenter.prompt_pieces``: nothing of a long text is lost to the
        classifier's truncation, one harmful sentence is scored in a short chunk of its own, hidden
        encodings are scored decoded, and empty text with no image is safe without scoring. The most
        unsafe item decides.
        """
        followup = (lambda ocr: [Piece(i) for i in self.segmenter.ocr_items(prompt.text, ocr)]) if prompt.images else None
        return await self._check(request_id, "prompt", self.segmenter.prompt_pieces(prompt), followup,
                                 escalate=(prompt.text, None))

    async def check_output(
        self,
        request_id: str,
        prompt: GuardInput,
        prompt_decision: GuardDecision,
        response: str,
        start: int = 0,
    ) -> GuardDecision:
        """Score ``response[start:]`` (with up to ``SEGMENT_OVERLAP_CHARS`` before it as context)
        given its prompt, as windows of ``RESPONSE_SEGMENT_CHARS`` (``models.segment``).

        The prompt images are not re-sent; their OCR text from the prompt verdict is used
        instead, so a stream scored every few tokens does not re-run OCR each time. Only the
        prompt's tail (``RESPONSE_CONTEXT_CHARS``) goes along, so the response keeps most of
        the classifier's token budget.
        """
        ocr = prompt_decision.verdict.ocr_text if prompt_decision.verdict else ""
        context = response_context(prompt.text, ocr)
        items = self.segmenter.response_items(context, response, start)
        # A stream escalates only the text this step scored (its new window), never the whole reply again.
        new_text = response[max(0, start - SEGMENT_OVERLAP_CHARS):]
        return await self._check(request_id, "response", [Piece(i) for i in items], escalate=(context, new_text))

    def stream(
        self, request_id: str, prompt: GuardInput, prompt_decision: GuardDecision
    ) -> StreamGuard:
        return StreamGuard(self, request_id, prompt, prompt_decision)

    def outcome(self, decision: GuardDecision) -> Outcome:
        """What serving does about ``decision``; see ``Outcome``. Never raises."""
        report = self.policy.mode == "annotate" or decision.action == "annotate"  # a tenant node rule may annotate
        if not decision.blocked:
            return Outcome("proceed", report)
        if self.policy.block_style == "error":
            what = "request" if decision.task == "prompt" else "response"
            return Outcome("reject", report,
                           error=ContentFiltered(f"the {what} was blocked by the safety guard"))
        categories = decision.verdict.categories if decision.verdict else {}
        refusal = tenancy_scope.refusal(decision.task, categories) if self.follows_tenant_policy else None
        return Outcome("refuse", report, refusal=refusal or REFUSAL_MESSAGE)

    async def _check(self, request_id: str, task: str, pieces: list[Piece],
                     followup: Callable[[str], list[Piece]] | None = None,
                     escalate: tuple[str, str | None] | None = None) -> GuardDecision:
        """Score ``pieces`` and decide (``Segmenter.merge``). ``followup(ocr_text)``: more pieces once the
        images have been read (``Segmenter.ocr_items``), scored in the same check unless already flagged.
        ``escalate``: the (prompt, response) text a judge sees when the verdict is in its uncertain band."""
        if self.policy.mode == "off":
            return GuardDecision(task, "off", None)
        if not pieces:  # empty text, no image: nothing can be harmful
            decision = GuardDecision(task, "allow", nothing_to_score(task))
            self._record(request_id, decision)
            return decision
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                results = await self._score_in_slices(pieces)
                first = self.segmenter.merge(pieces, [v for v, _ in results])
                if followup and first.ocr_text and not first.flagged:
                    more = followup(first.ocr_text)
                    pieces = pieces[:len(results)] + more
                    results += await self._score_in_slices(more)
        except Exception as exc:  # noqa: BLE001 - the fail policy decides, see _failed
            return self._failed(request_id, task, exc)
        verdict = self.segmenter.merge(pieces, [v for v, _ in results])
        timing = BatchTiming(
            queue_s=max(t.queue_s for _, t in results),
            inference_s=max(t.inference_s for _, t in results),
            batch_size=max(t.batch_size for _, t in results),
        )
        self.metrics.request_duration.labels("queue").observe(timing.queue_s)
        self.metrics.request_duration.labels("inference").observe(timing.inference_s)
        self.metrics.request_duration.labels("total").observe(time.perf_counter() - start)
        if verdict.task != task:
            log.warning("backend answered task %r for a %r item", verdict.task, task)
        if self.judge is not None and escalate is not None and self.judge.in_band(verdict.unsafe_prob):
            verdict = await self._escalate(request_id, task, verdict, *escalate)
        action: Action = self.policy.mode if verdict.flagged else "allow"
        fired: dict[str, float] = {}
        classifier_verdict = verdict  # the audit keeps it: a shadow report decides it again per policy
        if self.follows_tenant_policy:  # the tenant policy's per-node thresholds and actions
            tenant_action, verdict, fired = tenancy_scope.decide(verdict, action, self._policy.mode)
            action = tenant_action  # type: ignore[assignment]  # allow | shadow | annotate | block
        decision = GuardDecision(task, action, verdict, timing)
        self._record(request_id, decision, fired, classifier_verdict)
        return decision

    async def _score_in_slices(self, pieces: list[Piece]) -> list[tuple[Verdict, BatchTiming]]:
        """Submit ``SLICE_ITEMS`` pieces at a time (fair to other requests); stop at the first slice that
        makes the verdict flagged, since the rest cannot make it safer."""
        results: list[tuple[Verdict, BatchTiming]] = []
        for first in range(0, len(pieces), SLICE_ITEMS):
            # A TaskGroup: when one item fails, its siblings are cancelled and leave the queue.
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self.batcher.submit(p.item)) for p in pieces[first:first + SLICE_ITEMS]]
            results += [t.result() for t in tasks]
            if self.segmenter.merge(pieces, [v for v, _ in results]).flagged:
                break
        return results

    async def _escalate(self, request_id: str, task: str, student: Verdict, prompt: str,
                        response: str | None) -> Verdict:
        """The judge's answer overrides the student's flag (and names the categories when it says unsafe);
        on any judge failure the student's verdict stands, and the failure is counted and logged."""
        assert self.judge is not None
        start = time.perf_counter()
        try:
            said = await self.judge.judge(task, prompt, response)
        except JudgeError as exc:
            self.metrics.judge.labels(task, f"error_{exc.kind}").inc()
            log.warning(json.dumps({"event": "judge_failed", "request_id": request_id, "task": task,
                                    "error": exc.kind}, sort_keys=True))
            return student
        finally:
            self.metrics.judge_duration.observe(time.perf_counter() - start)
        agreed = said.unsafe == student.flagged
        outcome = ("agree_" if agreed else "override_") + ("unsafe" if said.unsafe else "safe")
        self.metrics.judge.labels(task, outcome).inc()
        if said.unsafe:
            categories = {**student.categories, **dict.fromkeys(said.nodes, 1.0)}
            return dataclasses.replace(student, flagged=True, categories=categories)
        return dataclasses.replace(student, flagged=False, categories={})

    def _failed(self, request_id: str, task: str, exc: BaseException) -> GuardDecision:
        """A check that could not be scored. Overload (a full queue: 429; too long in the queue: 504), and a
        guard timeout while the classifier is healthy (``_classifier_stalled``), are always refused, even
        under ``fail_policy=open``: fail-open is for classifier faults only, and a client that floods the
        queue or sends a huge prompt must not get its request through unscored."""
        kind, err = _classify_failure(exc)
        fail_open = self._open and kind not in OVERLOAD_KINDS and (kind != "timeout" or self._classifier_stalled())
        self.metrics.failures.labels(kind).inc()
        self.metrics.verdicts.labels(task, "error", "fail_open" if fail_open else "error").inc()
        _log_event(request_id, task, "fail_open" if fail_open else "fail_closed", None, kind)
        tenancy_scope.note(request_id, task, "fail_open" if fail_open else "fail_closed", None, kind)
        if fail_open:
            return GuardDecision(task, "fail_open", None)
        raise err from exc

    def _classifier_stalled(self) -> bool:
        """A guard timeout is the classifier's fault (so fail-open may apply) only when its model call has run
        for half the guard's budget or the last call failed; otherwise the request itself was too much work
        (a prompt of a thousand pieces) or the queue too long, and a client must not time its own check out
        into an unscored pass."""
        health = self.batcher.health
        return health.last_call_failed or health.busy_s >= self.policy.timeout_s / 2

    @property
    def _open(self) -> bool:
        return self.policy.fail_policy == "open"

    def _record(self, request_id: str, d: GuardDecision, fired: dict[str, float] | None = None,
                classifier_verdict: Verdict | None = None) -> None:
        assert d.verdict is not None
        tenancy_scope.note(request_id, d.task, d.action, classifier_verdict or d.verdict, None, fired)  # audit log
        label = "unsafe" if d.verdict.flagged else "safe"
        self.metrics.verdicts.labels(d.task, label, d.action).inc()
        for category in d.verdict.categories:
            self.metrics.categories.labels(d.task, category).inc()
        if d.verdict.flagged:
            _log_event(request_id, d.task, d.action, d.verdict, None)


OVERLOAD_KINDS = ("overloaded", "queue_timeout")


def _classify_failure(exc: BaseException) -> tuple[str, APIError]:
    """(metric label, the error to raise under fail-closed)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:  # from the TaskGroup
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "timeout", GatewayTimeout("safety guard timed out", code="guard_timeout")
    if isinstance(exc, APIError) and exc.status in (429, 504):
        kind = "overloaded" if exc.status == 429 else "queue_timeout"
        return kind, type(exc)(exc.message, code=f"guard_{kind}")
    return "backend_error", ServiceUnavailable("safety guard unavailable", code="guard_unavailable")


def _log_event(
    request_id: str, task: str, action: str, verdict: Verdict | None, error: str | None
) -> None:
    """One structured line per blocked / flagged / failed check (no request content)."""
    record: dict[str, object] = {"event": "guard", "request_id": request_id, "task": task}
    record["action"] = action
    if verdict is not None:
        record["verdict"] = {
            "flagged": verdict.flagged,
            "unsafe_prob": round(verdict.unsafe_prob, 4),
            "categories": {k: round(v, 4) for k, v in verdict.categories.items()},
        }
    if error is not None:
        record["error"] = error
    log.warning(json.dumps(record, sort_keys=True))


@dataclass
class StreamStep:
    """What a stream may release now; ``decision`` is set when this step scored text."""

    release: str = ""
    blocked: bool = False
    decision: GuardDecision | None = None


@dataclass
class StreamGuard:
    """Hold-back window over a streamed response.

    In block mode, text is released only after it has been scored (the new text plus up to a
    window of what came before): first after ``stream_first_release_chars`` characters, then
    every ``stream_holdback_chars`` characters, and once more at the end. In annotate and
    shadow modes text passes through at once and the full response is scored at the end.
    """

    guard: Guard
    request_id: str
    prompt: GuardInput
    prompt_decision: GuardDecision
    text: str = ""
    pending: str = ""
    scored_upto: int = 0  # text[:scored_upto] has been scored (windows overlap back into it)
    last: GuardDecision | None = field(default=None)

    @property
    def _window(self) -> int:
        """Characters to collect before the next scoring. The first release uses a shorter
        window so time to first token stays short; it is scored like any other."""
        policy = self.guard.policy
        if self.scored_upto == 0:
            return min(policy.stream_first_release_chars, policy.stream_holdback_chars)
        return policy.stream_holdback_chars

    @property
    def _holding(self) -> bool:
        return self.guard.policy.mode == "block"

    async def push(self, delta: str) -> StreamStep:
        self.text += delta
        if not self._holding:
            return StreamStep(release=delta)
        self.pending += delta
        if len(self.pending) < self._window:
            return StreamStep()
        return await self._score_and_release()

    async def finish(self) -> StreamStep:
        """Score what is left (or the whole response outside block mode) and release it."""
        if not self.text:
            return StreamStep()
        if self._holding and not self.pending:
            return StreamStep()
        return await self._score_and_release()

    async def _score_and_release(self) -> StreamStep:
        decision = await self.guard.check_output(
            self.request_id, self.prompt, self.prompt_decision, self.text, self.scored_upto
        )
        self.scored_upto = len(self.text)
        self.last = decision
        if decision.blocked:
            self.pending = ""
            return StreamStep(blocked=True, decision=decision)
        release, self.pending = self.pending, ""
        return StreamStep(release=release, decision=decision)
