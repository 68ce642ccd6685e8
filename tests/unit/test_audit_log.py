"""The audit log: durable upserts, window queries and filters, JSONL/CSV export, times, and the shadow report
(with its PNG chart) on a recorded window."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from models.backends import Verdict
from service.audit import cli as audit_cli
from service.audit.log import AuditLog, build_record, export, parse_time, worst_action
from service.audit.report import OVERALL, format_report, save_chart, shadow_report
from service.tenancy.db import open_database
from service.tenancy.policies import load_policies, node_keys_of
from service.tenancy.scope import CheckRecord, RequestScope

DANGER = "Information & Safety Harms/Dangerous Information"
FRAUD = "Malicious Use/Fraud or deceptive action"
MISINFO_SUB = "Misinformation Harms/False Beliefs"


def record(rid: str, ts: float, action: str, prob: float, flagged: bool, scores: dict[str, float],
           tenant: str = "acme") -> dict:
    cats = {k: v for k, v in scores.items() if flagged and v >= 0.5}
    scope = RequestScope(tenant, "k1", None)
    scope.checks.append(CheckRecord("prompt", action, Verdict("prompt", prob, flagged, cats, scores), None, {}, rid))
    rec = build_record(scope, rid, "/v1/chat/completions", 200, {"request": "ab" * 32}, None)
    rec["ts"] = ts
    return rec


# A recorded window: what the server saw under its built-in policy (block on the classifier's flag).
WINDOW = [
    record("r1", 1000.0, "block", 0.9, True, {DANGER: 0.9, FRAUD: 0.1}),
    record("r2", 1001.0, "allow", 0.3, False, {DANGER: 0.1, FRAUD: 0.3}),   # strict blocks fraud >= 0.25
    record("r3", 1002.0, "allow", 0.05, False, {DANGER: 0.05, FRAUD: 0.05}),
    record("r4", 1003.0, "block", 0.7, True, {DANGER: 0.7, FRAUD: 0.26}, tenant="globex"),
    record("r5", 1004.0, "allow", 0.35, False, {DANGER: 0.35, FRAUD: 0.0}),  # strict blocks danger >= 0.2
]


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    db = open_database(f"sqlite:///{tmp_path / 'a.db'}")
    audit = AuditLog(db)
    for r in WINDOW:
        audit.write(r)
    yield audit
    db.close()


def test_write_query_filters_and_upsert(log: AuditLog) -> None:
    assert [r["request_id"] for r in log.query(1001.0, 1004.0)] == ["r2", "r3", "r4"]
    assert [r["request_id"] for r in log.query(tenant="globex")] == ["r4"]
    assert [r["request_id"] for r in log.query(action="block")] == ["r1", "r4"]
    assert [r["request_id"] for r in log.query(category="Information & Safety Harms")] == ["r1", "r4"]
    assert [r["request_id"] for r in log.query(newest_first=True, limit=2)] == ["r5", "r4"]
    again = dict(WINDOW[1], action="block", status=400)
    log.write(again)  # a stream's final record replaces its first
    assert log.get("r2")["action"] == "block" and len(log.request_ids()) == 5
    assert worst_action(["allow", "fail_open", "annotate"]) == "annotate"


def test_export_jsonl_and_csv(log: AuditLog) -> None:
    rows = log.query()
    lines = export(rows, "jsonl").splitlines()
    assert [json.loads(x)["request_id"] for x in lines] == ["r1", "r2", "r3", "r4", "r5"]
    table = list(csv.DictReader(io.StringIO(export(rows, "csv"))))
    assert table[0]["request_id"] == "r1" and table[0]["action"] == "block"
    assert table[0]["prompt_unsafe_prob"] == "0.9" and table[0]["categories"] == DANGER
    assert table[0]["time"].startswith("1970-01-01T00:16:40") and table[0]["request_sha256"] == "ab" * 32
    with pytest.raises(ValueError):
        export(rows, "xml")


def test_parse_time() -> None:
    assert parse_time("30m", now=10_000) == 10_000 - 1800
    assert parse_time("2d", now=200_000) == 200_000 - 172_800
    assert parse_time("1796177523") == 1796177523.0
    assert parse_time("1970-01-01T00:01:00Z") == 60.0 and parse_time("1970-01-01T00:01:00") == 60.0
    with pytest.raises(ValueError, match="30m, 2h"):
        parse_time("yesterday")


def test_shadow_report_on_a_recorded_window(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "strict.yaml").write_text(f"""name: strict
default: {{action: block}}
nodes:
  "{FRAUD}": {{threshold: 0.25, action: block}}
  "{DANGER}": {{threshold: 0.2, action: block}}
""")
    (folder / "watch.yaml").write_text("name: watch\ndefault: {threshold: 0.8, action: block}\n")
    policies = load_policies(folder, node_keys_of(None))
    report = shadow_report(WINDOW, policies, base_mode="block")
    assert report["requests"] == 5 and report["checks"] == 5
    assert report["actual"] == {"allow": 3, "block": 2}
    # the built-in default blocks what was blocked; strict adds r2 (fraud) and r5 (danger 0.35)
    assert report["policies"]["default"]["would_block"] == 2
    assert report["policies"]["default"]["by_category"] == {DANGER: 2}
    assert report["policies"]["strict"]["would_block"] == 4
    assert report["policies"]["strict"]["by_category"] == {DANGER: 3, FRAUD: 2}
    # watch blocks only on the overall score >= 0.8: r1, with its fired categories
    assert report["policies"]["watch"]["would_block"] == 1
    assert report["policies"]["watch"]["by_category"] == {DANGER: 1}
    text = format_report(report)
    assert "would block (requests)" in text and FRAUD in text
    png = save_chart(report, tmp_path / "runs" / "shadow.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    overall = shadow_report([record("r9", 1.0, "block", 0.9, True, {DANGER: 0.1})], policies)
    assert overall["policies"]["default"]["by_category"] == {OVERALL: 1}


def test_audit_cli_export_and_report(log: AuditLog, tmp_path: Path, capsys) -> None:
    url = log.db.url
    assert audit_cli.main(["export", "--since", "0", "--until", "1002", "--format", "csv", "--db", url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("request_id,time") and len(out) == 3
    assert audit_cli.main(["report", "--since", "0", "--db", url, "--json",
                           "--png", str(tmp_path / "r.png")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["policies"]["default"]["would_block"] == 2 and (tmp_path / "r.png").exists()
    assert audit_cli.main(["export", "--since", "someday", "--db", url]) == 2
    assert "cannot read the time" in capsys.readouterr().err
