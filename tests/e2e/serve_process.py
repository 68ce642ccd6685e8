"""Run ``spaguard serve`` as a subprocess for end-to-end tests, and build guard artifacts for it.

``spaguard_server(args)`` starts the real CLI on a free port, waits for ``GET /health`` to answer
200 and yields the base URL; on exit it sends SIGINT (graceful shutdown) and reaps the process.
``tiny_guard_artifact(out, prompt, response)`` writes a tiny random classifier artifact whose
calibration flags every prompt/response (threshold 0) or none (threshold 1): it tests the wiring
through the real backend code, not classification quality. ``SHIPPED_ARTIFACT`` is the trained
default; tests that need real verdicts use it when it has been built.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from models.backends import DEFAULT_ARTIFACT
from tests.tiny import free_port

SHIPPED_ARTIFACT = DEFAULT_ARTIFACT
SPAGUARD = Path(sys.executable).with_name("spaguard")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               SPAGUARD_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return env


@contextmanager
def spaguard_server(args: list[str], log_path: Path, timeout_s: float = 180.0) -> Iterator[str]:
    """``spaguard serve ARGS`` on 127.0.0.1:<free port>; yields ``http://127.0.0.1:<port>``."""
    port = free_port()
    cmd = [str(SPAGUARD), "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env())
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, base, log_path, timeout_s)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _wait_healthy(proc: subprocess.Popen, base: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"spaguard serve exited with {proc.returncode}:\n{_tail(log_path)}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"spaguard serve not healthy after {timeout_s}s:\n{_tail(log_path)}")


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:]


def tiny_guard_artifact(out: Path, prompt: bool, response: bool) -> Path:
    """A tiny random classifier artifact whose calibration flags every prompt (``prompt``) or
    none, and every response (``response``) or none (threshold 0 or 1)."""
    import torch

    from models.artifact import Calibration, ClassifierConfig
    from models.classifier import GuardClassifier
    from models.encoders import build_tiny_text_encoder

    encoder = out / "encoder"
    if not (encoder / "config.json").exists():
        build_tiny_text_encoder(encoder)
    torch.manual_seed(0)
    model = GuardClassifier(ClassifierConfig(encoder=str(encoder), head_hidden=16, max_length=64))
    calibration = Calibration.identity(model.config.node_keys)
    calibration.threshold = {"prompt": 0.0 if prompt else 1.0, "response": 0.0 if response else 1.0}
    artifact = out / f"flag_prompt{int(prompt)}_response{int(response)}"
    model.save(artifact, {"purpose": "e2e wiring test: thresholds forced, not a real guard"},
               calibration=calibration)
    return artifact
