"""Slow-loris and half-open connections against the live server, with raw sockets (issue 11: 500
half-open connections, or a body at 1 byte / 5 s, were held open >= 45 s).

The hardened server runs with ``--http-header-timeout-s`` and ``--http-body-timeout-s`` of
``HTTP_TIMEOUT_S`` (2 s): every slow connection must be closed by the server soon after that,
while it is still trickling, and a normal client on a kept-alive connection is unaffected.
Loops are bounded in count and time; only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.e2e.conftest import HTTP_TIMEOUT_S

SLACK_S = 3.0  # scheduling slack on a shared 2-core machine
HALF_OPEN = 200


def _addr(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


def _closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """True when the server closes ``sock`` (EOF or reset) before ``deadline``."""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, min(0.5, deadline - time.monotonic())))
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
        if data == b"":
            return True
    return False


def _trickle_until_closed(sock: socket.socket, payload: bytes, every_s: float, limit_s: float) -> float | None:
    """Send ``payload`` one byte per ``every_s``; seconds until the server closed us, or None."""
    start = time.monotonic()
    for byte in payload:
        if time.monotonic() - start > limit_s:
            return None
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start
        if _closed_by_server(sock, time.monotonic() + every_s):
            return time.monotonic() - start
    return None


@pytest.mark.reliability("slow clients", f"{HALF_OPEN} half-open connections (connect, send nothing)", "all closed after the header timeout; server healthy")
def test_half_open_connections_are_dropped(hardened_server: str) -> None:
    socks = [socket.create_connection(_addr(hardened_server), timeout=5) for _ in range(HALF_OPEN)]
    try:
        deadline = time.monotonic() + HTTP_TIMEOUT_S + SLACK_S
        still_open = [s for s in socks if not _closed_by_server(s, deadline)]
        assert not still_open, f"{len(still_open)} of {HALF_OPEN} still open"
    finally:
        for s in socks:
            s.close()
    assert httpx.get(f"{hardened_server}/health", timeout=10).status_code == 200


@pytest.mark.reliability("slow clients", "request head sent one byte every 0.5 s", "closed after the header timeout while still trickling")
def test_slow_header_is_dropped(hardened_server: str) -> None:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + b"X-Pad: " + b"a" * 200
    with socket.create_connection(_addr(hardened_server), timeout=5) as sock:
        closed_after = _trickle_until_closed(sock, head, 0.5, HTTP_TIMEOUT_S + SLACK_S + 2)
    assert closed_after is not None and closed_after < HTTP_TIMEOUT_S + SLACK_S


@pytest.mark.reliability("slow clients", "body sent one byte per second (slow-loris body)", "closed after the body timeout while still trickling")
def test_slow_body_is_dropped(hardened_server: str) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "x" * 200}]}).encode()
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode())
    with socket.create_connection(_addr(hardened_server), timeout=5) as sock:
        sock.sendall(head)
        closed_after = _trickle_until_closed(sock, body, 1.0, HTTP_TIMEOUT_S + SLACK_S + 2)
    assert closed_after is not None and closed_after < HTTP_TIMEOUT_S + SLACK_S


@pytest.mark.reliability("slow clients", "a normal client: body in 3 parts over ~1 s, then a second request on the kept-alive connection", "both 200")
def test_reasonable_clients_are_unaffected(hardened_server: str) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "hello"}]}).encode()
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode())
    with socket.create_connection(_addr(hardened_server), timeout=10) as sock:
        for _ in range(2):
            sock.sendall(head)
            third = len(body) // 3
            for part in (body[:third], body[third:2 * third], body[2 * third:]):
                sock.sendall(part)
                time.sleep(0.4)
            response = _read_response(sock)
            assert response.startswith(b"HTTP/1.1 200"), response[:200]


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(rest) < length:
        rest += sock.recv(4096)
    return head + b"\r\n\r\n" + rest
