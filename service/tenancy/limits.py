"""Per-key rate limits (requests and tokens per minute) and each tenant's share of the in-flight requests.

* ``RateLimiter.check(key_id, rpm, tpm)`` → a ``RateDecision``: allowed or not, OpenAI's ``x-ratelimit-*``
  header values, and ``retry_after_s`` when refused. A request counts when it is admitted; its tokens are
  charged when it ends (``charge``), so a request is refused once the key's last minute holds ``tpm``
  tokens or ``rpm`` requests. Sliding one-minute windows, in this process's memory: a replica set shares
  no counters (each replica enforces the limit on its own traffic).
* ``ConcurrencyShare(capacity, share)``: a tenant may hold at most ``max(1, floor(capacity * share))`` of
  the requests in flight at once, so one tenant's burst cannot take every slot; ``acquire`` is
  non-blocking (the caller answers 429) and ``release`` frees the slot.

Both are used from the event loop only (no locks needed).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_S = 60.0


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit_requests: int | None
    remaining_requests: int | None
    reset_requests_s: float
    limit_tokens: int | None
    remaining_tokens: int | None
    reset_tokens_s: float
    retry_after_s: float = 0.0
    reason: str = ""  # "requests" | "tokens" when refused

    def headers(self) -> dict[str, str]:
        """OpenAI's rate-limit headers for the limits this key has."""
        out: dict[str, str] = {}
        if self.limit_requests is not None:
            out["x-ratelimit-limit-requests"] = str(self.limit_requests)
            out["x-ratelimit-remaining-requests"] = str(self.remaining_requests)
            out["x-ratelimit-reset-requests"] = _duration(self.reset_requests_s)
        if self.limit_tokens is not None:
            out["x-ratelimit-limit-tokens"] = str(self.limit_tokens)
            out["x-ratelimit-remaining-tokens"] = str(self.remaining_tokens)
            out["x-ratelimit-reset-tokens"] = _duration(self.reset_tokens_s)
        if not self.allowed:
            out["retry-after"] = str(max(1, math.ceil(self.retry_after_s)))
        return out


def _duration(seconds: float) -> str:
    """OpenAI writes resets as durations: ``1s``, ``6m0s``, ``0.5s``... here always seconds, e.g. ``12.3s``."""
    return f"{max(0.0, seconds):.3g}s" if seconds < 10 else f"{math.ceil(seconds)}s"


class RateLimiter:
    """Sliding one-minute windows of requests and tokens per key."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._requests: dict[str, deque[float]] = defaultdict(deque)
        self._tokens: dict[str, deque[tuple[float, int]]] = defaultdict(deque)

    def _expire(self, key_id: str, now: float) -> None:
        reqs, toks = self._requests[key_id], self._tokens[key_id]
        while reqs and reqs[0] <= now - WINDOW_S:
            reqs.popleft()
        while toks and toks[0][0] <= now - WINDOW_S:
            toks.popleft()

    def check(self, key_id: str, rpm: int | None, tpm: int | None) -> RateDecision:
        """Admit (and count) one request of ``key_id``, or refuse it with how long to wait."""
        now = self.clock()
        self._expire(key_id, now)
        reqs, toks = self._requests[key_id], self._tokens[key_id]
        used_tokens = sum(n for _, n in toks)
        reset_r = (reqs[0] + WINDOW_S - now) if reqs else 0.0
        reset_t = (toks[0][0] + WINDOW_S - now) if toks else 0.0
        reason, wait = "", 0.0
        if rpm is not None and len(reqs) >= rpm:
            reason, wait = "requests", reqs[len(reqs) - rpm] + WINDOW_S - now
        elif tpm is not None and used_tokens >= tpm:
            # wait until enough of the oldest charges expire to bring the window under the limit
            excess, t_free = used_tokens - tpm + 1, reset_t
            for t, n in toks:
                excess -= n
                t_free = t + WINDOW_S - now
                if excess <= 0:
                    break
            reason, wait = "tokens", t_free
        allowed = not reason
        if allowed:
            reqs.append(now)
            reset_r = reqs[0] + WINDOW_S - now
        return RateDecision(
            allowed=allowed,
            limit_requests=rpm, remaining_requests=None if rpm is None else max(0, rpm - len(reqs)),
            reset_requests_s=reset_r,
            limit_tokens=tpm, remaining_tokens=None if tpm is None else max(0, tpm - used_tokens),
            reset_tokens_s=reset_t, retry_after_s=max(wait, 0.001), reason=reason,
        )

    def charge(self, key_id: str, tokens: int) -> None:
        """Count ``tokens`` a finished request of ``key_id`` used."""
        if tokens > 0:
            self._tokens[key_id].append((self.clock(), tokens))


class ConcurrencyShare:
    """At most ``per_tenant`` requests of one tenant in flight."""

    def __init__(self, capacity: int, share: float) -> None:
        if capacity < 1 or not 0 < share <= 1:
            raise ValueError("capacity must be >= 1 and share in (0, 1]")
        self.per_tenant = max(1, math.floor(capacity * share))
        self._inflight: dict[str, int] = defaultdict(int)

    def acquire(self, tenant: str) -> bool:
        if self._inflight[tenant] >= self.per_tenant:
            return False
        self._inflight[tenant] += 1
        return True

    def release(self, tenant: str) -> None:
        self._inflight[tenant] -= 1
        if self._inflight[tenant] <= 0:
            del self._inflight[tenant]

    def inflight(self, tenant: str) -> int:
        return self._inflight.get(tenant, 0)
