"""SIGHUP reloads the policies of a real ``spaguard serve`` process (no polling: ``--policy-reload-s 0``).

A signal is a process-level event, so this runs the real server in its own process rather than sending a
signal to the test runner. The policy first blocks everything (``default: {threshold: 0.0}``: every unsafe
probability is at least 0); after the file is rewritten to follow the classifier's own flag, the same benign
request is still refused until the server gets SIGHUP, and answered after it. Slow: one server start.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from service import launch
from tests.e2e.serve_process import SPAGUARD

pytestmark = pytest.mark.slow
SCRIPT = {"model_name": "fake-vlm", "default": {"chunks": ["Hello", " there", "."]}}
BLOCK_ALL = 'name: house\nversion: "1"\ndefault: {threshold: 0.0, action: block}\n'
FOLLOW_FLAG = 'name: house\nversion: "2"\ndefault: {action: block}\n'
ASK = {"model": "fake-vlm", "max_tokens": 8, "messages": [{"role": "user", "content": "Tell me a joke."}]}


def _finish(base: str) -> str:
    r = httpx.post(f"{base}/v1/chat/completions", json=ASK, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["finish_reason"]


def test_sighup_reloads_the_policies_of_a_running_server(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps(SCRIPT))
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "house.yaml").write_text(BLOCK_ALL)
    log = tmp_path / "serve.log"
    port = launch.free_port()
    cmd = [str(SPAGUARD), "serve", "--host", "127.0.0.1", "--port", str(port), "--engine", "fake",
           "--model", str(script), "--guard-threads", "1", "--db", f"sqlite:///{tmp_path / 'spaguard.db'}",
           "--policies", str(policies), "--default-policy", "house", "--policy-reload-s", "0"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env=launch.offline_env(OMP_NUM_THREADS="1", SPAGUARD_THREADS="1"))
    base = f"http://127.0.0.1:{port}"
    try:
        launch.wait_ready(f"{base}/health", proc, timeout_s=300, log=log)
        assert _finish(base) == "content_filter"
        (policies / "house.yaml").write_text(FOLLOW_FLAG)
        time.sleep(1.0)
        assert _finish(base) == "content_filter", "reloaded without a signal (--policy-reload-s 0)"
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "policies reloaded" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "house@2+" in log.read_text(), launch.log_tail(log)  # version "2" plus the file's hash
        assert _finish(base) == "stop"
        assert proc.poll() is None  # SIGHUP reloads; it does not end the server
    finally:
        launch.stop(proc)
