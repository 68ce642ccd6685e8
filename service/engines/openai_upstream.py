"""OpenAIUpstreamEngine: an ``EngineClient`` over HTTP to any OpenAI-compatible server
(``vllm serve``, TGI, llama.cpp server, OpenAI itself).

Contract (see ``service.engines.base``)
--------------------------------------
* ``config.upstream_url`` is the API base as the ``openai`` client takes it, e.g.
  ``http://127.0.0.1:8001/v1`` (a URL without ``/v1`` gets it appended). ``config.model`` is the
  upstream model id; without it the first id of ``GET /v1/models`` is used. That lookup is
  bounded by ``DISCOVERY_TIMEOUT_S``: an upstream that hangs at start-up does not hold the
  server's start (issue 11: it blocked 128 s); the engine starts, ``check_health`` reports it
  down and retries the lookup, and ``generate`` retries it too.
* Context: the ``max_model_len`` of the model's ``/v1/models`` entry (vLLM lists it), else
  ``config.max_model_len``. ``check_request`` counts a prompt that might not fit with the
  upstream's ``POST /tokenize`` (vLLM's); an upstream without it judges the prompt itself.
* ``generate`` always streams from upstream (``stream_options.include_usage``) and passes each
  delta of every choice through: content, ``reasoning_content`` (or ``reasoning``), ``refusal``,
  tool-call pieces and logprobs, by choice ``index``. Each choice's final output carries its
  upstream ``finish_reason`` and the usage counts (the completion count split evenly over the
  choices, since the upstream reports one sum); before that, ``completion_tokens`` counts a
  choice's chunks (one per token on vLLM).
* Parameters: the core sampling ones, plus every optional OpenAI parameter the request set
  (``SamplingParams.upstream``: tools, tool_choice, parallel_tool_calls, response_format, n,
  logprobs, top_logprobs, logit_bias, user, metadata, reasoning_effort, ...) as the client sent them.
  Unknown fields (the SDK's ``extra_body``) are not forwarded: a vendor field such as vLLM's
  ``chat_template`` would put text before the model that the guard never scored.
* Messages: ``tool`` results and assistant ``tool_calls`` go up in OpenAI's shape. A raw prompt
  (``EngineRequest.prompt``) goes to the upstream's ``/v1/completions`` instead, parsed alike.
* Images are re-encoded as ``data:`` URLs, so the upstream never fetches anything.
* Errors: cannot connect → ``EngineUnavailable`` (503); timeout → ``EngineTimeout`` (504);
  upstream 4xx → ``EngineBadRequest`` (400, upstream message kept); 5xx, a broken stream or an
  error event mid-stream → ``EngineError`` (502).
* ``abort(id)`` closes that request's upstream stream (vLLM aborts the request when its client
  disconnects); the aborted iterator ends quietly.
* ``check_health`` hits ``<root>/health`` and falls back to ``/v1/models`` when that is 404.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from service.engines.capabilities import OPENAI_UPSTREAM
from service.engines.base import (
    EngineBadRequest,
    EngineConfig,
    EngineError,
    EngineOutput,
    EngineRequest,
    EngineTimeout,
    EngineUnavailable,
    PromptTooLong,
    TokenLogprob,
    ToolCallDelta,
    fits_without_counting,
    text_token_bound,
)

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
DISCOVERY_TIMEOUT_S = 5.0  # GET /v1/models at start-up and in health checks
TOKENIZE_TIMEOUT_S = 5.0  # POST /tokenize in check_request (then the upstream judges the prompt)
MIN_CONTEXT_TOKENS = 256  # no model served here has less: shorter prompts never need counting
_MAX_ERROR_CHARS = 500  # upstream error text kept in our messages


async def iter_sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """Yield the ``data`` payload of each server-sent event (multi-line data joined by ``\\n``).

    Comment lines (``:``) and other fields (``event``, ``id``, ``retry``) are skipped; an event is
    dispatched at a blank line or at the end of the stream.
    """
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def error_for_status(status: int, body: str) -> EngineError:
    """Map an upstream HTTP error status to our engine error (the API answers with its status)."""
    detail = _error_message(body)
    if status in (408, 504):
        err: EngineError = EngineTimeout(f"upstream timed out ({status}): {detail}")
    elif 400 <= status < 500:
        err = EngineBadRequest(f"upstream rejected the request ({status}): {detail}")
    elif status == 503:
        err = EngineUnavailable(f"upstream unavailable ({status}): {detail}")
    else:
        err = EngineError(f"upstream failed ({status}): {detail}")
    err.upstream_status = status  # type: ignore[attr-defined]
    return err


def _error_message(body: str) -> str:
    """The ``error.message`` of an OpenAI error envelope, else the (capped) raw body."""
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict):
            err = parsed.get("error", parsed)
            message = err.get("message") if isinstance(err, dict) else err
            if message is None and isinstance(parsed.get("detail"), str):
                message = parsed["detail"]
            if message is not None:
                body = str(message)
    except ValueError:
        pass
    return body[:_MAX_ERROR_CHARS]


def to_openai_messages(request: EngineRequest) -> list[dict[str, Any]]:
    """Engine messages → OpenAI chat messages; images become base64 ``data:`` URLs."""
    messages = []
    for msg in request.messages:
        if msg.role == "tool":
            messages.append({"role": "tool", "tool_call_id": msg.tool_call_id, "content": msg.text})
            continue
        if msg.tool_calls:
            calls = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                     for c in msg.tool_calls]
            messages.append({"role": msg.role, "content": msg.text or None, "tool_calls": calls})
            continue
        if all(isinstance(p, str) for p in msg.content):
            messages.append({"role": msg.role, "content": msg.text})
            continue
        parts: list[dict[str, Any]] = []
        for part in msg.content:
            if isinstance(part, str):
                parts.append({"type": "text", "text": part})
            else:
                url = f"data:{part.mime_type};base64,{base64.b64encode(part.data).decode('ascii')}"
                parts.append({"type": "image_url", "image_url": {"url": url}})
        messages.append({"role": msg.role, "content": parts})
    return messages


def _api_base(url: str) -> tuple[str, str]:
    """``(api_base, root)``: ``http://h:p/v1`` and ``http://h:p`` from either form."""
    base = url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    return base, base[: -len("/v1")]


