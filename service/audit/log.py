"""``AuditLog``: one durable record per guarded request, in the tenancy database.

Record (a JSON object; the indexed columns repeat its top-level fields)::

    {"request_id": "chatcmpl-...",          # the x-request-id the client saw
     "ts": 1796177523.12, "tenant": "acme", "key_id": "3f2a9c1b0d4e",
     "policy": "strict", "policy_version": "2026-12-01+3f2a9c1b0d4e",
     "path": "/v1/chat/completions", "status": 200,
     "action": "block",                     # the most severe of the checks' actions
     "latency_ms": 12.5,
     "checks": [{"task": "prompt", "action": "block",           # what the request's policy did
                 "flagged": true, "unsafe_prob": 0.97,           # the classifier's own verdict (its
                 "categories": {...nodes it fired...},          #  calibration), before the policy
                 "scores": {...every node...},
                 "fired": {...policy rules that fired...}, "error": null}, ...],
     "content_sha256": {"request": "...", "response": "..."},
     "content": {"request": "...", "response": "..."}}     # only when the policy sets record_content

Contract: ``write`` returns only after the record is committed (``Database.execute``), and writing the
same request id again replaces the record (a stream is written when it starts and again before its last
chunk). ``query`` filters by time window, tenant, action and category (a node key prefix).
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from service.tenancy.db import Database
from service.tenancy.scope import CheckRecord, RequestScope

# Most severe first: a request's action is the first of these that any of its checks took.
ACTION_ORDER = ("block", "fail_closed", "annotate", "shadow", "fail_open", "allow", "off")
CSV_COLUMNS = ("request_id", "time", "tenant", "key_id", "policy", "policy_version", "path", "status", "action",
               "latency_ms", "prompt_unsafe_prob", "response_unsafe_prob", "categories", "request_sha256",
               "response_sha256")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def worst_action(actions: Iterable[str]) -> str:
    seen = set(actions)
    return next((a for a in ACTION_ORDER if a in seen), "allow")


def check_dict(check: CheckRecord) -> dict[str, Any]:
    v = check.verdict
    return {
        "task": check.task, "action": check.action, "error": check.error,
        "flagged": None if v is None else v.flagged,
        "unsafe_prob": None if v is None else round(v.unsafe_prob, 4),
        "categories": {} if v is None else {k: round(s, 4) for k, s in v.categories.items()},
        "scores": {} if v is None else {k: round(s, 4) for k, s in v.scores.items()},
        "fired": {k: round(s, 4) for k, s in check.fired.items()},
    }


def build_record(scope: RequestScope, request_id: str, path: str, status: int, hashes: dict[str, str],
                 content: dict[str, str] | None) -> dict[str, Any]:
    """The audit record of one request (module docstring)."""
    checks = [check_dict(c) for c in scope.checks]
    record: dict[str, Any] = {
        "request_id": request_id, "ts": time.time(), **scope.to_dict(), "path": path, "status": status,
        "action": worst_action(c["action"] for c in checks),
        "latency_ms": round((time.perf_counter() - scope.started) * 1000, 3),
        "checks": checks, "content_sha256": hashes,
    }
    if content is not None:
        record["content"] = content
    return record


def parse_time(text: str, now: float | None = None) -> float:
    """A point in time from ``--since``/``--until``: ``30m``, ``2h``, ``7d`` (ago), unix seconds, or ISO 8601
    (``2026-12-02T03:00:00Z``; no zone means UTC). ``ValueError`` otherwise."""
    now = time.time() if now is None else now
    text = text.strip()
    if m := _RELATIVE.match(text):
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"cannot read the time {text!r}: use 30m, 2h, 7d, unix seconds or ISO 8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


class AuditLog:
    """Audit records in a ``Database`` (blocking calls: run them in a worker thread on the server)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def write(self, record: dict[str, Any]) -> None:
        """Commit ``record`` (replacing an earlier one of the same request id) before returning."""
        self.db.execute(
            "INSERT INTO audit_log (request_id, ts, tenant, key_id, policy, policy_version, path, status, action,"
            " latency_ms, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (request_id) DO UPDATE SET ts = excluded.ts, status = excluded.status,"
            " action = excluded.action, latency_ms = excluded.latency_ms, record = excluded.record",
            (record["request_id"], record["ts"], record.get("tenant"), record.get("key_id"), record.get("policy"),
             record.get("policy_version"), record["path"], record["status"], record["action"],
             record["latency_ms"], json.dumps(record, sort_keys=True, separators=(",", ":"))))

    def query(self, since: float | None = None, until: float | None = None, *, tenant: str | None = None,
              action: str | None = None, category: str | None = None, limit: int | None = None,
              newest_first: bool = False) -> list[dict[str, Any]]:
        """Records in ``[since, until)``, oldest first (or newest first), filtered as asked. ``category``
        keeps records where the classifier or the policy fired a node whose key starts with it."""
        where, params = [], []
        for clause, value in (("ts >= ?", since), ("ts < ?", until), ("tenant = ?", tenant), ("action = ?", action)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = "SELECT record FROM audit_log" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY ts DESC" if newest_first else " ORDER BY ts"
        if limit is not None and category is None:
            sql += f" LIMIT {int(limit)}"
        records = [json.loads(r["record"]) for r in self.db.query(sql, params)]
        if category is not None:
            records = [r for r in records if any(k.startswith(category) for c in r["checks"]
                                                 for k in (*c["categories"], *c["fired"]))]
            records = records[:limit] if limit is not None else records
        return records

    def get(self, request_id: str) -> dict[str, Any] | None:
        rows = self.db.query("SELECT record FROM audit_log WHERE request_id = ?", (request_id,))
        return json.loads(rows[0]["record"]) if rows else None

    def request_ids(self) -> set[str]:
        return {str(r["request_id"]) for r in self.db.query("SELECT request_id FROM audit_log")}


def export(records: Sequence[dict[str, Any]], fmt: str) -> str:
    """``records`` as JSON lines (every field) or CSV (``CSV_COLUMNS``: one row per request)."""
    if fmt == "jsonl":
        return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    if fmt != "csv":
        raise ValueError(f"unknown format {fmt!r} (jsonl or csv)")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in records:
        by_task = {c["task"]: c for c in r["checks"]}  # a stream's last response check is the whole reply's
        cats = sorted({k for c in r["checks"] for k in c["categories"]})
        writer.writerow({
            "request_id": r["request_id"],
            "time": datetime.fromtimestamp(r["ts"], timezone.utc).isoformat(timespec="milliseconds"),
            "tenant": r.get("tenant") or "", "key_id": r.get("key_id") or "", "policy": r.get("policy") or "",
            "policy_version": r.get("policy_version") or "", "path": r["path"], "status": r["status"],
            "action": r["action"], "latency_ms": r["latency_ms"],
            "prompt_unsafe_prob": _prob(by_task.get("prompt")), "response_unsafe_prob": _prob(by_task.get("response")),
            "categories": ";".join(cats), "request_sha256": r["content_sha256"].get("request", ""),
            "response_sha256": r["content_sha256"].get("response", ""),
        })
    return buf.getvalue()


def _prob(check: dict[str, Any] | None) -> str:
    return "" if check is None or check["unsafe_prob"] is None else str(check["unsafe_prob"])
