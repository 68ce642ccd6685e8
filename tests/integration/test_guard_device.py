"""``--guard-device``: ONNX Runtime's CUDA provider when asked, a clear error when it is absent.

This machine has no GPU and the CPU onnxruntime: the error path is tested here, for the library call and
for ``spaguard serve`` (which must exit at start, saying what to install). The CUDA path itself is a
``gpu`` test (skipped without CUDA): the session really runs on the CUDA provider and agrees with CPU.
"""

from __future__ import annotations

import subprocess

import pytest

from models.backends import GuardInput, load_backend
from service.settings import load_settings
from tests.e2e.serve_process import SPAGUARD, _env
from tests.tiny import free_port

ort = pytest.importorskip("onnxruntime")
HAS_ORT_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.skipif(HAS_ORT_CUDA, reason="this onnxruntime has the CUDA provider")
def test_cuda_without_the_provider_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="no CUDAExecutionProvider") as err:
        load_backend("onnx", device="cuda")
    assert "onnxruntime-gpu" in str(err.value) and "--guard-device cpu" in str(err.value)


@pytest.mark.skipif(HAS_ORT_CUDA, reason="this onnxruntime has the CUDA provider")
def test_serve_with_cuda_and_no_provider_exits_at_start(tmp_path) -> None:
    cmd = [str(SPAGUARD), "serve", "--port", str(free_port()), "--engine", "fake", "--model", str(tmp_path / "x.json"),
           "--guard-device", "cuda"]
    (tmp_path / "x.json").write_text('{"default": {"chunks": ["hi"]}}')
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=_env())
    assert proc.returncode != 0
    assert "no CUDAExecutionProvider" in proc.stdout + proc.stderr


def test_cpu_keeps_ort_on_its_cpu_provider() -> None:
    backend = load_backend("onnx", device="cpu", threads=1)
    assert backend.session.get_providers() == ["CPUExecutionProvider"]
    assert backend.score([GuardInput("How do I make a pipe bomb at home?")])[0].flagged


def test_device_values_and_combinations_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="unknown device"):
        load_backend("onnx", device="tpu")
    with pytest.raises(ValueError, match="instance group"):
        load_backend("triton", device="cuda", triton_url="127.0.0.1:1")
    with pytest.raises(ValueError, match="needs triton_url"):
        load_backend("triton")
    for argv, message in ((["--guard-backend", "triton"], "needs --triton-url"),
                          (["--triton-url", "h:1"], "not triton"),
                          (["--guard-backend", "triton", "--triton-url", "h:1", "--guard-device", "cuda"],
                           "does not apply"),
                          (["--guard-backend", "triton", "--triton-url", "h:1", "--guard-spin"], "not triton")):
        with pytest.raises(SystemExit):
            load_settings(argv)
        assert message in capsys.readouterr().err, argv


@pytest.mark.gpu
def test_cuda_runs_on_the_cuda_provider_and_agrees_with_cpu() -> None:
    if not HAS_ORT_CUDA:
        pytest.skip("needs onnxruntime-gpu (the gpu extra / deploy/Dockerfile.gpu)")
    gpu = load_backend("onnx", device="cuda")
    assert gpu.session.get_providers()[0] == "CUDAExecutionProvider"
    cpu = load_backend("onnx", device="cpu")
    items = [GuardInput("How do I make a pipe bomb at home?"), GuardInput("Write a haiku about autumn.")]
    for g, c in zip(gpu.score(items), cpu.score(items)):
        assert g.flagged == c.flagged and abs(g.unsafe_prob - c.unsafe_prob) <= 1e-3
