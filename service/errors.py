"""API errors: typed exceptions, one status table, OpenAI's error envelope.

Services *raise* ``APIError`` subclasses (or ``EngineError``); only the handlers registered here
build responses, so a route can never send an error body with status 200. Messages are capped at
``MAX_ERROR_MESSAGE_CHARS`` and never include request content: validation errors report the
field path and the rule that failed, not the value.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.engines.base import EngineError
from service.protocol import TOO_LARGE, ErrorInfo, ErrorResponse, param_name
from service.settings import MAX_ERROR_MESSAGE_CHARS

log = logging.getLogger("spaguard.errors")


class APIError(Exception):
    """Base of the errors the API answers with; subclasses fix ``status``, ``type`` and ``code``."""

    status: int = 500
    type: str = "internal_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(APIError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class ContentFiltered(APIError):
    """The guard blocked the request or its response (``block_style=error``)."""

    status, type, code = 400, "invalid_request_error", "content_filter"


class Unauthorized(APIError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class NotFound(APIError):
    status, type, code = 404, "not_found_error", "not_found"


class PayloadTooLarge(APIError):
    status, type, code = 413, "invalid_request_error", "payload_too_large"


class Overloaded(APIError):
    status, type, code = 429, "rate_limit_error", "overloaded"


class ClientDisconnected(APIError):
    """The client went away before the answer was ready (499, nginx's convention; unread)."""

    status, type, code = 499, "client_closed_request", "client_disconnected"


class UpstreamError(APIError):
    status, type, code = 502, "upstream_error", "upstream_error"


class ServiceUnavailable(APIError):
    status, type, code = 503, "service_unavailable", "service_unavailable"


class GatewayTimeout(APIError):
    status, type, code = 504, "timeout_error", "timeout"


_HTTP_STATUS = {
    400: InvalidRequest,
    401: Unauthorized,
    404: NotFound,
    413: PayloadTooLarge,
    429: Overloaded,
    503: ServiceUnavailable,
    504: GatewayTimeout,
}


_HTTP_MESSAGES = {404: "not found", 413: "request body too large"}


def _cap(message: str) -> str:
    if len(message) <= MAX_ERROR_MESSAGE_CHARS:
        return message
    return message[: MAX_ERROR_MESSAGE_CHARS - 3] + "..."


def envelope(exc: APIError) -> ErrorResponse:
    """The OpenAI error body for ``exc``."""
    info = ErrorInfo(message=_cap(exc.message), type=exc.type, param=exc.param, code=exc.code)
    return ErrorResponse(error=info)


def from_engine_error(exc: EngineError) -> APIError:
    """Map an engine failure to the API error with the engine's status."""
    cls = _HTTP_STATUS.get(exc.status, UpstreamError)
    code = getattr(exc, "code", None) or {
        400: "engine_rejected", 503: "engine_unavailable", 504: "engine_timeout",
    }.get(exc.status)
    # Engine messages come from our own engines and never carry request content.
    param = "messages" if code == "context_length_exceeded" else None
    return cls(f"engine error: {exc}", code=code or "engine_error", param=param)


def error_json(exc: APIError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(envelope(exc).model_dump(), status_code=exc.status, headers=headers)


# pydantic error types whose ``msg`` quotes the offending input: replaced by a fixed text.
_ECHOING_ERRORS = {
    "union_tag_invalid": "unknown content part type",
    "union_tag_not_found": "content part needs a 'type'",
    "json_invalid": "body is not valid JSON",
    "extra_forbidden": "unknown field: not part of this request's schema",
}


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """A short message for pydantic errors: field paths and rules, never the input values."""
    parts, param = [], None
    for err in errors[:5]:
        loc = [param_name(str(p)) for p in err.get("loc", ()) if p not in ("body",)]
        if err.get("type") == "unknown_parameter":  # raised on the whole body: the key is in its context
            loc.append(str((err.get("ctx") or {}).get("param", "")))
        where = ".".join(loc) or "body"
        param = param or where
        # The ``msg`` of pydantic errors states the rule (e.g. "Input should be ..."), not the value,
        # except for ``ValueError``s we raise ourselves, which we write without request content.
        msg = _ECHOING_ERRORS.get(err.get("type", ""), err.get("msg", "invalid"))
        parts.append(f"{where}: {msg}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "invalid request: " + "; ".join(parts) + more, param


def record_failure(request: Request, exc: APIError) -> None:
    """One structured log line per failed request; server-side failures and client disconnects
    are also counted (the guard counts its own failures, labelled by kind, where they happen)."""
    request_id = getattr(request.state, "request_id", None)
    record = {"event": "request_failed", "request_id": request_id, "status": exc.status,
              "code": exc.code, "path": request.url.path}
    log.warning(json.dumps(record, sort_keys=True))
    metrics = getattr(request.app.state, "metrics", None)
    counted = exc.status >= 500 or exc.status == ClientDisconnected.status  # 499: the client left
    if metrics is not None and counted and not (exc.code or "").startswith("guard_"):
        metrics.failures.labels(exc.code or "internal_error").inc()


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    record_failure(request, exc)
    return error_json(exc)


async def _engine_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EngineError)
    err = from_engine_error(exc)
    record_failure(request, err)
    return error_json(err)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    message, param = validation_message(errors)
    if any(e.get("type") == TOO_LARGE for e in errors):  # a size cap of protocol.check_body
        return error_json(PayloadTooLarge(message, param=param))
    unknown = any(e.get("type") in ("unknown_parameter", "extra_forbidden") for e in errors)
    return error_json(InvalidRequest(message, param=param, code="unknown_parameter" if unknown else None))


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        err: APIError = InvalidRequest("method not allowed", code="method_not_allowed")
        err.status = 405
        return error_json(err)
    cls = _HTTP_STATUS.get(exc.status_code, APIError)
    message = _HTTP_MESSAGES.get(exc.status_code, f"http error {exc.status_code}")
    err = cls(message)
    err.status = exc.status_code
    return error_json(err)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    err = APIError("internal server error")
    record_failure(request, err)
    return error_json(err)


def register_error_handlers(app: FastAPI) -> None:
    """Most specific first, ``Exception`` last, so metrics middleware sees real statuses."""
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(EngineError, _engine_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)
