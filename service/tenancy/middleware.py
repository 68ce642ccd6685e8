"""``TenancyMiddleware``: authenticate, select the policy, apply the limits, and audit every guarded request.

For a ``/v1/*`` request, in order (each refusal is one OpenAI error envelope, sent here):

1. ``--auth required``: ``Authorization: Bearer sk-spa-...`` must name a stored key (401 when missing or
   unknown), not revoked (403, code ``key_revoked``).
2. Policy: the key's own, or the one the ``x-spaguard-policy`` header selects; an unknown name is 400
   (``param: "x-spaguard-policy"``), one the tenant may not use is 403 (``policy_not_allowed``). Without a
   key (``--auth off``) the header may select any loaded policy, else ``--default-policy`` applies.
3. Limits: the key's requests / tokens per minute (429 ``rate_limit_exceeded`` with ``Retry-After`` and
   OpenAI's ``x-ratelimit-*`` headers, which also come back on every admitted answer), and the tenant's
   share of the in-flight requests (429 ``tenant_concurrency``).
4. The request runs with its ``RequestScope`` in ``service.tenancy.scope.CURRENT``: the guard applies the
   policy and notes each check in it.
5. Audit (``service.audit.log``): when the guard made a decision, the record is committed before the
   answer leaves: a JSON answer is held until its record is written (503 ``audit_unavailable`` if that
   fails: no answer without its record); a stream's record is written when the stream starts and again
   before its last chunk. The request id is the ``x-request-id`` the client sees.

Operator endpoints (``/metrics``, ``/docs``, ``/redoc``, ``/openapi.json``) need an operator key
(``Authorization: Bearer ...``) when ``--protect-operator-endpoints`` is on; the operator page (``/operator``,
``service.operator.page``) always does, as a bearer key or its login cookie (``/operator/login`` is open).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
from http.cookies import CookieError, SimpleCookie
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.audit.log import AuditLog, build_record
from service.errors import APIError, InvalidRequest, Unauthorized, envelope
from service.tenancy.config import TenancyConfig
from service.tenancy.db import Database, open_database
from service.tenancy.errors import AuditUnavailable, Forbidden, RateLimited
from service.tenancy.keys import KeyRecord, KeyStore
from service.tenancy.limits import ConcurrencyShare, RateDecision, RateLimiter
from service.tenancy.policies import PolicySet, TenantPolicy, node_keys_of
from service.tenancy.scope import CURRENT, RequestScope

log = logging.getLogger("spaguard.tenancy")

POLICY_HEADER = b"x-spaguard-policy"
OPERATOR_PATHS = ("/metrics", "/docs", "/redoc", "/openapi.json", "/operator")
OPERATOR_LOGIN = "/operator/login"  # open: it trades the key for the page's cookie
OPERATOR_COOKIE = "spaguard_operator"  # set by service.operator.page's login (HttpOnly, SameSite=Strict)
MAX_RECORDED_CHARS = 256 * 1024  # raw content kept per side when a policy records content
_TOTAL_TOKENS = re.compile(rb'"total_tokens"\s*:\s*(\d+)')
_USAGE_TAIL_BYTES = 4096  # a stream's usage chunk comes last


class Tenancy:
    """The keys, policies, limits and audit log one server uses (the middleware's and the lifespan's)."""

    def __init__(self, config: TenancyConfig, db: Database | None, policies: PolicySet) -> None:
        if config.auth == "required" and db is None:
            raise ValueError("--auth required needs a key database (--db)")
        if policies.get(config.default_policy) is None:
            raise ValueError(f"--default-policy {config.default_policy!r} is not loaded "
                             f"(loaded: {', '.join(policies.names)})")
        self.config = config
        self.db = db
        self.policies = policies
        self.keys = KeyStore(db) if db is not None else None
        self.audit = AuditLog(db) if db is not None and config.audit else None
        self.limiter = RateLimiter()
        self.share = ConcurrencyShare(config.max_inflight, config.tenant_share)
        self._operator_keys = tuple(k.encode() for k in config.operator_keys)

    @classmethod
    def from_config(cls, config: TenancyConfig, artifact: Any = None) -> Tenancy:
        """Load the policies (validated against the taxonomy of the classifier ``artifact``) and open the
        database; ``ValueError`` with the fix on a bad policy file or database URL."""
        policies = PolicySet(config.policies, node_keys_of(artifact))
        db = open_database(config.db_url) if config.db_url else None
        try:
            return cls(config, db, policies)
        except ValueError:
            if db is not None:
                db.close()
            raise

    async def watch_policies(self) -> None:
        """Reload the policies when a file changes, every ``policy_reload_s`` (run as a task; cancelled at stop)."""
        if self.config.policy_reload_s <= 0 or self.policies.path is None:
            return
        while True:
            await asyncio.sleep(self.config.policy_reload_s)
            await asyncio.to_thread(self.policies.reload)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()

    @property
    def has_operator_keys(self) -> bool:
        return bool(self._operator_keys)

    def operator_ok(self, headers: dict[bytes, bytes], cookie: bool = False) -> bool:
        """An operator key in ``Authorization: Bearer`` (or, with ``cookie``, the operator page's cookie)."""
        token = _bearer(headers)
        if token is None and cookie:
            token = _cookie(headers, OPERATOR_COOKIE)
        return token is not None and any(hmac.compare_digest(token, k) for k in self._operator_keys)

    async def admit(self, headers: dict[bytes, bytes]) -> tuple[KeyRecord | None, TenantPolicy, RateDecision | None]:
        """Steps 1-3 of the module docstring (the concurrency share aside); raises ``APIError``."""
        record: KeyRecord | None = None
        if self.config.auth == "required":
            assert self.keys is not None
            token = _bearer(headers)
            if token is None:
                raise Unauthorized("missing API key: send Authorization: Bearer sk-spa-...")
            record = await asyncio.to_thread(self.keys.lookup, token.decode("latin-1"))
            if record is None:
                raise Unauthorized("invalid API key")
            if record.revoked:
                raise Forbidden("this API key has been revoked", code="key_revoked")
        policy = await self._policy(headers, record)
        decision = None
        if record is not None and (record.rpm is not None or record.tpm is not None):
            decision = self.limiter.check(record.key_id, record.rpm, record.tpm)
            if not decision.allowed:
                raise RateLimited(f"rate limit reached for this key ({decision.reason} per minute); "
                                  "retry after the time in the Retry-After header", headers=decision.headers())
        return record, policy, decision

    async def _policy(self, headers: dict[bytes, bytes], record: KeyRecord | None) -> TenantPolicy:
        asked = headers.get(POLICY_HEADER)
        name = asked.decode("latin-1").strip() if asked else (record.policy if record else self.config.default_policy)
        policy = self.policies.get(name)
        if policy is None:
            if asked:
                raise InvalidRequest(f"unknown policy {name[:64]!r} (loaded: {', '.join(self.policies.names)})",
                                     param="x-spaguard-policy", code="unknown_policy")
            raise Forbidden(f"this key's policy {name!r} is not loaded on this server", code="policy_unavailable")
        if asked and record is not None and name != record.policy:
            assert self.keys is not None
            if not await asyncio.to_thread(self.keys.allowed, record.tenant, name):
                raise Forbidden(f"tenant {record.tenant!r} may not use policy {name!r}", code="policy_not_allowed",
                                param="x-spaguard-policy")
        return policy


def _cookie(headers: dict[bytes, bytes], name: str) -> bytes | None:
    jar = SimpleCookie()
    try:
        jar.load(headers.get(b"cookie", b"").decode("latin-1"))
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value.encode("latin-1") if morsel is not None and morsel.value else None


def _bearer(headers: dict[bytes, bytes]) -> bytes | None:
    scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
    token = token.strip()
    return token if scheme.lower() == b"bearer" and token else None


class TenancyMiddleware:
    """Pure ASGI (the request's context, and so its ``RequestScope``, reaches the route and its stream)."""

    def __init__(self, app: ASGIApp, tenancy: Tenancy) -> None:
        self.app = app
        self.tenancy = tenancy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = dict(scope.get("headers") or [])
        t = self.tenancy
        if path.startswith(OPERATOR_PATHS):
            page = path == "/operator" or path.startswith("/operator/")
            guarded = (page and path != OPERATOR_LOGIN) or (not page and t.config.protect_operator)
            if guarded and not t.operator_ok(headers, cookie=page):
                await send_error(send, Unauthorized("this operator endpoint needs an operator key "
                                                    "(Authorization: Bearer ...)", code="operator_key_required"))
                return
            await self.app(scope, receive, send)
            return
        if not path.startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        try:
            record, policy, rate = await t.admit(headers)
        except APIError as exc:
            await send_error(send, exc, exc.headers if isinstance(exc, RateLimited) else None)
            return
        tenant = record.tenant if record else None
        if tenant is not None and not t.share.acquire(tenant):
            err = RateLimited(f"tenant {tenant!r} has {t.share.per_tenant} requests in flight, its share of this "
                              "server; retry shortly", code="tenant_concurrency", headers={"retry-after": "1"})
            await send_error(send, err, err.headers)
            return
        request_scope = RequestScope(tenant, record.key_id if record else None, policy)
        exchange = _Exchange(t, request_scope, path, rate, send)
        token = CURRENT.set(request_scope)
        try:
            await self.app(scope, exchange.receive(receive), exchange.send)
        finally:
            CURRENT.reset(token)
            if tenant is not None:
                t.share.release(tenant)
            if record is not None:
                t.limiter.charge(record.key_id, exchange.tokens())


class _Exchange:
    """One request's body hashes, its held answer and its audit writes."""

    def __init__(self, tenancy: Tenancy, scope: RequestScope, path: str, rate: RateDecision | None,
                 send: Send) -> None:
        self.t, self.scope, self.path, self.rate, self._send = tenancy, scope, path, rate, send
        self.keep = scope.policy is not None and scope.policy.record_content
        self.req_hash, self.resp_hash = hashlib.sha256(), hashlib.sha256()
        self.req_bytes = 0
        self.req_raw, self.resp_raw = bytearray(), bytearray()
        self.tail = b""
        self.start: Message | None = None  # a JSON answer's start, held until its record is written
        self.held: list[Message] = []
        self.streaming = False
        self.status = 0
        self.request_id: str | None = None

    def receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                self.req_hash.update(body)
                self.req_bytes += len(body)
                if self.keep and len(self.req_raw) < MAX_RECORDED_CHARS:
                    self.req_raw += body[: MAX_RECORDED_CHARS - len(self.req_raw)]
            return message

        return wrapped

    def tokens(self) -> int:
        """Tokens to charge: the answer's ``usage.total_tokens``, else about 4 bytes of request per token."""
        found = _TOTAL_TOKENS.findall(self.tail)
        return int(found[-1]) if found else (self.req_bytes + 3) // 4

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            extra = [(k.encode(), v.encode()) for k, v in (self.rate.headers() if self.rate else {}).items()]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
            hdrs = {k.lower(): v for k, v in message["headers"]}
            self.status = int(message["status"])
            self.request_id = hdrs.get(b"x-request-id", b"").decode("latin-1") or None
            self.streaming = hdrs.get(b"content-type", b"").startswith(b"text/event-stream")
            if self.streaming:
                await self._audit(final=False)  # the prompt's verdict, before the first byte
                await self._send(message)
            else:
                self.start = message
            return
        if message["type"] == "http.response.body":
            body = message.get("body", b"")
            self.resp_hash.update(body)
            self.tail = (self.tail + body)[-_USAGE_TAIL_BYTES:]
            if self.keep and len(self.resp_raw) < MAX_RECORDED_CHARS:
                self.resp_raw += body[: MAX_RECORDED_CHARS - len(self.resp_raw)]
            last = not message.get("more_body", False)
            if self.streaming:
                if last:
                    await self._audit(final=True)
                await self._send(message)
                return
            self.held.append(message)
            if last:
                await self._release()
            return
        await self._send(message)

    async def _release(self) -> None:
        assert self.start is not None
        try:
            await self._audit(final=True)
        except AuditUnavailable as exc:
            await send_error(self._send, exc)
            return
        await self._send(self.start)
        for message in self.held:
            await self._send(message)

    async def _audit(self, final: bool) -> None:
        """Commit this request's record (if the guard decided anything); ``AuditUnavailable`` on failure of a
        JSON answer's record (a stream under way cannot change its status: logged instead)."""
        audit = self.t.audit
        if audit is None or not self.scope.checks:
            return
        request_id = self.request_id or self.scope.checks[0].request_id or "unknown"
        hashes = {"request": self.req_hash.hexdigest()}
        if final:
            hashes["response"] = self.resp_hash.hexdigest()
        content = None
        if self.keep:
            content = {"request": self.req_raw.decode("utf-8", "replace"),
                       "response": self.resp_raw.decode("utf-8", "replace")}
        record = build_record(self.scope, request_id, self.path, self.status, hashes, content)
        try:
            await asyncio.to_thread(audit.write, record)
        except Exception as exc:  # noqa: BLE001 - any database failure means the record is not durable
            log.error("audit write failed for %s: %s", request_id, exc)
            if not self.streaming:
                raise AuditUnavailable("the audit log is unavailable, so the answer is withheld") from exc


async def send_error(send: Send, exc: APIError, extra: dict[str, str] | None = None) -> None:
    body = envelope(exc).model_dump_json().encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if exc.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
