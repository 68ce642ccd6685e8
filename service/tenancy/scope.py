"""The per-request scope: who called, under which policy, and what the guard decided.

``TenancyMiddleware`` opens a ``RequestScope`` for every /v1/* request and sets it in ``CURRENT``; the
guard (``service.guard``) reads it to apply the request's policy (``guard_policy``, ``decide``) and
appends each check to it (``note``), and the middleware writes the collected checks to the audit log.
A contextvar carries it because the request pipelines (``service.serving``) pass only a request id to
the guard; a streaming response's body task copies the context, and the scope is one mutable object,
so checks made while streaming land in the same scope.

Outside a request (tests that build a ``Guard`` by hand, warm-up) ``CURRENT`` is unset and every helper
is a no-op that returns the server-wide answer.
"""

from __future__ import annotations

import contextvars
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from models.backends import Verdict
from service.config import GuardPolicy
from service.tenancy.policies import TenantPolicy


@dataclass
class CheckRecord:
    """One guard check as the audit log keeps it."""

    task: str
    action: str
    verdict: Verdict | None
    error: str | None = None
    fired: dict[str, float] = field(default_factory=dict)  # the policy rules that fired (node -> score)
    request_id: str | None = None


@dataclass
class RequestScope:
    tenant: str | None
    key_id: str | None
    policy: TenantPolicy | None  # None: the server's flags apply unchanged
    started: float = field(default_factory=time.perf_counter)
    checks: list[CheckRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "key_id": self.key_id,
                "policy": self.policy.name if self.policy else None,
                "policy_version": self.policy.version if self.policy else None}


CURRENT: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar("spaguard_request_scope", default=None)


def guard_policy(base: GuardPolicy) -> GuardPolicy:
    """``base`` as the current request's policy changes it (``TenantPolicy.apply``)."""
    scope = CURRENT.get()
    if scope is None or scope.policy is None:
        return base
    return scope.policy.apply(base)


def decide(verdict: Verdict, default_action: str, base_mode: str) -> tuple[str, Verdict, dict[str, float]]:
    """The action for ``verdict`` under the current request's policy; without one, ``default_action`` (the
    guard's own). Returns (action, the verdict with ``flagged``/``categories`` as the policy sees them, the
    rules that fired)."""
    scope = CURRENT.get()
    if scope is None or scope.policy is None:
        return default_action, verdict, {}
    decision = scope.policy.decide(verdict, base_mode)
    flagged = decision.action != "allow"
    categories = dict(verdict.categories) if "default" in decision.fired else {}
    categories.update({k: v for k, v in decision.fired.items() if k != "default"})
    if not flagged:
        categories = {}
    return decision.action, dataclasses.replace(verdict, flagged=flagged, categories=categories), decision.fired


def note(request_id: str, task: str, action: str, verdict: Verdict | None, error: str | None = None,
         fired: dict[str, float] | None = None) -> None:
    """Record one check in the current scope (no-op outside a request)."""
    scope = CURRENT.get()
    if scope is None:
        return
    scope.checks.append(CheckRecord(task, action, verdict, error, dict(fired or {}), request_id))


def refusal(task: str, categories: dict[str, float]) -> str | None:
    """The current policy's refusal message for a block, or None for the server's."""
    scope = CURRENT.get()
    if scope is None or scope.policy is None:
        return None
    return scope.policy.refusal_text(task, categories)
