"""Hostile-input suite through the live server (build item 2): each case is a clean 4xx in OpenAI's
envelope (or a 200 where the input is odd but valid), never a 5xx, never a hang; the server is
healthy after, no guard failure was caused by any of it, and nothing answered 5xx.

Cases: malformed JSON and bad UTF-8, wrong types, unknown and nested parts, oversize everything,
image bombs, bad base64 and MIME, SVG / animated / CMYK / 16-bit / zero-size images, control
characters, every OpenAI parameter at and past its range, and HTTP-level oddities.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import zlib
from typing import Any

import httpx
import pytest
from PIL import Image

from service.settings import (
    MAX_BODY_BYTES,
    MAX_CHARS,
    MAX_IMAGES_PER_REQUEST,
    MAX_MESSAGES,
    MAX_TOKENS,
)
from tests.hardening import ENVELOPE_KEYS, metric

MODEL = "scripted-vlm"
TIMEOUT = 30.0  # no case may hang: each answers well within this


def _url(img_bytes: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(img_bytes).decode()


def _img(mode: str, size: tuple[int, int], fmt: str, **save: Any) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, **({"color": 90} if mode in ("L", "I;16", "1", "P") else {})).save(buf, format=fmt, **save)
    return buf.getvalue()


def _animated_gif(frames: int = 40) -> bytes:
    imgs = [Image.new("P", (64, 64), i % 256) for i in range(frames)]
    buf = io.BytesIO()
    imgs[0].save(buf, format="GIF", save_all=True, append_images=imgs[1:], duration=20, loop=0)
    return buf.getvalue()


def _png_bomb(width: int, height: int) -> bytes:
    """A valid-header PNG declaring ``width x height`` with a tiny (wrong) body: the size claim
    alone must get it refused."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><text>bomb</text></svg>'


def _chat(content: Any, **kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **kw}