class OpenAIUpstreamEngine:
    """HTTP client engine for an OpenAI-compatible upstream; see the module docstring."""

    random_weights = False
    capabilities = OPENAI_UPSTREAM

    def __init__(self, config: EngineConfig, transport: httpx.AsyncBaseTransport | None = None):
        if not config.upstream_url:
            raise ValueError("the openai engine needs upstream_url, e.g. http://127.0.0.1:8001/v1")
        self.config = config
        self.api_base, self.root = _api_base(config.upstream_url)
        self.upstream_model = config.model
        self.model_name = config.served_model_name or config.model or "upstream"
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._streams: dict[str, httpx.Response] = {}
        self._aborted: set[str] = set()
        self.max_model_len: int | None = config.max_model_len
        self._can_tokenize = True  # until the upstream answers /tokenize with 404
        self._probed_context = False  # asked /v1/models for max_model_len (check_request)

    async def __aenter__(self) -> "OpenAIUpstreamEngine":
        headers = {"Authorization": f"Bearer {self.config.upstream_api_key}"} if self.config.upstream_api_key else {}
        timeout = httpx.Timeout(self.config.upstream_timeout_s, connect=CONNECT_TIMEOUT_S)
        self._client = httpx.AsyncClient(
            timeout=timeout, headers=headers, transport=self._transport, follow_redirects=False
        )
        if self.upstream_model is None:
            try:  # the upstream may still be starting; check_health() and generate() retry the lookup
                await self._discover_model()
            except EngineError as exc:
                logger.warning("upstream model not discovered yet: %s", exc)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for response in list(self._streams.values()):
            await response.aclose()
        self._streams.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _discover_model(self) -> str:
        """The upstream model (``config.model``, else the first listed) and its context length."""
        response = await self._request("GET", f"{self.api_base}/models", timeout=DISCOVERY_TIMEOUT_S)
        try:
            cards = [c for c in response.json()["data"] if isinstance(c, dict)]
            card = next((c for c in cards if c.get("id") == self.upstream_model), None) or cards[0]
            model = self.upstream_model or str(card["id"])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise EngineUnavailable(f"upstream {self.api_base}/models lists no model") from exc
        if card.get("id") == model and isinstance(card.get("max_model_len"), int) and card["max_model_len"] > 0:
            self.max_model_len = card["max_model_len"]
        self.upstream_model = model
        if self.model_name == "upstream":
            self.model_name = self.config.served_model_name or model
        return model

    async def _request(
        self, method: str, url: str, *, timeout: float | None = None, json: Any = None
    ) -> httpx.Response:
        """A non-streaming request with errors mapped; returns only 2xx responses."""
        if self._client is None:
            raise EngineUnavailable("openai upstream engine is not open")
        kwargs: dict[str, Any] = {"json": json} if json is not None else {}
        limit = timeout or self.config.upstream_timeout_s
        kwargs["timeout"] = httpx.Timeout(limit, connect=min(limit, CONNECT_TIMEOUT_S))
        try:  # httpx's timeouts are per read: a trickling upstream is bounded by the whole-call one
            async with asyncio.timeout(limit):
                response = await self._client.request(method, url, **kwargs)
        except TimeoutError as exc:
            raise EngineTimeout(f"upstream timed out after {limit:g} s") from exc
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from exc
        if response.status_code >= 400:
            raise error_for_status(response.status_code, response.text)
        return response

    async def check_health(self) -> None:
        if self._client is None:
            raise EngineUnavailable("openai upstream engine is not open")
        try:  # bounded: a hanging upstream is a down one, and /health must answer in time
            async with asyncio.timeout(DISCOVERY_TIMEOUT_S):
                response = await self._client.get(f"{self.root}/health")
        except TimeoutError as exc:
            raise EngineUnavailable(f"upstream /health did not answer in {DISCOVERY_TIMEOUT_S:g} s") from exc
        except httpx.HTTPError as exc:
            raise _health_error(exc) from exc
        if response.status_code == 404:  # servers without /health (e.g. OpenAI itself)
            await self._request("GET", f"{self.api_base}/models", timeout=DISCOVERY_TIMEOUT_S)
        elif response.status_code >= 400:
            raise EngineUnavailable(f"upstream /health answered {response.status_code}")
        if self.upstream_model is None:  # healthy now: the model it could not name at start-up
            await self._discover_model()

    async def check_request(self, request: EngineRequest) -> None:
        """``PromptTooLong`` for a prompt the upstream's ``/tokenize`` counts past its context;
        any trouble counting lets the prompt through to the upstream's own check."""
        if self.upstream_model is None or not self._can_tokenize:
            return
        if self.max_model_len is None and not self._probed_context:
            if text_token_bound(request.messages) < MIN_CONTEXT_TOKENS:
                return  # fits any model: no need to learn this one's context yet
            self._probed_context = True  # once: a configured --model skipped discovery at start
            try:
                await self._discover_model()
            except EngineError:
                return
        if fits_without_counting(request, self.max_model_len):
            return
        assert self.max_model_len is not None
        body = {"model": self.upstream_model, "messages": to_openai_messages(request),
                "add_generation_prompt": True}
        try:
            response = await self._request("POST", f"{self.root}/tokenize", json=body,
                                           timeout=TOKENIZE_TIMEOUT_S)
            count = int(response.json()["count"])
        except EngineBadRequest as exc:
            # No /tokenize on this upstream (not vLLM): stop asking; it judges prompts itself.
            self._can_tokenize = getattr(exc, "upstream_status", None) not in (404, 405)
            return
        except (EngineError, ValueError, KeyError, TypeError):
            return
        if count >= self.max_model_len:
            raise PromptTooLong(count, self.max_model_len)

    async def abort(self, request_id: str) -> None:
        response = self._streams.pop(request_id, None)
        if response is not None:
            self._aborted.add(request_id)
            await response.aclose()  # the upstream sees the disconnect and aborts the request

    def _body(self, request: EngineRequest, model: str) -> dict[str, Any]:
        p = request.params
        body: dict[str, Any] = dict(p.upstream)  # the optional parameters, as the client sent them
        if request.prompt is not None:
            body["prompt"] = request.prompt
        else:
            body["messages"] = to_openai_messages(request)
        body |= {
            "model": model, "stream": True,
            "stream_options": {"include_usage": True}, "max_tokens": p.max_tokens,
            "temperature": p.temperature, "top_p": p.top_p,
        }  # fmt: skip
        if p.stop:
            body["stop"] = list(p.stop)
        if p.seed is not None:
            body["seed"] = p.seed
        if p.presence_penalty:
            body["presence_penalty"] = p.presence_penalty
        if p.frequency_penalty:
            body["frequency_penalty"] = p.frequency_penalty
        return body

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        if self._client is None:
            raise EngineUnavailable("openai upstream engine is not open")
        model = self.upstream_model or await self._discover_model()
        rid = request.request_id
        try:
            async with self._client.stream(
                "POST", f"{self.api_base}/{'completions' if request.prompt is not None else 'chat/completions'}",
                json=self._body(request, model),
            ) as response:
                if response.status_code >= 400:
                    raise error_for_status(response.status_code, (await response.aread()).decode("utf-8", "replace"))
                self._streams[rid] = response
                async for output in _outputs(iter_sse_data(response.aiter_lines()), request.params.n):
                    if rid in self._aborted:  # closing may not interrupt bytes already buffered
                        return
                    yield output
        except (httpx.HTTPError, httpx.StreamError) as exc:  # StreamError: closed under our feet
            if rid in self._aborted:  # our own abort closed the stream
                return
            raise _transport_error(exc) from exc
        finally:
            self._streams.pop(rid, None)
            self._aborted.discard(rid)


