"""Read timeouts for uvicorn's h11 protocol: slow-loris and half-open connections are closed.

uvicorn (0.54) has a keep-alive timeout between requests but none while a request is read: a
client that connects and sends nothing, sends its head a byte at a time, or trickles its body
(1 byte / 5 s) holds a connection, and its buffers, for as long as it likes (issue 11: 500 such
connections were all still open after 45 s). ``TimeoutH11Protocol`` adds two deadlines:

* **head**: the request line and headers must be complete within ``header_timeout_s`` of the
  connection opening (or of the first byte of a later request on a kept-alive connection);
* **body**: the body must be complete within ``body_timeout_s`` of the head, extended by one
  second per ``HTTP_BODY_MIN_RATE`` bytes received, so a large image upload on a slow link still
  fits while a trickle does not.

Past a deadline the connection is closed (the app, if it was reading the body, sees
``http.disconnect``). Nothing is sent: in the head phase HTTP has no request to answer yet, and
in the body phase the app owns the response. While the app works on a complete request, and
between requests, no deadline runs (uvicorn's keep-alive timeout covers idle connections).

``protocol_class(header_timeout_s, body_timeout_s)`` returns the class to pass as uvicorn's
``http=``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.settings import HTTP_BODY_MIN_RATE

log = logging.getLogger("spaguard.http")


class TimeoutH11Protocol(H11Protocol):
    """``H11Protocol`` with the head and body deadlines of the module docstring."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 20.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._phase: str | None = None  # "head" | "body" | None (no deadline)
        self._phase_started = 0.0
        self._body_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._enter("head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._enter(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase is None and self.conn.their_state is h11.IDLE:
            self._enter("head")  # a kept-alive connection starts its next request
        if self._phase == "body":
            self._body_bytes += len(data)
        super().data_received(data)
        self._follow_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_state()

    def _follow_state(self) -> None:
        """Move the deadline along with h11's view of the client's side of the connection."""
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._phase != "body":
                self._enter("body")
            else:
                self._arm()  # more bytes: the body deadline moves out with them
        elif state is not h11.IDLE or self._phase == "body":
            self._enter(None)  # request complete (DONE), closing, or an error: no deadline

    def _enter(self, phase: str | None) -> None:
        self._phase = phase
        self._phase_started = self.loop.time()
        self._body_bytes = 0
        self._arm()

    def _arm(self) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        if self._phase is None:
            return
        if self._phase == "head":
            delay = self.header_timeout_s
        else:
            delay = self.body_timeout_s + self._body_bytes / HTTP_BODY_MIN_RATE
        when = self._phase_started + delay
        self._deadline_timer = self.loop.call_at(when, self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline_timer = None
        if self._phase is None or self.transport.is_closing():
            return
        log.info("closing a connection from %s: request %s not received in time",
                 self.client[0] if self.client else "?", self._phase)
        self._phase = None
        self.transport.close()


def protocol_class(header_timeout_s: float, body_timeout_s: float) -> type[TimeoutH11Protocol]:
    """A ``TimeoutH11Protocol`` subclass with these deadlines, for ``uvicorn.run(http=...)``."""
    if header_timeout_s <= 0 or body_timeout_s <= 0:
        raise ValueError("HTTP read timeouts must be > 0")
    return type("SpaguardH11Protocol", (TimeoutH11Protocol,),
                {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s})
