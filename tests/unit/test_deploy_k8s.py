"""Kubernetes manifests, compose file and Grafana dashboard, checked offline.

* ``kubectl kustomize deploy/k8s`` renders, and every object passes ``kubernetes-validate``'s strict
  schema check for Kubernetes 1.32 (a misspelt field fails it: tested).
* The outage rules (issue 15): no probe sets ``host`` (the kubelet would probe the node); the guard's
  liveness never asks ``/health`` (a vLLM outage must make the guard unready, never restart it) while
  its readiness does; both containers run as numeric non-root users on a read-only root filesystem with
  no capabilities and have resource requests; images are pinned; the model cache is a PVC; API keys
  come from a Secret; the HPA scales on a metric the service exports.
* ``docker-compose config`` (Debian's docker-compose) accepts the compose file.
* Every PromQL query of the provisioned dashboard names metrics (and labels) the service really
  exports, read from ``service.metrics.GuardMetrics``'s own exposition.

The probe paths are also driven against a real server whose upstream goes down and comes back:
tests/integration/test_deploy_outage.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import GuardMetrics
from tests.tiny import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
K8S_VERSION = "1.32"


def rendered() -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed")
    out = subprocess.run(["kubectl", "kustomize", str(DEPLOY / "k8s")], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _pod_spec(docs: list[dict]) -> dict:
    return next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]


def _container(docs: list[dict], name: str) -> dict:
    return next(c for c in _pod_spec(docs)["containers"] if c["name"] == name)


def exported_series() -> dict[str, set[str]]:
    """Series name -> label names, from the real exposition of ``GuardMetrics`` (histograms expand to
    ``_bucket``/``_count``/``_sum``, counters to ``_total``)."""
    metrics = GuardMetrics()
    labels = {c._name: set(c._labelnames) for c in metrics.registry._collector_to_names}  # noqa: SLF001
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        base = labels.get(family.name, labels.get(f"{family.name}_total", set()))
        if family.type == "histogram":
            out.update({f"{family.name}_bucket": base | {"le"}, f"{family.name}_count": base,
                        f"{family.name}_sum": base})
        elif family.type == "counter":
            out[f"{family.name}_total"] = base
        else:
            out[family.name] = base
    return out


def test_manifests_pass_strict_schema_validation() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra) not installed")
    docs = rendered()
    assert {d["kind"] for d in docs} >= {"Namespace", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
                                         "HorizontalPodAutoscaler", "PersistentVolumeClaim"}
    for doc in docs:
        kv.validate(doc, K8S_VERSION, strict=True)
    broken = json.loads(json.dumps(next(d for d in docs if d["kind"] == "Deployment")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # misspelt
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, K8S_VERSION, strict=True)


def _probes(container: dict) -> dict[str, dict]:
    return {k: container[k] for k in ("startupProbe", "livenessProbe", "readinessProbe") if k in container}


def test_no_probe_targets_the_node() -> None:
    for container in _pod_spec(rendered())["containers"]:
        for kind, probe in _probes(container).items():
            action = probe.get("httpGet") or probe.get("tcpSocket") or {}
            assert "host" not in action, f"{container['name']}.{kind} sets host: the kubelet resolves it on the node"


def test_vllm_outage_makes_the_guard_unready_never_restarted() -> None:
    guard = _container(rendered(), "guard")
    probes = _probes(guard)
    assert probes["readinessProbe"]["httpGet"]["path"] == "/health"  # 503 while vLLM or the classifier is down
    for kind in ("livenessProbe", "startupProbe"):
        assert probes[kind]["httpGet"]["path"] != "/health", f"guard {kind} would restart it on a vLLM outage"
    vllm = _container(rendered(), "vllm")
    assert "readinessProbe" not in vllm  # the guard's readiness already covers the engine
    exec_cmd = " ".join(vllm["livenessProbe"]["exec"]["command"])
    assert "127.0.0.1:8001/health" in exec_cmd  # probed from inside its container: it listens on loopback
    assert vllm["args"][vllm["args"].index("--host") + 1] == "127.0.0.1"


def test_containers_are_locked_down_and_sized() -> None:
    docs = rendered()
    pod = _pod_spec(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert isinstance(sc["runAsUser"], int) and sc["runAsUser"] > 0, c["name"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]), c["name"]
        image = c["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"unpinned image {image}"


def test_model_cache_is_a_claim_and_keys_come_from_a_secret() -> None:
    docs = rendered()
    pod = _pod_spec(docs)
    volumes = {v["name"]: v for v in pod["volumes"]}
    vllm = _container(docs, "vllm")
    cache = next(m for m in vllm["volumeMounts"] if m["mountPath"] == "/models")
    claim = volumes[cache["name"]]["persistentVolumeClaim"]["claimName"]
    assert any(d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim for d in docs)
    assert {"name": "HF_HOME", "value": "/models/hf"} in vllm["env"]
    env = {e["name"]: e for e in _container(docs, "guard")["env"]}
    assert "secretKeyRef" in env["SPAGUARD_API_KEYS"]["valueFrom"]


def test_guard_config_binds_the_pod_ip_and_keeps_vllm_on_loopback() -> None:
    from service.settings import load_settings

    settings = load_settings(["--config", str(DEPLOY / "k8s" / "config.yaml")])
    assert settings.host == "0.0.0.0" and settings.port == 8000
    assert settings.upstream_url.startswith("http://127.0.0.1:8001/")
    guard = _container(rendered(), "guard")
    assert guard["ports"][0]["containerPort"] == settings.port


def test_hpa_scales_on_an_exported_guard_metric() -> None:
    hpa = next(d for d in rendered() if d["kind"] == "HorizontalPodAutoscaler")
    names = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert names and all(m["type"] != "Resource" for m in hpa["spec"]["metrics"])
    series = exported_series()
    assert all(n in series for n in names), names
    rules = yaml.safe_load((DEPLOY / "k8s" / "prometheus-adapter-rules.yaml").read_text())["rules"]["custom"]
    assert {r["name"]["as"] for r in rules} >= set(names)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed (apt-get install docker-compose)")
def test_compose_file_is_valid() -> None:
    proc = subprocess.run(["docker-compose", "-f", str(DEPLOY / "docker-compose.yml"), "config", "-q"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for name, svc in compose["services"].items():
        assert ":" in svc["image"] and not svc["image"].endswith(":latest"), f"{name}: unpinned {svc['image']}"
    grafana = compose["services"]["grafana"]
    assert any(v.startswith("./grafana/provisioning:") for v in grafana["volumes"])


_PROMQL_WORDS = {
    "sum", "rate", "irate", "increase", "histogram_quantile", "by", "without", "max", "min", "avg", "topk",
    "clamp_min", "count", "le", "on", "ignoring", "and", "or", "unless", "offset",
}
_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")


def dashboard_queries() -> list[str]:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "spaguard.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_every_dashboard_query_names_an_exported_metric_and_its_labels() -> None:
    series = exported_series()
    queries = dashboard_queries()
    assert len(queries) >= 8
    used: set[str] = set()
    for expr in queries:
        grouped = {lab.strip() for grp in re.findall(r"by \(([^)]*)\)", expr) for lab in grp.split(",")}
        stripped = re.sub(r"by \([^)]*\)|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
        metrics = []
        for name, selector in _SELECTOR.findall(stripped):
            if name in _PROMQL_WORDS or re.fullmatch(r"[0-9e.-]+", name) or name in grouped:
                continue
            metrics.append(name)
            assert name in series, f"{name!r} (in {expr!r}) is not exported by the service"
            for label in re.findall(r"([a-zA-Z_]+)\s*=", selector or ""):
                assert label in series[name], f"{name} has no label {label!r} (in {expr!r})"
        assert metrics, f"no metric in {expr!r}"
        for label in grouped - {"pod", "instance"}:  # pod/instance: added by the scrape, not the service
            assert any(label in series[m] for m in metrics), f"no metric in {expr!r} has label {label!r}"
        used.update(metrics)
    # The panels cover the guard's latency, verdicts, failures, queue and batches.
    assert {"guard_request_duration_seconds_bucket", "guard_verdict_total", "guard_request_failure_total",
            "guard_queue_depth", "guard_batch_size_sum"} <= used


def test_the_dashboard_check_catches_a_wrong_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    real = dashboard_queries()
    monkeypatch.setattr(f"{__name__}.dashboard_queries", lambda: [*real, "sum(rate(guard_verdicts_total[5m]))"])
    with pytest.raises(AssertionError, match="guard_verdicts_total"):
        test_every_dashboard_query_names_an_exported_metric_and_its_labels()


def test_grafana_provisioning_points_at_the_dashboard_folder() -> None:
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "spaguard.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = dict(v.rsplit(":", 2)[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./grafana/dashboards"] == path
    source = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = source["datasources"][0]["uid"]
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "spaguard.json").read_text())
    assert all(p["datasource"]["uid"] == uid for p in dash["panels"])
