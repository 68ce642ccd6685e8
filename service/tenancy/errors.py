"""The tenancy's API errors (``service.errors.APIError`` subclasses: the same OpenAI envelope)."""

from __future__ import annotations

from service.errors import APIError


class Forbidden(APIError):
    """A known key that may not do this: revoked, or a policy its tenant is not allowed."""

    status, type, code = 403, "permission_error", "forbidden"


class RateLimited(APIError):
    """A key over its requests/tokens per minute, or a tenant over its concurrency share (429)."""

    status, type, code = 429, "rate_limit_error", "rate_limit_exceeded"

    def __init__(self, message: str, *, headers: dict[str, str], code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.headers = headers  # Retry-After and the x-ratelimit-* headers sent with the 429


class AuditUnavailable(APIError):
    """The audit record could not be committed, so the answer is withheld (503)."""

    status, type, code = 503, "service_unavailable", "audit_unavailable"