async def _outputs(events: AsyncIterator[str], n: int = 1) -> AsyncIterator[EngineOutput]:
    """Upstream chunk payloads → engine outputs; each choice's finish is held until usage or ``[DONE]``."""
    finish: dict[int, str] = {}
    tails: dict[int, EngineOutput] = {}  # what arrived with a choice's finish_reason chunk
    counts: dict[int, int] = {}
    prompt_tokens = completion_tokens = 0
    async for data in events:
        if data.strip() == "[DONE]":
            break
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise EngineError(f"upstream sent a malformed stream event: {data[:100]!r}") from exc
        if not isinstance(chunk, dict):
            raise EngineError("upstream sent a stream event that is not a JSON object")
        if "error" in chunk:
            raise EngineError(f"upstream error mid-stream: {_error_message(data)}")
        if chunk.get("usage"):
            prompt_tokens = int(chunk["usage"].get("prompt_tokens") or 0)
            completion_tokens = int(chunk["usage"].get("completion_tokens") or 0)
        for choice in chunk.get("choices") or []:
            try:
                index = int(choice.get("index") or 0)
                out = _delta(choice, index)
            except (AttributeError, TypeError, ValueError) as exc:
                raise EngineError(f"upstream sent a malformed choice: {type(exc).__name__}") from exc
            if not 0 <= index < n:
                raise EngineError(f"upstream sent choice {index} of a request for {n}")
            if choice.get("finish_reason"):
                finish[index] = str(choice["finish_reason"])
                tails[index] = _merge(tails.get(index), out)
            elif out is not None:
                counts[index] = counts.get(index, 0) + 1
                yield dataclasses.replace(out, prompt_tokens=prompt_tokens, completion_tokens=counts[index])
    if len(finish) < n:
        raise EngineError("upstream stream ended without a finish_reason")
    for index in range(n):  # the usage is one sum over the choices: split it so that the parts add up
        share = completion_tokens // n + (1 if index < completion_tokens % n else 0)
        tail = tails.get(index) or EngineOutput("", index=index)
        yield dataclasses.replace(tail, finish_reason=finish[index], prompt_tokens=prompt_tokens,
                                  completion_tokens=share if completion_tokens else counts.get(index, 0))


