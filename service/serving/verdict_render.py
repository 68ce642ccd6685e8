"""The guard's decisions as the API shows them: ``x-guard-*`` headers and the ``safety`` field.

Whether a verdict is shown is the guard's call (``Outcome.report``, true in annotate mode); this
module only renders it.

* ``x-guard-queue-time`` and ``x-guard-inference-time`` (seconds, 6 decimals) come back on every
  response. A chat request's checks run one after another, so their times add up
  (``guard_headers``); moderation inputs are scored concurrently, so the slowest one counts
  (``moderation_headers``).
* With ``report``, ``guard_headers`` adds ``x-guard-action`` (the most severe action of the
  request's checks) and, for each check that has a verdict, ``x-guard-<task>-flagged``,
  ``x-guard-<task>-unsafe-prob`` (4 decimals) and ``x-guard-<task>-categories`` (the
  ``MAX_HEADER_CATEGORIES`` most likely fired nodes as ``name=p,...``); ``safety_field`` returns
  the body's ``SafetyVerdict``, which lists them all. Without ``report`` it returns None.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from models.backends import Verdict
from service.config import Action
from service.guard import GuardDecision
from service.protocol import SafetyVerdict, TaskVerdict

MAX_HEADER_CATEGORIES = 8  # header values stay short; the body's ``safety`` field lists them all

# Least to most severe: what one request reports when its checks acted differently.
_SEVERITY: tuple[Action, ...] = ("off", "allow", "shadow", "annotate", "fail_open", "block")


def guard_headers(*decisions: GuardDecision | None, report: bool) -> dict[str, str]:
    """Headers for a chat request's checks (None: a check that did not run)."""
    found = [d for d in decisions if d is not None]
    headers = _timing_headers(found, sum)
    if not report:
        return headers
    headers["x-guard-action"] = _overall_action(found)
    for d in found:
        if d.verdict is None:
            continue
        headers[f"x-guard-{d.task}-flagged"] = str(d.verdict.flagged).lower()
        headers[f"x-guard-{d.task}-unsafe-prob"] = f"{d.verdict.unsafe_prob:.4f}"
        top = sorted(d.verdict.categories.items(), key=lambda kv: -kv[1])[:MAX_HEADER_CATEGORIES]
        # Taxonomy keys hold spaces and '&' (fine in header values) but never ',' or '='.
        headers[f"x-guard-{d.task}-categories"] = ",".join(f"{k}={p:.4f}" for k, p in top)
    return headers


def moderation_headers(decisions: Sequence[GuardDecision]) -> dict[str, str]:
    """Timing headers for concurrently scored moderation inputs."""
    return _timing_headers(decisions, lambda seconds: max(seconds, default=0.0))


def safety_field(*decisions: GuardDecision | None, report: bool) -> SafetyVerdict | None:
    """The body's ``safety`` field for a chat request's checks, or None without ``report``."""
    if not report:
        return None
    found = [d for d in decisions if d is not None]
    by_task = {d.task: d.verdict for d in found if d.verdict is not None}
    return SafetyVerdict(
        action=_overall_action(found),
        prompt=task_verdict(by_task["prompt"]) if "prompt" in by_task else None,
        response=task_verdict(by_task["response"]) if "response" in by_task else None,
    )


def task_verdict(verdict: Verdict) -> TaskVerdict:
    """One check's verdict on the wire: flag, probability and the fired taxonomy nodes."""
    return TaskVerdict(flagged=verdict.flagged, unsafe_prob=verdict.unsafe_prob,
                       categories=dict(verdict.categories))


def _timing_headers(
    decisions: Sequence[GuardDecision], combine: Callable[[list[float]], float]
) -> dict[str, str]:
    timings = [d.timing for d in decisions if d.timing is not None]
    return {
        "x-guard-queue-time": f"{combine([t.queue_s for t in timings]):.6f}",
        "x-guard-inference-time": f"{combine([t.inference_s for t in timings]):.6f}",
    }


def _overall_action(decisions: Sequence[GuardDecision]) -> Action:
    actions = [d.action for d in decisions] or ["allow"]
    return max(actions, key=_SEVERITY.index)
