"""The Kubernetes probes of deploy/k8s, driven against a real guard whose upstream goes away and comes back.

The guard (``spaguard serve --engine openai``) starts while nothing listens on its upstream port, as in
a pod whose vLLM is still loading weights. The probe paths and ports are read from the rendered
manifests (``kubectl kustomize``), not restated here. Then: liveness passes and readiness fails; the
upstream (a real OpenAI-compatible server: ``spaguard serve --engine fake``) starts and readiness
passes without a guard restart; the upstream is killed (SIGKILL) and readiness fails again while
liveness still passes; it comes back and the same guard process serves again. ``slow``: three server
starts (~40 s on 2 cores).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from service.launch import stop, wait_ready
from tests.e2e.serve_process import SPAGUARD, _env
from tests.tiny import free_port
from tests.unit.test_deploy_k8s import _container, rendered

pytestmark = pytest.mark.slow


@contextmanager
def upstream(port: int, script: Path, log: Path) -> Iterator[subprocess.Popen]:
    """A scripted OpenAI-compatible server on ``port`` (its own guard off: it plays vLLM)."""
    cmd = [str(SPAGUARD), "serve", "--host", "127.0.0.1", "--port", str(port), "--engine", "fake",
           "--model", str(script), "--guard-mode", "off", "--guard-threads", "1"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_env())
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", proc, timeout_s=180, log=log)
        yield proc
    finally:
        stop(proc, grace_s=0, sig=signal.SIGKILL)


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=8).status_code
    except httpx.HTTPError:
        return 0


def _until(url: str, want: int, timeout_s: float = 30) -> int:
    deadline = time.monotonic() + timeout_s
    got = _status(url)
    while got != want and time.monotonic() < deadline:
        time.sleep(0.5)
        got = _status(url)
    return got


def test_upstream_outage_makes_the_guard_unready_not_dead(tmp_path: Path) -> None:
    guard_spec = _container(rendered(), "guard")
    live_path = guard_spec["livenessProbe"]["httpGet"]["path"]
    ready_path = guard_spec["readinessProbe"]["httpGet"]["path"]
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"model_name": "llava-hf/llava-1.5-7b-hf", "default": {"chunks": ["Sunny", " sand."]}}))
    up_port = free_port()
    args = ["--engine", "openai", "--upstream-url", f"http://127.0.0.1:{up_port}/v1", "--guard-threads", "1"]

    # tests.e2e.serve_process.spaguard_server waits for /health 200, which an outage at start never gives: start it by hand.
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "guard.log"
    with open(log, "wb") as fh:
        guard = subprocess.Popen([str(SPAGUARD), "serve", "--host", "127.0.0.1", "--port", str(port), *args],
                                 stdout=fh, stderr=subprocess.STDOUT, env=_env())
    try:
        assert _until(base + live_path, 200, 180) == 200, log.read_text()[-3000:]
        assert _status(base + ready_path) == 503  # vLLM still loading: out of the Service, alive

        with upstream(up_port, script, tmp_path / "up1.log"):
            assert _until(base + ready_path, 200) == 200
            chat = httpx.post(f"{base}/v1/chat/completions", timeout=60, json={
                "model": "llava-hf/llava-1.5-7b-hf", "max_tokens": 8,
                "messages": [{"role": "user", "content": "Describe a beach."}]})
            assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"] == "Sunny sand."
        # The context killed the upstream with SIGKILL: an outage mid-life.
        assert _until(base + ready_path, 503) == 503
        assert _status(base + live_path) == 200
        refused = httpx.post(f"{base}/v1/chat/completions", timeout=60, json={
            "model": "llava-hf/llava-1.5-7b-hf", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]})
        assert refused.status_code in (502, 503), refused.text

        with upstream(up_port, script, tmp_path / "up2.log"):
            assert _until(base + ready_path, 200) == 200
            assert guard.poll() is None  # the same process all along: never restarted
    finally:
        guard.send_signal(signal.SIGINT)
        try:
            guard.wait(20)
        except subprocess.TimeoutExpired:
            guard.kill()