def _delta(choice: dict[str, Any], index: int) -> EngineOutput | None:
    """One upstream choice delta as an engine output (None when it carries nothing)."""
    delta = choice.get("delta") or {}
    if not isinstance(delta, dict):
        raise EngineError("upstream sent a choice delta that is not a JSON object")
    reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
    calls = tuple(
        ToolCallDelta(int(c.get("index") or 0), c.get("id"), (c.get("function") or {}).get("name"),
                      (c.get("function") or {}).get("arguments") or "")
        for c in delta.get("tool_calls") or () if isinstance(c, dict)
    )
    logprobs = tuple(
        TokenLogprob(str(e.get("token", "")), float(e.get("logprob") or 0.0),
                     tuple((str(t.get("token", "")), float(t.get("logprob") or 0.0)) for t in e.get("top_logprobs") or ()))
        for e in ((choice.get("logprobs") or {}).get("content") or ()) if isinstance(e, dict)
    )
    # A /v1/completions chunk carries "text" where a chat chunk has a delta.
    text, refusal = delta.get("content") or choice.get("text") or "", delta.get("refusal") or ""
    if not (text or reasoning or refusal or calls or logprobs):
        return None
    return EngineOutput(str(text), index=index, reasoning=str(reasoning), refusal=str(refusal),
                        tool_calls=calls, logprobs=logprobs)


def _merge(first: EngineOutput | None, second: EngineOutput | None) -> EngineOutput | None:
    if first is None or second is None:
        return first or second
    return dataclasses.replace(first, text=first.text + second.text, reasoning=first.reasoning + second.reasoning,
                               refusal=first.refusal + second.refusal, tool_calls=first.tool_calls + second.tool_calls,
                               logprobs=first.logprobs + second.logprobs)


def _transport_error(exc: httpx.HTTPError | httpx.StreamError) -> EngineError:
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return EngineUnavailable(f"cannot connect to the upstream: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        return EngineTimeout(f"upstream timed out: {exc}")
    return EngineError(f"upstream connection failed: {type(exc).__name__}: {exc}")


def _health_error(exc: httpx.HTTPError) -> EngineError:
    """Health failures are all 'unavailable', whatever the transport says."""
    return EngineUnavailable(f"upstream health check failed: {type(exc).__name__}: {exc}")
