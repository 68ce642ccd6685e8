"""The deploy files must stay in step with the code: every shipped config parses with the real
settings class, and the containers' arguments are flags `spaguard serve` accepts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from service.settings import ServeSettings, load_settings, make_parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CONFIGS = [DEPLOY / "spaguard.gpu.yaml", DEPLOY / "k8s" / "config.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_parses(path: Path) -> None:
    settings = load_settings(["--config", str(path)])
    assert isinstance(settings, ServeSettings)
    assert settings.engine == "openai" and settings.upstream_url
    assert settings.guard_mode == "block" and settings.fail_policy == "closed"


def test_config_with_unknown_key_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"engine": "openai", "upstream_url": "http://x/v1", "guard_mood": 1}))
    with pytest.raises(SystemExit):
        load_settings(["--config", str(bad)])


def _guard_args() -> list[str]:
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "deployment.yaml").read_text()))
    containers = docs[0]["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "guard")["args"]


def test_k8s_guard_args_are_known_flags() -> None:
    command, *args = _guard_args()
    assert command == "serve"  # the image's ENTRYPOINT is `spaguard`; args replace its CMD
    parsed = make_parser().parse_args(args)  # argparse exits on an unknown flag
    assert Path(parsed.config).name == "config.yaml"


def test_compose_guard_mounts_the_gpu_config() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    guard = compose["services"]["guard"]
    assert guard["command"] == ["serve", "--config", "/etc/spaguard/config.yaml"]
    assert any(v.startswith("./spaguard.gpu.yaml:") for v in guard["volumes"])


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomization_renders_offline() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "k8s")], capture_output=True, text=True, check=True
    ).stdout
    kinds = {d["kind"] for d in yaml.safe_load_all(out) if d}
    assert {"Namespace", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"} <= kinds
