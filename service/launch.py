"""Start a server process and wait until it answers: ``spaguard serve``, ``vllm serve``, ``tritonserver``.

One launcher for everything that runs a server as a subprocess: the end-to-end tests, the load-test
harness (``loadtests/compare.py``, ``loadtests/soak.py``) and the benchmarks. It lives in the installed
package so that each of those can import it (``tests/`` and ``benchmarks/`` are importable by nothing).

Contract
--------
* ``free_port()``: a TCP port on 127.0.0.1 that was free a moment ago.
* ``offline_env(**extra)``: this process's environment with the model hubs switched off
  (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``) and tokenizer threads quiet, plus ``extra``.
* ``wait_ready(url, proc, ...)`` polls ``url`` until ``ready(status_code)`` holds (default: 200), every
  ``interval_s``. It raises ``ServerFailed`` as soon as ``proc`` exits and ``TimeoutError`` after
  ``timeout_s``, both with the tail of ``log`` (when given) so a failed start says why. It returns the
  last response.
* ``stop(proc, grace_s, sig, group)`` sends ``sig`` (SIGINT: ``spaguard serve`` shuts down gracefully on
  it) to the process, or to its process group when ``group`` (a server started with
  ``start_new_session=True`` and children of its own), and SIGKILLs what is left after ``grace_s``.
* ``spaguard_server(args, log)`` runs ``spaguard serve --host 127.0.0.1 --port <free> ARGS`` (the
  ``spaguard`` beside this interpreter), yields its base URL once ``/health`` is 200, stops it on exit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

SPAGUARD = Path(sys.executable).with_name("spaguard")


class ServerFailed(RuntimeError):
    """The server process exited before it was ready."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def offline_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.update(extra)
    return env


def log_tail(log: Path | None, chars: int = 4000) -> str:
    if log is None or not log.exists():
        return ""
    return log.read_text(errors="replace")[-chars:]


def wait_ready(url: str, proc: subprocess.Popen | None = None, *, timeout_s: float = 180.0,
               log: Path | None = None, interval_s: float = 0.3, request_timeout_s: float = 2.0,
               ready: Callable[[int], bool] = lambda status: status == 200) -> httpx.Response:
    """Poll ``url`` until ``ready(status)``; see the module docstring for what it raises."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and proc.poll() is not None:
            raise ServerFailed(f"{_name(proc)} exited with {proc.returncode}:\n{log_tail(log)}")
        try:
            response = httpx.get(url, timeout=request_timeout_s)
            if ready(response.status_code):
                return response
        except httpx.HTTPError:
            pass  # not listening yet, or busy starting: poll again
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s:\n{log_tail(log)}")
        time.sleep(interval_s)


def stop(proc: subprocess.Popen, grace_s: float = 20.0, sig: int = signal.SIGINT, group: bool = False) -> None:
    """Stop ``proc`` (or its process group) with ``sig``, then SIGKILL after ``grace_s``; reaps it."""
    if proc.poll() is not None:
        return
    send = (lambda s: os.killpg(proc.pid, s)) if group else proc.send_signal
    try:
        send(sig)
        proc.wait(grace_s)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        try:
            send(signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(10)


@contextmanager
def spaguard_server(args: list[str], log: Path, *, timeout_s: float = 180.0,
                    env: dict[str, str] | None = None) -> Iterator[str]:
    """``spaguard serve ARGS`` on 127.0.0.1:<free port>; yields ``http://127.0.0.1:<port>``."""
    port = free_port()
    cmd = [str(SPAGUARD), "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env or offline_env())
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{base}/health", proc, timeout_s=timeout_s, log=log)
        yield base
    finally:
        stop(proc)


def _name(proc: subprocess.Popen) -> str:
    args = proc.args if isinstance(proc.args, list) else [str(proc.args)]
    return " ".join(Path(str(a)).name if i == 0 else str(a) for i, a in enumerate(args[:2]))