def _image(url: str) -> dict[str, Any]:
    return _chat([{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": url}}])


# name -> (body: dict | bytes | str, expected status). bytes/str are sent as they are.
CASES: dict[str, tuple[Any, int]] = {
    # malformed JSON and encodings
    "empty body": (b"", 400),
    "truncated JSON": (b'{"model": "x", "messages": [', 400),
    "JSON array": (b"[]", 400),
    "JSON null": (b"null", 400),
    "JSON string": (b'"hello"', 400),
    "trailing garbage": (b'{"messages": []} xyz', 400),
    "bad UTF-8 bytes": (b'{"messages": [{"role": "user", "content": "\xff\xfe\xfa"}]}', 400),
    "UTF-16 body (json.loads detects it: valid, answered)": ('{"messages": [{"role": "user", "content": "hi"}]}'.encode("utf-16"), 200),
    "raw control char inside a JSON string": (b'{"messages": [{"role": "user", "content": "a\x01b"}]}', 400),
    "lone surrogate escape": (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', 400),
    "deeply nested JSON": (("[" * 50_000 + "]" * 50_000).encode(), 400),
    "deeply nested unknown field": ({"messages": [{"role": "user", "content": "hi"}],
                                     "x": json.loads("[" * 100 + "]" * 100)}, 400),
    # wrong types and shapes
    "messages as an object": ({"messages": {"role": "user", "content": "hi"}}, 400),
    "content as a number": (_chat(42), 400),
    "content as an object": (_chat({"type": "text", "text": "hi"}), 400),
    "unknown role": ({"messages": [{"role": "robot", "content": "hi"}]}, 400),
    "tool message without tool_call_id": ({"messages": [{"role": "tool", "content": "hi"}]}, 400),
    "tool_call_id on a user message": ({"messages": [{"role": "user", "content": "hi", "tool_call_id": "c"}]}, 400),
    "tool_calls on a user message": ({"messages": [{"role": "user", "content": "hi", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}, 400),
    "a tool conversation (the scripted engine takes tools)": ({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"}]}, 200),
    "part without a type": (_chat([{"text": "hi"}]), 400),
    "unknown part type": (_chat([{"type": "input_audio", "input_audio": {"data": "AAAA"}}]), 400),
    "nested parts": (_chat([[{"type": "text", "text": "hi"}]]), 400),
    "image_url as a string": (_chat([{"type": "image_url", "image_url": "data:image/png;base64,AA"}]), 400),
    "empty content list": (_chat([]), 400),
    "image in a system message": ({"messages": [{"role": "system", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
        {"role": "user", "content": "hi"}]}, 400),
    "last message from the assistant": ({"messages": [{"role": "user", "content": "hi"},
                                                      {"role": "assistant", "content": "ok"}]}, 400),
    "model not served": ({**_chat("hi"), "model": "gpt-9"}, 404),
    # oversize
    "too many messages": ({"messages": [{"role": "user", "content": "hi"}] * (MAX_MESSAGES + 1)}, 400),
    "too many characters": (_chat("a" * (MAX_CHARS + 1)), 400),
    "too many images": (_chat([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]
                              * (MAX_IMAGES_PER_REQUEST + 1)), 400),
    "20 MB unknown field": ({**_chat("hi"), "blob": "z" * 20_000_000}, 413),
    "1 MB user": (_chat("hi", user="u" * 1_000_000), 413),
    "4 x 100k stop strings": (_chat("hi", stop=["s" * 100_000] * 4), 413),
    "64k-character prompt on a 512-token engine": (_chat("word " * 12_000), 400),
    # images
    "PNG declaring 100k x 100k (decompression bomb)": (_image(_url(_png_bomb(100_000, 100_000))), 413),
    "PNG one pixel past the pixel limit": (_image(_url(_png_bomb(4097, 4096))), 413),
    "zero-length image": (_image("data:image/png;base64,"), 400),
    "not an image": (_image(_url(b"just some text bytes")), 400),
    "truncated PNG": (_image(_url(_img("RGB", (64, 64), "PNG")[:60])), 400),
    "bad base64": (_image("data:image/png;base64,!!!!not*base64"), 400),
    "base64 with a lone surrogate": ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,\ud800"}}]}]}, 400),
    "data URL without base64": (_image("data:image/png,rawbytes"), 400),
    "SVG": (_image(_url(SVG, "image/svg+xml")), 400),
    "SVG declared as PNG": (_image(_url(SVG)), 400),
    "BMP": (_image(_url(_img("RGB", (16, 16), "BMP"), "image/png")), 400),
    "TIFF": (_image(_url(_img("RGB", (16, 16), "TIFF"), "image/png")), 400),
    "text/html MIME": (_image(_url(_img("RGB", (8, 8), "PNG"), "text/html")), 400),
    "file: URL": (_image("file:///etc/passwd"), 400),
    "http URL (remote images off)": (_image("http://169.254.169.254/latest/meta-data"), 400),
    "remote URL over the length cap": (_image("https://example.com/" + "a" * 5000), 400),
    # odd but valid: scored and answered
    "animated GIF, 40 frames": (_image(_url(_animated_gif(), "image/gif")), 200),
    "CMYK JPEG": (_image(_url(_img("CMYK", (64, 64), "JPEG"), "image/jpeg")), 200),
    "16-bit grayscale PNG": (_image(_url(_img("I;16", (64, 64), "PNG"))), 200),
    "1-bit PNG": (_image(_url(_img("1", (64, 64), "PNG"))), 200),
    "palette PNG with transparency": (_image(_url(_img("P", (64, 64), "PNG", transparency=0))), 200),
    "LA PNG": (_image(_url(_img("LA", (64, 64), "PNG"))), 200),
    "1 x 1 image": (_image(_url(_img("RGB", (1, 1), "PNG"))), 200),
    "4096 x 1 image": (_image(_url(_img("RGB", (4096, 1), "PNG"))), 200),
    "WebP": (_image(_url(_img("RGB", (32, 32), "WEBP"), "image/webp")), 200),
    "PNG declared as JPEG": (_image(_url(_img("RGB", (8, 8), "PNG"), "image/jpeg")), 200),
    "control characters and NUL in text": (_chat("a\u0000b\u0007c\u001bd\u0085e\u200bf\ufeff"), 200),
    "right-to-left and combining marks": (_chat("\u202ephrase\u202c e\u0301\u0301\u0301"), 200),
    "astral characters": (_chat("emoji \U0001f600 math \U0001d400"), 200),
    "unknown small fields (extra_body)": ({**_chat("hi"), "vendor": {"a": [1, 2, 3]}}, 400),  # refused, not ignored
    "unknown field in a message": ({"messages": [{"role": "user", "content": "hi", "temperature": 1}]}, 400),
    "message name": ({"messages": [{"role": "user", "content": "hi", "name": "alice"}]}, 200),
}

# Every OpenAI chat parameter at its range's ends (200) and just past them (400).
PARAMS: dict[str, tuple[dict[str, Any], int]] = {
    "max_tokens = 1": ({"max_tokens": 1}, 200), f"max_tokens = {MAX_TOKENS}": ({"max_tokens": MAX_TOKENS}, 200),
    "max_tokens = 0": ({"max_tokens": 0}, 400), "max_tokens past the cap": ({"max_tokens": MAX_TOKENS + 1}, 400),
    "max_completion_tokens = 0": ({"max_completion_tokens": 0}, 400),
    "max_completion_tokens past the cap": ({"max_completion_tokens": MAX_TOKENS + 1}, 400),
    "temperature = 0": ({"temperature": 0}, 200), "temperature = 2": ({"temperature": 2}, 200),
    "temperature < 0": ({"temperature": -0.01}, 400), "temperature > 2": ({"temperature": 2.01}, 400),
    "top_p = 1": ({"top_p": 1}, 200), "top_p = 0": ({"top_p": 0}, 400), "top_p > 1": ({"top_p": 1.01}, 400),
    "presence_penalty = -2": ({"presence_penalty": -2}, 200), "presence_penalty > 2": ({"presence_penalty": 2.1}, 400),
    "frequency_penalty = 2": ({"frequency_penalty": 2}, 200), "frequency_penalty < -2": ({"frequency_penalty": -2.1}, 400),
    "n = 1": ({"n": 1}, 200), "n = 8": ({"n": 8}, 200), "n = 9": ({"n": 9}, 400), "n = 0": ({"n": 0}, 400),
    "4 stop sequences": ({"stop": ["a", "b", "c", "d"]}, 200), "5 stop sequences": ({"stop": list("abcde")}, 400),
    "seed = int64 max": ({"seed": 2**63 - 1}, 200), "seed = int64 min": ({"seed": -(2**63)}, 200),
    "seed past int64": ({"seed": 2**63}, 400), "seed = 10^30": ({"seed": 10**30}, 400),
    "stream_options with stream": ({"stream": True, "stream_options": {"include_usage": True}}, 200),
    "stream_options without stream": ({"stream_options": {"include_usage": True}}, 400),
    "user = 256 chars": ({"user": "u" * 256}, 200), "user = 257 chars": ({"user": "u" * 257}, 400),
    # The scripted engine honours n and tools; it refuses the rest (service.engines.capabilities.FAKE).
    "tools": ({"tools": [{"type": "function", "function": {"name": "f"}}]}, 200),
    "tool_choice required without tools": ({"tool_choice": "required"}, 400),
    "tool with a bad name": ({"tools": [{"type": "function", "function": {"name": "no spaces"}}]}, 400),
    "response_format json_object (refused by this engine)": ({"response_format": {"type": "json_object"}}, 400),
    "logprobs (refused by this engine)": ({"logprobs": True}, 400),
    "logit_bias (refused by this engine)": ({"logit_bias": {"1": 5}}, 400),
    "top_logprobs past 20": ({"logprobs": True, "top_logprobs": 21}, 400),
    "max_tokens as a string": ({"max_tokens": "5"}, 400), "stream as a string": ({"stream": "true"}, 400),
}


def _send(base: str, body: Any, path: str = "/v1/chat/completions") -> httpx.Response:
    if isinstance(body, (bytes, str)):
        raw = body.encode() if isinstance(body, str) else body
        return httpx.post(base + path, content=raw, headers={"content-type": "application/json"},
                          timeout=TIMEOUT)
    raw = json.dumps(body).encode("utf-8", "surrogatepass")  # lets a lone surrogate through as-is
    return httpx.post(base + path, content=raw, headers={"content-type": "application/json"}, timeout=TIMEOUT)


def _check(r: httpx.Response, expected: int) -> None:
    assert r.status_code == expected, (r.status_code, r.text[:400])
    if expected >= 400:
        body = r.json()
        assert set(body) == {"error"} and set(body["error"]) == ENVELOPE_KEYS, body
        assert len(body["error"]["message"]) <= 300
    elif r.headers["content-type"].startswith("application/json"):
        assert r.json()["choices"][0]["finish_reason"] in ("stop", "length", "content_filter")


@pytest.mark.reliability("hostile input (live server)", "hostile chat body", "clean 4xx in the envelope, or 200 when odd but valid")
@pytest.mark.parametrize("case", list(CASES))
def test_hostile_chat_bodies(hardened_server: str, case: str) -> None:
    body, expected = CASES[case]
    _check(_send(hardened_server, body), expected)


@pytest.mark.reliability("hostile input (live server)", "OpenAI parameter at / past its range", "200 at the range's ends, 400 past them")
@pytest.mark.parametrize("case", list(PARAMS))
def test_parameters_at_and_past_their_range(hardened_server: str, case: str) -> None:
    extra, expected = PARAMS[case]
    _check(_send(hardened_server, _chat("hi", **extra)), expected)


MODERATION = {
    "empty string": ({"input": ""}, 400), "empty list": ({"input": []}, 400),
    "number": ({"input": 5}, 400), "33 inputs": ({"input": ["x"] * 33}, 400),
    "lone surrogate": (b'{"input": "\\udfff"}', 400), "2 MB input": ({"input": "m" * 2_000_000}, 413),
    "image part": ({"input": [{"type": "image_url", "image_url": {"url": _url(_img("RGB", (32, 32), "PNG"))}}]}, 200),
    "SVG image part": ({"input": [{"type": "image_url", "image_url": {"url": _url(SVG, "image/svg+xml")}}]}, 400),
    "unknown model": ({"input": "hi", "model": "other"}, 404),
}


@pytest.mark.reliability("hostile input (live server)", "hostile moderation body", "clean 4xx or 200")
@pytest.mark.parametrize("case", list(MODERATION))
def test_hostile_moderation_bodies(hardened_server: str, case: str) -> None:
    body, expected = MODERATION[case]
    r = _send(hardened_server, body, "/v1/moderations")
    assert r.status_code == expected, (r.status_code, r.text[:300])
    if expected >= 400:
        assert set(r.json()["error"]) == ENVELOPE_KEYS


@pytest.mark.reliability("hostile input (live server)", "HTTP-level oddities", "4xx, never 5xx")
@pytest.mark.parametrize("case", ["unknown path", "GET on chat", "form content type", "declared body over the cap", "streamed body over the cap"])
def test_http_level_oddities(hardened_server: str, case: str) -> None:
    base = hardened_server
    if case == "unknown path":
        r = httpx.get(f"{base}/v1/nothing", timeout=TIMEOUT)
        assert r.status_code == 404 and set(r.json()["error"]) == ENVELOPE_KEYS
    elif case == "GET on chat":
        assert httpx.get(f"{base}/v1/chat/completions", timeout=TIMEOUT).status_code == 405
    elif case == "form content type":
        r = httpx.post(f"{base}/v1/chat/completions", data={"messages": "x"}, timeout=TIMEOUT)
        assert r.status_code == 400 and set(r.json()["error"]) == ENVELOPE_KEYS
    elif case == "declared body over the cap":
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode())
            head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 413"), head[:100]
    else:
        def chunks():
            piece = b"x" * (1 << 20)
            for _ in range(MAX_BODY_BYTES // len(piece) + 2):
                yield piece
        try:
            r = httpx.post(f"{base}/v1/chat/completions", content=chunks(),
                           headers={"content-type": "application/json"}, timeout=TIMEOUT)
        except httpx.WriteError:  # the server answered 413 and closed while we still sent
            return
        assert r.status_code == 413


@pytest.mark.reliability("hostile input (live server)", "after the whole suite", "healthy; no 5xx; no guard failure caused by client input")
def test_server_is_healthy_and_no_client_input_caused_a_5xx(hardened_server: str) -> None:
    # Runs after the cases above in this module (pytest keeps file order).
    health = httpx.get(f"{hardened_server}/health", timeout=TIMEOUT)
    assert health.status_code == 200, health.text
    text = httpx.get(f"{hardened_server}/metrics", timeout=TIMEOUT).text
    five_xx = sum(metric(text, "guard_http_requests_total", status=str(s)) for s in range(500, 600))
    assert five_xx == 0
    assert health.json()["failures"].get("backend_error", 0) == 0
    assert metric(text, "guard_http_requests_total", status="200") > 0
