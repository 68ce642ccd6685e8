"""``spaguard serve --engine openai`` in front of an upstream that accepts connections and never
answers, with no ``--model`` (issue 11: start-up blocked 128 s on model discovery). The server
must start within its own start-up time plus ``DISCOVERY_TIMEOUT_S`` and report the engine down
on ``/health`` (503), while the guard is up.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from service.engines.openai_upstream import DISCOVERY_TIMEOUT_S
from service.launch import stop, wait_ready
from tests.e2e.serve_process import SPAGUARD, _env, tiny_guard_artifact
from tests.tiny import free_port

START_LIMIT_S = 90.0  # classifier load on a busy 2-core box, plus the bounded discovery


class _SilentUpstream:
    """Accepts TCP connections on 127.0.0.1 and never writes a byte (for at most ``life_s``)."""

    def __init__(self, life_s: float = 120.0) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = time.monotonic() + life_s
        self.sock.settimeout(0.2)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while time.monotonic() < self._stop:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.held.append(conn)

    def close(self) -> None:
        self._stop = 0
        for c in self.held:
            c.close()
        self.sock.close()


@pytest.mark.slow
@pytest.mark.reliability("engine startup", "live: --engine openai, upstream accepts and never answers, no --model", "starts in bounded time; /health 503 engine down, guard ok")
def test_hanging_upstream_start_is_bounded(tmp_path: Path) -> None:
    upstream = _SilentUpstream()
    artifact = tiny_guard_artifact(tmp_path, prompt=False, response=False)
    port = free_port()
    cmd = [str(SPAGUARD), "serve", "--host", "127.0.0.1", "--port", str(port), "--engine", "openai",
           "--upstream-url", f"http://127.0.0.1:{upstream.port}/v1", "--guard-backend", "torch",
           "--guard-artifact", str(artifact), "--guard-threads", "1"]
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env())
    started = time.monotonic()
    try:
        # Any answer counts: the point is that the server starts (and says the engine is down) in time.
        health = wait_ready(f"http://127.0.0.1:{port}/health", proc, timeout_s=START_LIMIT_S, request_timeout_s=15,
                            log=tmp_path / "serve.log", ready=lambda status: True)
        took = time.monotonic() - started
        assert health.status_code == 503 and health.json()["engine"] == "down"
        assert health.json()["guard"] == "ok"
        log_text = (tmp_path / "serve.log").read_text()
        assert "upstream model not discovered yet" in log_text
        assert took < START_LIMIT_S and DISCOVERY_TIMEOUT_S < 30
    finally:
        stop(proc)
        log.close()
        upstream.close()
